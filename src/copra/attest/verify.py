"""Verification of SEV-SNP attestation reports against AMD's certificate chain.

A :class:`Verifier` holds the trusted ARKs (AMD's, pinned below, or an emulated chip's)
and a clock. :meth:`Verifier.verify` checks, in this order, and raises the first
failure as a :class:`VerificationError` subclass (it never returns a bool):

1. the report decodes (:class:`MalformedReport`) and its KEY_INFO names a signing
   key of the kind the leaf certificate is, VCEK or VLEK (:class:`SigningKeyMismatch`);
2. the chain (:class:`ChainError`): the issuer of the ASK/ASVK is a configured
   trust root, byte for byte (an ARK sent along must be that same certificate:
   :class:`UntrustedRoot`); the ARK is self-signed; the ASK/ASVK is signed by the
   ARK and is a CA; the VCEK/VLEK is signed by the ASK/ASVK and holds a P-384 key.
   Every signature in the chain must be RSASSA-PSS with SHA-384, MGF1-SHA-384 and a
   48-byte salt, as AMD signs;
3. the report signature (:class:`SignatureError`): SIGNATURE_ALGO is ECDSA P-384 /
   SHA-384 and (R, S) verify over bytes 0x000..0x29F under the leaf's key;
4. the leaf's TCB extensions (1.3.6.1.4.1.3704.1.3.x) equal REPORTED_TCB component by
   component, FMC included on Turin (:class:`TcbMismatch`);
5. for a VCEK, the hwID extension (1.3.6.1.4.1.3704.1.4) equals CHIP_ID, all 64
   bytes, or the first 8 when the VCEK carries Turin's 8-byte hwID
   (:class:`ChipIdMismatch`); a VLEK has no hwID and is not bound to a chip;
   and the generation the report names (v3+ CPUID fields) is the leaf's product
   (:class:`ProductMismatch`);
6. every certificate in the chain is valid at ``clock()`` (:class:`CertificateExpired`,
   :class:`CertificateNotYetValid`);
7. only what a :class:`Policy` asks for: no DEBUG, an exact VMPL, a minimum
   REPORTED_TCB, an expected MEASUREMENT, REPORT_DATA or HOST_DATA
   (:class:`PolicyViolation` subclasses).

Messages quote certificate names and product strings, which the evidence chose; they
are made :func:`~copra.attest.text.visible` (control characters escaped) first.

Revocation lists (AMD's CRLs) are not consulted: the KDS cannot be reached from
where copra runs. Certificates are accepted as DER or PEM, PEM bundles included.

A Verifier is immutable after construction and may be shared by threads.
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import SignatureAlgorithmOID

from copra.attest.text import visible
from copra.hw.snp_report import (
    REPORT_SIZE,
    SIG_ALGO_ECDSA_P384_SHA384,
    SIGNED_SIZE,
    TCB_COMPONENT_OIDS,
    AttestationReport,
    Generation,
    ReportFormatError,
    SigningKey,
    TcbLayout,
    TcbVersion,
    VcekOid,
    parse_der_ia5string,
    parse_der_integer,
    parse_hwid,
)

# ---------------------------------------------------------------------------------------
# Errors


class VerificationError(Exception):
    """Evidence failed verification. Base of every error this module raises."""


class MalformedReport(VerificationError):
    """The report bytes do not decode (the codec's :class:`ReportFormatError` is the cause)."""


class ChainError(VerificationError):
    """The certificate chain is malformed, incomplete or not signed as AMD signs."""


class CertificateFormatError(ChainError):
    """A certificate (or bundle) is neither DER nor PEM X.509, or its extensions or
    public key do not decode (an extension twice, a malformed one, an unknown key)."""


class UntrustedRoot(ChainError):
    """The chain does not end in a configured trust root."""


class SigningKeyMismatch(ChainError):
    """KEY_INFO names one kind of key (VCEK, VLEK) and the leaf certificate is another."""


class SignatureError(VerificationError):
    """The report's signature does not verify under the leaf key, or there is none."""


class TcbMismatch(VerificationError):
    """A TCB component certified by the leaf differs from the report's REPORTED_TCB."""

    def __init__(self, component: str, certified: int | None, reported: int | None) -> None:
        self.component = component
        self.certified = certified
        self.reported = reported
        super().__init__(
            f"REPORTED_TCB {component}={reported} but the certificate certifies {certified}"
        )


class ChipIdMismatch(VerificationError):
    """The VCEK's hwID is not the report's CHIP_ID (or the VCEK has no hwID)."""

    def __init__(self, certified: bytes | None, reported: bytes) -> None:
        self.certified = certified
        self.reported = reported
        shown = "none" if certified is None else certified.hex()
        super().__init__(f"CHIP_ID {reported.hex()[:16]}... is not the VCEK's hwID {shown[:16]}")


class ProductMismatch(VerificationError):
    """The report's CPUID names a different generation than the leaf's product name."""


class CertificateValidityError(VerificationError):
    """A certificate is outside its validity period at the verifier's clock."""

    def __init__(self, message: str, subject: str, when: datetime) -> None:
        self.subject = subject
        self.when = when
        super().__init__(message)


class CertificateExpired(CertificateValidityError):
    """The clock is past a certificate's notAfter."""


class CertificateNotYetValid(CertificateValidityError):
    """The clock is before a certificate's notBefore."""


class PolicyViolation(VerificationError):
    """The report is genuine but breaks the caller's :class:`Policy`."""


class DebugNotAllowed(PolicyViolation):
    """The guest POLICY allows debugging and the policy forbids it."""


class VmplMismatch(PolicyViolation):
    def __init__(self, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"report VMPL {actual}, policy requires {expected}")


class TcbTooOld(PolicyViolation):
    def __init__(self, minimum: TcbVersion, actual: TcbVersion) -> None:
        self.minimum = minimum
        self.actual = actual
        super().__init__(f"REPORTED_TCB ({actual}) is below the minimum ({minimum})")


class ValueMismatch(PolicyViolation):
    """A report field differs from the value the policy expects."""

    field_name = "field"

    def __init__(self, expected: bytes, actual: bytes) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"{self.field_name} {actual.hex()} is not the expected {expected.hex()}")


