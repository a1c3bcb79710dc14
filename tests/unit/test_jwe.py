"""copra.attest.jwe against RFC 7520/7518 vectors, two JOSE libraries we did not write
(jwcrypto, joserfc), a hand-made Trustee-style JWE, and the header Trustee writes and
upstream COCONUT's proxy rebuilds."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from joserfc import jwe as jose_jwe
from joserfc.jwk import ECKey
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from copra.attest.jwe import (
    DecryptionFields,
    EcPoint,
    FlattenedJwe,
    JweError,
    b64url_decode,
    b64url_encode,
    concat_kdf,
    curve_name,
    decrypt,
    encrypt,
    trustee_protected_header,
    unwrap_secret,
)

# RFC 7520 §5.4 (ietf-jose cookbook jwe/5_4): ECDH-ES+A128KW, A128GCM, P-384.
RFC7520_54_KEY = {
    "kty": "EC",
    "crv": "P-384",
    "x": "YU4rRUzdmVqmRtWOs2OpDE_T5fsNIodcG8G5FWPrTPMyxpzsSOGaQLpe2FpxBmu2",
    "y": "A8-yxCHxkfBz3hKZfI1jUYMjUhsEveZ9THuwFjH2sCNdtksRJU7D5-SkgaFL1ETP",
    "d": "iTx2pk7wW-GqJkHcEkFQb2EFyYcO7RugmaW3mRrQVAOUiPommT0IdnYK2xDlZh-j",
}
RFC7520_54_PLAINTEXT = (
    "You can trust us to stick with you through thick and thin\u2013to the bitter end. "
    "And you can trust us to keep any secret of yours\u2013closer than you keep it "
    "yourself. But you cannot trust us to let you face trouble alone, and go off "
    "without a word. We are your friends, Frodo."
).encode()
RFC7520_54_CEK = "Nou2ueKlP70ZXDbq9UrRwg"
RFC7520_54_JSON_FLAT = {
    "protected": (
        "eyJhbGciOiJFQ0RILUVTK0ExMjhLVyIsImtpZCI6InBlcmVncmluLnRvb2tAdHVja2Jvcm91Z2guZXhhbX"
        "BsZSIsImVwayI6eyJrdHkiOiJFQyIsImNydiI6IlAtMzg0IiwieCI6InVCbzRrSFB3Nmtiang1bDB4b3dy"
        "ZF9vWXpCbWF6LUdLRlp1NHhBRkZrYllpV2d1dEVLNml1RURzUTZ3TmROZzMiLCJ5Ijoic3AzcDVTR2haVk"
        "MyZmFYdW1JLWU5SlUyTW84S3BvWXJGRHI1eVBOVnRXNFBnRXdaT3lRVEEtSmRhWTh0YjdFMCJ9LCJlbmMi"
        "OiJBMTI4R0NNIn0"
    ),
    "encrypted_key": "0DJjBXri_kBcC46IkU5_Jk9BqaQeHdv2",
    "iv": "mH-G2zVqgztUtnW_",
    "ciphertext": (
        "tkZuOO9h95OgHJmkkrfLBisku8rGf6nzVxhRM3sVOhXgz5NJ76oID7lpnAi_cPWJRCjSpAaUZ5dOR3Spy7"
        "QuEkmKx8-3RCMhSYMzsXaEwDdXta9Mn5B7cCBoJKB0IgEnj_qfo1hIi-uEkUpOZ8aLTZGHfpl05jMwbKkT"
        "e2yK3mjF6SBAsgicQDVCkcY9BLluzx1RmC3ORXaM0JaHPB93YcdSDGgpgBWMVrNU1ErkjcMqMoT_wtCex3"
        "w03XdLkjXIuEr2hWgeP-nkUZTPU9EoGSPj6fAS-bSz87RCPrxZdj_iVyC6QWcqAu07WNhjzJEPc4jVntRJ"
        "6K53NgPQ5p99l3Z408OUqj4ioYezbS6vTPlQ"
    ),
    "tag": "WuGzxmcreYjpHGJoa17EBg",
}

# RFC 7518 Appendix C: ECDH-ES (direct) key agreement, P-256, apu "Alice", apv "Bob".
RFC7518_C_BOB = {
    "crv": "P-256",
    "x": "weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ",
    "y": "e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck",
    "d": "VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw",
}
RFC7518_C_ALICE_EPK = {
    "crv": "P-256",
    "x": "gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0",
    "y": "SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps",
}
RFC7518_C_DERIVED_KEY = "VqqN6vgjbSBcIijNcacQGg"


def _private_key(jwk: dict[str, str]) -> ec.EllipticCurvePrivateKey:
    curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
    d = int.from_bytes(b64url_decode(jwk["d"]), "big")
    return ec.derive_private_key(d, curve[jwk["crv"]])


def _trustee_style_jwe(plaintext: bytes, recipient: ec.EllipticCurvePublicKey) -> FlattenedJwe:
    """An independent encryptor shaped like Trustee's kbs/src/jwe (epk members sorted)."""
    ephemeral = ec.generate_private_key(recipient.curve)
    epk = EcPoint.from_public_key(ephemeral.public_key())
    header = {
        "alg": "ECDH-ES+A256KW",
        "enc": "A256GCM",
        "epk": {"crv": epk.crv, "kty": "EC", "x": b64url_encode(epk.x), "y": b64url_encode(epk.y)},
    }
    protected = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    z = ephemeral.exchange(ec.ECDH(), recipient)
    kek = concat_kdf(z, "ECDH-ES+A256KW", 256)
    cek, iv = os.urandom(32), os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode())
    return FlattenedJwe(
        protected=protected,
        encrypted_key=b64url_encode(aes_key_wrap(kek, cek)),
        iv=b64url_encode(iv),
        ciphertext=b64url_encode(sealed[:-16]),
        tag=b64url_encode(sealed[-16:]),
    )


