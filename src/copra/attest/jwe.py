"""JWE key agreement with key wrapping: ECDH-ES+A256KW and A256GCM on P-256/384/521.

Two sides of one construction (RFC 7518 §4.6 and §5.3, RFC 7516):

* the key broker *encrypts* a resource to the guest's ephemeral public key and
  sends a flattened JWE JSON object (:class:`FlattenedJwe`, Trustee's shape:
  ``protected``/``encrypted_key``/``iv``/``ciphertext``/``tag``, ``epk`` inside
  the protected header): :func:`encrypt`, whose protected header is byte for byte
  the one Trustee's KBS writes (:func:`trustee_protected_header`), so that upstream's
  proxy, which rebuilds the AAD by re-serialising the parsed header, gets the same
  AAD back;
* the SVSM *unwraps* the secret from the split form that the attestation proxy
  hands it (COCONUT's ``decryption`` fields: ``epk`` x/y, ``wrapped_cek``,
  ``aad``, ``iv``, ``tag``, plus the ciphertext): :func:`unwrap_secret`.

Both are written directly on ``cryptography``: the header's bytes must be exactly
Trustee's, and the SVSM side takes the fields apart rather than a whole JWE, exactly
as COCONUT's ``kernel/src/attest.rs`` does. The tests check both against independent
implementations (jwcrypto, joserfc, RFC 7520 §5.4, a header rebuilt as kbs-types does).

Unwrapping, step by step: Z = ECDH(private key, epk) (the x coordinate, field
size bytes); KEK = Concat KDF with SHA-256 (NIST SP 800-56A §5.8.1, RFC 7518
§4.6.2) over Z with AlgorithmID = the ``alg`` string, empty PartyUInfo and
PartyVInfo, keydatalen = the KEK size in bits; CEK = AES key unwrap (RFC 3394);
plaintext = AES-GCM-decrypt(CEK, iv, aad, ciphertext || tag).

The AAD is used verbatim as received: it is the ASCII of the base64url protected
header (followed by ``.`` and the base64url JWE ``aad`` member when one is present,
RFC 7516 §5.2 step 14); both must be canonical base64url, so no two members give
one AAD. Re-serialising the header, as upstream's proxy does, breaks
as soon as a broker orders header members differently.

Coordinates are checked on construction: exactly the field size each, and below the
curve's field prime (``cryptography`` would reduce a larger value, giving one key several
encodings). Every failure raises :class:`JweError` (never returns a flag). Not supported:
``apu``/``apv`` in headers produced here, direct ECDH-ES, RSA and OKP keys,
compression (``zip``). Secrets are ordinary Python ``bytes``: they cannot be
zeroised and nothing here pretends to.

Thread safety: stateless functions and frozen dataclasses; safe from any thread.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

ALG_ECDH_ES_A256KW: Final = "ECDH-ES+A256KW"
ENC_A256GCM: Final = "A256GCM"

#: JWK ``crv`` name -> (curve class, coordinate size in bytes).
CURVES: Final[dict[str, tuple[type[ec.EllipticCurve], int]]] = {
    "P-256": (ec.SECP256R1, 32),
    "P-384": (ec.SECP384R1, 48),
    "P-521": (ec.SECP521R1, 66),
}

#: The field prime p of each curve (FIPS 186-5 / SP 800-186 §3.2.1). A coordinate is an
#: element of GF(p), so its encoding must be below p; ``cryptography`` reduces larger
#: values modulo p instead of refusing them, which would give one key many encodings.
FIELD_PRIMES: Final[dict[str, int]] = {
    "P-256": 2**256 - 2**224 + 2**192 + 2**96 - 1,
    "P-384": 2**384 - 2**128 - 2**96 + 2**32 - 1,
    "P-521": 2**521 - 1,
}

#: ``ECDH-ES+AxxxKW`` -> KEK size in bytes (RFC 7518 §4.6).
_KEY_WRAP_ALGS: Final[dict[str, int]] = {
    "ECDH-ES+A128KW": 16,
    "ECDH-ES+A192KW": 24,
    "ECDH-ES+A256KW": 32,
}
#: ``AxxxGCM`` -> CEK size in bytes (RFC 7518 §5.3).
_GCM_ENCS: Final[dict[str, int]] = {"A128GCM": 16, "A192GCM": 24, "A256GCM": 32}
_GCM_IV_SIZE: Final = 12
_GCM_TAG_SIZE: Final = 16


class JweError(Exception):
    """A JWE could not be built, parsed or decrypted; the message says which step failed."""


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding; raises :class:`JweError`."""
    if not isinstance(text, str) or "=" in text:
        raise JweError("expected an unpadded base64url string")
    try:
        raw = text.encode("ascii")
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise JweError(f"bad base64url: {exc}") from exc
    if b64url_encode(data) != text:
        raise JweError("non-canonical base64url")
    return data


