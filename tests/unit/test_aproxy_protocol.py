"""copra.attest.protocol: upstream libaproxy encodings, framing limits and fuzzed decoders."""

from __future__ import annotations

import contextlib
import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.attest.jwe import DecryptionFields
from copra.attest.protocol import (
    MAX_DETAIL,
    MAX_FRAME_SIZE,
    AttestationRequest,
    AttestationResponse,
    ConnectionClosed,
    NegotiationParam,
    NegotiationRefusal,
    NegotiationRequest,
    NegotiationResponse,
    ProtocolError,
    ProxyRefusal,
    PublicKeyBytes,
    SnpEvidence,
    Tee,
    Token,
    TokenKind,
    decode_message,
    encode_frame,
    encode_message,
    read_frame,
    receive_message,
)

MESSAGE_KINDS = (NegotiationRequest, NegotiationResponse, AttestationRequest, AttestationResponse)


class BytesChannel:
    """A channel fake: serves a fixed byte string in chunks of at most ``chunk``."""

    def __init__(self, data: bytes, chunk: int = 7) -> None:
        self.data, self.pos, self.chunk, self.sent = data, 0, chunk, b""

    def recv(self, bufsize: int, /) -> bytes:
        out = self.data[self.pos : self.pos + min(bufsize, self.chunk)]
        self.pos += len(out)
        return out

    def sendall(self, data: bytes, /) -> None:
        self.sent += data


def _request() -> AttestationRequest:
    return AttestationRequest(
        Tee.SNP, SnpEvidence(b"\x01" * 1184), b"\x02" * 32, PublicKeyBytes(b"x" * 66, b"y" * 66)
    )


def _response() -> AttestationResponse:
    fields = DecryptionFields(b"X" * 66, b"Y" * 66, b"w" * 40, b"eyJhbGc", b"i" * 12, b"t" * 16)
    return AttestationResponse(True, b"ciphertext", fields, Token(TokenKind.JWT, "a.b.c"))


def test_negotiation_request_encodes_as_upstream_bytes() -> None:
    assert encode_message(NegotiationRequest()) == b'{"version":[0,1,0],"tee":"snp"}'


def test_negotiation_response_encodes_standard_padded_base64_and_param_names() -> None:
    msg = NegotiationResponse(
        b"\xfb\xff", (NegotiationParam.EC_PUBLIC_KEY_BYTES, NegotiationParam.CHALLENGE)
    )
    assert encode_message(msg) == b'{"challenge":"+/8=","params":["EcPublicKeyBytes","Challenge"]}'


def test_attestation_request_without_certs_omits_certs_buf() -> None:
    body = json.loads(encode_message(_request()))
    assert body["evidence"] == {"Snp": {"report": "AQEB" * 394 + "AQE="}}
    assert set(body) == {"tee", "evidence", "challenge", "key"}
    assert set(body["key"]) == {"x", "y"}


def test_attestation_request_with_certs_includes_certs_buf() -> None:
    msg = AttestationRequest(Tee.SNP, SnpEvidence(b"r", b"c"), b"n", PublicKeyBytes(b"x", b"y"))
    assert json.loads(encode_message(msg))["evidence"] == {
        "Snp": {"report": "cg==", "certs_buf": "Yw=="}
    }


def test_attestation_response_failure_encodes_as_upstream_bytes() -> None:
    assert (
        encode_message(AttestationResponse.failure())
        == b'{"success":false,"decryption":null,"token":null}'
    )


# --- the copra extension "detail": why the proxy answers success: false -----------------


def test_attestation_response_failure_with_detail_adds_only_that_member() -> None:
    message = AttestationResponse.failure("the key broker refused the evidence: 401 X: y")
    assert encode_message(message) == (
        b'{"success":false,"decryption":null,"token":null,'
        b'"detail":"the key broker refused the evidence: 401 X: y"}')
    assert decode_message(AttestationResponse, encode_message(message)) == message


def test_attestation_response_from_upstream_proxy_has_no_detail() -> None:
    decoded = decode_message(AttestationResponse, b'{"success":false,"decryption":null,'
                                                  b'"token":null}')
    assert decoded.detail is None