def test_unwrap_secret_rfc7520_5_4_vector_returns_plaintext() -> None:
    token = FlattenedJwe.from_json(RFC7520_54_JSON_FLAT)
    fields, ciphertext = token.split(alg="ECDH-ES+A128KW", enc="A128GCM")
    plaintext = unwrap_secret(
        _private_key(RFC7520_54_KEY), fields, ciphertext, alg="ECDH-ES+A128KW", enc="A128GCM"
    )
    assert plaintext == RFC7520_54_PLAINTEXT


def test_split_rfc7520_5_4_vector_keeps_protected_header_verbatim_as_aad() -> None:
    fields, _ = FlattenedJwe.from_json(RFC7520_54_JSON_FLAT).split(
        alg="ECDH-ES+A128KW", enc="A128GCM"
    )
    assert fields.aad == RFC7520_54_JSON_FLAT["protected"].encode()
    assert len(fields.epk_x) == len(fields.epk_y) == 48
    assert len(fields.wrapped_cek) == len(b64url_decode(RFC7520_54_CEK)) + 8


def test_concat_kdf_rfc7518_appendix_c_derives_published_key() -> None:
    bob = _private_key(RFC7518_C_BOB)
    alice = EcPoint(
        "P-256",
        b64url_decode(RFC7518_C_ALICE_EPK["x"]),
        b64url_decode(RFC7518_C_ALICE_EPK["y"]),
    ).public_key()
    z = bob.exchange(ec.ECDH(), alice)
    key = concat_kdf(z, "A128GCM", 128, apu=b"Alice", apv=b"Bob")
    assert b64url_encode(key) == RFC7518_C_DERIVED_KEY


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_encrypt_then_decrypt_on_each_curve_returns_plaintext(curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    assert decrypt(key, encrypt(b"persistent-state key", key.public_key())) == (
        b"persistent-state key"
    )


def test_encrypt_puts_alg_enc_and_p521_epk_in_protected_header() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    header = encrypt(b"s", key.public_key()).header()
    assert header["alg"] == "ECDH-ES+A256KW"
    assert header["enc"] == "A256GCM"
    assert header["epk"]["crv"] == "P-521"
    assert len(b64url_decode(header["epk"]["x"])) == 66


def test_joserfc_decrypts_output_of_encrypt_as_general_json() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    token = encrypt(b"cross-check", key.public_key())
    jose_key = ECKey.import_key(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    result = jose_jwe.decrypt_json(
        token.to_json(), jose_key, algorithms=["ECDH-ES+A256KW", "A256GCM"]
    )
    assert result.plaintext == b"cross-check"


# A fixed ephemeral key, and the protected header Trustee's KBS (kbs/src/jwe, kbs-types'
# ProtectedHeader through serde_json, whose Map is sorted by key) writes for it, spelled
# out by hand: alg, enc, then epk with crv, kty, x, y.
FIXED_EPHEMERAL_D = int.from_bytes(b"copra ephemeral key for the Trustee header vector", "big")
TRUSTEE_HEADER = (
    '{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"crv":"P-521","kty":"EC",'
    '"x":"AXehA0mySO50z-rS-7zOp2bCSF64uYIcfIC9koms7sEa4FZAB9O8NspeK3vN6lpjXmDl6WzWL5zqRWOIhmDecqh5",'
    '"y":"AF7TL6xswOIFFMDMbYZjPYw5ExIYDjgeKK76g9cYsY9TyAmy2Zh0CNXrLRm29daf6_PoSxfKZq6qYpyQhJGgojtH"}}'
)


def _upstream_proxy_aad(protected: str) -> bytes:
    """The AAD upstream COCONUT's proxy uses (tools/aproxy/src/backend/kbs.rs): it parses
    the header into kbs-types' ProtectedHeader {alg, enc, other_fields: serde_json Map}
    and serialises it again (generate_aad): alg, enc, then the other members sorted by
    key at every level (serde_json's Map without preserve_order is a BTreeMap), compact."""
    header = json.loads(b64url_decode(protected))
    others = {k: v for k, v in header.items() if k not in ("alg", "enc")}
    text = json.dumps({"alg": header["alg"], "enc": header["enc"]}, separators=(",", ":"))
    if others:
        text = text[:-1] + "," + json.dumps(others, separators=(",", ":"), sort_keys=True)[1:]
    return b64url_encode(text.encode()).encode()


def test_encrypt_protected_header_is_byte_for_byte_trustees() -> None:
    ephemeral = ec.derive_private_key(FIXED_EPHEMERAL_D, ec.SECP521R1())
    recipient = ec.generate_private_key(ec.SECP521R1())
    token = encrypt(b"s", recipient.public_key(), ephemeral=ephemeral)
    assert b64url_decode(token.protected) == TRUSTEE_HEADER.encode()
    epk = EcPoint.from_public_key(ephemeral.public_key())
    assert trustee_protected_header(epk) == token.protected


def test_upstream_proxy_aad_rebuild_of_encrypt_output_equals_protected_and_decrypts() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    token = encrypt(b"vtpm state key", key.public_key())
    rebuilt = _upstream_proxy_aad(token.protected)
    assert rebuilt == token.protected.encode()
    fields, ciphertext = token.split()
    assert unwrap_secret(key, replace(fields, aad=rebuilt), ciphertext) == b"vtpm state key"


def test_upstream_proxy_aad_rebuild_of_header_in_other_order_differs() -> None:
    """What copra sent before: epk as crv, x, y, kty (joserfc's order). Upstream's
    rebuild then authenticates other bytes than were encrypted: an invalid tag."""
    epk = json.loads(TRUSTEE_HEADER)["epk"]
    other = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM",
             "epk": {"crv": epk["crv"], "x": epk["x"], "y": epk["y"], "kty": "EC"}}
    protected = b64url_encode(json.dumps(other, separators=(",", ":")).encode())
    assert _upstream_proxy_aad(protected) != protected.encode()


def _jwcrypto_key(key: ec.EllipticCurvePrivateKey) -> jwcrypto_jwk.JWK:
    return jwcrypto_jwk.JWK.from_pem(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_jwcrypto_decrypts_output_of_encrypt_as_flattened_json(curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    token = jwcrypto_jwe.JWE()
    token.deserialize(json.dumps(encrypt(b"cross-check", key.public_key()).to_json()),
                      key=_jwcrypto_key(key))
    assert token.payload == b"cross-check"
    assert token.jose_header["epk"]["crv"] == curve_name(curve)


def test_unwrap_secret_jwcrypto_encrypted_jwe_returns_plaintext() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    public = jwcrypto_jwk.JWK.from_pem(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    token = jwcrypto_jwe.JWE(b"from jwcrypto",
                             json.dumps({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}))
    token.add_recipient(public)
    flat = FlattenedJwe.from_compact(token.serialize(compact=True))
    assert decrypt(key, flat) == b"from jwcrypto"


def test_unwrap_secret_trustee_style_jwe_with_reordered_epk_returns_plaintext() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    fields, ciphertext = _trustee_style_jwe(b"root key", key.public_key()).split()
    assert unwrap_secret(key, fields, ciphertext) == b"root key"


def _fields_for(key: ec.EllipticCurvePrivateKey) -> tuple[DecryptionFields, bytes]:
    return encrypt(b"secret", key.public_key()).split()


def test_unwrap_secret_wrong_private_key_raises_jwe_error() -> None:
    fields, ciphertext = _fields_for(ec.generate_private_key(ec.SECP521R1()))
    with pytest.raises(JweError, match="unwrap"):
        unwrap_secret(ec.generate_private_key(ec.SECP521R1()), fields, ciphertext)


def test_unwrap_secret_tampered_tag_raises_jwe_error() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    fields, ciphertext = _fields_for(key)
    bad = replace(fields, tag=bytes([fields.tag[0] ^ 1]) + fields.tag[1:])
    with pytest.raises(JweError, match="tag"):
        unwrap_secret(key, bad, ciphertext)


def test_unwrap_secret_tampered_aad_raises_jwe_error() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    fields, ciphertext = _fields_for(key)
    with pytest.raises(JweError, match="tag"):
        unwrap_secret(key, replace(fields, aad=fields.aad + b"x"), ciphertext)


def test_unwrap_secret_tampered_ciphertext_raises_jwe_error() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    fields, ciphertext = _fields_for(key)
    with pytest.raises(JweError):
        unwrap_secret(key, fields, bytes([ciphertext[0] ^ 0x80]) + ciphertext[1:])


def test_unwrap_secret_epk_off_curve_raises_jwe_error() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    fields, ciphertext = _fields_for(key)
    with pytest.raises(JweError, match="not on"):
        unwrap_secret(key, replace(fields, epk_y=bytes(66)), ciphertext)


def test_unwrap_secret_short_epk_coordinates_raise_jwe_error() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    fields, ciphertext = _fields_for(key)
    with pytest.raises(JweError, match="66 bytes"):
        unwrap_secret(key, replace(fields, epk_x=fields.epk_x[1:]), ciphertext)


def test_unwrap_secret_short_wrapped_cek_raises_jwe_error() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    fields, ciphertext = _fields_for(key)
    with pytest.raises(JweError, match="40 bytes"):
        unwrap_secret(key, replace(fields, wrapped_cek=fields.wrapped_cek[:32]), ciphertext)


def test_split_header_with_other_alg_raises_jwe_error() -> None:
    with pytest.raises(JweError, match="expected ECDH-ES\\+A256KW"):
        FlattenedJwe.from_json(RFC7520_54_JSON_FLAT).split()


def test_flattened_jwe_from_json_missing_member_raises_jwe_error() -> None:
    broken = {k: v for k, v in RFC7520_54_JSON_FLAT.items() if k != "tag"}
    with pytest.raises(JweError, match="tag"):
        FlattenedJwe.from_json(broken)


@pytest.mark.parametrize("text", ["AA==", "A", "A+/", "é", "AB"])
def test_b64url_decode_padded_invalid_or_noncanonical_raises_jwe_error(text: str) -> None:
    with pytest.raises(JweError):
        b64url_decode(text)


def test_ec_point_jwk_roundtrip_keeps_coordinates() -> None:
    point = EcPoint.from_public_key(ec.generate_private_key(ec.SECP521R1()).public_key())
    jwk = point.to_jwk()
    assert jwk["alg"] == "ECDH-ES+A256KW"
    assert EcPoint.from_jwk(jwk) == point


_CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
# The field primes, written here from SP 800-186 §3.2.1.1-3 in hex as the standard gives them.
FIELD_PRIMES = {
    "P-256": int("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff", 16),
    "P-384": int("ffffffff" * 7 + "fffffffe" "ffffffff" "00000000" "00000000" "ffffffff", 16),
    "P-521": int("1" + "f" * 130, 16),
}


@pytest.mark.parametrize("crv", sorted(_CURVES))
@pytest.mark.parametrize("coordinate", ["x", "y"])
def test_ec_point_coordinate_plus_field_prime_raises_jwe_error(crv: str, coordinate: str) -> None:
    # r15: cryptography reduced a coordinate >= p modulo p, so x + p named the key at x
    size = {"P-256": 32, "P-384": 48, "P-521": 66}[crv]
    numbers = ec.generate_private_key(_CURVES[crv]).public_key().public_numbers()
    prime = FIELD_PRIMES[crv]
    x, y = numbers.x, numbers.y
    bumped = (x if coordinate == "x" else y) + prime
    value = bumped if bumped < 1 << (8 * size) else prime  # p itself where x + p overflows
    x, y = (value, y) if coordinate == "x" else (x, value)
    with pytest.raises(JweError, match=f"coordinate {coordinate} is not below the field prime"):
        EcPoint(crv, x.to_bytes(size, "big"), y.to_bytes(size, "big"))


def test_ec_point_p521_x_plus_prime_in_a_jwk_raises_jwe_error() -> None:
    point = EcPoint.from_public_key(ec.generate_private_key(ec.SECP521R1()).public_key())
    jwk = point.to_jwk()
    x = int.from_bytes(point.x, "big") + FIELD_PRIMES["P-521"]
    jwk["x"] = b64url_encode(x.to_bytes(66, "big"))
    with pytest.raises(JweError, match="field prime"):
        EcPoint.from_jwk(jwk)


def test_sha256_is_the_concat_kdf_hash() -> None:
    # A guard against a silent change of hash: one Concat KDF round is SHA-256.
    z = bytes(range(66))
    other = b"\x00\x00\x00\x0eECDH-ES+A256KW" + bytes(8) + b"\x00\x00\x01\x00"
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"\x00\x00\x00\x01" + z + other)
    assert concat_kdf(z, "ECDH-ES+A256KW", 256) == digest.finalize()


@pytest.mark.parametrize(
    "aad", ["\u00e9", "?", "a=", "a+b", "a b", "AB"], ids=["e-acute", "question", "padded",
                                                      "plus", "space", "non-canonical"]
)
def test_gcm_aad_member_that_is_not_canonical_base64url_raises_jwe_error(aad: str) -> None:
    # r05: 'é' and '?' used to give the same AAD
    with pytest.raises(JweError):
        FlattenedJwe("eyJhIjoxfQ", "", "", "", "", aad=aad).gcm_aad()


def test_gcm_aad_non_ascii_protected_header_raises_jwe_error() -> None:
    with pytest.raises(JweError):
        FlattenedJwe("eyJhIjoxfQ\u00e9", "", "", "", "").gcm_aad()


def test_gcm_aad_is_protected_dot_aad_as_received() -> None:
    assert FlattenedJwe("eyJhIjoxfQ", "", "", "", "", aad="AQI").gcm_aad() == b"eyJhIjoxfQ.AQI"