class MeasurementMismatch(ValueMismatch):
    field_name = "MEASUREMENT"


class ReportDataMismatch(ValueMismatch):
    field_name = "REPORT_DATA"


class HostDataMismatch(ValueMismatch):
    field_name = "HOST_DATA"


# ---------------------------------------------------------------------------------------
# Inputs and outputs


@dataclass(frozen=True)
class Policy:
    """What to demand of a genuine report beyond its authenticity. Defaults check nothing."""

    allow_debug: bool = True
    vmpl: int | None = None
    minimum_tcb: TcbVersion | None = None
    measurement: bytes | None = None
    report_data: bytes | None = None
    host_data: bytes | None = None

    def __post_init__(self) -> None:
        for name, size in (("measurement", 48), ("report_data", 64), ("host_data", 32)):
            value = getattr(self, name)
            if value is not None and len(value) != size:
                raise ValueError(f"policy {name} must be {size} bytes, got {len(value)}")
        if self.vmpl is not None and not 0 <= self.vmpl <= 3:
            raise ValueError(f"policy vmpl must be 0..3, got {self.vmpl}")


@dataclass(frozen=True)
class VerifiedReport:
    """A report that passed every check, with the chain that vouched for it."""

    report: AttestationReport
    raw: bytes
    signing_key: SigningKey
    product_name: str | None
    generation: Generation | None
    leaf: x509.Certificate
    intermediate: x509.Certificate
    root: x509.Certificate


CertInput = bytes | x509.Certificate | Sequence[bytes | x509.Certificate]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------
# Certificates


