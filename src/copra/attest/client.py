"""The SVSM side of the attestation proxy protocol: negotiate, report, attest, unwrap.

This is what COCONUT's ``kernel/src/attest.rs`` does at boot, written against a
connected :class:`~copra.attest.protocol.Channel` (vsock port 1995 upstream; a Unix
socket or any byte stream here) and a callable that asks the (emulated) SNP firmware
for a report over 64 bytes of REPORT_DATA:

1. generate an ephemeral P-521 key (or use the one given);
2. NegotiationRequest -> NegotiationResponse (challenge, ordered parameters);
3. REPORT_DATA from the parameters (:func:`copra.attest.binding.report_data`), which
   must bind this key and a 16..1024-byte challenge: ``[EcPublicKeyBytes, Challenge]``
   in either order, or ``[TrusteeRuntimeData]``. Any other list is refused before a
   report is asked for (upstream hashes any list; a proxy could then have the SVSM
   sign a REPORT_DATA that binds the proxy's own key);
4. AttestationRequest (report, echoed challenge, public key) -> AttestationResponse;
5. unwrap the secret (:func:`copra.attest.jwe.unwrap_secret`).

Every failure, whatever the layer, raises :class:`AttestationFailed` with the cause
chained (``OSError`` from the channel passes through untouched): upstream panics at
boot; the caller decides here. When the proxy says why (the ``detail`` copra's proxy
adds to a failure, or puts in place of a challenge: :mod:`copra.attest.protocol`),
that reason, escaped and bounded, is the message: "the key broker refused the
evidence: 401 AttestationFailed: MeasurementMismatch: ...".

Stateless; one call uses its channel from the calling thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from copra.attest.binding import BindingError, report_data
from copra.attest.jwe import EcPoint, JweError, unwrap_secret
from copra.attest.protocol import (
    MAX_FRAME_SIZE,
    AttestationRequest,
    AttestationResponse,
    Channel,
    NegotiationRequest,
    NegotiationResponse,
    ProtocolError,
    ProxyRefusal,
    PublicKeyBytes,
    SnpEvidence,
    Tee,
    Token,
    receive_message,
    send_message,
)

#: Produces a raw SNP ATTESTATION_REPORT (1184 bytes) whose REPORT_DATA is the argument.
ReportFunction = Callable[[bytes], bytes]


class AttestationFailed(Exception):
    """Attestation did not yield a secret; the message names the step."""


@dataclass(frozen=True)
class AttestationResult:
    secret: bytes
    token: Token | None


def attest(
    channel: Channel,
    get_report: ReportFunction,
    *,
    private_key: ec.EllipticCurvePrivateKey | None = None,
    certs_buf: bytes | None = None,
    max_frame_size: int = MAX_FRAME_SIZE,
) -> AttestationResult:
    """Run one attestation over ``channel`` and return the released secret."""
    key = private_key if private_key is not None else ec.generate_private_key(ec.SECP521R1())
    point = EcPoint.from_public_key(key.public_key())
    try:
        send_message(channel, NegotiationRequest())
        negotiation = receive_message(channel, NegotiationResponse, max_frame_size)
        data = report_data(negotiation.params, negotiation.challenge, point)
        report = get_report(data)
        request = AttestationRequest(
            Tee.SNP,
            SnpEvidence(report, certs_buf),
            negotiation.challenge,
            PublicKeyBytes(point.x, point.y),
        )
        send_message(channel, request)
        response = receive_message(channel, AttestationResponse, max_frame_size)
    except ProxyRefusal as exc:  # the proxy's reason (copra extension), already escaped
        raise AttestationFailed(exc.detail) from exc
    except ProtocolError as exc:
        raise AttestationFailed(f"proxy protocol: {exc}") from exc
    except BindingError as exc:
        raise AttestationFailed(f"negotiation refused: {exc}") from exc
    if not response.success:
        raise AttestationFailed(response.detail or "the key broker refused the evidence "
                                "(the proxy gave no reason)")
    if response.secret is None or response.decryption is None:
        raise AttestationFailed("the response carries no secret")
    try:
        secret = unwrap_secret(key, response.decryption, response.secret)
    except JweError as exc:
        raise AttestationFailed(f"secret unwrap: {exc}") from exc
    return AttestationResult(secret, response.token)