def test_attestation_response_detail_control_characters_are_escaped_and_bounded() -> None:
    forged = "refused\n[kernel] attestation succeeded\x1b[2J" + "z" * 5000
    body = json.dumps({"success": False, "detail": forged}).encode()
    detail = decode_message(AttestationResponse, body).detail
    assert detail is not None and detail.isprintable() and len(detail) == MAX_DETAIL
    assert detail.startswith("refused\\n[kernel] attestation succeeded\\x1b[2J")
    assert detail.endswith("...")


def test_attestation_response_detail_not_a_string_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="detail"):
        decode_message(AttestationResponse, b'{"success":false,"detail":7}')


def test_negotiation_refusal_decodes_as_proxy_refusal_with_its_detail() -> None:
    frame = encode_message(NegotiationRefusal("cannot ask the key broker: refused"))
    assert frame == b'{"detail":"cannot ask the key broker: refused"}'
    with pytest.raises(ProxyRefusal) as info:
        decode_message(NegotiationResponse, frame)
    assert info.value.detail == "cannot ask the key broker: refused"


def test_negotiation_response_with_neither_challenge_nor_detail_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="challenge"):
        decode_message(NegotiationResponse, b'{"params":[]}')


def test_attestation_response_success_has_upstream_member_names() -> None:
    body = json.loads(encode_message(_response()))
    assert set(body) == {"success", "secret", "decryption", "token"}
    assert set(body["decryption"]) == {"epk", "wrapped_cek", "aad", "iv", "tag"}
    assert body["token"] == {"Jwt": "a.b.c"}


@pytest.mark.parametrize(
    "message",
    [
        NegotiationRequest(),
        NegotiationResponse(b"nonce", (NegotiationParam.CHALLENGE,)),
        _request(),
        _response(),
        AttestationResponse.failure(),
        AttestationResponse(False, token=Token(TokenKind.CWT, "cbor")),
    ],
)
def test_message_frame_roundtrip_returns_equal_message(message: Any) -> None:
    channel = BytesChannel(encode_frame(message))
    assert receive_message(channel, type(message)) == message


def test_encode_frame_prefixes_little_endian_u64_length() -> None:
    frame = encode_frame(NegotiationRequest())
    assert struct.unpack("<Q", frame[:8])[0] == len(frame) - 8


def test_read_frame_length_above_limit_raises_without_reading_body() -> None:
    channel = BytesChannel(struct.pack("<Q", MAX_FRAME_SIZE + 1) + b"{}")
    with pytest.raises(ProtocolError, match="frame length"):
        read_frame(channel)
    assert channel.pos == 8


def test_read_frame_zero_length_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="frame length 0"):
        read_frame(BytesChannel(bytes(8)))


def test_read_frame_truncated_body_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="inside a frame body"):
        read_frame(BytesChannel(struct.pack("<Q", 10) + b"{}"))


def test_read_frame_truncated_length_raises_protocol_error_not_closed() -> None:
    with pytest.raises(ProtocolError) as info:
        read_frame(BytesChannel(b"\x01\x00"))
    assert not isinstance(info.value, ConnectionClosed)


def test_read_frame_at_eof_raises_connection_closed() -> None:
    with pytest.raises(ConnectionClosed):
        read_frame(BytesChannel(b""))


@pytest.mark.parametrize(
    ("kind", "payload", "reason"),
    [
        (NegotiationRequest, b"{", "invalid JSON"),
        (NegotiationRequest, b"\xff{}", "invalid JSON"),
        (NegotiationRequest, b"[]", "expected a JSON object"),
        (NegotiationRequest, b'{"version":[0,2,0],"tee":"snp"}', "unsupported version"),
        (NegotiationRequest, b'{"version":[false,1,0],"tee":"snp"}', "major"),
        (NegotiationRequest, b'{"version":[0,1,0],"tee":"tdx"}', "unknown value"),
        (NegotiationRequest, b'{"version":[0,1,0]}', "missing member 'tee'"),
        (NegotiationRequest, b'{"version":[0,1,0],"tee":"snp","tee":"snp"}', "duplicate"),
        (NegotiationResponse, b'{"challenge":"AA","params":[]}', "bad base64"),
        (NegotiationResponse, b'{"challenge":"AA==","params":["Nonce"]}', "unknown value"),
        (NegotiationResponse, b'{"challenge":"AA==","params":NaN}', "constant"),
        (AttestationRequest, b'{"tee":"snp","evidence":{"Tdx":{}},"challenge":"","key":{}}', "Snp"),
        (AttestationResponse, b'{"success":true,"secret":null}', "base64"),
        (AttestationResponse, b'{"success":1}', "boolean"),
        (AttestationResponse, b'{"success":true,"token":{"Jwt":1}}', "string"),
        (AttestationResponse, b'{"success":true,"decryption":{"epk":{}}}', "missing member"),
    ],
)
def test_decode_message_malformed_input_raises_protocol_error(
    kind: Any, payload: bytes, reason: str
) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_message(kind, payload)


