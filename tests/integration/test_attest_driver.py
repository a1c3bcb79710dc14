"""The boot attestation driver against a real proxy and key broker (threads, loopback,
a Unix socket), with a RAM fs and no KVM: mount, seal, and every way it refuses."""

from __future__ import annotations

import base64
import logging
import os
import secrets
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from copra.attest.aproxy import AttestationProxy, ProxyConfig, bind_unix
from copra.attest.driver import AttestationDriver, AttestMode, AttestSettings
from copra.attest.kbs.app import KbsServer
from copra.attest.kbs.broker import KeyBroker
from copra.attest.kbs.policy import ResourcePolicy
from copra.attest.kbs.store import ReferenceValues, ResourcePath, Store
from copra.attest.measure import measure_boot
from copra.attest.persist import StoreContents, read_store, write_store
from copra.attest.protocol import (
    NegotiationParam,
    NegotiationRequest,
    NegotiationResponse,
    receive_message,
    send_message,
)
from copra.attest.verify import Verifier
from copra.hw.snp import SnpFirmware
from copra.hw.snp_report import TcbVersion
from copra.kernel.boot import BootError
from copra.kernel.packit import PackItEntry, encode
from copra.kernel.ramfs import RamFs

SECRET = secrets.token_bytes(32)
MEMORY = 64 << 20
ARCHIVE = encode([PackItEntry("/init", b"\x7fELF not really"), PackItEntry("/etc/x", b"x")])
MARKER = b"store-plaintext-" + secrets.token_hex(8).encode()


@pytest.fixture(scope="module")
def chip(tmp_path_factory: pytest.TempPathFactory) -> SnpFirmware:
    return SnpFirmware.create(tmp_path_factory.mktemp("snp") / "chip", key_size=2048)


@pytest.fixture(scope="module")
def kbs_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("kbs") / "kbs.db")
    store.set_resource(ResourcePath("default", "sample", "test"), SECRET,
                       ResourcePolicy(measurements=frozenset({measure_boot(ARCHIVE, MEMORY)})))
    return store


@pytest.fixture(scope="module")
def proxy_socket(kbs_store: Store, chip: SnpFirmware) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="drv-"))  # short: AF_UNIX paths are < 108 bytes
    path = directory / "aproxy.sock"
    with KbsServer(KeyBroker(kbs_store, Verifier([chip.ark]))) as server:
        proxy = AttestationProxy(ProxyConfig(url=server.url))
        listener = bind_unix(path)
        thread = threading.Thread(target=proxy.serve, args=(listener,))
        thread.start()
        try:
            yield path
        finally:
            proxy.stop(listener)
            thread.join()
            listener.close()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def settings(proxy_socket: Path, kbs_store: Store, chip: SnpFirmware,
             tmp_path: Path) -> AttestSettings:
    kbs_store.set_reference_values(
        ReferenceValues(measurements=frozenset({measure_boot(ARCHIVE, MEMORY)})))
    return AttestSettings(AttestMode.OPTIONAL, proxy_socket, chip.state_dir,
                          tmp_path / "persist.store")


@dataclass
class Boot:
    driver: AttestationDriver
    fs: RamFs = field(default_factory=RamFs)
    lines: list[str] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)

    def mount(self) -> Boot:
        self.fs.populate(ARCHIVE)
        self.driver.mount(self.lines.append, self.fs, self.counters)
        return self

    def seal(self) -> Boot:
        self.driver.seal(self.lines.append, self.fs, self.counters)
        return self

    def has_persist(self) -> bool:
        return any(e.name == "persist" for e in self.fs.opendir("/"))


def boot(settings: AttestSettings) -> Boot:
    return Boot(AttestationDriver(settings, ARCHIVE, MEMORY)).mount()


def test_fresh_store_is_mounted_empty_and_sealed_as_generation_one(
    settings: AttestSettings,
) -> None:
    run = boot(settings)
    assert run.driver.mounted and run.fs.opendir("/persist") == ()
    assert run.counters["attested"] == 1
    assert any("new and empty, mounted at /persist" in line for line in run.lines)
    run.fs.create("/persist/counter").write(0, b"1")
    run.seal()
    assert settings.persist is not None
    assert read_store(settings.persist, SECRET) == StoreContents(
        1, (PackItEntry("/counter", b"1"),))
    assert run.lines[-1].startswith("sealed 1 files (1 bytes) from /persist into")


