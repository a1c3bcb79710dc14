"""The SVSM <-> attestation proxy protocol, wire-compatible with COCONUT's libaproxy.

Framing (upstream ``libaproxy``, ``kernel/src/attest.rs``): every message, in both
directions, is an 8-byte little-endian length (Rust ``usize`` on x86-64) followed
by that many bytes of compact JSON. One connection carries exactly
NegotiationRequest -> NegotiationResponse -> AttestationRequest ->
AttestationResponse; then the proxy reads until EOF.

Messages use upstream's serde names: byte fields are *standard* base64 with
padding, enums are externally tagged (``{"Snp": {...}}``, ``{"Jwt": "..."}``),
``version`` is the semver triple ``[0, 1, 0]`` (nothing else is accepted) and
``tee`` is ``"snp"``. ``secret`` and ``certs_buf`` are *left out* when there is
no value (upstream's deserialiser refuses JSON null for them, so this decoder
does too); ``decryption`` and ``token`` are null or absent when there is none.
Unknown members are ignored, as serde does by default.

copra extensions (docs/attestation-protocol.md §1):

* the negotiation parameter ``"TrusteeRuntimeData"`` (see :mod:`copra.attest.binding`).
  An upstream SVSM refuses it, which is the honest outcome: it cannot produce that
  binding;
* ``"detail"``, a string in an AttestationResponse that says why ``success`` is false,
  and the whole of a negotiation reply when the proxy cannot start an attestation
  (``{"detail": "..."}``, no challenge): :class:`ProxyRefusal`. Upstream's SVSM ignores
  the member (serde ignores unknown members) and fails on the reply without a
  challenge as it would on a closed connection. The text is the proxy's and the key
  broker's: it is bounded (:data:`MAX_DETAIL`) and shown escaped
  (:func:`copra.attest.text.visible`).

Reading is defensive: a frame longer than ``max_size`` (1 MiB by default) is
refused before its body is read, and every malformed input (bad length,
truncated frame, invalid UTF-8, bad JSON, duplicate members, wrong types, bad
base64, unknown version, tee or parameter) raises :class:`ProtocolError`, and
nothing else. Decoders are fuzzed with hypothesis to hold that.

Thread safety: the dataclasses are frozen; a channel must be used by one thread.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol, Self, TypeVar

from copra.attest.jwe import DecryptionFields
from copra.attest.text import visible

#: Upstream ``ATTEST_DEFAULT_VSOCK_PORT``.
VSOCK_PORT: Final = 1995
PROTOCOL_VERSION: Final = (0, 1, 0)
MAX_FRAME_SIZE: Final = 1 << 20
_LENGTH: Final = struct.Struct("<Q")


class ProtocolError(Exception):
    """A peer broke the proxy protocol; the message says how."""


class ConnectionClosed(ProtocolError):
    """The peer closed the connection cleanly, before the first byte of a frame."""


class ProxyRefusal(ProtocolError):
    """The proxy answered the negotiation with a reason instead of a challenge."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


#: The longest ``detail`` kept (characters); a longer one is cut, with ``...``.
MAX_DETAIL: Final = 600


def bounded_detail(text: str) -> str:
    """``text`` made visible (:func:`~copra.attest.text.visible`) and cut to
    :data:`MAX_DETAIL` characters."""
    text = visible(text)
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def _detail(obj: dict[str, Any], what: str) -> str | None:
    detail = obj.get("detail")
    if detail is None:
        return None
    if not isinstance(detail, str):
        raise ProtocolError(f"{what}.detail: expected a string")
    return bounded_detail(detail)


class Tee(StrEnum):
    SNP = "snp"


class NegotiationParam(StrEnum):
    """What goes into REPORT_DATA, in the order the proxy lists them."""

    CHALLENGE = "Challenge"  #: the raw challenge bytes
    EC_PUBLIC_KEY_BYTES = "EcPublicKeyBytes"  #: x then y, big-endian, field size each
    #: copra extension: REPORT_DATA is Trustee's hash of the runtime data; sole parameter.
    TRUSTEE_RUNTIME_DATA = "TrusteeRuntimeData"


class TokenKind(StrEnum):
    JWT = "Jwt"
    CWT = "Cwt"


_E = TypeVar("_E", bound=StrEnum)


# --- field helpers: each raises ProtocolError naming the member ---------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{what}: expected a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise ProtocolError(f"{what}: bad base64 ({exc})") from exc


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: expected a JSON object")
    return value


def _member(obj: dict[str, Any], name: str, what: str) -> Any:
    if name not in obj:
        raise ProtocolError(f"{what}: missing member {name!r}")
    return obj[name]


def _enum(kind: type[_E], value: object, what: str) -> _E:
    if not isinstance(value, str):
        raise ProtocolError(f"{what}: expected a string")
    try:
        return kind(value)
    except ValueError:
        raise ProtocolError(f"{what}: unknown value {value!r}") from None


# --- messages --------------------------------------------------------------------------


