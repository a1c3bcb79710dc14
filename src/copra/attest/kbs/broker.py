"""The key broker's logic, free of HTTP: sessions, evidence appraisal, tokens, resources.

Protocol: Trustee's KBS protocol 0.4.0 (RCAR: Request, Challenge, Attestation,
Response), the subset an SVSM needs (docs/attestation-protocol.md):

* :meth:`KeyBroker.auth` opens a session with a fresh 32-byte nonce. It lives
  ``unattested_timeout`` (60 s) until it attests, then ``session_timeout`` (300 s);
  a full table makes room by evicting the oldest un-attested session.
* :meth:`KeyBroker.attest` appraises SNP evidence for that session: the runtime
  data's nonce is the session's and is *consumed* by the first attempt, whatever its
  outcome (a second attempt in the same session is refused as a replay; a new session
  has a new nonce, so a recorded report never verifies again); the report is genuine
  (chain to a configured root, signature, TCB and chip binding: :mod:`copra.attest.verify`);
  REPORT_DATA binds the nonce and the tee-pubkey under the binding that the evidence
  encoding implies (:mod:`copra.attest.evidence`); the reference values hold
  (measurement allow-list, minimum TCB, no debug, VMPL, HOST_DATA). On success the
  session is attested, remembers the tee-pubkey, and gets a signed token (ES256 JWT).
* :meth:`KeyBroker.resource` releases a stored resource, JWE-encrypted
  (ECDH-ES+A256KW, A256GCM) to the attested tee-pubkey, to an attested session or
  to the bearer of a valid token, if the resource's policy
  (:mod:`copra.attest.kbs.policy`) admits what that session attested: its
  measurement, guest POLICY bits and the minimum TCB of its product. The session
  remembers these (:class:`~copra.attest.kbs.policy.Attested`) and the token carries
  them as claims, so every read is checked, by cookie or by token.

Every refusal raises :class:`KbsError` carrying an HTTP status, an error kind and a
reason; nothing about the peer's input raises anything else. The detail is made
:func:`~copra.attest.text.visible` (control characters escaped), as is every record
of the ``copra.kbs`` logger, so peer-chosen text forges no log line and sends no
escape sequence to a terminal. An appraisal that fails
in a way no check foresaw is logged with its traceback, counted
(``counters["attest_internal_error"]``) and answered 500 ``InternalError``; like every
attempt, it has used up the session's nonce. Secrets (resources,
private keys, tokens, session ids beyond an 8-character prefix) are never logged.

Counters (``counters``, ``labelled``; :meth:`KeyBroker.metrics` for ``GET /metrics``):
requests, successes, refusals by the check that failed, releases by resource path,
sessions. Their labels are this code's names, TEE names kbs-types knows and stored
resource paths, never peer text.

Locking: ``_lock`` guards the session table, ``counters`` and ``labelled``; a session's
fields are only changed under it. The store, verifier and token key are immutable or thread-safe.
"""

from __future__ import annotations

import base64
import collections
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from copra.attest.binding import (
    Binding,
    BindingError,
    expected_report_data,
    trustee_report_data,
)
from copra.attest.evidence import Evidence, EvidenceError, parse_primary_evidence
from copra.attest.jwe import ALG_ECDH_ES_A256KW, EcPoint, FlattenedJwe, JweError, encrypt
from copra.attest.kbs.policy import Attested, PolicyDenied, check_minimum_tcb
from copra.attest.kbs.store import ResourcePath, Store, StoreError
from copra.attest.metrics import Labels, Metric
from copra.attest.text import escape_logger, visible
from copra.attest.verify import (
    MalformedReport,
    Policy,
    PolicyViolation,
    VerificationError,
    VerifiedReport,
    Verifier,
    leaf_kind,
    load_certificates,
)
from copra.hw.snp_report import (
    AttestationReport,
    CertGuid,
    Generation,
    ReportFormatError,
    SigningKey,
    TcbVersion,
    VcekOid,
    parse_hwid,
)

log = escape_logger("copra.kbs")