def test_store_files_are_mounted_and_sealed_back_recursively(settings: AttestSettings) -> None:
    assert settings.persist is not None
    write_store(settings.persist, SECRET, StoreContents(
        5, (PackItEntry("/a", b"A"), PackItEntry("/d/e/f", b"F"))))
    run = boot(settings)
    assert run.fs.open("/persist/d/e/f").read(0, 10) == b"F"
    run.fs.mkdir("/persist/d/new")
    run.fs.create("/persist/d/new/g").write(0, b"G")
    run.fs.unlink("/persist/a")
    run.seal()
    sealed = read_store(settings.persist, SECRET)
    assert sealed.generation == 6
    assert {(f.path, f.data) for f in sealed.files} == {("/d/e/f", b"F"), ("/d/new/g", b"G")}


def test_persist_removed_by_a_program_seals_an_empty_store(settings: AttestSettings) -> None:
    run = boot(settings)
    run.fs.rmdir("/persist")
    run.seal()
    assert settings.persist is not None
    assert read_store(settings.persist, SECRET) == StoreContents(1, ())


def test_without_persist_file_the_secret_unlocks_nothing(settings: AttestSettings) -> None:
    run = boot(replace(settings, persist=None))
    assert not run.has_persist() and not run.driver.mounted
    assert any("the secret unlocks nothing" in line for line in run.lines)


def test_wrong_measurement_logs_one_line_and_leaves_persist_absent(
    settings: AttestSettings, kbs_store: Store
) -> None:
    kbs_store.set_reference_values(ReferenceValues(measurements=frozenset({bytes(48)})))
    run = boot(settings).seal()
    assert not run.has_persist()
    line = run.lines[-1]
    assert line.startswith("attestation failed: the key broker refused the evidence: 401 "
                           "AttestationFailed: MeasurementMismatch: measurement ")
    assert line.endswith(" is not among the reference measurements (0000000000000000...); "
                         "/persist stays sealed")
    assert run.driver.measurement is not None
    assert f"measurement {run.driver.measurement.hex()[:16]}... is not" in line
    assert run.counters["attestation_failed"] == 1
    assert settings.persist is not None and not settings.persist.exists()


def test_reported_tcb_below_the_minimum_logs_tcb_too_old(
    settings: AttestSettings, kbs_store: Store, chip: SnpFirmware
) -> None:
    high = TcbVersion(bootloader=255, tee=255, snp=255, microcode=255)
    kbs_store.set_reference_values(ReferenceValues(
        measurements=frozenset({measure_boot(ARCHIVE, MEMORY)}),
        minimum_tcb={chip.generation: high}))
    line = boot(settings).lines[-1]
    assert line.startswith("attestation failed: the key broker refused the evidence: 401 "
                           "AttestationFailed: TcbTooOld: REPORTED_TCB (")
    assert f"is below the {chip.generation.value} minimum ({high})" in line


def test_resource_policy_refusal_logs_policy_deny_with_the_measurements(
    settings: AttestSettings, kbs_store: Store
) -> None:
    resource = ResourcePath("default", "sample", "test")
    measurement = measure_boot(ARCHIVE, MEMORY)
    kbs_store.set_policy(resource, ResourcePolicy(measurements=frozenset({b"\xab" * 48})))
    try:
        line = boot(settings).lines[-1]
    finally:
        kbs_store.set_policy(resource, ResourcePolicy(measurements=frozenset({measurement})))
    assert line == (
        "attestation failed: the key broker refused resource default/sample/test: 403 "
        f"PolicyDeny: resource default/sample/test: measurement {measurement.hex()[:16]}... "
        "may not read this resource (its policy admits abababababababab...); /persist stays "
        "sealed")


def test_no_reference_measurement_logs_policy_deny(
    settings: AttestSettings, kbs_store: Store
) -> None:
    kbs_store.set_reference_values(ReferenceValues())
    assert boot(settings).lines[-1] == (
        "attestation failed: the key broker refused the evidence: 401 PolicyDeny: "
        "no reference measurement is configured; /persist stays sealed")


