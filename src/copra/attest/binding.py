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

What a KBS hashes is not the ``tee-pubkey`` as received: Trustee deserialises it into
kbs-types' ``TeePubKey`` (tagged by ``kty``; EC: ``crv``, ``alg``, ``x``, ``y``, all
required; RSA: ``alg``, ``n``, ``e``) and serialises that again, so any other member
(``kid``, ``use``, ...) is dropped and a missing one is an error.
:func:`trustee_tee_pubkey` does the same, and :func:`trustee_report_data` hashes its
result: a key sent with ``kid`` binds the same REPORT_DATA as without.

Deviation from upstream: the SVSM accepts only parameter lists that bind its own key
and a challenge (:func:`negotiated_binding`). Upstream hashes whatever list the proxy
sends, so a proxy that asks for ``[Challenge]`` alone, with challenge = x' || y' ||
nonce for a key of its own, gets REPORT_DATA = SHA-512(x' || y' || nonce) signed,
which a KBS accepts for the proxy's key: the secret goes to the proxy. Accepted here:

* ``coconut``: ``EcPublicKeyBytes`` exactly once and ``Challenge`` exactly once, in
  either order. Key first, the hashed bytes open with the SVSM's key, so the key a
  broker reads from them (x' || y' || nonce) is the SVSM's (on a smaller curve, a
  slice of it that no one holds a private key for); challenge first, they end
  with the SVSM's key, so the broker's nonce would have to equal the last bytes of a
  fresh key the proxy does not know in advance (docs/attestation-protocol.md §2);
* ``trustee``: exactly ``[TrusteeRuntimeData]``.

Everything else is refused, the empty list included (it would bind nothing). The
challenge must be :data:`MIN_CHALLENGE_SIZE`..:data:`MAX_CHALLENGE_SIZE` bytes:
Trustee's KBS issues 32 random bytes (standard base64 in ``/auth``'s ``nonce``),
which the proxy decodes into the challenge; fewer than 16 would not make a report
fresh.

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
#: Bounds on the challenge the SVSM accepts (Trustee nonces are 32 bytes).
MIN_CHALLENGE_SIZE: Final = 16
MAX_CHALLENGE_SIZE: Final = 1024


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


#: The members kbs-types' ``TeePubKey`` keeps, per ``kty`` (its serde tag), in its order.
TEE_PUBKEY_MEMBERS: Final[dict[str, tuple[str, ...]]] = {
    "EC": ("crv", "alg", "x", "y"),
    "RSA": ("alg", "n", "e"),
}


def trustee_tee_pubkey(jwk: object) -> dict[str, str]:
    """``jwk`` as Trustee re-serialises it before hashing: ``kty`` and the members
    kbs-types' ``TeePubKey`` has for it, strings as received, nothing else."""
    if not isinstance(jwk, dict):
        raise BindingError("tee-pubkey must be a JSON object")
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in TEE_PUBKEY_MEMBERS:
        raise BindingError(f"tee-pubkey kty {kty!r} is neither 'EC' nor 'RSA'")
    members = TEE_PUBKEY_MEMBERS[kty]
    out: dict[str, str] = {"kty": kty}
    for name in members:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise BindingError(f"tee-pubkey member {name!r} missing or not a string")
        out[name] = value
    return out


def trustee_report_data(runtime_data: dict[str, Any], additional_evidence: str = "") -> bytes:
    """Trustee's REPORT_DATA for SNP: SHA-384 of the JCS of ``{"tee-pubkey",
    "nonce", "additional-evidence"}``, zero-padded; the key as
    :func:`trustee_tee_pubkey` re-serialises it."""
    if "nonce" not in runtime_data or "tee-pubkey" not in runtime_data:
        raise BindingError("runtime data needs 'nonce' and 'tee-pubkey'")
    material = {
        "tee-pubkey": trustee_tee_pubkey(runtime_data["tee-pubkey"]),
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


def negotiated_binding(params: Sequence[NegotiationParam], challenge: bytes) -> Binding:
    """The binding a proxy's negotiation names, if it binds the SVSM's key and a usable
    challenge; raises :class:`BindingError` otherwise (see the module docstring)."""
    names = "[" + ", ".join(str(p) for p in params) + "]"
    if not params:
        raise BindingError("no negotiation parameters: REPORT_DATA would bind nothing")
    if NegotiationParam.TRUSTEE_RUNTIME_DATA in params:
        if len(params) != 1:
            raise BindingError(
                f"parameters {names}: TrusteeRuntimeData must be the only negotiation parameter"
            )
        binding = Binding.TRUSTEE
    elif sorted(params) == sorted(PARAMS[Binding.COCONUT]):
        binding = Binding.COCONUT
    else:
        raise BindingError(
            f"parameters {names} do not bind the SVSM's key: EcPublicKeyBytes and "
            "Challenge must each appear exactly once"
        )
    if not MIN_CHALLENGE_SIZE <= len(challenge) <= MAX_CHALLENGE_SIZE:
        raise BindingError(
            f"a {len(challenge)}-byte challenge is outside "
            f"{MIN_CHALLENGE_SIZE}..{MAX_CHALLENGE_SIZE} bytes"
        )
    return binding


def report_data(params: Sequence[NegotiationParam], challenge: bytes, key: EcPoint) -> bytes:
    """REPORT_DATA for the parameters a proxy negotiated (the SVSM side): only for the
    lists :func:`negotiated_binding` accepts."""
    if negotiated_binding(params, challenge) is Binding.TRUSTEE:
        return trustee_report_data(trustee_runtime_data(challenge, key))
    return coconut_report_data(params, challenge, key)


def expected_report_data(
    binding: Binding, challenge: bytes, key: EcPoint, runtime_data: dict[str, Any] | None = None
) -> bytes:
    """REPORT_DATA a KBS expects under ``binding`` (the verifier side).

    Under ``trustee`` the runtime data's key is re-serialised first, as Trustee does
    (:func:`trustee_tee_pubkey`): members beyond kty/crv/alg/x/y are not bound.
    """
    if binding is Binding.TRUSTEE:
        return trustee_report_data(runtime_data or trustee_runtime_data(challenge, key))
    return coconut_report_data(PARAMS[Binding.COCONUT], challenge, key)
