"""Unit tests of the emulated SEV-SNP firmware (copra.hw.snp).

Chips are made with 2048-bit ARK/ASK keys (the default, 4096, is AMD's size and too
slow for unit tests); each module creates a few and copies a template state directory
where a test needs its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.attest.verify import ChainError, Verifier
from copra.hw import hostfiles
from copra.hw.snp import (
    PAGE_INFO_SIZE,
    PAGE_SIZE,
    STATUS_INVALID_PARAM,
    VMSA_GPA,
    GuestRequestError,
    LaunchMeasurement,
    LaunchStateError,
    PageType,
    SnpFirmware,
    SnpGuest,
    StateCorrupt,
    StateExists,
    StateMissing,
    page_info,
)
from copra.hw.snp_report import (
    AttestationReport,
    CertGuid,
    CertTableError,
    Generation,
    GuestPolicy,
    PolicyFlags,
    SigningKey,
    TcbLayout,
    TcbVersion,
    VcekOid,
    build_cert_table,
    parse_cert_table,
)

KEY_SIZE = 2048


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "chip"
    SnpFirmware.create(path, key_size=KEY_SIZE)
    return path


@pytest.fixture
def state(template: Path, tmp_path: Path) -> Path:
    """A private copy of the template chip, free to corrupt."""
    path = tmp_path / "chip"
    shutil.copytree(template, path)
    return path


@pytest.fixture(scope="module")
def chip(template: Path) -> SnpFirmware:
    return SnpFirmware.open(template)


@pytest.fixture(scope="module")
def chips(tmp_path_factory: pytest.TempPathFactory) -> dict[Generation, SnpFirmware]:
    base = tmp_path_factory.mktemp("generations")
    return {
        gen: SnpFirmware.create(base / gen.value, generation=gen, key_size=KEY_SIZE)
        for gen in (Generation.GENOA, Generation.TURIN)
    }


def _running(chip: SnpFirmware, **launch: object) -> SnpGuest:
    guest = chip.launch_start(**launch)  # type: ignore[arg-type]
    guest.launch_update(0x0, b"kernel")
    guest.launch_finish()
    return guest


def _own(chip: SnpFirmware) -> Verifier:
    return Verifier([chip.ark])


# -- reports ------------------------------------------------------------------------------


def test_get_report_passes_verifier_trusting_the_chips_ark(chip: SnpFirmware) -> None:
    raw = _running(chip).get_report(bytes(range(64)), 0)
    result = _own(chip).verify(raw, chip.vcek, chip.cert_chain_pem())
    assert result.signing_key is SigningKey.VCEK
    assert result.generation is Generation.MILAN


def test_get_report_is_rejected_by_amd_roots_with_chain_error(chip: SnpFirmware) -> None:
    raw = _running(chip).get_report(bytes(64), 0)
    with pytest.raises(ChainError):
        Verifier.with_amd_roots().verify(raw, chip.vcek, chip.cert_chain_pem())


def test_get_report_fills_fields_from_chip_launch_and_request(chip: SnpFirmware) -> None:
    host_data = bytes(range(32))
    guest = _running(chip, host_data=host_data, guest_svn=7)
    report = AttestationReport.parse(guest.get_report(b"\x42" * 64, 2))
    assert report.version == 3
    assert report.vmpl == 2
    assert report.report_data == b"\x42" * 64
    assert report.measurement == guest.measurement
    assert report.host_data == host_data
    assert report.guest_svn == 7
    assert report.chip_id == chip.chip_id
    assert report.report_id == guest.report_id
    assert report.report_id_ma == b"\xff" * 32
    assert (report.cpuid_fam_id, report.cpuid_mod_id) == (0x19, 0x01)
    tcbs = {report.current_tcb, report.reported_tcb, report.committed_tcb, report.launch_tcb}
    assert tcbs == {chip.tcb}
    assert report.policy == GuestPolicy()


@pytest.mark.parametrize("generation", [Generation.GENOA, Generation.TURIN])
def test_get_report_on_other_generations_verifies(
    chips: dict[Generation, SnpFirmware], generation: Generation
) -> None:
    chip = chips[generation]
    raw = _running(chip).get_report(bytes(64), 0)
    result = _own(chip).verify(raw, chip.vcek, [chip.ask])
    assert result.generation is generation
    assert result.report.tcb_layout is generation.tcb_layout


def test_turin_vcek_carries_8_byte_hwid_and_fmc_spl(chips: dict[Generation, SnpFirmware]) -> None:
    chip = chips[Generation.TURIN]
    exts = {
        e.oid.dotted_string: e.value.value
        for e in chip.vcek.extensions
        if isinstance(e.value, x509.UnrecognizedExtension)
    }
    assert exts[VcekOid.HW_ID] == chip.chip_id[:8]
    assert chip.chip_id[8:] == bytes(56)
    assert VcekOid.FMC_SPL in exts and VcekOid.SPL_4 not in exts
    assert chip.tcb.layout is TcbLayout.TURIN


def test_milan_vcek_carries_amd_extensions_in_amd_encoding(chip: SnpFirmware) -> None:
    exts = {
        e.oid.dotted_string: e.value.value
        for e in chip.vcek.extensions
        if isinstance(e.value, x509.UnrecognizedExtension)
    }
    assert exts[VcekOid.HW_ID] == chip.chip_id
    assert exts[VcekOid.PRODUCT_NAME] == b"\x16\x05Milan"
    assert exts[VcekOid.STRUCT_VERSION] == b"\x02\x01\x00"
    assert exts[VcekOid.BL_SPL] == bytes([2, 1, chip.tcb.bootloader])
    assert VcekOid.FMC_SPL not in exts
    assert chip.vcek.subject.rfc4514_string().startswith("CN=SEV-VCEK")


def test_get_report_version_5_chip_writes_mitigation_vectors(tmp_path: Path) -> None:
    chip = SnpFirmware.create(tmp_path / "v5", report_version=5, key_size=KEY_SIZE)
    raw = _running(chip).get_report(bytes(64), 0)
    report = _own(chip).verify(raw, chip.vcek, [chip.ask]).report
    assert report.version == 5 and report.launch_mit_vector == 0


def test_report_id_is_stable_per_guest_and_fresh_per_launch(chip: SnpFirmware) -> None:
    first, second = _running(chip), _running(chip)
    a1 = AttestationReport.parse(first.get_report(bytes(64), 0)).report_id
    a2 = AttestationReport.parse(first.get_report(bytes(64), 0)).report_id
    b = AttestationReport.parse(second.get_report(bytes(64), 0)).report_id
    assert a1 == a2 != b


def test_get_report_with_short_report_data_raises_invalid_param(chip: SnpFirmware) -> None:
    with pytest.raises(GuestRequestError) as info:
        _running(chip).get_report(bytes(32), 0)
    assert info.value.status == STATUS_INVALID_PARAM


def test_get_report_with_vmpl_4_raises_invalid_param(chip: SnpFirmware) -> None:
    with pytest.raises(GuestRequestError) as info:
        _running(chip).get_report(bytes(64), 4)
    assert info.value.status == STATUS_INVALID_PARAM


def test_get_report_before_launch_finish_raises_launch_state_error(chip: SnpFirmware) -> None:
    guest = chip.launch_start()
    with pytest.raises(LaunchStateError):
        guest.get_report(bytes(64), 0)


def test_launch_update_after_finish_raises_launch_state_error(chip: SnpFirmware) -> None:
    guest = _running(chip)
    with pytest.raises(LaunchStateError):
        guest.launch_update(0x1000, b"late")


def test_debug_policy_appears_in_report(chip: SnpFirmware) -> None:
    guest = _running(chip, policy=GuestPolicy(flags=PolicyFlags.SMT | PolicyFlags.DEBUG))
    assert AttestationReport.parse(guest.get_report(bytes(64), 0)).policy.debug


# -- launch digest ------------------------------------------------------------------------


def _reference_step(digest: bytes, contents: bytes, page_type: int, gpa: int) -> bytes:
    """PAGE_INFO written out by hand from the SNP ABI table, independent of the code."""
    info = (
        digest
        + contents
        + (0x70).to_bytes(2, "little")
        + bytes([page_type, 0, 0, 0, 0, 0])
        + gpa.to_bytes(8, "little")
    )
    return hashlib.sha384(info).digest()


def test_launch_measurement_starts_at_48_zero_bytes() -> None:
    assert LaunchMeasurement().digest == bytes(48)


def test_launch_measurement_normal_page_matches_page_info_chaining() -> None:
    page = bytes(range(256)) * 16
    m = LaunchMeasurement()
    m.update_page(0x7000, PageType.NORMAL, page)
    expected = _reference_step(bytes(48), hashlib.sha384(page).digest(), 1, 0x7000)
    assert m.digest == expected


def test_launch_measurement_chains_pages_in_order() -> None:
    a, b = b"\x01" * PAGE_SIZE, b"\x02" * PAGE_SIZE
    m = LaunchMeasurement()
    m.update_data(0x1000, a + b)
    step1 = _reference_step(bytes(48), hashlib.sha384(a).digest(), 1, 0x1000)
    step2 = _reference_step(step1, hashlib.sha384(b).digest(), 1, 0x2000)
    assert m.digest == step2 and m.pages == 2


def test_launch_measurement_pads_partial_last_page_with_zeros() -> None:
    short, padded = LaunchMeasurement(), LaunchMeasurement()
    short.update_data(0x1000, b"abc")
    padded.update_data(0x1000, b"abc" + bytes(PAGE_SIZE - 3))
    assert short.digest == padded.digest


def test_launch_measurement_depends_on_gpa() -> None:
    low, high = LaunchMeasurement(), LaunchMeasurement()
    low.update_data(0x1000, b"x")
    high.update_data(0x2000, b"x")
    assert low.digest != high.digest


def test_launch_measurement_vmsa_page_uses_vmsa_gpa_and_type_2() -> None:
    vmsa = b"\x33" * PAGE_SIZE
    m = LaunchMeasurement()
    m.update_vmsa(vmsa)
    assert m.digest == _reference_step(bytes(48), hashlib.sha384(vmsa).digest(), 2, VMSA_GPA)


@pytest.mark.parametrize(
    "page_type", [PageType.ZERO, PageType.UNMEASURED, PageType.SECRETS, PageType.CPUID]
)
def test_launch_measurement_unmeasured_types_hash_zero_contents(page_type: PageType) -> None:
    m = LaunchMeasurement()
    m.update_page(0x5000, page_type)
    assert m.digest == _reference_step(bytes(48), bytes(48), page_type, 0x5000)


def test_launch_measurement_contents_for_secrets_page_raises_value_error() -> None:
    with pytest.raises(ValueError):
        LaunchMeasurement().update_page(0x5000, PageType.SECRETS, bytes(PAGE_SIZE))


def test_launch_measurement_unaligned_gpa_raises_value_error() -> None:
    with pytest.raises(ValueError):
        LaunchMeasurement().update_data(0x1001, b"x")


def test_page_info_is_0x70_bytes_with_gpa_at_0x68() -> None:
    info = page_info(bytes(48), bytes(48), PageType.NORMAL, 0xABC000)
    assert len(info) == PAGE_INFO_SIZE == 0x70
    assert info[0x60:0x62] == b"\x70\x00" and info[0x62] == 1
    assert int.from_bytes(info[0x68:0x70], "little") == 0xABC000


def test_guest_measurement_equals_independent_launch_measurement(chip: SnpFirmware) -> None:
    guest = chip.launch_start()
    guest.launch_update(0x100000, b"\x90" * 5000)
    guest.launch_update_page(0x200000, PageType.SECRETS)
    guest.launch_update_vmsa(bytes(PAGE_SIZE))
    expected = LaunchMeasurement()
    expected.update_data(0x100000, b"\x90" * 5000)
    expected.update_page(0x200000, PageType.SECRETS)
    expected.update_vmsa(bytes(PAGE_SIZE))
    assert guest.launch_finish() == expected.digest


# -- the state directory ------------------------------------------------------------------


def test_create_stores_private_keys_0600_in_a_0700_directory(template: Path) -> None:
    assert stat.S_IMODE(template.stat().st_mode) == 0o700
    for name in ("ark.key", "ask.key", "vcek.key"):
        assert stat.S_IMODE((template / name).stat().st_mode) == 0o600


def test_open_existing_state_returns_same_chip(template: Path) -> None:
    first, second = SnpFirmware.open(template), SnpFirmware.open(template)
    assert first.chip_id == second.chip_id and len(first.chip_id) == 64
    assert first.vcek == second.vcek and first.ark == second.ark


def test_report_from_reopened_chip_verifies_with_first_instances_ark(
    chip: SnpFirmware, template: Path
) -> None:
    reopened = SnpFirmware.open(template)
    raw = _running(reopened).get_report(bytes(64), 0)
    _own(chip).verify(raw, chip.vcek, [chip.ask])


def test_open_missing_directory_raises_state_missing(tmp_path: Path) -> None:
    with pytest.raises(StateMissing):
        SnpFirmware.open(tmp_path / "absent")


def test_open_empty_directory_raises_state_missing(tmp_path: Path) -> None:
    with pytest.raises(StateMissing):
        SnpFirmware.open(tmp_path)


@pytest.mark.parametrize("name", ["chip.json", "vcek.key", "ask.pem"])
def test_open_with_missing_file_raises_state_corrupt(state: Path, name: str) -> None:
    (state / name).unlink()
    with pytest.raises(StateCorrupt, match=re.escape(name)):
        SnpFirmware.open(state)


def test_open_with_garbled_chip_json_raises_state_corrupt(state: Path) -> None:
    (state / "chip.json").write_text("{not json")
    with pytest.raises(StateCorrupt):
        SnpFirmware.open(state)


def test_open_with_edited_tcb_raises_state_corrupt(state: Path) -> None:
    doc = json.loads((state / "chip.json").read_text())
    doc["tcb"]["snp"] += 1
    (state / "chip.json").write_text(json.dumps(doc))
    with pytest.raises(StateCorrupt, match="disagrees"):
        SnpFirmware.open(state)


def test_open_with_garbled_private_key_raises_state_corrupt(state: Path) -> None:
    (state / "vcek.key").write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(StateCorrupt, match=re.escape("vcek.key")):
        SnpFirmware.open(state)


def test_open_with_world_readable_key_raises_state_corrupt(state: Path) -> None:
    os.chmod(state / "ark.key", 0o644)
    with pytest.raises(StateCorrupt, match="0600"):
        SnpFirmware.open(state)


def _pretend_effective_uid(monkeypatch: pytest.MonkeyPatch, state: Path) -> None:
    """Make the state's owner someone other than the effective user (and not root)."""
    other = state.stat().st_uid + 4242
    monkeypatch.setattr(hostfiles.os, "geteuid", lambda: other)