def test_wrong_measurement_with_require_stops_the_boot(
    settings: AttestSettings, kbs_store: Store
) -> None:
    kbs_store.set_reference_values(ReferenceValues(measurements=frozenset({bytes(48)})))
    with pytest.raises(BootError, match="refused the evidence") as info:
        boot(replace(settings, mode=AttestMode.REQUIRE))
    assert "\n" not in str(info.value)


def test_unreachable_proxy_is_reported(settings: AttestSettings, tmp_path: Path) -> None:
    run = boot(replace(settings, aproxy=tmp_path / "nobody.sock"))
    assert not run.has_persist()
    assert "cannot reach the attestation proxy" in run.lines[-1]


def test_unreachable_proxy_is_reported_before_a_chip_is_created(
    settings: AttestSettings, tmp_path: Path
) -> None:
    state = tmp_path / "new-chip"
    run = boot(replace(settings, aproxy=tmp_path / "nobody.sock", snp_state=state))
    assert run.lines == [f"attestation failed: cannot reach the attestation proxy at "
                         f"{tmp_path / 'nobody.sock'}: No such file or directory; /persist "
                         "stays sealed"]
    assert not state.exists()


def test_secret_too_short_for_a_store_is_not_mounted_and_no_store_is_written(
    settings: AttestSettings, kbs_store: Store
) -> None:
    path = ResourcePath("default", "sample", "test")
    kbs_store.set_resource(path, b"12345678")
    try:
        run = boot(settings).seal()
    finally:
        kbs_store.set_resource(path, SECRET)
    assert not run.has_persist() and not run.driver.mounted
    assert run.counters["persist_not_mounted"] == 1 and run.counters["persist_seal_failed"] == 0
    assert run.lines[-1] == (
        f"persistent store {settings.persist} cannot be keyed with the released secret: "
        "not mounted (a 8-byte secret is too short to key a store (at least 16 bytes))")
    assert settings.persist is not None and not settings.persist.exists()


def test_store_sealed_with_another_key_is_not_mounted_and_left_untouched(
    settings: AttestSettings,
) -> None:
    assert settings.persist is not None
    write_store(settings.persist, secrets.token_bytes(32), StoreContents(9, ()))
    before = settings.persist.read_bytes(), settings.persist.stat().st_mtime_ns
    run = boot(settings).seal()
    assert not run.has_persist() and not run.driver.mounted
    assert run.lines[-1].startswith(
        f"persistent store {settings.persist} is corrupted or sealed with another key: "
        "not mounted")
    assert run.counters["persist_not_mounted"] == 1
    assert (settings.persist.read_bytes(), settings.persist.stat().st_mtime_ns) == before


def test_corrupted_store_with_require_stops_the_boot(settings: AttestSettings) -> None:
    assert settings.persist is not None
    settings.persist.write_bytes(b"garbage" * 20)
    with pytest.raises(BootError, match="corrupted or sealed with another key"):
        boot(replace(settings, mode=AttestMode.REQUIRE))
    assert settings.persist.read_bytes() == b"garbage" * 20


def test_archive_that_already_has_persist_is_not_mounted(settings: AttestSettings) -> None:
    run = Boot(AttestationDriver(settings, ARCHIVE, MEMORY))
    run.fs.mkdir("/persist")
    run.mount().seal()
    assert not run.driver.mounted
    assert "cannot mount" in run.lines[-1]
    assert settings.persist is not None and not settings.persist.exists()


def test_missing_chip_is_created_and_the_log_says_so(settings: AttestSettings,
                                                     tmp_path: Path) -> None:
    state = tmp_path / "new-chip"
    run = boot(replace(settings, snp_state=state, chip_key_size=2048))
    assert run.lines[0] == (f"no emulated SNP chip in {state}: creating one (a key broker "
                            f"must trust its new root, {state / 'ark.pem'})")
    assert run.lines[1].startswith(f"emulated SNP chip created in {state}: Milan")
    assert SnpFirmware.open(state).chip_id  # a whole chip
    # The broker trusts the other chip's ARK only: this one's evidence is refused.
    assert run.lines[-1].startswith("attestation failed:")


def test_corrupt_chip_state_is_reported_not_replaced(settings: AttestSettings,
                                                     tmp_path: Path) -> None:
    state = tmp_path / "bad-chip"
    state.mkdir()
    (state / "chip.json").write_text("{}")
    run = boot(replace(settings, snp_state=state))
    assert "the emulated SNP chip in" in run.lines[-1] and "is unusable" in run.lines[-1]
    assert os.listdir(state) == ["chip.json"]


