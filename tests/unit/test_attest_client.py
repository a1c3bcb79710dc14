"""copra.attest.client (the SVSM side) against a scripted proxy channel: no sockets, no threads."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from copra.attest.client import AttestationFailed, attest
from copra.attest.jwe import EcPoint, encrypt
from copra.attest.protocol import (
    AttestationRequest,
    AttestationResponse,
    Message,
    NegotiationParam,
    NegotiationRequest,
    NegotiationResponse,
    Token,
    TokenKind,
    decode_message,
    encode_frame,
    read_frame,
)

CHALLENGE = bytes(range(32))
REPORT = b"\xaa" * 1184
ORDER = (NegotiationParam.EC_PUBLIC_KEY_BYTES, NegotiationParam.CHALLENGE)


class ScriptedProxy:
    """Replies with fixed frames and records what the SVSM sent."""

    def __init__(self, *replies: Message | bytes) -> None:
        self.inbox = b"".join(r if isinstance(r, bytes) else encode_frame(r) for r in replies)
        self.outbox = b""

    def recv(self, bufsize: int, /) -> bytes:
        out, self.inbox = self.inbox[:bufsize], self.inbox[bufsize:]
        return out

    def sendall(self, data: bytes, /) -> None:
        self.outbox += data

    def sent(self) -> list[bytes]:
        frames, rest = [], ScriptedProxy(self.outbox)
        while rest.inbox:
            frames.append(read_frame(rest))
        return frames


class Recorder:
    """A report callable that records the REPORT_DATA it was asked for."""

    def __init__(self) -> None:
        self.asked: list[bytes] = []

    def __call__(self, data: bytes) -> bytes:
        self.asked.append(data)
        return REPORT


def _success(key: ec.EllipticCurvePrivateKey, secret: bytes) -> AttestationResponse:
    fields, ciphertext = encrypt(secret, key.public_key()).split()
    return AttestationResponse(True, ciphertext, fields, Token(TokenKind.JWT, "t.o.k"))


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP521R1())


def test_attest_success_returns_secret_and_token(key: ec.EllipticCurvePrivateKey) -> None:
    proxy = ScriptedProxy(NegotiationResponse(CHALLENGE, ORDER), _success(key, b"root key"))
    result = attest(proxy, lambda _: REPORT, private_key=key)
    assert result.secret == b"root key"
    assert result.token == Token(TokenKind.JWT, "t.o.k")


def test_attest_asks_report_over_sha512_of_params_in_given_order(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    recorder = Recorder()
    proxy = ScriptedProxy(NegotiationResponse(CHALLENGE, ORDER), _success(key, b"s"))
    attest(proxy, recorder, private_key=key)
    point = EcPoint.from_public_key(key.public_key())
    assert recorder.asked == [hashlib.sha512(point.x + point.y + CHALLENGE).digest()]


def test_attest_sends_negotiation_then_request_with_echoed_challenge_and_key(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    proxy = ScriptedProxy(NegotiationResponse(CHALLENGE, ORDER), _success(key, b"s"))
    attest(proxy, lambda _: REPORT, private_key=key)
    hello, request = proxy.sent()
    assert decode_message(NegotiationRequest, hello) == NegotiationRequest()
    parsed = decode_message(AttestationRequest, request)
    point = EcPoint.from_public_key(key.public_key())
    assert parsed.challenge == CHALLENGE
    assert (parsed.key.x, parsed.key.y) == (point.x, point.y)
    assert parsed.evidence.report == REPORT and parsed.evidence.certs_buf is None


def test_attest_refused_raises_attestation_failed() -> None:
    proxy = ScriptedProxy(NegotiationResponse(CHALLENGE, ORDER), AttestationResponse.failure())
    with pytest.raises(AttestationFailed, match="refused"):
        attest(proxy, lambda _: REPORT)


def test_attest_secret_for_other_key_raises_attestation_failed(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    other = ec.generate_private_key(ec.SECP521R1())
    proxy = ScriptedProxy(NegotiationResponse(CHALLENGE, ORDER), _success(other, b"s"))
    with pytest.raises(AttestationFailed, match="unwrap"):
        attest(proxy, lambda _: REPORT, private_key=key)


def test_attest_tampered_tag_raises_attestation_failed(key: ec.EllipticCurvePrivateKey) -> None:
    good = _success(key, b"s")
    assert good.decryption is not None
    bad = replace(good, decryption=replace(good.decryption, tag=bytes(16)))
    proxy = ScriptedProxy(NegotiationResponse(CHALLENGE, ORDER), bad)
    with pytest.raises(AttestationFailed, match="tag"):
        attest(proxy, lambda _: REPORT, private_key=key)


def test_attest_success_without_secret_raises_attestation_failed() -> None:
    proxy = ScriptedProxy(NegotiationResponse(CHALLENGE, ORDER), AttestationResponse(True))
    with pytest.raises(AttestationFailed, match="no secret"):
        attest(proxy, lambda _: REPORT)


def test_attest_empty_params_raises_before_asking_for_report() -> None:
    recorder = Recorder()
    proxy = ScriptedProxy(NegotiationResponse(CHALLENGE, ()))
    with pytest.raises(AttestationFailed, match="bind nothing"):
        attest(proxy, recorder)
    assert recorder.asked == []


def test_attest_proxy_hangs_up_raises_attestation_failed() -> None:
    with pytest.raises(AttestationFailed, match="closed"):
        attest(ScriptedProxy(), lambda _: REPORT)


def test_attest_challenge_only_params_refused_before_asking_for_report(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    # r01: the proxy hides its own key in the challenge; signing would hand it the secret
    theirs = EcPoint.from_public_key(ec.generate_private_key(ec.SECP521R1()).public_key())
    recorder = Recorder()
    proxy = ScriptedProxy(
        NegotiationResponse(theirs.x + theirs.y + CHALLENGE, (NegotiationParam.CHALLENGE,))
    )
    with pytest.raises(AttestationFailed, match=r"negotiation refused: .* do not bind"):
        attest(proxy, recorder, private_key=key)
    assert recorder.asked == []
    assert len(proxy.sent()) == 1  # the NegotiationRequest, and no AttestationRequest


def test_attest_challenge_first_order_is_accepted(key: ec.EllipticCurvePrivateKey) -> None:
    order = (NegotiationParam.CHALLENGE, NegotiationParam.EC_PUBLIC_KEY_BYTES)
    recorder = Recorder()
    proxy = ScriptedProxy(NegotiationResponse(CHALLENGE, order), _success(key, b"s"))
    assert attest(proxy, recorder, private_key=key).secret == b"s"
    point = EcPoint.from_public_key(key.public_key())
    assert recorder.asked == [hashlib.sha512(CHALLENGE + point.x + point.y).digest()]


def test_attest_short_challenge_refused_before_asking_for_report() -> None:
    recorder = Recorder()
    proxy = ScriptedProxy(NegotiationResponse(b"\x01" * 8, ORDER))
    with pytest.raises(AttestationFailed, match="8-byte challenge"):
        attest(proxy, recorder)
    assert recorder.asked == []