def test_open_chip_of_another_user_raises_state_corrupt(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # r15: only mode bits were checked, so a chip another user prepared was used
    _pretend_effective_uid(monkeypatch, state)
    with pytest.raises(StateCorrupt, match="not by the effective user"):
        SnpFirmware.open(state)


def test_open_key_of_another_user_in_own_directory_raises_state_corrupt(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    euid = os.geteuid()
    monkeypatch.setattr(hostfiles.os, "fstat", _owned_by(euid + 4242, "vcek.key"))
    with pytest.raises(StateCorrupt, match=r"vcek\.key is owned by uid"):
        SnpFirmware.open(state)


def _owned_by(uid: int, name: str) -> Any:
    """An os.fstat that reports ``name``'s descriptor as owned by ``uid``."""
    real = os.fstat

    def fstat(fd: int) -> os.stat_result:
        info = real(fd)
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/" + name):
            values = list(info)
            values[stat.ST_UID] = uid
            return os.stat_result(values)
        return info

    return fstat


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o720, 0o702], ids=lambda m: f"{m:04o}")
def test_open_group_or_other_writable_state_directory_raises_state_corrupt(
    state: Path, mode: int
) -> None:
    # r15: others could swap files in it; only the keys' own modes were checked
    os.chmod(state, mode)
    with pytest.raises(StateCorrupt, match="writable by group or others"):
        SnpFirmware.open(state)