PROTOCOL_VERSION: Final = "0.4.0"
#: The TEE names kbs-types 0.16 knows (its ``Tee`` enum, as serde spells them): ``/auth``
#: opens a session for any of them, as Trustee does; ``/attest`` appraises only ``snp``.
KBS_TYPES_TEES: Final = frozenset({
    "az-snp-vtpm", "az-tdx-vtpm", "nvidia", "sgx", "snp", "tdx", "cca", "csv", "se",
    "hygondcu", "tpm", "sample", "sampledevice",
})
#: A semantic version (semver.org 2.0.0): major.minor.patch, optional pre-release after
#: ``-`` and build metadata after ``+``; no leading zeros in numbers.
_NUMBER = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER: Final = re.compile(
    rf"({_NUMBER})\.({_NUMBER})\.({_NUMBER})"
    rf"(?:-({_PRE_ID}(?:\.{_PRE_ID})*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
NONCE_SIZE: Final = 32
SESSION_COOKIE: Final = "kbs-session-id"
ERROR_TYPE_PREFIX: Final = "https://github.com/confidential-containers/kbs/errors/"
TOKEN_ISSUER: Final = "copra-kbs"


class KbsError(Exception):
    """A refused request: HTTP ``status``, error ``kind`` (Trustee style) and ``detail``."""

    def __init__(self, status: int, kind: str, detail: str, *, reason: str | None = None) -> None:
        detail = visible(detail)  # details quote peer input: names, values, exceptions
        super().__init__(f"{status} {kind}: {detail}")
        self.status = status
        self.kind = kind
        self.detail = detail
        #: the failed check, for counting (a name from this code, never peer text)
        self.reason = reason or kind

    def to_json(self) -> dict[str, str]:
        return {"type": ERROR_TYPE_PREFIX + self.kind, "detail": self.detail}


#: Hex digits of a measurement shown in a refusal: enough to tell two builds apart.
SHORT_HEX: Final = 16


def short_hex(value: bytes) -> str:
    """The first :data:`SHORT_HEX` hex digits of ``value`` and ``...``."""
    text = value.hex()
    return text if len(text) <= SHORT_HEX else text[:SHORT_HEX] + "..."


def short_hex_list(values: frozenset[bytes], most: int = 3) -> str:
    """Up to ``most`` of ``values`` (sorted) as :func:`short_hex`, and how many more."""
    shown = [short_hex(v) for v in sorted(values)[:most]]
    if len(values) > most:
        shown.append(f"{len(values) - most} more")
    return ", ".join(shown) or "none"


def _bad_request(detail: str) -> KbsError:
    return KbsError(400, "InvalidRequest", detail)


def check_protocol_version(version: object) -> None:
    """Trustee's rule: ``version`` parses as a semantic version and matches ``=0.4.0``
    (so no pre-release; build metadata is allowed, ``0.4.0+anything``); 401
    ``ProtocolVersion`` otherwise, 400 if it is not a string at all."""
    if not isinstance(version, str):
        raise _bad_request("the auth request's version must be a string")
    match = _SEMVER.fullmatch(version)
    if match is None:
        raise KbsError(401, "ProtocolVersion",
                       f"protocol version {version!r} is not a semantic version")
    if tuple(int(part) for part in match.group(1, 2, 3)) != (0, 4, 0) or match.group(4):
        raise KbsError(401, "ProtocolVersion",
                       f"protocol version {version!r} does not match ={PROTOCOL_VERSION}")


@dataclass
class Session:
    """One RCAR session. Mutated only under :attr:`KeyBroker._lock`."""

    id: str
    nonce: bytes
    expires: float
    tee: str = "snp"
    nonce_used: bool = False
    attested: bool = False
    tee_pubkey: EcPoint | None = None
    attested_claims: Attested | None = None
    token: str | None = None

    @property
    def nonce_b64(self) -> str:
        return base64.b64encode(self.nonce).decode("ascii")

    @property
    def tag(self) -> str:
        return self.id[:8]


@dataclass(frozen=True)
class BrokerConfig:
    """Limits. A session lives ``unattested_timeout`` from ``/auth`` until it attests,
    then ``session_timeout`` from its attestation. When ``max_sessions`` are open,
    ``/auth`` evicts the oldest un-attested session; only a table of attested sessions
    is full (503)."""

    session_timeout: float = 300.0
    unattested_timeout: float = 60.0
    token_lifetime: float = 300.0
    max_sessions: int = 4096
    bindings: frozenset[Binding] = field(default_factory=lambda: frozenset(Binding))

    def __post_init__(self) -> None:
        if not min(self.session_timeout, self.unattested_timeout, self.token_lifetime) > 0:
            raise ValueError("session and token lifetimes must be positive")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")


def _load_or_create_token_key(store: Store) -> ec.EllipticCurvePrivateKey:
    pem = store.token_key_pem()
    if pem is None:
        key = ec.generate_private_key(ec.SECP256R1())
        store.set_token_key_pem(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return key
    loaded = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise StoreError("stored token key is not an EC key")
    return loaded


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _kind(cert: x509.Certificate) -> SigningKey | None:
    try:
        return leaf_kind(cert)
    except VerificationError:
        return None


def _hwid(cert: x509.Certificate) -> bytes | None:
    for ext in cert.extensions:
        if ext.oid.dotted_string == VcekOid.HW_ID and isinstance(
            ext.value, x509.UnrecognizedExtension
        ):
            try:
                return parse_hwid(ext.value.value)
            except ValueError:
                return None
    return None


class KeyBroker:
    """A development/test KBS: one store, one verifier, sessions in memory."""

    def __init__(
        self,
        store: Store,
        verifier: Verifier,
        *,
        config: BrokerConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._verifier = verifier
        self._config = config or BrokerConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        #: attest_internal_error (appraisals that failed unexpectedly), sessions_evicted
        #: (un-attested sessions dropped for room), auth_requests, auth_successes,
        #: attestation_requests, policy_approvals, policy_violations; under ``_lock``
        self.counters: collections.Counter[str] = collections.Counter()
        #: (counter, label value): auth_errors and attestation_failures/_errors by reason,
        #: attestation_successes by TEE, resource_reads by path; under ``_lock``
        self.labelled: collections.Counter[tuple[str, str]] = collections.Counter()
        self._token_key = _load_or_create_token_key(store)
        self._jose_key = ECKey.import_key(self._token_key)

    def now(self) -> float:
        return self._clock()

    @property
    def token_public_key(self) -> ec.EllipticCurvePublicKey:
        return self._token_key.public_key()

    # -- sessions ----------------------------------------------------------------------

    def _make_room(self, now: float) -> None:
        """Drop expired sessions; if the table is still full, the oldest un-attested one.

        ``/auth`` is unauthenticated, so anyone can open sessions: refusing when full
        would let a flood of them lock real guests out for a whole lifetime. Evicting
        the oldest un-attested session instead keeps ``/auth`` answering; a guest's own
        session survives as long as ``max_sessions`` newer ones have not been opened
        after it. Only attested sessions, each of which took genuine evidence, can
        fill the table.
        """
        for sid in [s.id for s in self._sessions.values() if s.expires <= now]:
            del self._sessions[sid]
        if len(self._sessions) < self._config.max_sessions:
            return
        oldest = next((s for s in self._sessions.values() if not s.attested), None)
        if oldest is None:
            raise KbsError(503, "TooManySessions", "session table full; retry later")
        del self._sessions[oldest.id]
        self.counters["sessions_evicted"] += 1
        log.info("session %s evicted unattested: the session table is full", oldest.tag)

    def _session(self, session_id: str | None) -> Session:
        if not session_id:
            raise KbsError(401, "UnAuthenticated", f"no {SESSION_COOKIE} cookie: call /auth first")
        session = self._sessions.get(session_id)
        if session is None or session.expires <= self._clock():
            raise KbsError(401, "UnAuthenticated", "unknown or expired session: call /auth again")
        return session

    def auth(self, body: object) -> Session:
        """Open a session for a Trustee ``Request`` body (kbs-types: ``version``,
        ``tee``, ``extra-params``, all required; ``extra-params`` may be any value)."""
        self._count("auth_requests")
        try:
            session = self._auth(body)
        except KbsError as exc:
            self._count("auth_errors", exc.reason)
            raise
        self._count("auth_successes")
        return session

    def _auth(self, body: object) -> Session:
        if not isinstance(body, dict):
            raise _bad_request("the auth request must be a JSON object")
        check_protocol_version(body.get("version"))
        tee = body.get("tee")
        if not isinstance(tee, str) or tee not in KBS_TYPES_TEES:
            raise _bad_request(f"tee {tee!r} is not a TEE kbs-types knows")
        if "extra-params" not in body:
            raise _bad_request("the auth request has no extra-params")
        now = self._clock()
        with self._lock:
            self._make_room(now)
            session = Session(
                id=secrets.token_hex(16),
                nonce=secrets.token_bytes(NONCE_SIZE),
                expires=now + min(self._config.unattested_timeout, self._config.session_timeout),
                tee=tee,
            )
            self._sessions[session.id] = session
        log.info("session %s opened (tee %s)", session.tag, tee)
        return session

    # -- attestation -------------------------------------------------------------------

    def attest(self, session_id: str | None, body: object) -> Session:
        """Appraise evidence; returns the attested session (its ``token`` is set).

        A session that has already attested gets its token again without an appraisal,
        as Trustee answers (the cookie holder can read resources with it anyway)."""
        self._count("attestation_requests")
        try:
            return self._attest(session_id, body)
        except KbsError as exc:
            if exc.status in (400, 500):
                self._count("attestation_errors", exc.reason)
            else:
                self._count("attestation_failures", exc.reason)
            raise

    def _attest(self, session_id: str | None, body: object) -> Session:
        with self._lock:
            session = self._session(session_id)
            if session.attested:
                log.info("session %s is attested already: its token again", session.tag)
                return session
            if session.nonce_used:
                raise KbsError(
                    401, "ReplayedNonce", "this session's nonce was already used; call /auth again"
                )
            session.nonce_used = True
        try:
            claims, key, attested = self._appraise(session, body)
        except KbsError as exc:
            log.warning("session %s refused: %s", session.tag, exc)
            raise
        except Exception as exc:  # unforeseen: a bug, or input no check above expected
            with self._lock:
                self.counters["attest_internal_error"] += 1
            log.exception("session %s: appraisal failed unexpectedly", session.tag)
            raise KbsError(
                500,
                "InternalError",
                f"the evidence could not be appraised ({type(exc).__name__}); this "
                "session's nonce is used up: call /auth again",
            ) from exc
        token = jwt.encode({"alg": "ES256", "typ": "JWT"}, claims, self._jose_key)
        with self._lock:
            session.attested = True
            session.expires = self._clock() + self._config.session_timeout
            session.tee_pubkey = key
            session.attested_claims = attested
            session.token = token
            self.labelled["attestation_successes", session.tee] += 1
        log.info(
            "session %s attested (binding %s, measurement %s)",
            session.tag,
            claims["binding"],
            claims["measurement"],
        )
        return session

    def _appraise(
        self, session: Session, body: object
    ) -> tuple[dict[str, Any], EcPoint, Attested]:
        if not isinstance(body, dict):
            raise _bad_request("the attestation must be a JSON object")
        if body.get("init-data") is not None:
            raise _bad_request("init-data is not supported by this KBS")
        runtime = body.get("runtime-data")
        tee_evidence = body.get("tee-evidence")
        if not isinstance(runtime, dict) or not isinstance(tee_evidence, dict):
            raise _bad_request("runtime-data and tee-evidence must be JSON objects")
        nonce = runtime.get("nonce")
        if not isinstance(nonce, str):
            raise _bad_request("runtime-data.nonce must be a string")
        if not hmac.compare_digest(nonce.encode("utf-8", "replace"), session.nonce_b64.encode()):
            raise KbsError(401, "InvalidNonce", "runtime-data.nonce is not this session's nonce")
        key = self._tee_pubkey(runtime.get("tee-pubkey"))
        additional = tee_evidence.get("additional_evidence")
        if not isinstance(additional, str):
            raise _bad_request("tee-evidence.additional_evidence must be a string (\"\" for none)")
        if session.tee != "snp":
            raise KbsError(401, "AttestationFailed",
                           f"this session was opened for tee {session.tee!r}: this broker "
                           "appraises SNP evidence only", reason="UnsupportedTee")
        if additional:
            raise KbsError(401, "AttestationFailed",
                           "additional_evidence is not empty: this broker has no verifier for "
                           "secondary devices, so it cannot appraise it",
                           reason="AdditionalEvidence")
        try:
            evidence = parse_primary_evidence(tee_evidence.get("primary_evidence"))
        except EvidenceError as exc:
            raise _bad_request(f"primary_evidence: {exc}") from exc
        if evidence.binding not in self._config.bindings:
            raise KbsError(401, "PolicyDeny", f"binding {evidence.binding} is not enabled")
        try:
            if evidence.binding is Binding.TRUSTEE:
                expected = trustee_report_data(runtime, additional)
            else:
                expected = expected_report_data(Binding.COCONUT, session.nonce, key)
        except BindingError as exc:
            raise _bad_request(f"runtime-data: {exc}") from exc
        verified = self._verify(evidence, expected)
        report = verified.report
        attested = Attested(
            measurement=report.measurement,
            policy=report.policy.to_int(),
            reported_tcb=report.reported_tcb,
            generation=verified.generation,
        )
        claims: dict[str, Any] = {
            "iss": TOKEN_ISSUER,
            "iat": int(self._clock()),
            "exp": int(self._clock() + self._config.token_lifetime),
            "tee": "snp",
            "binding": str(evidence.binding),
            "tee-pubkey": key.to_jwk(),
            "measurement": report.measurement.hex(),
            "reported_tcb": report.reported_tcb.components(),
            "policy": report.policy.to_int(),
            "product": None if verified.generation is None else verified.generation.value,
            "chip_id": report.chip_id.hex(),
            "report_data": report.report_data.hex(),
        }
        return claims, key, attested

    @staticmethod
    def _tee_pubkey(jwk: object) -> EcPoint:
        """The guest's key: an EC JWK with ``kty``, ``crv``, ``alg`` and ``x``/``y``, all
        required as kbs-types requires them; ``alg`` ECDH-ES+A256KW, the only EC
        algorithm Trustee offers; a curve :data:`~copra.attest.jwe.CURVES` names."""
        if not isinstance(jwk, dict):
            raise _bad_request("runtime-data.tee-pubkey must be a JWK object")
        if jwk.get("kty") == "RSA":
            raise _bad_request("an RSA tee-pubkey is not supported: the proxy protocol "
                               "carries only EC-wrapped secrets to the SVSM")
        if jwk.get("kty") != "EC":
            raise _bad_request("tee-pubkey must be an EC key (kty 'EC')")
        if "alg" not in jwk:
            raise _bad_request("tee-pubkey has no alg (kbs-types requires it)")
        if jwk["alg"] != ALG_ECDH_ES_A256KW:
            raise _bad_request(f"tee-pubkey alg {jwk['alg']!r} is not {ALG_ECDH_ES_A256KW}")
        try:
            point = EcPoint.from_jwk(jwk)
            point.public_key()
        except JweError as exc:
            raise _bad_request(f"tee-pubkey: {exc}") from exc
        return point

    def _certificates(
        self, evidence: Evidence, report: AttestationReport
    ) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
        """The candidate leaves, most likely first, and the rest of the chain.

        The leaf must be of the kind KEY_INFO names (VCEK or VLEK). One the evidence
        carries is the only candidate. Otherwise every stored leaf of that kind is:
        VCEKs whose hwID is the report's CHIP_ID first (a chip has one VCEK per TCB,
        so several may match); VLEKs are bound to no chip, so all of them. The caller
        tries each until one verifies the report.
        """
        try:
            sent = {kind: load_certificates(der)[0] for kind, der in evidence.certificates.items()}
            stored = [c for der in self._store.certificates() for c in load_certificates(der)]
        except (VerificationError, IndexError) as exc:
            raise _bad_request(f"certificate: {exc}") from exc
        chain = [sent[k] for k in (CertGuid.ASK, CertGuid.ARK) if k in sent]
        chain += [c for c in stored if _is_ca(c)]
        signing_key = report.key_info.signing_key
        wanted = CertGuid.VLEK if signing_key is SigningKey.VLEK else CertGuid.VCEK
        if wanted in sent:
            return [sent[wanted]], chain
        leaves = [c for c in stored if not _is_ca(c) and _kind(c) is signing_key]
        if signing_key is SigningKey.VCEK:
            leaves.sort(key=lambda c: (h := _hwid(c)) is None or report.chip_id[: len(h)] != h)
        if not leaves:
            raise KbsError(
                401,
                "AttestationFailed",
                f"no {wanted.name} certificate in the evidence or the store",
                reason="MissingCertificate",
            )
        return leaves, chain

    def _verify(self, evidence: Evidence, expected_report_data: bytes) -> VerifiedReport:
        try:
            report = AttestationReport.parse(evidence.report)
        except ReportFormatError as exc:
            raise KbsError(401, "AttestationFailed", f"MalformedReport: {exc}",
                           reason="MalformedReport") from exc
        values = self._store.reference_values()
        if not values.measurements:
            raise KbsError(401, "PolicyDeny", "no reference measurement is configured",
                           reason="NoReferenceValues")
        leaves, chain = self._certificates(evidence, report)
        policy = Policy(
            allow_debug=values.allow_debug,
            vmpl=values.vmpl,
            report_data=expected_report_data,
            host_data=values.host_data,
        )
        first: Exception | None = None
        for leaf in leaves:
            try:
                verified = self._verifier.verify(evidence.report, leaf, chain, policy)
                break
            except (PolicyViolation, MalformedReport) as exc:  # authentic, or never will be
                raise KbsError(401, "AttestationFailed", f"{type(exc).__name__}: {exc}",
                               reason=type(exc).__name__) from exc
            except (VerificationError, ValueError) as exc:  # not this leaf: try the next
                first = first or exc
        else:
            assert first is not None
            raise KbsError(
                401, "AttestationFailed", f"{type(first).__name__}: {first}",
                reason=type(first).__name__,
            ) from first
        try:  # per product: known only now, from the report's CPUID or the leaf
            check_minimum_tcb(values.minimum_tcb, verified.generation,
                              verified.report.reported_tcb)
        except PolicyDenied as exc:
            raise KbsError(401, "AttestationFailed", f"TcbTooOld: {exc}",
                           reason="TcbTooOld") from exc
        if verified.report.measurement not in values.measurements:
            raise KbsError(
                401,
                "AttestationFailed",
                f"MeasurementMismatch: measurement {short_hex(verified.report.measurement)} "
                f"is not among the reference measurements "
                f"({short_hex_list(values.measurements)})",
                reason="MeasurementMismatch",
            )
        return verified

    # -- resources ---------------------------------------------------------------------

    def _from_token(self, token: str) -> tuple[EcPoint, Attested]:
        try:
            decoded = jwt.decode(token, self._jose_key, algorithms=["ES256"])
        except (JoseError, ValueError) as exc:
            raise KbsError(401, "TokenVerifierError", f"bad token: {exc}") from exc
        claims = decoded.claims
        exp = claims.get("exp")
        if claims.get("iss") != TOKEN_ISSUER or not isinstance(exp, int) or exp <= self._clock():
            raise KbsError(401, "TokenVerifierError", "token expired or not issued by this KBS")
        try:
            key = EcPoint.from_jwk(claims.get("tee-pubkey"))
        except JweError as exc:
            raise KbsError(401, "TokenVerifierError", f"token tee-pubkey: {exc}") from exc
        try:
            product = claims.get("product")
            attested = Attested(
                measurement=bytes.fromhex(claims["measurement"]),
                policy=int(claims["policy"]),
                reported_tcb=TcbVersion(**claims["reported_tcb"]),
                generation=None if product is None else Generation(product),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KbsError(401, "TokenVerifierError", f"token claims: {exc}") from exc
        return key, attested

    def resource(
        self, session_id: str | None, bearer: str | None, repository: str, type_: str, tag: str
    ) -> FlattenedJwe:
        """A stored resource encrypted to the attested key, if its policy admits what the
        reader attested (401/403 for who the reader is, then 404, then 403 for the
        resource's policy)."""
        if bearer is not None:
            key, attested = self._from_token(bearer)
        else:
            with self._lock:
                session = self._session(session_id)
                if (not session.attested or session.tee_pubkey is None
                        or session.attested_claims is None):
                    raise KbsError(403, "PolicyDeny", "the session is not attested")
                key, attested = session.tee_pubkey, session.attested_claims
        try:
            path = ResourcePath(repository, type_, tag)
        except StoreError as exc:
            raise KbsError(404, "ResourceNotFound", str(exc)) from exc
        found = self._store.get_resource_and_policy(path)
        if found is None:
            raise KbsError(404, "ResourceNotFound", f"no resource {path}")
        data, policy = found
        if policy is None:
            raise KbsError(403, "PolicyDeny", f"resource {path} has no policy: it is released "
                           "to no one (copra kbs set-policy)")
        try:
            policy.check(attested)
        except PolicyDenied as exc:
            self._count("policy_violations")
            log.warning("resource %s refused: %s", path, exc)
            raise KbsError(403, "PolicyDeny", f"resource {path}: {exc}") from exc
        self._count("policy_approvals")
        try:
            jwe = encrypt(data, key.public_key())
        except JweError as exc:
            raise KbsError(500, "JweError", str(exc)) from exc
        self._count("resource_reads", str(path))
        log.info("resource %s released (%d bytes, encrypted)", path, len(data))
        return jwe

    # -- counters ----------------------------------------------------------------------

    def _count(self, name: str, label: str | None = None) -> None:
        with self._lock:
            if label is None:
                self.counters[name] += 1
            else:
                self.labelled[name, label] += 1

    def metrics(self) -> list[Metric]:
        """The broker's counters and its sessions, for ``GET /metrics``: Trustee's
        metric names where the meaning is the same, ``copra_kbs_*`` for the rest."""
        now = self._clock()
        with self._lock:
            plain = collections.Counter(self.counters)
            labelled = collections.Counter(self.labelled)
            live = [s for s in self._sessions.values() if s.expires > now]

        def by(name: str, label: str) -> dict[Labels, float]:
            return {((label, value),): count for (metric, value), count in labelled.items()
                    if metric == name}

        return [
            Metric.single("kbs_auth_requests_total", "counter",
                          "Auth requests (POST /kbs/v0/auth).", plain["auth_requests"]),
            Metric.single("kbs_auth_successes_total", "counter",
                          "Auth requests answered with a challenge.", plain["auth_successes"]),
            Metric("copra_kbs_auth_errors_total", "counter",
                   "Auth requests refused, by reason.", by("auth_errors", "reason")),
            Metric.single("kbs_attestation_requests_total", "counter",
                          "Attestation requests (POST /kbs/v0/attest).",
                          plain["attestation_requests"]),
            Metric("kbs_attestation_successes_total", "counter",
                   "Attestations that passed the appraisal, by TEE.",
                   by("attestation_successes", "tee_type")),
            Metric("copra_kbs_attestation_refusals_total", "counter",
                   "Attestations refused (401, 403), by the check that failed.",
                   by("attestation_failures", "reason")),
            Metric("copra_kbs_attestation_errors_total", "counter",
                   "Attestation requests that were malformed (400) or failed inside the "
                   "broker (500), by reason.", by("attestation_errors", "reason")),
            Metric("kbs_resource_reads_total", "counter",
                   "Resources released (encrypted to the reader's key), by path.",
                   by("resource_reads", "resource_path")),
            Metric.single("kbs_policy_approvals_total", "counter",
                          "Resource reads the resource's policy admitted.",
                          plain["policy_approvals"]),
            Metric.single("kbs_policy_violations_total", "counter",
                          "Resource reads the resource's policy refused.",
                          plain["policy_violations"]),
            Metric("copra_kbs_sessions", "gauge", "Sessions open now.", {
                (("state", "attested"),): sum(1 for s in live if s.attested),
                (("state", "unattested"),): sum(1 for s in live if not s.attested)}),
            Metric.single("copra_kbs_sessions_evicted_total", "counter",
                          "Un-attested sessions dropped to make room in a full table.",
                          plain["sessions_evicted"]),
            Metric.single("copra_kbs_attest_internal_errors_total", "counter",
                          "Appraisals that failed in a way no check foresaw.",
                          plain["attest_internal_error"]),
        ]