@dataclass(frozen=True)
class NegotiationRequest:
    version: tuple[int, int, int] = PROTOCOL_VERSION
    tee: Tee = Tee.SNP

    def to_json(self) -> dict[str, Any]:
        return {"version": list(self.version), "tee": str(self.tee)}

    @classmethod
    def from_json(cls, value: object) -> Self:
        obj = _object(value, "NegotiationRequest")
        version = _member(obj, "version", "NegotiationRequest")
        if (
            not isinstance(version, list)
            or len(version) != 3
            or any(type(part) is not int for part in version)
        ):
            raise ProtocolError("NegotiationRequest.version: expected [major, minor, patch]")
        if tuple(version) != PROTOCOL_VERSION:
            raise ProtocolError(f"NegotiationRequest.version: unsupported version {version}")
        tee = _enum(Tee, _member(obj, "tee", "NegotiationRequest"), "NegotiationRequest.tee")
        return cls(PROTOCOL_VERSION, tee)


@dataclass(frozen=True)
class NegotiationResponse:
    challenge: bytes
    params: tuple[NegotiationParam, ...]

    def to_json(self) -> dict[str, Any]:
        return {"challenge": _b64(self.challenge), "params": [str(p) for p in self.params]}

    @classmethod
    def from_json(cls, value: object) -> Self:
        obj = _object(value, "NegotiationResponse")
        if "challenge" not in obj and "params" not in obj:
            detail = _detail(obj, "NegotiationResponse")
            if detail is not None:
                raise ProxyRefusal(detail)
        challenge = _unb64(
            _member(obj, "challenge", "NegotiationResponse"), "NegotiationResponse.challenge"
        )
        params = _member(obj, "params", "NegotiationResponse")
        if not isinstance(params, list):
            raise ProtocolError("NegotiationResponse.params: expected a list")
        return cls(
            challenge,
            tuple(_enum(NegotiationParam, p, "NegotiationResponse.params") for p in params),
        )


@dataclass(frozen=True)
class SnpEvidence:
    """The raw SNP report and, optionally, the extended-report certificate table."""

    report: bytes
    certs_buf: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        inner = {"report": _b64(self.report)}
        if self.certs_buf is not None:
            inner["certs_buf"] = _b64(self.certs_buf)
        return {"Snp": inner}

    @classmethod
    def from_json(cls, value: object) -> Self:
        obj = _object(value, "evidence")
        if set(obj) != {"Snp"}:
            raise ProtocolError("evidence: expected exactly one variant, 'Snp'")
        inner = _object(obj["Snp"], "evidence.Snp")
        report = _unb64(_member(inner, "report", "evidence.Snp"), "evidence.Snp.report")
        certs = None
        if "certs_buf" in inner:
            certs = _unb64(inner["certs_buf"], "evidence.Snp.certs_buf")
        return cls(report, certs)


@dataclass(frozen=True)
class PublicKeyBytes:
    """The SVSM's ephemeral EC public key as raw big-endian coordinates (66 bytes on P-521).

    Upstream calls the type ``EcP256PublicKey`` although the curve is P-521.
    """

    x: bytes
    y: bytes

    def to_json(self) -> dict[str, Any]:
        return {"x": _b64(self.x), "y": _b64(self.y)}

    @classmethod
    def from_json(cls, value: object, what: str = "key") -> Self:
        obj = _object(value, what)
        return cls(
            _unb64(_member(obj, "x", what), f"{what}.x"),
            _unb64(_member(obj, "y", what), f"{what}.y"),
        )


@dataclass(frozen=True)
class AttestationRequest:
    tee: Tee
    evidence: SnpEvidence
    challenge: bytes
    key: PublicKeyBytes

    def to_json(self) -> dict[str, Any]:
        return {
            "tee": str(self.tee),
            "evidence": self.evidence.to_json(),
            "challenge": _b64(self.challenge),
            "key": self.key.to_json(),
        }

    @classmethod
    def from_json(cls, value: object) -> Self:
        what = "AttestationRequest"
        obj = _object(value, what)
        return cls(
            _enum(Tee, _member(obj, "tee", what), f"{what}.tee"),
            SnpEvidence.from_json(_member(obj, "evidence", what)),
            _unb64(_member(obj, "challenge", what), f"{what}.challenge"),
            PublicKeyBytes.from_json(_member(obj, "key", what), f"{what}.key"),
        )


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    value: str

    def to_json(self) -> dict[str, Any]:
        return {str(self.kind): self.value}

    @classmethod
    def from_json(cls, value: object) -> Self:
        obj = _object(value, "token")
        if len(obj) != 1:
            raise ProtocolError("token: expected exactly one variant")
        ((name, text),) = obj.items()
        if not isinstance(text, str):
            raise ProtocolError("token: expected a string value")
        return cls(_enum(TokenKind, name, "token"), text)


def _decryption_to_json(fields: DecryptionFields) -> dict[str, Any]:
    return {
        "epk": {"x": _b64(fields.epk_x), "y": _b64(fields.epk_y)},
        "wrapped_cek": _b64(fields.wrapped_cek),
        "aad": _b64(fields.aad),
        "iv": _b64(fields.iv),
        "tag": _b64(fields.tag),
    }