def test_open_state_directory_through_a_symlink_raises_state_corrupt(
    state: Path, tmp_path: Path
) -> None:
    (tmp_path / "link").symlink_to(state)
    with pytest.raises(StateCorrupt, match="symbolic link"):
        SnpFirmware.open(tmp_path / "link")


@pytest.mark.parametrize("name", ["vcek.key", "ark.pem", "chip.json"])
def test_open_state_file_that_is_a_symlink_raises_state_corrupt(
    state: Path, tmp_path: Path, name: str
) -> None:
    target = tmp_path / f"elsewhere-{name}"
    (state / name).rename(target)
    (state / name).symlink_to(target)
    with pytest.raises(StateCorrupt, match=f"{re.escape(name)} is a symbolic link"):
        SnpFirmware.open(state)


def test_open_state_file_that_is_a_fifo_raises_state_corrupt_without_blocking(
    state: Path,
) -> None:
    (state / "chip.json").unlink()
    os.mkfifo(state / "chip.json", 0o600)
    with pytest.raises(StateCorrupt, match="not a regular file \\(a FIFO\\)"):
        SnpFirmware.open(state)


def test_open_group_writable_certificate_raises_state_corrupt(state: Path) -> None:
    os.chmod(state / "ask.pem", 0o664)
    with pytest.raises(StateCorrupt, match=r"ask\.pem: mode 0664 lets group or others write"):
        SnpFirmware.open(state)


