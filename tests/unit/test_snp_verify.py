"""Unit tests of the SEV-SNP report verifier (copra.attest.verify).

Genuine AMD reports and certificates come from tests/vectors/snp; reports with chosen
defects are signed by an emulated chip (RSA-2048 ARK/ASK to keep the suite fast).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from copra.attest.verify import (
    AMD_ARK_FINGERPRINTS,
    CertificateExpired,
    CertificateFormatError,
    CertificateNotYetValid,
    ChainError,
    ChipIdMismatch,
    DebugNotAllowed,
    HostDataMismatch,
    MalformedReport,
    MeasurementMismatch,
    Policy,
    ProductMismatch,
    ReportDataMismatch,
    SignatureError,
    SigningKeyMismatch,
    TcbMismatch,
    TcbTooOld,
    UntrustedRoot,
    VerificationError,
    Verifier,
    VmplMismatch,
    amd_trust_roots,
    fingerprint,
    load_certificates,
)
from copra.hw.snp import SnpFirmware, SnpGuest
from copra.hw.snp_report import (
    AttestationReport,
    Generation,
    GuestPolicy,
    KeyInfo,
    PolicyFlags,
    SigningKey,
    TcbVersion,
    decode_report_file,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "snp"
MILAN_BUNDLE = VECTORS / "trustee" / "milan_ask_ark_asvk.pem"
GENOA_BUNDLE = VECTORS / "trustee" / "genoa_ask_ark_asvk.pem"
WHEN = datetime(2025, 6, 1, tzinfo=UTC)


def fixed(when: datetime) -> Callable[[], datetime]:
    return lambda: when


@dataclasses.dataclass(frozen=True)
class Case:
    report: Path
    leaf: Path
    chain: Path


CASES = {
    "trustee-milan-v2-vcek": Case(
        VECTORS / "trustee" / "test-report.bin", VECTORS / "trustee" / "test-vcek.der", MILAN_BUNDLE
    ),
    "trustee-milan-v3-vlek": Case(
        VECTORS / "trustee" / "test-vlek-report.bin",
        VECTORS / "trustee" / "test-vlek.der",
        MILAN_BUNDLE,
    ),
    "virtee-milan-v2-hex": Case(
        VECTORS / "virtee-sev" / "report_milan.hex",
        VECTORS / "virtee-sev" / "vcek_milan.der",
        VECTORS / "virtee-sev" / "cert_chain_milan",
    ),
    "trustee-genoa-v3": Case(
        VECTORS / "derived" / "genoa_v3_report_from_e2e-evidence.bin",
        VECTORS / "derived" / "genoa_vcek_from_e2e-evidence.der",
        GENOA_BUNDLE,
    ),
}
MILAN = CASES["trustee-milan-v2-vcek"]


def _report(case: Case) -> bytes:
    return decode_report_file(case.report.read_bytes())


@pytest.fixture(scope="module")
def amd() -> Verifier:
    return Verifier.with_amd_roots(clock=fixed(WHEN))


@pytest.fixture(scope="module")
def chip(tmp_path_factory: pytest.TempPathFactory) -> SnpFirmware:
    return SnpFirmware.create(tmp_path_factory.mktemp("chip") / "state", key_size=2048)


@pytest.fixture(scope="module")
def guest(chip: SnpFirmware) -> SnpGuest:
    g = chip.launch_start(host_data=bytes(range(32)))
    g.launch_update(0x10000, b"copra kernel image")
    g.launch_finish()
    return g


@pytest.fixture(scope="module")
def own(chip: SnpFirmware) -> Verifier:
    return Verifier([chip.ark])


def _resign(chip: SnpFirmware, raw: bytes, **changes: object) -> bytes:
    report = dataclasses.replace(AttestationReport.parse(raw), **changes)  # type: ignore[arg-type]
    return chip.sign_report(report)


# -- genuine AMD evidence -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_verify_genuine_amd_report_with_its_certificates_succeeds(amd: Verifier, name: str) -> None:
    case = CASES[name]
    raw = _report(case)
    result = amd.verify(raw, case.leaf.read_bytes(), case.chain.read_bytes())
    assert result.raw == raw
    assert result.report.to_bytes() == raw
    assert result.root.subject.rfc4514_string().startswith("CN=ARK-")


def test_verify_vlek_report_reports_vlek_signing_key(amd: Verifier) -> None:
    case = CASES["trustee-milan-v3-vlek"]
    result = amd.verify(_report(case), case.leaf.read_bytes(), case.chain.read_bytes())
    assert result.signing_key is SigningKey.VLEK
    assert result.intermediate.subject.rfc4514_string().startswith("CN=SEV-VLEK-Milan")


def test_verify_genoa_report_names_genoa_generation(amd: Verifier) -> None:
    case = CASES["trustee-genoa-v3"]
    result = amd.verify(_report(case), case.leaf.read_bytes(), case.chain.read_bytes())
    assert result.generation is Generation.GENOA
    assert result.product_name == "Genoa"


def test_verify_accepts_pem_leaf_and_certificate_list_chain(amd: Verifier) -> None:
    leaf = load_certificates(MILAN.leaf.read_bytes())[0]
    ask, _ark, _asvk = load_certificates(MILAN.chain.read_bytes())
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
    ask_der = ask.public_bytes(serialization.Encoding.DER)
    amd.verify(_report(MILAN), leaf_pem, [ask_der])
    amd.verify(_report(MILAN), leaf, [ask])


def test_amd_trust_roots_match_pinned_fingerprints() -> None:
    roots = amd_trust_roots()
    assert sorted(fingerprint(r) for r in roots) == sorted(AMD_ARK_FINGERPRINTS.values())
    names = {r.subject.rfc4514_string().split(",")[0] for r in roots}
    assert names == {"CN=ARK-Milan", "CN=ARK-Genoa", "CN=ARK-Turin"}


# -- every signed bit matters -------------------------------------------------------------


def test_verify_report_with_any_signed_bit_flipped_is_rejected(amd: Verifier) -> None:
    raw = _report(MILAN)
    leaf = load_certificates(MILAN.leaf.read_bytes())[0]
    chain = load_certificates(MILAN.chain.read_bytes())
    accepted = []
    for offset in range(0x2A0):
        for bit in range(8):
            mutated = bytearray(raw)
            mutated[offset] ^= 1 << bit
            try:
                amd.verify(bytes(mutated), leaf, chain)
            except VerificationError:
                continue
            accepted.append((offset, bit))
    assert accepted == []


def test_verify_report_with_flipped_report_data_bit_raises_signature_error(
    amd: Verifier,
) -> None:
    raw = bytearray(_report(MILAN))
    raw[0x050] ^= 0x01
    with pytest.raises(SignatureError):
        amd.verify(bytes(raw), MILAN.leaf.read_bytes(), MILAN.chain.read_bytes())


@pytest.mark.parametrize("offset", [0x2A0, 0x2E7, 0x2E8, 0x32F])
def test_verify_report_with_flipped_signature_bit_raises_signature_error(
    amd: Verifier, offset: int
) -> None:
    raw = bytearray(_report(MILAN))
    raw[offset] ^= 0x01
    with pytest.raises(SignatureError):
        amd.verify(bytes(raw), MILAN.leaf.read_bytes(), MILAN.chain.read_bytes())


# -- chain failures -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"])
def test_verify_with_badly_signed_vcek_raises_chain_error(amd: Verifier, name: str) -> None:
    leaf = (VECTORS / "trustee" / name).read_bytes()
    with pytest.raises(ChainError):
        amd.verify(_report(MILAN), leaf, MILAN.chain.read_bytes())


def test_verify_with_chain_missing_ask_raises_chain_error(amd: Verifier) -> None:
    _ask, ark, asvk = load_certificates(MILAN.chain.read_bytes())
    with pytest.raises(ChainError):
        amd.verify(_report(MILAN), MILAN.leaf.read_bytes(), [ark, asvk])


def test_verify_with_other_generations_chain_raises_chain_error(amd: Verifier) -> None:
    with pytest.raises(ChainError):
        amd.verify(_report(MILAN), MILAN.leaf.read_bytes(), GENOA_BUNDLE.read_bytes())


def test_verify_without_matching_trust_root_raises_untrusted_root() -> None:
    genoa_ark = load_certificates(GENOA_BUNDLE.read_bytes())[1]
    verifier = Verifier([genoa_ark], clock=fixed(WHEN))
    with pytest.raises(UntrustedRoot):
        verifier.verify(_report(MILAN), MILAN.leaf.read_bytes(), MILAN.chain.read_bytes())


def test_verify_vlek_report_with_vcek_leaf_raises_signing_key_mismatch(amd: Verifier) -> None:
    vlek_report = _report(CASES["trustee-milan-v3-vlek"])
    with pytest.raises(SigningKeyMismatch):
        amd.verify(vlek_report, MILAN.leaf.read_bytes(), MILAN.chain.read_bytes())


def test_verify_with_another_chips_vcek_raises_signature_error(amd: Verifier) -> None:
    other = CASES["virtee-milan-v2-hex"]
    with pytest.raises(SignatureError):
        amd.verify(_report(MILAN), other.leaf.read_bytes(), MILAN.chain.read_bytes())


def test_verify_garbage_certificate_raises_certificate_format_error(amd: Verifier) -> None:
    with pytest.raises(CertificateFormatError):
        amd.verify(_report(MILAN), b"not a certificate", MILAN.chain.read_bytes())


def _duplicate_product_name(cert: x509.Certificate) -> bytes:
    """``cert``'s DER with its structVersion extension renamed productName (r03): the
    certificate still loads, but its extensions hold productName twice."""
    der = cert.public_bytes(serialization.Encoding.DER)
    struct_version = bytes.fromhex("06092b060104019c780101")  # OID 1.3.6.1.4.1.3704.1.1
    assert der.count(struct_version) == 1
    return der.replace(struct_version, bytes.fromhex("06092b060104019c780102"))


def test_load_certificates_duplicate_extension_raises_certificate_format_error(
    chip: SnpFirmware,
) -> None:
    with pytest.raises(CertificateFormatError, match=r"1\.3\.6\.1\.4\.1\.3704\.1\.2 appears twice"):
        load_certificates(_duplicate_product_name(chip.vcek))


def test_verify_vcek_with_duplicate_extension_raises_certificate_format_error(
    own: Verifier, chip: SnpFirmware, guest: SnpGuest
) -> None:
    bad = _duplicate_product_name(chip.vcek)
    with pytest.raises(CertificateFormatError, match="appears twice"):
        own.verify(guest.get_report(bytes(64), 0), bad, chip.cert_chain_pem())


def test_verify_certificate_object_with_duplicate_extension_raises_certificate_format_error(
    own: Verifier, chip: SnpFirmware, guest: SnpGuest
) -> None:
    bad = x509.load_der_x509_certificate(_duplicate_product_name(chip.vcek))
    with pytest.raises(CertificateFormatError, match="appears twice"):
        own.verify(guest.get_report(bytes(64), 0), bad, chip.cert_chain_pem())


def test_verify_truncated_report_raises_malformed_report(amd: Verifier) -> None:
    with pytest.raises(MalformedReport):
        amd.verify(_report(MILAN)[:-1], MILAN.leaf.read_bytes(), MILAN.chain.read_bytes())


def test_verifier_with_non_self_signed_root_raises_chain_error() -> None:
    ask = load_certificates(MILAN.chain.read_bytes())[0]
    with pytest.raises(ChainError):
        Verifier([ask])


def test_verify_chain_with_foreign_ark_of_same_name_raises_untrusted_root(
    amd: Verifier, chip: SnpFirmware, guest: SnpGuest
) -> None:
    raw = guest.get_report(bytes(64), 0)
    with pytest.raises(UntrustedRoot):
        amd.verify(raw, chip.vcek, [chip.ask, chip.ark])


def test_verify_leaf_signed_with_pss_salt_32_raises_chain_error(
    own: Verifier, chip: SnpFirmware, guest: SnpGuest
) -> None:
    ask_key = serialization.load_pem_private_key(
        (chip.state_dir / "ask.key").read_bytes(), password=None
    )
    assert isinstance(ask_key, rsa.RSAPrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(chip.vcek.subject)
        .issuer_name(chip.vcek.issuer)
        .public_key(chip.vcek.public_key())
        .serial_number(chip.vcek.serial_number)
        .not_valid_before(chip.vcek.not_valid_before_utc)
        .not_valid_after(chip.vcek.not_valid_after_utc)
    )
    for ext in chip.vcek.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    pss32 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=32)
    leaf = builder.sign(ask_key, hashes.SHA384(), rsa_padding=pss32)
    with pytest.raises(ChainError):
        own.verify(guest.get_report(bytes(64), 0), leaf, [chip.ask])


# -- bindings between report and certificate ----------------------------------------------


def test_verify_emulated_report_under_its_own_ark_succeeds(
    own: Verifier, chip: SnpFirmware, guest: SnpGuest
) -> None:
    result = own.verify(guest.get_report(bytes(64), 0), chip.vcek, chip.cert_chain_pem())
    assert result.report.chip_id == chip.chip_id


def test_verify_reported_tcb_differing_from_vcek_raises_tcb_mismatch(
    own: Verifier, chip: SnpFirmware, guest: SnpGuest
) -> None:
    tcb = dataclasses.replace(chip.tcb, snp=chip.tcb.snp + 1)
    raw = _resign(chip, guest.get_report(bytes(64), 0), reported_tcb=tcb)
    with pytest.raises(TcbMismatch) as info:
        own.verify(raw, chip.vcek, [chip.ask])
    assert info.value.component == "snp"


def test_verify_chip_id_differing_from_hwid_raises_chip_id_mismatch(
    own: Verifier, chip: SnpFirmware, guest: SnpGuest
) -> None:
    raw = _resign(chip, guest.get_report(bytes(64), 0), chip_id=bytes(64))
    with pytest.raises(ChipIdMismatch):
        own.verify(raw, chip.vcek, [chip.ask])


def test_verify_report_naming_other_generation_raises_product_mismatch(
    own: Verifier, chip: SnpFirmware, guest: SnpGuest
) -> None:
    raw = _resign(chip, guest.get_report(bytes(64), 0), cpuid_mod_id=0x11)  # Genoa model
    with pytest.raises(ProductMismatch):
        own.verify(raw, chip.vcek, [chip.ask])


def test_verify_unsigned_report_raises_signature_error(
    own: Verifier, chip: SnpFirmware, guest: SnpGuest
) -> None:
    raw = _resign(
        chip, guest.get_report(bytes(64), 0), key_info=KeyInfo(signing_key=SigningKey.NONE)
    )
    with pytest.raises(SignatureError):
        own.verify(raw, chip.vcek, [chip.ask])


def test_verify_unknown_signature_algorithm_raises_signature_error(
    own: Verifier, chip: SnpFirmware, guest: SnpGuest
) -> None:
    raw = _resign(chip, guest.get_report(bytes(64), 0), signature_algo=2)
    with pytest.raises(SignatureError):
        own.verify(raw, chip.vcek, [chip.ask])


# -- validity dates -----------------------------------------------------------------------


def test_verify_expired_vlek_raises_certificate_expired() -> None:
    case = CASES["trustee-milan-v3-vlek"]
    verifier = Verifier.with_amd_roots(clock=fixed(datetime(2026, 1, 1, tzinfo=UTC)))
    with pytest.raises(CertificateExpired):
        verifier.verify(_report(case), case.leaf.read_bytes(), case.chain.read_bytes())


def test_verify_before_vcek_issue_date_raises_certificate_not_yet_valid() -> None:
    verifier = Verifier.with_amd_roots(clock=fixed(datetime(2022, 1, 1, tzinfo=UTC)))
    with pytest.raises(CertificateNotYetValid):
        verifier.verify(_report(MILAN), MILAN.leaf.read_bytes(), MILAN.chain.read_bytes())


# -- policy -------------------------------------------------------------------------------


def test_verify_with_matching_policy_succeeds(amd: Verifier) -> None:
    raw = _report(MILAN)
    parsed = AttestationReport.parse(raw)
    policy = Policy(
        allow_debug=False,
        vmpl=0,
        minimum_tcb=parsed.reported_tcb,
        measurement=parsed.measurement,
        report_data=parsed.report_data,
        host_data=parsed.host_data,
    )
    amd.verify(raw, MILAN.leaf.read_bytes(), MILAN.chain.read_bytes(), policy)


def test_verify_debug_guest_with_no_debug_policy_raises_debug_not_allowed(
    own: Verifier, chip: SnpFirmware
) -> None:
    g = chip.launch_start(policy=GuestPolicy(flags=PolicyFlags.SMT | PolicyFlags.DEBUG))
    g.launch_finish()
    raw = g.get_report(bytes(64), 0)
    own.verify(raw, chip.vcek, [chip.ask])
    with pytest.raises(DebugNotAllowed):
        own.verify(raw, chip.vcek, [chip.ask], Policy(allow_debug=False))


def test_verify_vmpl1_report_with_vmpl0_policy_raises_vmpl_mismatch(amd: Verifier) -> None:
    case = CASES["trustee-milan-v3-vlek"]
    with pytest.raises(VmplMismatch):
        amd.verify(_report(case), case.leaf.read_bytes(), case.chain.read_bytes(), Policy(vmpl=0))


def test_verify_old_tcb_with_higher_minimum_raises_tcb_too_old(amd: Verifier) -> None:
    minimum = TcbVersion(bootloader=3, tee=0, snp=9, microcode=115)
    with pytest.raises(TcbTooOld):
        amd.verify(
            _report(MILAN),
            MILAN.leaf.read_bytes(),
            MILAN.chain.read_bytes(),
            Policy(minimum_tcb=minimum),
        )


@pytest.mark.parametrize(
    ("field", "size", "error"),
    [
        ("measurement", 48, MeasurementMismatch),
        ("report_data", 64, ReportDataMismatch),
        ("host_data", 32, HostDataMismatch),
    ],
)
def test_verify_unexpected_field_value_raises_its_mismatch(
    amd: Verifier, field: str, size: int, error: type[VerificationError]
) -> None:
    policy = Policy(**{field: b"\x5a" * size})  # type: ignore[arg-type]
    with pytest.raises(error):
        amd.verify(_report(MILAN), MILAN.leaf.read_bytes(), MILAN.chain.read_bytes(), policy)


def test_policy_with_wrong_size_measurement_raises_value_error() -> None:
    with pytest.raises(ValueError):
        Policy(measurement=bytes(32))