def curve_name(curve: ec.EllipticCurve) -> str:
    """The JWK ``crv`` of a supported curve; raises :class:`JweError` otherwise."""
    for name, (cls, _) in CURVES.items():
        if isinstance(curve, cls):
            return name
    raise JweError(f"unsupported curve {curve.name}")


@dataclass(frozen=True)
class EcPoint:
    """An EC public key as raw big-endian coordinates, each exactly the field size."""

    crv: str
    x: bytes
    y: bytes

    def __post_init__(self) -> None:
        if self.crv not in CURVES:
            raise JweError(f"unsupported curve {self.crv!r}")
        size = CURVES[self.crv][1]
        if len(self.x) != size or len(self.y) != size:
            raise JweError(f"{self.crv} coordinates must be {size} bytes each")
        prime = FIELD_PRIMES[self.crv]
        for name, value in (("x", self.x), ("y", self.y)):
            if int.from_bytes(value, "big") >= prime:
                raise JweError(f"{self.crv} coordinate {name} is not below the field prime")

    @classmethod
    def from_public_key(cls, key: ec.EllipticCurvePublicKey) -> EcPoint:
        crv = curve_name(key.curve)
        size = CURVES[crv][1]
        numbers = key.public_numbers()
        return cls(crv, numbers.x.to_bytes(size, "big"), numbers.y.to_bytes(size, "big"))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The key; raises :class:`JweError` if the point is not on the curve."""
        curve = CURVES[self.crv][0]()
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(self.x, "big"), int.from_bytes(self.y, "big"), curve
        )
        try:
            return numbers.public_key()
        except ValueError as exc:
            raise JweError(f"point is not on {self.crv}") from exc

    def to_jwk(self, alg: str | None = ALG_ECDH_ES_A256KW) -> dict[str, str]:
        """A public JWK (RFC 7518 §6.2.1); ``alg`` included unless None."""
        jwk = {"kty": "EC", "crv": self.crv}
        if alg is not None:
            jwk["alg"] = alg
        jwk["x"] = b64url_encode(self.x)
        jwk["y"] = b64url_encode(self.y)
        return jwk

    @classmethod
    def from_jwk(cls, jwk: object) -> EcPoint:
        """Parse a public EC JWK; members other than kty/crv/x/y are ignored."""
        if not isinstance(jwk, dict):
            raise JweError("a JWK must be a JSON object")
        if jwk.get("kty") != "EC":
            raise JweError("JWK kty must be EC")
        crv, x, y = jwk.get("crv"), jwk.get("x"), jwk.get("y")
        if not isinstance(crv, str) or not isinstance(x, str) or not isinstance(y, str):
            raise JweError("JWK crv, x and y must be strings")
        return cls(crv, b64url_decode(x), b64url_decode(y))


@dataclass(frozen=True)
class DecryptionFields:
    """COCONUT's split form of a JWE (libaproxy ``AttestationResponse.decryption``).

    ``epk_x``/``epk_y`` are the sender's ephemeral public coordinates (its curve is the
    recipient key's curve); ``aad`` is the exact AAD bytes for AES-GCM.
    """

    epk_x: bytes
    epk_y: bytes
    wrapped_cek: bytes
    aad: bytes
    iv: bytes
    tag: bytes


@dataclass(frozen=True)
class FlattenedJwe:
    """A flattened JWE JSON serialization (RFC 7516 §7.2.2), members as base64url text."""

    protected: str
    encrypted_key: str
    iv: str
    ciphertext: str
    tag: str
    aad: str | None = None

    def to_json(self) -> dict[str, str]:
        out = {
            "protected": self.protected,
            "encrypted_key": self.encrypted_key,
            "iv": self.iv,
            "ciphertext": self.ciphertext,
            "tag": self.tag,
        }
        if self.aad is not None:
            out["aad"] = self.aad
        return out

    @classmethod
    def from_json(cls, obj: object) -> FlattenedJwe:
        if not isinstance(obj, dict):
            raise JweError("a flattened JWE must be a JSON object")
        members: dict[str, str] = {}
        for name in ("protected", "encrypted_key", "iv", "ciphertext", "tag"):
            value = obj.get(name)
            if not isinstance(value, str):
                raise JweError(f"JWE member {name!r} missing or not a string")
            members[name] = value
        aad = obj.get("aad")
        if aad is not None and not isinstance(aad, str):
            raise JweError("JWE member 'aad' must be a string")
        return cls(aad=aad, **members)

    @classmethod
    def from_compact(cls, compact: str) -> FlattenedJwe:
        parts = compact.split(".")
        if len(parts) != 5:
            raise JweError("a compact JWE has five parts")
        return cls(*parts)

    def header(self) -> dict[str, Any]:
        """The decoded protected header."""
        try:
            header = json.loads(b64url_decode(self.protected))
        except (ValueError, RecursionError) as exc:
            raise JweError(f"protected header is not JSON: {exc}") from exc
        if not isinstance(header, dict):
            raise JweError("protected header must be a JSON object")
        return header

    def gcm_aad(self) -> bytes:
        """The AES-GCM additional data (RFC 7516 §5.2 step 14): the ASCII of the
        protected header as received, then ``.`` and the ``aad`` member if present.

        Both must be canonical base64url (:func:`b64url_decode`), so each AAD has one
        spelling: non-ASCII or otherwise invalid text raises :class:`JweError` rather
        than being replaced by ``?`` and authenticating like some other value.
        """
        b64url_decode(self.protected)
        aad = self.protected.encode("ascii")
        if self.aad is not None:
            b64url_decode(self.aad)
            aad += b"." + self.aad.encode("ascii")
        return aad

    def split(
        self, *, alg: str = ALG_ECDH_ES_A256KW, enc: str = ENC_A256GCM
    ) -> tuple[DecryptionFields, bytes]:
        """The COCONUT split form and the ciphertext, after checking ``alg``/``enc``."""
        header = self.header()
        if header.get("alg") != alg or header.get("enc") != enc:
            raise JweError(
                f"JWE uses alg={header.get('alg')!r} enc={header.get('enc')!r}, "
                f"expected {alg} {enc}"
            )
        if "zip" in header or "crit" in header:
            raise JweError("JWE zip/crit header parameters are not supported")
        if "apu" in header or "apv" in header:
            raise JweError("JWE apu/apv are not supported by the split form")
        epk = EcPoint.from_jwk(header.get("epk"))
        fields = DecryptionFields(
            epk_x=epk.x,
            epk_y=epk.y,
            wrapped_cek=b64url_decode(self.encrypted_key),
            aad=self.gcm_aad(),
            iv=b64url_decode(self.iv),
            tag=b64url_decode(self.tag),
        )
        return fields, b64url_decode(self.ciphertext)


def concat_kdf(
    z: bytes, algorithm_id: str, key_bits: int, apu: bytes = b"", apv: bytes = b""
) -> bytes:
    """Concat KDF with SHA-256 as JOSE uses it (RFC 7518 §4.6.2).

    OtherInfo = AlgorithmID || PartyUInfo || PartyVInfo || SuppPubInfo, the first
    three each a 32-bit big-endian length followed by the bytes, SuppPubInfo the
    key length in bits as a 32-bit big-endian integer.
    """
    alg = algorithm_id.encode("ascii")
    other_info = (
        struct.pack(">I", len(alg))
        + alg
        + struct.pack(">I", len(apu))
        + apu
        + struct.pack(">I", len(apv))
        + apv
        + struct.pack(">I", key_bits)
    )
    return ConcatKDFHash(hashes.SHA256(), key_bits // 8, other_info).derive(z)


def unwrap_secret(
    private_key: ec.EllipticCurvePrivateKey,
    decryption_fields: DecryptionFields,
    ciphertext: bytes,
    *,
    alg: str = ALG_ECDH_ES_A256KW,
    enc: str = ENC_A256GCM,
) -> bytes:
    """Decrypt a secret given in COCONUT's split form; the SVSM side of the exchange.

    ``epk`` is taken on ``private_key``'s curve. ``alg``/``enc`` default to what
    COCONUT and the Trustee KBS use; other ``ECDH-ES+AxxxKW``/``AxxxGCM`` pairs exist
    for test vectors. Raises :class:`JweError` naming the step that failed.
    """
    kek_size = _KEY_WRAP_ALGS.get(alg)
    cek_size = _GCM_ENCS.get(enc)
    if kek_size is None or cek_size is None:
        raise JweError(f"unsupported alg/enc {alg}/{enc}")
    fields = decryption_fields
    epk = EcPoint(curve_name(private_key.curve), fields.epk_x, fields.epk_y).public_key()
    z = private_key.exchange(ec.ECDH(), epk)
    kek = concat_kdf(z, alg, kek_size * 8)
    if len(fields.wrapped_cek) != cek_size + 8:
        raise JweError(f"wrapped CEK must be {cek_size + 8} bytes for {enc}")
    try:
        cek = aes_key_unwrap(kek, fields.wrapped_cek)
    except InvalidUnwrap as exc:
        raise JweError("CEK unwrap failed (wrong key or corrupted wrapped_cek)") from exc
    if len(fields.iv) != _GCM_IV_SIZE or len(fields.tag) != _GCM_TAG_SIZE:
        raise JweError("AES-GCM needs a 12-byte IV and a 16-byte tag")
    try:
        return AESGCM(cek).decrypt(fields.iv, ciphertext + fields.tag, fields.aad)
    except InvalidTag as exc:
        raise JweError("content decryption failed (tag mismatch)") from exc


def trustee_protected_header(epk: EcPoint, enc: str = ENC_A256GCM) -> str:
    """The base64url protected header exactly as Trustee's KBS writes it.

    Trustee (``kbs/src/jwe``) serialises kbs-types' ``ProtectedHeader`` with serde_json:
    ``alg`` and ``enc`` first (struct order), then the other members from a
    ``serde_json::Map``, which without the ``preserve_order`` feature is sorted by key,
    at every level; compact, no whitespace. So ``epk`` reads ``crv, kty, x, y``.
    Upstream's proxy rebuilds the AAD by re-serialising the parsed header the same way
    (``ProtectedHeader::generate_aad``), so any other member order fails its tag check.
    """
    header = {
        "alg": ALG_ECDH_ES_A256KW,
        "enc": enc,
        "epk": {"crv": epk.crv, "kty": "EC", "x": b64url_encode(epk.x), "y": b64url_encode(epk.y)},
    }
    return b64url_encode(json.dumps(header, separators=(",", ":")).encode("ascii"))


def encrypt(
    plaintext: bytes,
    recipient: ec.EllipticCurvePublicKey,
    *,
    enc: str = ENC_A256GCM,
    ephemeral: ec.EllipticCurvePrivateKey | None = None,
) -> FlattenedJwe:
    """Encrypt to ``recipient`` with ECDH-ES+A256KW, as Trustee's KBS does.

    A fresh ephemeral key on the recipient's curve (``ephemeral`` fixes it, for test
    vectors: the header then is known in advance), Z = ECDH, KEK = Concat KDF
    (:func:`concat_kdf`, AlgorithmID ``ECDH-ES+A256KW``, empty PartyUInfo/PartyVInfo),
    a random CEK wrapped with AES key wrap, a random 96-bit IV, AES-GCM with the
    protected header's base64url text as AAD. The header's bytes are Trustee's
    (:func:`trustee_protected_header`); no ``aad`` member.
    """
    cek_size = _GCM_ENCS.get(enc)
    if cek_size is None:
        raise JweError(f"unsupported enc {enc}")
    crv = curve_name(recipient.curve)
    if ephemeral is None:
        ephemeral = ec.generate_private_key(CURVES[crv][0]())
    elif curve_name(ephemeral.curve) != crv:
        raise JweError("the ephemeral key must be on the recipient's curve")
    protected = trustee_protected_header(EcPoint.from_public_key(ephemeral.public_key()), enc)
    kek = concat_kdf(ephemeral.exchange(ec.ECDH(), recipient), ALG_ECDH_ES_A256KW,
                     _KEY_WRAP_ALGS[ALG_ECDH_ES_A256KW] * 8)
    cek = os.urandom(cek_size)
    iv = os.urandom(_GCM_IV_SIZE)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return FlattenedJwe(
        protected=protected,
        encrypted_key=b64url_encode(aes_key_wrap(kek, cek)),
        iv=b64url_encode(iv),
        ciphertext=b64url_encode(sealed[:-_GCM_TAG_SIZE]),
        tag=b64url_encode(sealed[-_GCM_TAG_SIZE:]),
    )


def decrypt(private_key: ec.EllipticCurvePrivateKey, token: FlattenedJwe) -> bytes:
    """Decrypt a flattened ECDH-ES+A256KW/A256GCM JWE (split, then :func:`unwrap_secret`)."""
    fields, ciphertext = token.split()
    return unwrap_secret(private_key, fields, ciphertext)