def test_open_with_vcek_of_another_chip_raises_state_corrupt(
    state: Path, chips: dict[Generation, SnpFirmware]
) -> None:
    other = chips[Generation.GENOA].state_dir
    shutil.copy(other / "vcek.pem", state / "vcek.pem")
    with pytest.raises(StateCorrupt):
        SnpFirmware.open(state)


def test_create_into_existing_state_raises_state_exists(template: Path) -> None:
    with pytest.raises(StateExists):
        SnpFirmware.create(template, key_size=KEY_SIZE)


def test_create_with_overwrite_replaces_the_chip(state: Path) -> None:
    old = SnpFirmware.open(state).chip_id
    (state / "chip.json").write_text("corrupt")
    new = SnpFirmware.create(state, key_size=KEY_SIZE, overwrite=True)
    assert new.chip_id != old
    assert SnpFirmware.open(state).chip_id == new.chip_id
    assert [p.name for p in state.parent.iterdir()] == ["chip"]


def test_open_or_create_creates_only_when_absent(tmp_path: Path) -> None:
    path = tmp_path / "chip"
    made = SnpFirmware.open_or_create(path, key_size=KEY_SIZE)
    again = SnpFirmware.open_or_create(path, key_size=KEY_SIZE)
    assert made.chip_id == again.chip_id