def _checked(cert: x509.Certificate) -> x509.Certificate:
    """``cert`` once its extensions and public key have been decoded.

    ``cryptography`` decodes them (and the names) lazily, so a certificate that loads
    can still raise on first use: :class:`x509.DuplicateExtension` for an extension present twice,
    ``ValueError`` for a malformed one, :class:`UnsupportedAlgorithm` for an unknown
    key type. Decoding them here turns all of these into :class:`CertificateFormatError`
    at the one place certificates enter, so later steps see only well-formed ones.
    """
    who = "certificate"
    try:
        who = _name(cert)
        cert.issuer.rfc4514_string()
        _ = cert.extensions
        cert.public_key()
    except x509.DuplicateExtension as exc:
        raise CertificateFormatError(
            f"{who}: extension {exc.oid.dotted_string} appears twice"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateFormatError(f"{who}: malformed certificate: {exc}") from exc
    return cert


def load_certificates(data: CertInput) -> list[x509.Certificate]:
    """Certificates from DER bytes, PEM bytes (one or a bundle), objects, or a list of these.

    Every certificate returned has decodable extensions and a decodable public key;
    anything else raises :class:`CertificateFormatError`. AMD's VCEKs and VLEKs have
    serial number 0, which cryptography loads with a deprecation warning; that warning
    is silenced here and only here.
    """
    if isinstance(data, x509.Certificate):
        return [_checked(data)]
    if isinstance(data, bytes | bytearray | memoryview):
        blob = bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            try:
                if b"-----BEGIN" in blob:
                    certs = list(x509.load_pem_x509_certificates(blob))
                else:
                    certs = [x509.load_der_x509_certificate(blob)]
            except ValueError as exc:
                raise CertificateFormatError(f"not a DER or PEM certificate: {exc}") from exc
        return [_checked(cert) for cert in certs]
    out: list[x509.Certificate] = []
    for item in data:
        out.extend(load_certificates(item))
    return out


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, lower-case hex."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


#: The AMD Root Keys shipped in ``copra/attest/amd_roots``, pinned by DER SHA-256.
AMD_ARK_FINGERPRINTS: Final = {
    Generation.MILAN: "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    Generation.GENOA: "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    Generation.TURIN: "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
}


def amd_trust_roots() -> tuple[x509.Certificate, ...]:
    """AMD's ARKs for Milan, Genoa and Turin, each checked against its pinned fingerprint."""
    folder = resources.files("copra.attest").joinpath("amd_roots")
    roots = []
    for gen, pinned in AMD_ARK_FINGERPRINTS.items():
        blob = folder.joinpath(f"ark-{gen.value.lower()}.pem").read_bytes()
        (cert,) = load_certificates(blob)
        if fingerprint(cert) != pinned:
            raise UntrustedRoot(f"packaged ARK for {gen.value} does not match its pinned hash")
        roots.append(cert)
    return tuple(roots)


_AMD_PSS: Final = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def _name(cert: x509.Certificate) -> str:
    """The subject for a message; the evidence chose it, so made visible."""
    return visible(cert.subject.rfc4514_string())


def _issuer(cert: x509.Certificate) -> str:
    return visible(cert.issuer.rfc4514_string())


def _cn(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _check_issued_by(child: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    """``child`` is signed by ``issuer`` with RSASSA-PSS SHA-384/MGF1-SHA-384/salt 48."""
    if child.issuer != issuer.subject:
        raise ChainError(f"{what}: issuer {_issuer(child)} is not {_name(issuer)}")
    if child.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS:
        raise ChainError(
            f"{what}: signed with {child.signature_algorithm_oid.dotted_string}, not RSASSA-PSS"
        )
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ChainError(f"{what}: issuer key is not RSA")
    try:
        key.verify(child.signature, child.tbs_certificate_bytes, _AMD_PSS, hashes.SHA384())
    except InvalidSignature:
        raise ChainError(f"{what}: signature does not verify") from None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        ext = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return ext.value.ca


def _amd_extension(cert: x509.Certificate, oid: str) -> bytes | None:
    """The raw extnValue of an AMD extension, None when absent."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    if isinstance(value, x509.UnrecognizedExtension):
        return value.value
    raise ChainError(f"extension {oid} has an unexpected type")


def product_name(cert: x509.Certificate) -> str | None:
    """The productName extension of a VCEK/VLEK ("Milan-B0", "Genoa", ...), None if absent."""
    raw = _amd_extension(cert, VcekOid.PRODUCT_NAME)
    if raw is None:
        return None
    try:
        return parse_der_ia5string(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ChainError(f"productName extension is malformed: {exc}") from exc


def certified_tcb(cert: x509.Certificate) -> dict[str, int]:
    """The TCB components a VCEK/VLEK certifies (blSPL, teeSPL, snpSPL, ucodeSPL, fmcSPL)."""
    out: dict[str, int] = {}
    for component, oid in TCB_COMPONENT_OIDS.items():
        raw = _amd_extension(cert, oid)
        if raw is None:
            continue
        try:
            value = parse_der_integer(raw)
        except ValueError as exc:
            raise ChainError(f"TCB extension {oid} is malformed: {exc}") from exc
        out[component] = value
    return out


def leaf_kind(cert: x509.Certificate) -> SigningKey:
    """VCEK or VLEK, by the leaf's CN (``SEV-VCEK``/``SEV-VLEK``); :class:`ChainError`
    for any other certificate."""
    cn = _cn(cert)
    if cn == "SEV-VCEK":
        return SigningKey.VCEK
    if cn == "SEV-VLEK":
        return SigningKey.VLEK
    raise ChainError(f"leaf certificate CN {cn!r} is neither SEV-VCEK nor SEV-VLEK")


# ---------------------------------------------------------------------------------------
# The verifier


class Verifier:
    """Checks reports against a fixed set of trusted ARKs and a clock."""

    def __init__(
        self,
        trust_roots: Iterable[bytes | x509.Certificate],
        *,
        clock: Clock = utc_now,
    ) -> None:
        roots: list[x509.Certificate] = []
        for item in trust_roots:
            roots.extend(load_certificates(item))
        if not roots:
            raise ValueError("a Verifier needs at least one trust root")
        for root in roots:
            _check_issued_by(root, root, f"trust root {_name(root)}")
        self._roots: tuple[x509.Certificate, ...] = tuple(roots)
        self._root_ders = frozenset(r.public_bytes(Encoding.DER) for r in roots)
        self._clock = clock

    @classmethod
    def with_amd_roots(cls, *, clock: Clock = utc_now) -> Verifier:
        """A verifier that trusts exactly AMD's pinned Milan, Genoa and Turin ARKs."""
        return cls(amd_trust_roots(), clock=clock)

    @property
    def trust_roots(self) -> tuple[x509.Certificate, ...]:
        return self._roots

    def verify(
        self,
        report: bytes,
        vcek: bytes | x509.Certificate,
        chain: CertInput = (),
        policy: Policy | None = None,
    ) -> VerifiedReport:
        """Verify one raw report signed by ``vcek`` (a VCEK or VLEK), whose ASK/ASVK is in
        ``chain`` (an ARK there is allowed and must be a trust root). See the module
        docstring for the checks and their order."""
        leaves = load_certificates(vcek)
        if len(leaves) != 1:
            raise CertificateFormatError(f"expected one VCEK/VLEK, got {len(leaves)}")
        leaf = leaves[0]
        others = load_certificates(chain)
        name = product_name(leaf)
        gen = Generation.from_product_name(name) if name is not None else None

        parsed = self._parse(report, gen)
        kind = self._check_key_kind(parsed, leaf)
        intermediate, root = self._check_chain(leaf, others)
        self._check_signature(parsed, bytes(report), leaf)
        self._check_tcb(parsed, leaf)
        if kind is SigningKey.VCEK:
            self._check_chip_id(parsed, leaf)
        self._check_product(parsed, gen, name)
        self._check_validity((root, intermediate, leaf))
        if policy is not None:
            check_policy(parsed, policy)
        return VerifiedReport(
            report=parsed,
            raw=bytes(report),
            signing_key=kind,
            product_name=name,
            generation=parsed.generation or gen,
            leaf=leaf,
            intermediate=intermediate,
            root=root,
        )

    # -- steps ------------------------------------------------------------------------

    @staticmethod
    def _parse(raw: bytes, gen: Generation | None) -> AttestationReport:
        layout: TcbLayout | None = None
        # A v2 report does not say its generation; the certificate's product name does.
        if len(raw) == REPORT_SIZE and int.from_bytes(raw[:4], "little") < 3 and gen is not None:
            layout = gen.tcb_layout
        try:
            return AttestationReport.parse(raw, layout=layout)
        except ReportFormatError as exc:
            raise MalformedReport(f"malformed report: {exc}") from exc

    @staticmethod
    def _check_key_kind(report: AttestationReport, leaf: x509.Certificate) -> SigningKey:
        wanted = report.key_info.signing_key
        if wanted is SigningKey.NONE:
            raise SignatureError("the report is unsigned (KEY_INFO.SIGNING_KEY = none)")
        kind = leaf_kind(leaf)
        if kind is not wanted:
            raise SigningKeyMismatch(f"report is signed by a {wanted.name}, leaf is a {kind.name}")
        return kind

    def _check_chain(
        self, leaf: x509.Certificate, others: Sequence[x509.Certificate]
    ) -> tuple[x509.Certificate, x509.Certificate]:
        intermediates = [c for c in others if c.subject == leaf.issuer and c.subject != c.issuer]
        if not intermediates:
            raise ChainError(f"no certificate for the leaf's issuer {_issuer(leaf)}")
        intermediate = intermediates[0]

        for cert in others:
            is_ark = cert.subject == cert.issuer == intermediate.issuer
            if is_ark and cert.public_bytes(Encoding.DER) not in self._root_ders:
                raise UntrustedRoot(f"the chain's ARK {_name(cert)} is not a trust root")
        roots = [r for r in self._roots if r.subject == intermediate.issuer]
        if not roots:
            raise UntrustedRoot(
                f"no trust root named {_issuer(intermediate)} issued the chain"
            )
        last: ChainError | None = None
        for root in roots:
            try:
                _check_issued_by(root, root, "ARK self-signature")
                _check_issued_by(intermediate, root, "ASK/ASVK signed by ARK")
            except ChainError as exc:
                last = exc
                continue
            break
        else:
            assert last is not None
            raise last
        if not _is_ca(intermediate):
            raise ChainError(f"{_name(intermediate)} is not a CA certificate")
        _check_issued_by(leaf, intermediate, "VCEK/VLEK signed by ASK/ASVK")
        key = leaf.public_key()
        if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1)):
            raise ChainError("the VCEK/VLEK key is not ECDSA P-384")
        return intermediate, root

    @staticmethod
    def _check_signature(report: AttestationReport, raw: bytes, leaf: x509.Certificate) -> None:
        if report.signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
            raise SignatureError(f"SIGNATURE_ALGO {report.signature_algo} is not ECDSA P-384")
        key = leaf.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        der = encode_dss_signature(report.signature.r, report.signature.s)
        try:
            key.verify(der, raw[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            raise SignatureError(
                "the report signature does not verify under the leaf key"
            ) from None

    @staticmethod
    def _check_tcb(report: AttestationReport, leaf: x509.Certificate) -> None:
        certified = certified_tcb(leaf)
        reported = report.reported_tcb.components()
        for component in TCB_COMPONENT_OIDS:
            if certified.get(component) != reported.get(component):
                raise TcbMismatch(component, certified.get(component), reported.get(component))

    @staticmethod
    def _check_chip_id(report: AttestationReport, leaf: x509.Certificate) -> None:
        raw = _amd_extension(leaf, VcekOid.HW_ID)
        if raw is None:
            raise ChipIdMismatch(None, report.chip_id)
        try:
            hwid = parse_hwid(raw)
        except ValueError as exc:
            raise ChainError(f"hwID extension is malformed: {exc}") from exc
        if not hmac.compare_digest(hwid, report.chip_id[: len(hwid)]):
            raise ChipIdMismatch(hwid, report.chip_id)

    @staticmethod
    def _check_product(report: AttestationReport, gen: Generation | None, name: str | None) -> None:
        reported = report.generation
        if reported is not None and gen is not None and reported is not gen:
            raise ProductMismatch(
                f"report CPUID names {reported.value}, the certificate is for {visible(str(name))}"
            )

    def _check_validity(self, certs: Iterable[x509.Certificate]) -> None:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the verifier clock must return timezone-aware datetimes")
        for cert in certs:
            if now < cert.not_valid_before_utc:
                raise CertificateNotYetValid(
                    f"{_name(cert)} is valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z",
                    _name(cert),
                    now,
                )
            if now > cert.not_valid_after_utc:
                raise CertificateExpired(
                    f"{_name(cert)} expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z",
                    _name(cert),
                    now,
                )


def check_policy(report: AttestationReport, policy: Policy) -> None:
    """Apply ``policy`` to an already authenticated report."""
    if not policy.allow_debug and report.policy.debug:
        raise DebugNotAllowed("the guest policy allows debugging")
    if policy.vmpl is not None and report.vmpl != policy.vmpl:
        raise VmplMismatch(policy.vmpl, report.vmpl)
    if policy.minimum_tcb is not None and not report.reported_tcb.meets(policy.minimum_tcb):
        raise TcbTooOld(policy.minimum_tcb, report.reported_tcb)
    if policy.measurement is not None and not hmac.compare_digest(
        policy.measurement, report.measurement
    ):
        raise MeasurementMismatch(policy.measurement, report.measurement)
    if policy.report_data is not None and not hmac.compare_digest(
        policy.report_data, report.report_data
    ):
        raise ReportDataMismatch(policy.report_data, report.report_data)
    if policy.host_data is not None and not hmac.compare_digest(policy.host_data, report.host_data):
        raise HostDataMismatch(policy.host_data, report.host_data)
