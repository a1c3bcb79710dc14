"""Unit tests of the SEV-SNP ATTESTATION_REPORT codec (copra.hw.snp_report)."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.hw.snp_report import (
    REPORT_SIZE,
    AttestationReport,
    FirmwareVersion,
    Generation,
    GuestPolicy,
    InvalidFieldError,
    KeyInfo,
    PlatformInfo,
    PolicyFlags,
    ReportFormatError,
    ReportLengthError,
    ReportVersionError,
    ReservedFieldError,
    Signature,
    SigningKey,
    TcbLayout,
    TcbVersion,
    UnknownGenerationError,
    decode_report_file,
    der_ia5string,
    der_integer,
    parse_der_ia5string,
    parse_der_integer,
    parse_hwid,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "snp"
MILAN_V2 = VECTORS / "trustee" / "test-report.bin"
MILAN_V2_HEX = VECTORS / "virtee-sev" / "report_milan.hex"
MILAN_V3_VLEK = VECTORS / "trustee" / "test-vlek-report.bin"
GENOA_V3 = VECTORS / "derived" / "genoa_v3_report_from_e2e-evidence.bin"
GENUINE = [MILAN_V2, MILAN_V3_VLEK, GENOA_V3]


def _raw(path: Path) -> bytes:
    return decode_report_file(path.read_bytes())


def _set(data: bytes, offset: int, value: bytes) -> bytes:
    out = bytearray(data)
    out[offset : offset + len(value)] = value
    return bytes(out)


# -- genuine vectors ----------------------------------------------------------------------


@pytest.mark.parametrize("path", [*GENUINE, MILAN_V2_HEX], ids=lambda p: p.name)
def test_parse_genuine_report_round_trips_exactly(path: Path) -> None:
    raw = _raw(path)
    assert AttestationReport.parse(raw).to_bytes() == raw


def test_parse_milan_v2_report_decodes_fields_at_their_offsets() -> None:
    report = AttestationReport.parse(MILAN_V2.read_bytes())
    assert report.version == 2
    assert report.guest_svn == 4
    assert report.policy == GuestPolicy(abi_major=0, abi_minor=0x1F, flags=PolicyFlags.SMT)
    assert report.family_id == bytes([1]) + bytes(15)
    assert report.image_id == bytes([2]) + bytes(15)
    assert report.vmpl == 0
    assert report.signature_algo == 1
    assert report.current_tcb == TcbVersion(bootloader=3, tee=0, snp=8, microcode=206)
    assert report.reported_tcb == TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
    assert report.platform_info == PlatformInfo.SMT_EN
    assert report.key_info == KeyInfo(signing_key=SigningKey.VCEK)
    assert report.report_data[:4] == bytes.fromhex("ec6c52d7")
    assert report.measurement[:4] == bytes.fromhex("a1f39304")
    assert report.report_id_ma == b"\xff" * 32
    assert report.chip_id[:4] == bytes.fromhex("c38427a3")
    assert report.cpuid_fam_id is None and report.launch_mit_vector is None
    assert report.current_version == FirmwareVersion(major=1, minor=52, build=4)
    assert report.signature.r & 0xFFFF == 0xEB06


def test_parse_milan_v3_vlek_report_reads_cpuid_and_vlek_key() -> None:
    report = AttestationReport.parse(MILAN_V3_VLEK.read_bytes())
    assert (report.version, report.vmpl) == (3, 1)
    assert (report.cpuid_fam_id, report.cpuid_mod_id, report.cpuid_step) == (0x19, 0x01, 0x01)
    assert report.generation is Generation.MILAN
    assert report.key_info.signing_key is SigningKey.VLEK
    assert report.chip_id == bytes(64)
    assert report.reported_tcb == TcbVersion(bootloader=4, tee=0, snp=24, microcode=217)


def test_parse_genoa_v3_report_picks_milan_genoa_layout_from_cpuid() -> None:
    report = AttestationReport.parse(GENOA_V3.read_bytes())
    assert report.generation is Generation.GENOA
    assert report.tcb_layout is TcbLayout.MILAN_GENOA
    assert report.reported_tcb == TcbVersion(bootloader=10, tee=0, snp=23, microcode=25)


def test_decode_report_file_hex_text_equals_raw_bytes() -> None:
    text = MILAN_V2_HEX.read_bytes()
    raw = decode_report_file(text)
    assert raw.hex().upper().encode() == text.strip()
    assert decode_report_file(b"  " + text.lower() + b"\n") == raw


def test_decode_report_file_wrong_size_raises_length_error() -> None:
    with pytest.raises(ReportLengthError):
        decode_report_file(b"00" * 100)
    with pytest.raises(ReportLengthError):
        decode_report_file(b"zz" * REPORT_SIZE)


# -- rejection of malformed input ---------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, REPORT_SIZE - 1, REPORT_SIZE + 1])
def test_parse_wrong_length_raises_length_error(size: int) -> None:
    with pytest.raises(ReportLengthError):
        AttestationReport.parse(bytes(size))


@pytest.mark.parametrize("version", [0, 1, 6, 0xFFFF_FFFF])
def test_parse_unknown_version_raises_version_error(version: int) -> None:
    raw = _set(MILAN_V2.read_bytes(), 0, version.to_bytes(4, "little"))
    with pytest.raises(ReportVersionError):
        AttestationReport.parse(raw)


@pytest.mark.parametrize(
    ("path", "offset"),
    [
        (MILAN_V2, 0x04C),  # reserved after KEY_INFO
        (MILAN_V2, 0x188),  # CPUID bytes are reserved in v2
        (MILAN_V3_VLEK, 0x18B),  # reserved after CPUID_STEP
        (MILAN_V3_VLEK, 0x19F),
        (MILAN_V2, 0x1EB),  # after CURRENT_MAJOR
        (MILAN_V2, 0x1EF),  # after COMMITTED_MAJOR
        (MILAN_V3_VLEK, 0x1F8),  # mitigation vectors are reserved below v5
        (MILAN_V3_VLEK, 0x29F),
        (MILAN_V2, 0x330),  # signature tail, first byte after S (72 bytes at 0x2E8)
        (MILAN_V2, REPORT_SIZE - 1),
        (MILAN_V2, 0x038 + 3),  # CURRENT_TCB reserved byte (Milan layout)
        (MILAN_V2, 0x180 + 5),  # REPORTED_TCB reserved byte
        (MILAN_V2, 0x1E0 + 2),  # COMMITTED_TCB reserved byte
        (MILAN_V2, 0x1F0 + 4),  # LAUNCH_TCB reserved byte
    ],
)
def test_parse_nonzero_reserved_byte_raises_reserved_error(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] |= 0x01
    with pytest.raises(ReservedFieldError):
        AttestationReport.parse(bytes(raw))


def test_parse_policy_without_reserved_one_bit_raises_reserved_error() -> None:
    raw = _set(MILAN_V2.read_bytes(), 0x008, (0x1001F).to_bytes(8, "little"))
    with pytest.raises(ReservedFieldError):
        AttestationReport.parse(raw)


def test_parse_policy_bit_26_raises_reserved_error() -> None:
    raw = _set(MILAN_V2.read_bytes(), 0x008, (0x30000 | 1 << 26).to_bytes(8, "little"))
    with pytest.raises(ReservedFieldError):
        AttestationReport.parse(raw)


@pytest.mark.parametrize("bit", [6, 8, 63])
def test_parse_reserved_platform_info_bit_raises_reserved_error(bit: int) -> None:
    raw = _set(MILAN_V2.read_bytes(), 0x040, (1 << bit).to_bytes(8, "little"))
    with pytest.raises(ReservedFieldError):
        AttestationReport.parse(raw)


@pytest.mark.parametrize("key", [2, 3, 6])
def test_parse_reserved_signing_key_value_raises_invalid_field(key: int) -> None:
    raw = _set(MILAN_V2.read_bytes(), 0x048, (key << 2).to_bytes(4, "little"))
    with pytest.raises(InvalidFieldError):
        AttestationReport.parse(raw)


def test_parse_key_info_bit_5_raises_reserved_error() -> None:
    raw = _set(MILAN_V2.read_bytes(), 0x048, (1 << 5).to_bytes(4, "little"))
    with pytest.raises(ReservedFieldError):
        AttestationReport.parse(raw)


def test_parse_v3_unknown_cpu_family_raises_unknown_generation() -> None:
    raw = _set(MILAN_V3_VLEK.read_bytes(), 0x188, bytes([0x17]))
    with pytest.raises(UnknownGenerationError):
        AttestationReport.parse(raw)


def test_parse_unknown_family_with_explicit_layout_succeeds() -> None:
    raw = _set(MILAN_V3_VLEK.read_bytes(), 0x188, bytes([0x17]))
    report = AttestationReport.parse(raw, layout=TcbLayout.MILAN_GENOA)
    assert report.cpuid_fam_id == 0x17 and report.generation is None


def test_parse_milan_report_forced_to_turin_layout_raises_reserved_error() -> None:
    # bl=3 tee=0 [0 0 0 0] snp=8 ucode=115 read as Turin puts snp=8 in reserved byte 6.
    with pytest.raises(ReservedFieldError):
        AttestationReport.parse(MILAN_V2.read_bytes(), layout=TcbLayout.TURIN)


# -- TCB_VERSION layouts ------------------------------------------------------------------


def test_tcb_milan_layout_places_bytes_bl_tee_reserved_snp_ucode() -> None:
    tcb = TcbVersion(bootloader=1, tee=2, snp=3, microcode=4)
    assert tcb.to_bytes() == bytes([1, 2, 0, 0, 0, 0, 3, 4])
    assert TcbVersion.from_bytes(tcb.to_bytes(), TcbLayout.MILAN_GENOA) == tcb


def test_tcb_turin_layout_places_bytes_fmc_bl_tee_snp_reserved_ucode() -> None:
    tcb = TcbVersion(fmc=5, bootloader=1, tee=2, snp=3, microcode=4)
    assert tcb.layout is TcbLayout.TURIN
    assert tcb.to_bytes() == bytes([5, 1, 2, 3, 0, 0, 0, 4])
    assert TcbVersion.from_int(tcb.to_int(), TcbLayout.TURIN) == tcb


def test_parse_turin_family_report_decodes_turin_tcb() -> None:
    base = AttestationReport.parse(MILAN_V3_VLEK.read_bytes())
    turin_tcb = TcbVersion(fmc=1, bootloader=2, tee=3, snp=4, microcode=5)
    report = _replace(
        base,
        cpuid_fam_id=0x1A,
        cpuid_mod_id=0x02,
        current_tcb=turin_tcb,
        reported_tcb=turin_tcb,
        committed_tcb=turin_tcb,
        launch_tcb=turin_tcb,
    )
    raw = report.to_bytes()
    assert raw[0x180:0x188] == bytes([1, 2, 3, 4, 0, 0, 0, 5])
    parsed = AttestationReport.parse(raw)
    assert parsed.generation is Generation.TURIN and parsed.reported_tcb == turin_tcb


def test_tcb_meets_compares_every_component() -> None:
    tcb = TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
    assert tcb.meets(TcbVersion(bootloader=3, tee=0, snp=8, microcode=115))
    assert tcb.meets(TcbVersion(bootloader=2, tee=0, snp=1, microcode=0))
    assert not tcb.meets(TcbVersion(bootloader=3, tee=0, snp=9, microcode=0))
    assert not tcb.meets(TcbVersion(bootloader=0, tee=1, snp=0, microcode=0))


@pytest.mark.parametrize(
    ("family", "model", "expected"),
    [
        (0x19, 0x01, Generation.MILAN),
        (0x19, 0x11, Generation.GENOA),
        (0x19, 0xA0, Generation.GENOA),
        (0x19, 0x30, None),
        (0x1A, 0x02, Generation.TURIN),
        (0x17, 0x31, None),
    ],
)
def test_generation_from_cpuid_follows_family_model_table(
    family: int, model: int, expected: Generation | None
) -> None:
    assert Generation.from_cpuid(family, model) is expected


def test_generation_from_product_name_accepts_stepping_suffix() -> None:
    assert Generation.from_product_name("Milan-B0") is Generation.MILAN
    assert Generation.from_product_name("Genoa") is Generation.GENOA
    assert Generation.from_product_name("Rome") is None


# -- v5 and the encoder -------------------------------------------------------------------


def test_v5_report_round_trips_mitigation_vectors_at_0x1f8_and_0x200() -> None:
    base = AttestationReport.parse(GENOA_V3.read_bytes())
    report = _replace(
        base,
        version=5,
        launch_mit_vector=0x1122334455667788,
        current_mit_vector=0x99,
        policy=GuestPolicy(flags=PolicyFlags.SMT | PolicyFlags.PAGE_SWAP_DISABLE),
        platform_info=PlatformInfo.SMT_EN | PlatformInfo.SEV_TIO_EN,
    )
    raw = report.to_bytes()
    assert raw[0x1F8:0x200] == (0x1122334455667788).to_bytes(8, "little")
    assert raw[0x200:0x208] == (0x99).to_bytes(8, "little")
    assert AttestationReport.parse(raw) == report


def test_construct_v2_report_with_cpuid_raises_value_error() -> None:
    base = AttestationReport.parse(MILAN_V2.read_bytes())
    with pytest.raises(ValueError):
        _replace(base, cpuid_fam_id=0x19, cpuid_mod_id=1, cpuid_step=1)


def test_construct_report_with_mixed_tcb_layouts_raises_value_error() -> None:
    base = AttestationReport.parse(MILAN_V2.read_bytes())
    turin = TcbVersion(fmc=0, bootloader=0, tee=0, snp=0, microcode=0)
    with pytest.raises(ValueError):
        _replace(base, launch_tcb=turin)


def test_signed_bytes_are_the_first_0x2a0_bytes() -> None:
    raw = MILAN_V2.read_bytes()
    assert AttestationReport.parse(raw).signed_bytes() == raw[:0x2A0]


def test_signature_components_are_72_byte_little_endian_fields() -> None:
    base = AttestationReport.parse(MILAN_V2.read_bytes())
    raw = base.with_signature(Signature(r=1, s=(1 << 575))).to_bytes()
    assert raw[0x2A0:0x2E8] == bytes([1]) + bytes(71)
    assert raw[0x2E8:0x330] == bytes(71) + bytes([0x80])
    assert raw[0x330:] == bytes(REPORT_SIZE - 0x330)


# -- DER helpers for the VCEK extensions --------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 0x7F, 0x80, 0xD9, 0xFF, 0x1234])
def test_der_integer_round_trips(value: int) -> None:
    assert parse_der_integer(der_integer(value)) == value


def test_der_integer_matches_amd_encoding_of_217() -> None:
    assert der_integer(217) == bytes.fromhex("020200d9")


@pytest.mark.parametrize("raw", ["0201", "020100ff", "0202007f", "0301ff", ""])
def test_parse_der_integer_malformed_raises_value_error(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_der_integer(bytes.fromhex(raw))


def test_der_ia5string_round_trips_product_name() -> None:
    assert der_ia5string("Milan-B0") == bytes.fromhex("16084d696c616e2d4230")
    assert parse_der_ia5string(der_ia5string("Genoa")) == "Genoa"


@pytest.mark.parametrize("size", [8, 64])
def test_parse_hwid_accepts_raw_and_octet_string_forms(size: int) -> None:
    chip = bytes(range(size))
    assert parse_hwid(chip) == chip
    assert parse_hwid(bytes([0x04, size]) + chip) == chip


def test_parse_hwid_wrong_length_raises_value_error() -> None:
    with pytest.raises(ValueError):
        parse_hwid(bytes(32))


# -- property-based -----------------------------------------------------------------------


def _replace(report: AttestationReport, **changes: object) -> AttestationReport:
    return dataclasses.replace(report, **changes)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
def test_parse_random_report_sized_bytes_raises_only_codec_errors(data: bytes) -> None:
    try:
        report = AttestationReport.parse(data)
    except ReportFormatError:
        return
    assert report.to_bytes() == data


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(GENUINE),
    edits=st.lists(
        st.tuples(st.integers(0, REPORT_SIZE - 1), st.integers(0, 255)), min_size=1, max_size=8
    ),
)
def test_parse_mutated_genuine_report_raises_only_codec_errors(
    base: Path, edits: list[tuple[int, int]]
) -> None:
    raw = bytearray(base.read_bytes())
    for offset, value in edits:
        raw[offset] = value
    try:
        report = AttestationReport.parse(bytes(raw))
    except ReportFormatError:
        return
    assert report.to_bytes() == bytes(raw)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000))
def test_parse_random_length_bytes_raises_only_codec_errors(data: bytes) -> None:
    with contextlib.suppress(ReportFormatError):
        AttestationReport.parse(data)


def _byte_fields(draw: st.DrawFn) -> dict[str, bytes]:
    sizes = {
        "family_id": 16,
        "image_id": 16,
        "report_data": 64,
        "measurement": 48,
        "host_data": 32,
        "id_key_digest": 48,
        "author_key_digest": 48,
        "report_id": 32,
        "report_id_ma": 32,
        "chip_id": 64,
    }
    return {k: draw(st.binary(min_size=n, max_size=n)) for k, n in sizes.items()}


@st.composite
def valid_reports(draw: st.DrawFn) -> AttestationReport:
    version = draw(st.sampled_from([2, 3, 4, 5]))
    byte = st.integers(0, 255)
    if version == 2:
        layout = draw(st.sampled_from(list(TcbLayout)))
        cpuid: tuple[int | None, ...] = (None, None, None)
    else:
        family = draw(st.sampled_from([0x19, 0x1A]))
        layout = TcbLayout.MILAN_GENOA if family == 0x19 else TcbLayout.TURIN
        cpuid = (family, draw(byte), draw(byte))

    def tcb() -> TcbVersion:
        fmc = draw(byte) if layout is TcbLayout.TURIN else None
        return TcbVersion(
            bootloader=draw(byte), tee=draw(byte), snp=draw(byte), microcode=draw(byte), fmc=fmc
        )

    def version_of() -> FirmwareVersion:
        return FirmwareVersion(major=draw(byte), minor=draw(byte), build=draw(byte))

    flags = PolicyFlags(draw(st.integers(0, 0x3FF)) << 16 & ~(1 << 17) & 0x3FF0000)
    mit = st.integers(0, (1 << 64) - 1)
    u32 = st.integers(0, 0xFFFF_FFFF)
    report = AttestationReport(
        version=version,
        guest_svn=draw(u32),
        policy=GuestPolicy(abi_major=draw(byte), abi_minor=draw(byte), flags=flags),
        vmpl=draw(u32),
        signature_algo=draw(u32),
        current_tcb=tcb(),
        platform_info=PlatformInfo(draw(st.integers(0, 0xFF)) & 0xBF),
        key_info=KeyInfo(
            signing_key=draw(st.sampled_from(list(SigningKey))),
            author_key_en=draw(st.booleans()),
            mask_chip_key=draw(st.booleans()),
        ),
        reported_tcb=tcb(),
        cpuid_fam_id=cpuid[0],
        cpuid_mod_id=cpuid[1],
        cpuid_step=cpuid[2],
        committed_tcb=tcb(),
        current_version=version_of(),
        committed_version=version_of(),
        launch_tcb=tcb(),
        launch_mit_vector=draw(mit) if version >= 5 else None,
        current_mit_vector=draw(mit) if version >= 5 else None,
        signature=Signature(
            r=draw(st.integers(0, (1 << 576) - 1)), s=draw(st.integers(0, (1 << 576) - 1))
        ),
        **_byte_fields(draw),
    )
    return report


@settings(max_examples=300, deadline=None)
@given(valid_reports())
def test_encode_then_decode_valid_report_is_identity(report: AttestationReport) -> None:
    raw = report.to_bytes()
    assert len(raw) == REPORT_SIZE
    parsed = AttestationReport.parse(raw, layout=report.tcb_layout)
    assert parsed == report
    assert parsed.to_bytes() == raw


# --- TcbVersion.parse: the one --min-tcb spelling ---------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "bl=3,tee=0,snp=8,ucode=115",
        "bootloader=3,tee=0,snp=8,microcode=115",
        "bootloader=3,tee=0,snp=8,ucode=0x73",
        "bl=3 tee=0 snp=8 ucode=115",
        " ucode=115 , snp=8,tee=0,bl=3 ",
    ],
    ids=["short", "long", "mixed-hex", "str-form", "any-order"],
)
def test_tcb_parse_accepts_short_and_long_component_names(text: str) -> None:
    assert TcbVersion.parse(text) == TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)


@given(st.tuples(*[st.integers(0, 255)] * 4), st.none() | st.integers(0, 255))
def test_tcb_parse_of_str_is_identity(parts: tuple[int, int, int, int], fmc: int | None) -> None:
    tcb = TcbVersion(*parts, fmc=fmc)
    assert TcbVersion.parse(str(tcb)) == tcb


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bl=3,bootloader=4,tee=0,snp=8,ucode=1", "bootloader is given twice"),
        ("bl=3,tee=0,snp=8", "missing microcode"),
        ("bl=3,tee=0,snp=8,ucode=1,spl=2", "'spl=2' is not NAME=N"),
        ("bl=3,tee,snp=8,ucode=1", "'tee' is not NAME=N"),
        ("bl=3,tee=x,snp=8,ucode=1", "'x' is not a number"),
        ("bl=256,tee=0,snp=8,ucode=1", "not a byte"),
    ],
    ids=["twice", "missing", "unknown", "no-value", "not-a-number", "too-big"],
)
def test_tcb_parse_malformed_text_raises_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TcbVersion.parse(text)
