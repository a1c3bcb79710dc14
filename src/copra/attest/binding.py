"""How REPORT_DATA binds the KBS challenge and the SVSM's ephemeral key: two rules.

* ``coconut`` (upstream COCONUT-SVSM, ``kernel/src/attest.rs``): REPORT_DATA =
  SHA-512 over the negotiated parameters in the order the proxy lists them;
  ``Challenge`` contributes the raw challenge bytes, ``EcPublicKeyBytes`` the raw
  big-endian x then y coordinates. The KBS backend of upstream's proxy asks
  ``[EcPublicKeyBytes, Challenge]``, so REPORT_DATA = SHA-512(x || y || nonce).
* ``trustee`` (Trustee KBS and guest-components): REPORT_DATA =
  SHA-384(JCS({"tee-pubkey": JWK, "nonce": base64(nonce), "additional-evidence": ""}))
  followed by 16 zero bytes; JCS is RFC 8785 canonical JSON. The SVSM learns to
  use it from the copra negotiation parameter ``TrusteeRuntimeData``, which must
  then be the only parameter (upstream has no way to express this rule).

The JWK is ``{"kty":"EC","crv":..,"alg":"ECDH-ES+A256KW","x":..,"y":..}`` with
base64url coordinates, the form upstream's proxy sends as ``tee-pubkey``; the
nonce is standard base64 with padding, as the KBS issued it.

Improvement over upstream: an empty parameter list, which would bind nothing, is
refused, and so is a list mixing ``TrusteeRuntimeData`` with other parameters.

Stateless; safe from any thread.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Final

from copra.attest.jwe import EcPoint
from copra.attest.protocol import NegotiationParam

REPORT_DATA_SIZE: Final = 64


class Binding(StrEnum):
    COCONUT = "coconut"
    TRUSTEE = "trustee"


class BindingError(ValueError):
    """The negotiated parameters do not describe a usable binding."""


#: The parameters a proxy asks for under each binding.
PARAMS: Final[dict[Binding, tuple[NegotiationParam, ...]]] = {
    Binding.COCONUT: (NegotiationParam.EC_PUBLIC_KEY_BYTES, NegotiationParam.CHALLENGE),
    Binding.TRUSTEE: (NegotiationParam.TRUSTEE_RUNTIME_DATA,),
}


def jcs(value: Any) -> bytes:
    """RFC 8785 canonical JSON for null, booleans, integers, strings, lists and objects.

    Object members are sorted by their UTF-16 code units (RFC 8785 §3.2.3); strings are
    escaped as ECMAScript's JSON.stringify does, which is what ``json.dumps`` with
    ``ensure_ascii=False`` produces. Floats are refused rather than approximated:
    nothing in a binding carries one.
    """

    def enc(v: Any) -> str:
        if v is None or isinstance(v, bool | str):
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, int):
            if abs(v) > 2**53 - 1:
                raise BindingError("JCS integers must be exactly representable as doubles")
            return str(v)
        if isinstance(v, list | tuple):
            return "[" + ",".join(enc(item) for item in v) + "]"
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise BindingError("JCS object keys must be strings")
            keys = sorted(v, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
            return "{" + ",".join(f"{enc(k)}:{enc(v[k])}" for k in keys) + "}"
        raise BindingError(f"JCS cannot encode {type(v).__name__}")

    try:
        return enc(value).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BindingError("JCS strings must be valid Unicode") from exc
    except RecursionError as exc:
        raise BindingError("JCS input is nested too deeply") from exc


def trustee_runtime_data(challenge: bytes, key: EcPoint) -> dict[str, Any]:
    """The ``runtime-data`` a proxy sends to the KBS for this challenge and key."""
    return {"nonce": base64.b64encode(challenge).decode("ascii"), "tee-pubkey": key.to_jwk()}


def trustee_report_data(runtime_data: dict[str, Any], additional_evidence: str = "") -> bytes:
    """Trustee's REPORT_DATA for SNP: SHA-384 of the JCS runtime data, zero-padded."""
    if "nonce" not in runtime_data or "tee-pubkey" not in runtime_data:
        raise BindingError("runtime data needs 'nonce' and 'tee-pubkey'")
    material = {
        "tee-pubkey": runtime_data["tee-pubkey"],
        "nonce": runtime_data["nonce"],
        "additional-evidence": additional_evidence,
    }
    digest = hashlib.sha384(jcs(material)).digest()
    return digest + bytes(REPORT_DATA_SIZE - len(digest))


def coconut_report_data(
    params: Sequence[NegotiationParam], challenge: bytes, key: EcPoint
) -> bytes:
    """COCONUT's REPORT_DATA: SHA-512 over the parameters in the given order."""
    if not params:
        raise BindingError("no negotiation parameters: REPORT_DATA would bind nothing")
    digest = hashlib.sha512()
    for param in params:
        if param is NegotiationParam.CHALLENGE:
            digest.update(challenge)
        elif param is NegotiationParam.EC_PUBLIC_KEY_BYTES:
            digest.update(key.x)
            digest.update(key.y)
        else:
            raise BindingError(f"{param} cannot be combined with other parameters")
    return digest.digest()


def report_data(params: Sequence[NegotiationParam], challenge: bytes, key: EcPoint) -> bytes:
    """REPORT_DATA for the parameters a proxy negotiated (the SVSM side)."""
    if NegotiationParam.TRUSTEE_RUNTIME_DATA in params:
        if len(params) != 1:
            raise BindingError("TrusteeRuntimeData must be the only negotiation parameter")
        return trustee_report_data(trustee_runtime_data(challenge, key))
    return coconut_report_data(params, challenge, key)


def expected_report_data(
    binding: Binding, challenge: bytes, key: EcPoint, runtime_data: dict[str, Any] | None = None
) -> bytes:
    """REPORT_DATA a KBS expects under ``binding`` (the verifier side).

    Under ``trustee`` the runtime data is hashed *as the peer sent it* (Trustee does the
    same), so extra JWK members the peer included are bound too.
    """
    if binding is Binding.TRUSTEE:
        return trustee_report_data(runtime_data or trustee_runtime_data(challenge, key))
    return coconut_report_data(PARAMS[Binding.COCONUT], challenge, key)