def _decryption_from_json(value: object) -> DecryptionFields:
    what = "decryption"
    obj = _object(value, what)
    epk = PublicKeyBytes.from_json(_member(obj, "epk", what), f"{what}.epk")
    parts = {
        name: _unb64(_member(obj, name, what), f"{what}.{name}")
        for name in ("wrapped_cek", "aad", "iv", "tag")
    }
    return DecryptionFields(epk_x=epk.x, epk_y=epk.y, **parts)


@dataclass(frozen=True)
class AttestationResponse:
    success: bool
    secret: bytes | None = None
    decryption: DecryptionFields | None = None
    token: Token | None = None
    #: copra extension: why ``success`` is false (left out when None)
    detail: str | None = None

    @classmethod
    def failure(cls, detail: str | None = None) -> Self:
        return cls(False, detail=None if detail is None else bounded_detail(detail))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"success": self.success}
        if self.secret is not None:
            out["secret"] = _b64(self.secret)
        out["decryption"] = (
            None if self.decryption is None else _decryption_to_json(self.decryption)
        )
        out["token"] = None if self.token is None else self.token.to_json()
        if self.detail is not None:
            out["detail"] = self.detail
        return out

    @classmethod
    def from_json(cls, value: object) -> Self:
        what = "AttestationResponse"
        obj = _object(value, what)
        success = _member(obj, "success", what)
        if not isinstance(success, bool):
            raise ProtocolError(f"{what}.success: expected a boolean")
        secret = _unb64(obj["secret"], f"{what}.secret") if "secret" in obj else None
        decryption = obj.get("decryption")
        token = obj.get("token")
        return cls(
            success,
            secret,
            None if decryption is None else _decryption_from_json(decryption),
            None if token is None else Token.from_json(token),
            _detail(obj, what),
        )


@dataclass(frozen=True)
class NegotiationRefusal:
    """The proxy's reply to a NegotiationRequest when it cannot start an attestation
    (copra extension): ``{"detail": "..."}``, read by the SVSM as :class:`ProxyRefusal`."""

    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"detail": bounded_detail(self.detail)}


Message = (
    NegotiationRequest | NegotiationResponse | NegotiationRefusal | AttestationRequest
    | AttestationResponse
)
_M = TypeVar("_M", NegotiationRequest, NegotiationResponse, AttestationRequest, AttestationResponse)


# --- codec and framing -----------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ProtocolError(f"duplicate JSON member {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ProtocolError(f"non-standard JSON constant {name}")


def encode_message(message: Message) -> bytes:
    """Compact JSON, as serde_json writes it."""
    return json.dumps(message.to_json(), separators=(",", ":")).encode("utf-8")


def decode_message(kind: type[_M], payload: bytes) -> _M:
    """Parse one message body of the expected kind; raises :class:`ProtocolError`."""
    try:
        text = payload.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{kind.__name__}: invalid JSON ({exc})") from exc
    return kind.from_json(value)


def encode_frame(message: Message) -> bytes:
    body = encode_message(message)
    return _LENGTH.pack(len(body)) + body


Clock = Callable[[], float]


class Channel(Protocol):
    """The byte stream a message travels on: a connected socket, or a test fake."""

    def recv(self, bufsize: int, /) -> bytes: ...

    def sendall(self, data: bytes, /) -> None: ...


class DeadlineChannel:
    """A socket whose reads and writes share one deadline (a ``Channel``).

    Each operation may take ``io_timeout``, but never past ``deadline``; at or after
    the deadline it raises :class:`TimeoutError` without touching the socket.
    """

    def __init__(
        self, conn: socket.socket, deadline: float, io_timeout: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self._conn = conn
        self._deadline = deadline
        self._io_timeout = io_timeout
        self._clock = clock

    def _arm(self) -> None:
        left = self._deadline - self._clock()
        if left <= 0:
            raise TimeoutError("the connection's deadline passed")
        self._conn.settimeout(min(self._io_timeout, left))

    def recv(self, bufsize: int, /) -> bytes:
        self._arm()
        return self._conn.recv(bufsize)

    def sendall(self, data: bytes, /) -> None:
        self._arm()
        self._conn.sendall(data)


def _recv_exact(channel: Channel, size: int, what: str) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = channel.recv(min(remaining, 1 << 16))
        if not chunk:
            if remaining == size and what == "length":
                raise ConnectionClosed("peer closed the connection")
            raise ProtocolError(f"connection closed inside a frame {what}")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(channel: Channel, max_size: int = MAX_FRAME_SIZE) -> bytes:
    """One frame body; refuses a length above ``max_size`` without reading the body."""
    (length,) = _LENGTH.unpack(_recv_exact(channel, _LENGTH.size, "length"))
    if length == 0 or length > max_size:
        raise ProtocolError(f"frame length {length} outside 1..{max_size}")
    return _recv_exact(channel, length, "body")


def send_message(channel: Channel, message: Message) -> None:
    channel.sendall(encode_frame(message))


def receive_message(channel: Channel, kind: type[_M], max_size: int = MAX_FRAME_SIZE) -> _M:
    return decode_message(kind, read_frame(channel, max_size))
