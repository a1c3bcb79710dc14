"""copra.attest.binding: the COCONUT and Trustee REPORT_DATA rules and RFC 8785 JCS."""

from __future__ import annotations

import hashlib

import pytest

from copra.attest.binding import (
    MAX_CHALLENGE_SIZE,
    MIN_CHALLENGE_SIZE,
    Binding,
    BindingError,
    expected_report_data,
    jcs,
    negotiated_binding,
    report_data,
    trustee_report_data,
    trustee_runtime_data,
    trustee_tee_pubkey,
)
from copra.attest.jwe import EcPoint
from copra.attest.protocol import NegotiationParam as P

# coordinates below the P-521 field prime (2^521 - 1: a first byte of at most 1)
KEY = EcPoint("P-521", bytes(range(66)), bytes([1]) + bytes(range(67, 132)))
NONCE = b"\x11" * 32


def test_jcs_trustee_as_vector_hashes_to_published_sha384() -> None:
    canonical = jcs({"c": {"d": "e"}, "b": 1, "a": "test"})
    assert canonical == b'{"a":"test","b":1,"c":{"d":"e"}}'
    digest = hashlib.sha384(canonical).hexdigest()
    assert digest.startswith("e71ce8e7") and digest.endswith("78870c3")


def test_jcs_sorts_members_by_utf16_code_units_as_rfc8785_example() -> None:
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    out = jcs(dict.fromkeys(keys, 0)).decode()
    order = [out.index(f'"{k}"' if k != "\r" else '"\\r"') for k in keys]
    expected = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert [k for _, k in sorted(zip(order, keys, strict=True))] == expected


def test_jcs_float_raises_binding_error() -> None:
    with pytest.raises(BindingError):
        jcs({"a": 1.5})


def test_report_data_coconut_params_is_sha512_of_x_y_nonce() -> None:
    data = report_data([P.EC_PUBLIC_KEY_BYTES, P.CHALLENGE], NONCE, KEY)
    assert data == hashlib.sha512(KEY.x + KEY.y + NONCE).digest()


def test_report_data_follows_param_order() -> None:
    assert report_data([P.CHALLENGE, P.EC_PUBLIC_KEY_BYTES], NONCE, KEY) == (
        hashlib.sha512(NONCE + KEY.x + KEY.y).digest()
    )


def test_report_data_empty_params_raises_binding_error() -> None:
    with pytest.raises(BindingError, match="bind nothing"):
        report_data([], NONCE, KEY)


def test_report_data_trustee_mixed_with_challenge_raises_binding_error() -> None:
    with pytest.raises(BindingError, match="only"):
        report_data([P.TRUSTEE_RUNTIME_DATA, P.CHALLENGE], NONCE, KEY)


def test_report_data_trustee_param_is_zero_padded_sha384_of_jcs_runtime_data() -> None:
    data = report_data([P.TRUSTEE_RUNTIME_DATA], NONCE, KEY)
    material = {**trustee_runtime_data(NONCE, KEY), "additional-evidence": ""}
    assert data == hashlib.sha384(jcs(material)).digest() + bytes(16)


def test_expected_report_data_matches_svsm_side_for_both_bindings() -> None:
    assert expected_report_data(Binding.COCONUT, NONCE, KEY) == report_data(
        [P.EC_PUBLIC_KEY_BYTES, P.CHALLENGE], NONCE, KEY
    )
    assert expected_report_data(Binding.TRUSTEE, NONCE, KEY) == report_data(
        [P.TRUSTEE_RUNTIME_DATA], NONCE, KEY
    )


# What Trustee hashes for KEY and NONCE, spelled out by hand: kbs-types' TeePubKey
# re-serialised (kty, crv, alg, x, y; nothing else), then JCS (keys sorted, compact).
TRUSTEE_MATERIAL = (
    '{"additional-evidence":"","nonce":"ERERERERERERERERERERERERERERERERERERERERERE=",'
    '"tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-521","kty":"EC",'
    '"x":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-P0BB",'
    '"y":"AUNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn-AgYKD"}}'
)
TRUSTEE_DIGEST = (
    "67c23851a428b1f3cf1cbfde593fa212090378e2d88c2c6352fea437924127163ddb8c61677430d6b0841f9af4a29793"
)


def test_trustee_report_data_key_with_kid_and_use_equals_trustees_fixed_vector() -> None:
    runtime = trustee_runtime_data(NONCE, KEY)
    runtime["tee-pubkey"] = {"kid": "svsm-0", **runtime["tee-pubkey"], "use": "enc"}
    assert hashlib.sha384(TRUSTEE_MATERIAL.encode()).hexdigest() == TRUSTEE_DIGEST
    assert trustee_report_data(runtime) == bytes.fromhex(TRUSTEE_DIGEST) + bytes(16)