def _key_substituting_proxy(path: Path) -> threading.Thread:
    """One connection of a hostile proxy: it asks for [Challenge] alone, with a key of
    its own and a nonce as the challenge (r01), then waits for the SVSM to hang up."""
    listener = bind_unix(path)

    def serve() -> None:
        with listener, listener.accept()[0] as conn:
            receive_message(conn, NegotiationRequest)
            theirs = bytes(range(132)) + secrets.token_bytes(32)
            send_message(conn, NegotiationResponse(theirs, (NegotiationParam.CHALLENGE,)))
            while conn.recv(4096):
                pass

    thread = threading.Thread(target=serve)
    thread.start()
    return thread


def test_proxy_negotiating_params_without_the_key_is_refused_in_the_boot_log(
    settings: AttestSettings, tmp_path: Path
) -> None:
    directory = Path(tempfile.mkdtemp(prefix="evil-"))  # short: AF_UNIX paths are < 108 bytes
    try:
        thread = _key_substituting_proxy(directory / "s")
        run = boot(replace(settings, aproxy=directory / "s"))
        thread.join()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert not run.has_persist()
    assert run.counters["attestation_failed"] == 1
    assert run.lines[-1] == (
        "attestation failed: negotiation refused: parameters [Challenge] do not bind the "
        "SVSM's key: EcPublicKeyBytes and Challenge must each appear exactly once; "
        "/persist stays sealed")


def _trickling_proxy(path: Path, stop: threading.Event) -> threading.Thread:
    """A proxy that announces a 1 MiB NegotiationResponse and then sends one byte every
    0.1 s, at most 60 of them: each gap is far inside any per-read limit."""
    listener = bind_unix(path)

    def serve() -> None:
        with listener, listener.accept()[0] as conn:
            receive_message(conn, NegotiationRequest)
            conn.sendall((1 << 20).to_bytes(8, "little"))
            for _ in range(60):
                if stop.wait(0.1):
                    return
                try:
                    conn.sendall(b" ")
                except OSError:  # the SVSM gave up and closed
                    return

    thread = threading.Thread(target=serve)
    thread.start()
    return thread


def test_trickling_proxy_is_cut_at_the_exchange_deadline(
    settings: AttestSettings, tmp_path: Path
) -> None:
    # r15: every read had its own limit and none for the whole exchange, so a byte every
    # 1.5 s held --attest=optional forever; here a byte every 0.1 s under a 1 s deadline
    directory = Path(tempfile.mkdtemp(prefix="slow-"))  # short: AF_UNIX paths are < 108 bytes
    stop = threading.Event()
    try:
        thread = _trickling_proxy(directory / "s", stop)
        run = boot(replace(settings, aproxy=directory / "s", timeout=1.0))
        stop.set()
        thread.join()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert not run.has_persist()
    assert run.counters["attestation_failed"] == 1
    assert run.lines[-1] == (
        f"attestation failed: the exchange with the attestation proxy at {directory / 's'} "
        "did not complete within 1 s; /persist stays sealed")


def _forms(data: bytes) -> list[bytes]:
    out = [data, data.hex().encode(), data.hex().upper().encode(),
           base64.b64encode(data), base64.urlsafe_b64encode(data)]
    return out + [f.rstrip(b"=") for f in out[3:]]


def test_no_secret_or_store_plaintext_reaches_any_output(
    settings: AttestSettings, kbs_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert settings.persist is not None
    write_store(settings.persist, SECRET, StoreContents(1, (PackItEntry("/m", MARKER),)))
    text: list[str] = []
    ok = boot(settings).seal()
    text += ok.lines
    assert ok.counters["persist_sealed"] == 1
    kbs_store.set_reference_values(ReferenceValues(measurements=frozenset({bytes(48)})))
    text += boot(settings).lines
    try:
        boot(replace(settings, mode=AttestMode.REQUIRE))
    except BootError as exc:
        text.append(str(exc))
    text.append(caplog.text)
    output = "\n".join(text).encode()
    for form in _forms(SECRET) + _forms(MARKER)[:1]:
        assert form not in output