def test_open_or_create_on_corrupt_state_raises_state_corrupt(state: Path) -> None:
    (state / "ask.key").unlink()
    with pytest.raises(StateCorrupt):
        SnpFirmware.open_or_create(state, key_size=KEY_SIZE)


def test_create_with_injected_clock_dates_certificates(tmp_path: Path) -> None:
    when = datetime(2030, 3, 4, 5, 6, 7, tzinfo=UTC)
    chip = SnpFirmware.create(tmp_path / "c", key_size=KEY_SIZE, clock=lambda: when)
    assert chip.vcek.not_valid_before_utc <= when < chip.vcek.not_valid_after_utc
    assert chip.vcek.not_valid_after_utc.year == 2037
    raw = _running(chip).get_report(bytes(64), 0)
    Verifier([chip.ark], clock=lambda: when).verify(raw, chip.vcek, [chip.ask])


def test_create_with_custom_tcb_issues_vcek_for_it(tmp_path: Path) -> None:
    tcb = TcbVersion(bootloader=9, tee=1, snp=30, microcode=250)
    chip = SnpFirmware.create(tmp_path / "c", tcb=tcb, key_size=KEY_SIZE)
    raw = _running(chip).get_report(bytes(64), 0)
    assert _own(chip).verify(raw, chip.vcek, [chip.ask]).report.reported_tcb == tcb