def test_trustee_report_data_without_kid_is_the_same_fixed_vector() -> None:
    assert trustee_report_data(trustee_runtime_data(NONCE, KEY)) == (
        bytes.fromhex(TRUSTEE_DIGEST) + bytes(16)
    )


@pytest.mark.parametrize("missing", ["crv", "alg", "x", "y"])
def test_trustee_tee_pubkey_ec_member_missing_raises_binding_error(missing: str) -> None:
    jwk = {k: v for k, v in KEY.to_jwk().items() if k != missing}
    with pytest.raises(BindingError, match=repr(missing)):
        trustee_tee_pubkey(jwk)


def test_trustee_tee_pubkey_rsa_keeps_kty_alg_n_e() -> None:
    jwk = {"kty": "RSA", "alg": "RSA-OAEP-256", "n": "AQAB", "e": "AQAB", "kid": "k"}
    assert trustee_tee_pubkey(jwk) == {"kty": "RSA", "alg": "RSA-OAEP-256", "n": "AQAB",
                                       "e": "AQAB"}


def test_trustee_tee_pubkey_unknown_kty_raises_binding_error() -> None:
    with pytest.raises(BindingError, match="kty"):
        trustee_tee_pubkey({"kty": "OKP", "crv": "X25519", "x": "AA"})


def test_trustee_runtime_data_jwk_has_upstream_members() -> None:
    runtime = trustee_runtime_data(NONCE, KEY)
    assert set(runtime["tee-pubkey"]) == {"kty", "crv", "alg", "x", "y"}
    assert runtime["tee-pubkey"]["alg"] == "ECDH-ES+A256KW"


def test_jcs_deeply_nested_value_raises_binding_error() -> None:
    value: object = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(BindingError, match="deeply"):
        jcs(value)


# --- the SVSM accepts only parameter lists that bind its own key -------------------------


def test_report_data_challenge_only_raises_binding_error() -> None:
    # r01: a proxy passing off x' || y' || nonce as the challenge for its own key
    substituted = bytes(66) + bytes(66) + NONCE
    with pytest.raises(BindingError, match="do not bind the SVSM's key"):
        report_data([P.CHALLENGE], substituted, KEY)


def test_report_data_key_only_raises_binding_error() -> None:
    with pytest.raises(BindingError, match="do not bind the SVSM's key"):
        report_data([P.EC_PUBLIC_KEY_BYTES], NONCE, KEY)


@pytest.mark.parametrize(
    "params",
    [
        [P.EC_PUBLIC_KEY_BYTES, P.CHALLENGE, P.CHALLENGE],
        [P.EC_PUBLIC_KEY_BYTES, P.EC_PUBLIC_KEY_BYTES, P.CHALLENGE],
        [P.CHALLENGE, P.EC_PUBLIC_KEY_BYTES, P.EC_PUBLIC_KEY_BYTES],
    ],
    ids=["challenge-twice", "key-twice-first", "key-twice-last"],
)
def test_report_data_repeated_param_raises_binding_error(params: list[P]) -> None:
    with pytest.raises(BindingError, match="exactly once"):
        report_data(params, NONCE, KEY)


def test_report_data_trustee_param_twice_raises_binding_error() -> None:
    with pytest.raises(BindingError, match="only"):
        report_data([P.TRUSTEE_RUNTIME_DATA, P.TRUSTEE_RUNTIME_DATA], NONCE, KEY)


@pytest.mark.parametrize("size", [0, MIN_CHALLENGE_SIZE - 1, MAX_CHALLENGE_SIZE + 1])
@pytest.mark.parametrize("params", [[P.EC_PUBLIC_KEY_BYTES, P.CHALLENGE], [P.TRUSTEE_RUNTIME_DATA]])
def test_report_data_challenge_size_out_of_bounds_raises_binding_error(
    size: int, params: list[P]
) -> None:
    with pytest.raises(BindingError, match="challenge is outside"):
        report_data(params, b"\x01" * size, KEY)


@pytest.mark.parametrize("size", [MIN_CHALLENGE_SIZE, 32, MAX_CHALLENGE_SIZE])
def test_negotiated_binding_accepts_challenge_sizes_within_bounds(size: int) -> None:
    assert negotiated_binding([P.CHALLENGE, P.EC_PUBLIC_KEY_BYTES], bytes(size)) is Binding.COCONUT