def test_decode_message_deeply_nested_json_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_message(AttestationRequest, b"[" * 200_000 + b"]" * 200_000)


def test_decode_message_ignores_unknown_members_like_serde() -> None:
    msg = decode_message(NegotiationRequest, b'{"version":[0,1,0],"tee":"snp","extra":1}')
    assert msg == NegotiationRequest()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=256), kind=st.sampled_from(MESSAGE_KINDS))
def test_receive_message_random_bytes_only_raise_protocol_error(data: bytes, kind: Any) -> None:
    with contextlib.suppress(ProtocolError):
        receive_message(BytesChannel(data), kind, max_size=4096)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=256), kind=st.sampled_from(MESSAGE_KINDS))
def test_decode_message_random_bytes_only_raise_protocol_error(data: bytes, kind: Any) -> None:
    with contextlib.suppress(ProtocolError):
        decode_message(kind, data)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "version",
                    "tee",
                    "challenge",
                    "params",
                    "evidence",
                    "Snp",
                    "report",
                    "certs_buf",
                    "key",
                    "x",
                    "y",
                    "success",
                    "secret",
                    "decryption",
                    "epk",
                    "wrapped_cek",
                    "aad",
                    "iv",
                    "tag",
                    "token",
                    "Jwt",
                    "Cwt",
                ]
            )
            | st.text(max_size=5),
            inner,
            max_size=6,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(value=_json_values, kind=st.sampled_from(MESSAGE_KINDS))
def test_from_json_random_json_values_only_raise_protocol_error(value: Any, kind: Any) -> None:
    with contextlib.suppress(ProtocolError):
        kind.from_json(value)


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), byte=st.integers(min_value=0, max_value=255))
def test_decode_message_mutated_valid_response_only_raises_protocol_error(
    position: int, byte: int
) -> None:
    payload = bytearray(encode_message(_response()))
    payload[position % len(payload)] = byte
    with contextlib.suppress(ProtocolError):
        decode_message(AttestationResponse, bytes(payload))


# --- the proxy's per-connection deadline --------------------------------------------------


class TricklingSocket:
    """A socket fake whose peer announces a 512 KiB frame, then sends one byte per recv,
    each taking ``step`` seconds of a fake clock; it records the timeouts it is given."""

    def __init__(self, clock: list[float], step: float) -> None:
        self.clock, self.step = clock, step
        self.data = struct.pack("<Q", 1 << 19)
        self.timeouts: list[float] = []

    def settimeout(self, value: float) -> None:
        self.timeouts.append(value)

    def recv(self, bufsize: int, /) -> bytes:
        self.clock[0] += self.step
        out, self.data = (self.data[:1] or b" "), self.data[1:]
        return out

    def sendall(self, data: bytes, /) -> None:
        self.clock[0] += self.step


def test_deadline_channel_trickling_peer_times_out_at_the_connection_deadline() -> None:
    from copra.attest.aproxy import DeadlineChannel

    clock = [0.0]
    peer = TricklingSocket(clock, step=0.5)  # one byte every io_timeout / 2 (r07)
    channel = DeadlineChannel(peer, 10.0, io_timeout=1.0, clock=lambda: clock[0])  # type: ignore[arg-type]
    with pytest.raises(TimeoutError, match="deadline"):
        read_frame(channel)  # the length, then the body, a byte at a time
    assert clock[0] == 10.0
    assert max(peer.timeouts) == 1.0 and min(peer.timeouts) == 0.5


def test_deadline_channel_never_waits_past_the_deadline() -> None:
    from copra.attest.aproxy import DeadlineChannel

    clock = [9.75]
    peer = TricklingSocket(clock, step=0.0)
    channel = DeadlineChannel(peer, 10.0, io_timeout=1.0, clock=lambda: clock[0])  # type: ignore[arg-type]
    channel.sendall(b"x")
    assert peer.timeouts == [0.25]