def test_create_with_turin_tcb_for_milan_raises_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SnpFirmware.create(
            tmp_path / "c",
            tcb=TcbVersion(fmc=1, bootloader=1, tee=1, snp=1, microcode=1),
            key_size=KEY_SIZE,
        )


# -- extended-request certificate table ---------------------------------------------------


def test_cert_table_round_trips_chain_that_verifies_the_report(chip: SnpFirmware) -> None:
    certs = parse_cert_table(chip.cert_table())
    assert set(certs) == {CertGuid.VCEK, CertGuid.ASK, CertGuid.ARK}
    raw = _running(chip).get_report(bytes(64), 0)
    Verifier([certs[CertGuid.ARK]]).verify(raw, certs[CertGuid.VCEK], [certs[CertGuid.ASK]])


def test_cert_table_entries_use_rfc4122_guid_bytes_and_absolute_offsets() -> None:
    table = build_cert_table({CertGuid.VCEK: b"abc"})
    assert table[:16] == bytes.fromhex("63da758de6644564adc5f4b93be8accd")
    assert int.from_bytes(table[16:20], "little") == 48
    assert table[24:48] == bytes(24) and table[48:] == b"abc"


def test_parse_cert_table_without_terminator_raises_cert_table_error() -> None:
    with pytest.raises(CertTableError):
        parse_cert_table(build_cert_table({CertGuid.ARK: b"x"})[:24])


def test_parse_cert_table_out_of_bounds_blob_raises_cert_table_error() -> None:
    table = bytearray(build_cert_table({CertGuid.ARK: b"x"}))
    table[20:24] = (100).to_bytes(4, "little")
    with pytest.raises(CertTableError):
        parse_cert_table(bytes(table))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_parse_cert_table_random_bytes_raises_only_cert_table_error(data: bytes) -> None:
    with contextlib.suppress(CertTableError):
        parse_cert_table(data)


def test_parse_cert_table_more_than_64_entries_raises_cert_table_error() -> None:
    entry = CertGuid.VCEK.guid.bytes[:15] + b"\xff" + (24 * 66).to_bytes(4, "little")
    table = (entry + (1).to_bytes(4, "little")) * 65 + bytes(24) + b"x"
    with pytest.raises(CertTableError, match="more than 64"):
        parse_cert_table(table)


def test_cert_table_with_crl_round_trips() -> None:
    certs = {CertGuid.VCEK: b"vcek", CertGuid.CRL: b"crl"}
    assert parse_cert_table(build_cert_table(certs)) == certs


def test_build_cert_table_empty_blob_raises_cert_table_error() -> None:
    with pytest.raises(CertTableError, match="empty"):
        build_cert_table({CertGuid.ASK: b""})

