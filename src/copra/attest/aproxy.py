"""The host attestation proxy: SVSM (proxy protocol) <-> key broker (Trustee KBS protocol).

Upstream's ``tools/aproxy`` with its ``kbs`` backend, in Python. It listens on a Unix
socket (standing in for vsock port 1995, or for the COM3 serial line QEMU wires to a
socket) and serves up to ``max_connections`` SVSM connections at once, each on its
own thread, any number in sequence. Per connection, with a fresh HTTP session
(cookie jar) as upstream does:

1. NegotiationRequest -> ``POST {url}/kbs/v0/auth`` ``{"version":"0.4.0","tee":"snp",
   "extra-params":""}``; the base64 nonce becomes the challenge, and the parameters
   are those of the binding (``coconut``: ``[EcPublicKeyBytes, Challenge]``;
   ``trustee``: ``[TrusteeRuntimeData]``, a copra extension).
2. AttestationRequest -> ``POST /kbs/v0/attest`` with ``runtime-data`` = {nonce,
   tee-pubkey JWK} and the evidence in the binding's encoding (aproxy's
   ``snp-report``/``certs-buf`` or Trustee's virtee form), then
   ``GET /kbs/v0/resource/<repository>/<type>/<tag>``; the JWE is split into
   COCONUT's decryption fields (AAD = the protected header exactly as received) and
   sent back in the AttestationResponse, with the token as ``{"Jwt": ...}``.
   Any refusal by the KBS becomes ``success: false`` with a ``detail`` (a copra
   extension upstream's SVSM ignores) saying who refused and why, the broker's error
   detail included, escaped and bounded; when the broker cannot be asked at all, the
   SVSM gets that reason too (docs/attestation-protocol.md §1, "Why it was refused").
3. Read until EOF, then close.

A malformed frame, a failed negotiation or an I/O error closes that connection with
a logged, counted reason; so does anything unexpected (``closed_internal``, logged
with its traceback): no peer, SVSM or KBS, can end the proxy.

Talking to the KBS: every reply is read with a size limit (``max_response_size``,
1 MiB, the KBS's own request limit; a longer reply, announced or streamed, is a
refusal) and parsed here, so a reply nested too deeply for the JSON parser is a
refusal too. The HTTP session ignores the environment (``trust_env=False``):
``HTTP(S)_PROXY``/``NO_PROXY``, ``.netrc`` credentials and ``REQUESTS_CA_BUNDLE``
would otherwise route the exchange elsewhere or add headers nobody asked for; the
proxy talks to exactly ``--url``, with the default CA bundle for ``https``. Redirects
are not followed: the protocol has none, so a 3xx is a refusal.

The secret: the JWE the proxy forwards is encrypted to the SVSM's key only because
the SVSM refuses parameter lists that do not bind that key
(:func:`copra.attest.binding.negotiated_binding`); an SVSM that hashed any list, as
upstream's does, could be made to sign a REPORT_DATA binding the proxy's key.

Time: every connection has a deadline, ``connection_timeout`` (120 s) after it was
accepted, for everything it does: no single read or write on the SVSM socket waits
longer than ``io_timeout`` nor past the deadline, a KBS request waits at most
``http_timeout`` per network operation and never starts after the deadline, and a
KBS reply body is abandoned when the deadline passes. A peer trickling a byte now and
then therefore holds one connection slot until the deadline, no longer, and never
holds the others. Not bounded by the deadline: a KBS trickling its status line and
headers, which ``requests`` reads with ``http_timeout`` per read (the KBS is the
configured one; a hostile KBS can refuse everything anyway).

Access: :func:`bind_unix` makes the socket mode 0600 before it listens, whatever the
umask, so only its owner (and root) can connect. The directory it is in decides who
can replace it: use one only its owner can write (``$XDG_RUNTIME_DIR``,
``/run/copra`` owned by the service user).

Locking: ``_lock`` guards ``stats`` and the set of open connections; each connection's
objects belong to its thread.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import socket
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import requests
import urllib3

from copra.attest.binding import PARAMS, Binding, trustee_runtime_data
from copra.attest.evidence import EvidenceError, coconut_evidence, trustee_evidence
from copra.attest.jwe import CURVES, EcPoint, FlattenedJwe, JweError
from copra.attest.metrics import Metric, labels
from copra.attest.protocol import (
    MAX_FRAME_SIZE,
    AttestationRequest,
    AttestationResponse,
    Clock,
    ConnectionClosed,
    DeadlineChannel,
    NegotiationRefusal,
    NegotiationRequest,
    NegotiationResponse,
    ProtocolError,
    Token,
    TokenKind,
    receive_message,
    send_message,
)
from copra.attest.text import escape_logger, visible

log = escape_logger("copra.aproxy")

KBS_PROTOCOL_VERSION: Final = "0.4.0"
DEFAULT_RESOURCE: Final = "default/sample/test"
_DRAIN_LIMIT: Final = 1 << 20
#: The longest KBS reply read (the KBS refuses requests above the same size).
MAX_RESPONSE_SIZE: Final = 1 << 20
#: The socket's mode, set before it listens.
SOCKET_MODE: Final = 0o600


class KbsClientError(Exception):
    """The key broker could not be reached or refused a step; the message says which."""


@dataclass(frozen=True)
class ProxyConfig:
    url: str
    binding: Binding = Binding.COCONUT
    resource: str = DEFAULT_RESOURCE
    http_timeout: float = 30.0
    io_timeout: float = 60.0
    #: The whole of one SVSM connection, KBS requests included.
    connection_timeout: float = 120.0
    max_connections: int = 8
    max_frame_size: int = MAX_FRAME_SIZE
    max_response_size: int = MAX_RESPONSE_SIZE

    def __post_init__(self) -> None:
        parts = self.resource.split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"resource {self.resource!r} is not REPOSITORY/TYPE/TAG")
        if not min(self.http_timeout, self.io_timeout, self.connection_timeout) > 0:
            raise ValueError("timeouts must be positive")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")


def tee_pubkey(x: bytes, y: bytes) -> EcPoint:
    """The SVSM's key; the curve follows from the coordinate size (66 bytes: P-521)."""
    for name, (_, size) in CURVES.items():
        if len(x) == size:
            return EcPoint(name, x, y)
    raise JweError(f"no supported curve has {len(x)}-byte coordinates")


def attestation_body(binding: Binding, request: AttestationRequest) -> dict[str, Any]:
    """The ``/kbs/v0/attest`` body for an SVSM's request, in the binding's encoding."""
    key = tee_pubkey(request.key.x, request.key.y)
    evidence = request.evidence
    primary = (
        coconut_evidence(evidence.report, evidence.certs_buf)
        if binding is Binding.COCONUT
        else trustee_evidence(evidence.report, evidence.certs_buf)
    )
    return {
        "init-data": None,
        "runtime-data": trustee_runtime_data(request.challenge, key),
        "tee-evidence": {"primary_evidence": primary, "additional_evidence": ""},
    }


@dataclass(frozen=True)
class KbsReply:
    """One KBS reply, read whole within :attr:`ProxyConfig.max_response_size`."""

    status: int
    reason: str
    body: bytes

    def json(self) -> Any:
        """The body as JSON; raises :class:`KbsClientError` (too deep nesting included)."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError) as exc:
            raise KbsClientError(f"reply is not JSON: {str(exc)[:80]}") from None

    def describe(self) -> str:
        """Status and, if the body is Trustee's error shape, the error kind (the last
        part of its ``type``) and detail: the broker's text, so made
        :func:`~copra.attest.text.visible` and cut to 400 characters."""
        with contextlib.suppress(KbsClientError):
            body = self.json()
            if isinstance(body, dict) and isinstance(body.get("detail"), str):
                kind = body.get("type")
                kind = kind.rsplit("/", 1)[-1][:64] + ": " if isinstance(kind, str) else ""
                return f"{self.status} {visible(kind + body['detail'][:400])}"
        return f"{self.status} {visible(self.reason[:200])}"


class KbsBackend:
    """One SVSM connection's conversation with the KBS (one cookie jar)."""

    def __init__(
        self, config: ProxyConfig, deadline: float = float("inf"), clock: Clock = time.monotonic
    ) -> None:
        self._config = config
        self._deadline = deadline
        self._clock = clock
        self._http = requests.Session()
        self._http.trust_env = False
        self._base = config.url.rstrip("/") + "/kbs/v0"

    def _time_left(self, what: str) -> float:
        left = self._deadline - self._clock()
        if left <= 0:
            raise KbsClientError(f"{what}: the connection's deadline passed")
        return left

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None) -> KbsReply:
        limit = self._config.max_response_size
        what = f"{method} {path}"
        timeout = min(self._config.http_timeout, self._time_left(what))
        try:
            with self._http.request(
                method,
                self._base + path,
                json=body,
                timeout=timeout,
                stream=True,
                allow_redirects=False,
            ) as response:
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise KbsClientError(f"{what}: a {declared}-byte reply exceeds {limit} bytes")
                chunks: list[bytes] = []
                size = 0
                # read1: one network read at a time, so the deadline is checked between them
                while chunk := response.raw.read1(1 << 16, decode_content=True):
                    size += len(chunk)
                    if size > limit:
                        raise KbsClientError(f"{what}: the reply exceeds {limit} bytes")
                    chunks.append(chunk)
                    self._time_left(what)
                return KbsReply(response.status_code, response.reason or "", b"".join(chunks))
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise KbsClientError(f"{what}: {exc}") from exc

    def negotiate(self, request: NegotiationRequest) -> NegotiationResponse:
        body = {"version": KBS_PROTOCOL_VERSION, "tee": str(request.tee), "extra-params": ""}
        reply = self._call("POST", "/auth", body)
        if reply.status != 200:
            raise KbsClientError(f"auth refused: {reply.describe()}")
        try:
            nonce_text = reply.json()["nonce"]
            nonce = base64.b64decode(nonce_text.encode("ascii"), validate=True)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KbsClientError(f"auth reply has no usable nonce: {exc}") from exc
        return NegotiationResponse(nonce, PARAMS[self._config.binding])

    def attest(self, request: AttestationRequest) -> AttestationResponse:
        """Forward the evidence and fetch the resource; a refusal is a failure response
        whose ``detail`` says who refused and why (the broker's words, escaped)."""
        try:
            body = attestation_body(self._config.binding, request)
        except (EvidenceError, JweError) as exc:
            return self._refused(f"the attestation proxy cannot forward the evidence: {exc}")
        reply = self._call("POST", "/attest", body)
        if reply.status != 200:
            return self._refused(f"the key broker refused the evidence: {reply.describe()}")
        try:
            token = reply.json()["token"]
            if not isinstance(token, str):
                raise TypeError("token is not a string")
        except (KbsClientError, KeyError, TypeError) as exc:
            return self._refused(f"the key broker's attest reply has no token: {exc}")
        reply = self._call("GET", f"/resource/{self._config.resource}")
        if reply.status != 200:
            return self._refused(f"the key broker refused resource {self._config.resource}: "
                                 f"{reply.describe()}")
        try:
            fields, ciphertext = FlattenedJwe.from_json(reply.json()).split()
        except (KbsClientError, ValueError, JweError) as exc:
            return self._refused(f"the key broker's resource reply is not a usable JWE: {exc}")
        return AttestationResponse(True, ciphertext, fields, Token(TokenKind.JWT, token))

    @staticmethod
    def _refused(detail: str) -> AttestationResponse:
        log.warning("%s", detail)
        return AttestationResponse.failure(detail)


def check_url(url: str) -> str:
    """``url`` if it can be a key broker's base URL, else ``ValueError`` saying why:
    ``http`` or ``https``, a host, a valid port if any, no credentials, query or
    fragment (the proxy appends ``/kbs/v0/...`` to it)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"--url {url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"--url {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"--url {url!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"--url {url!r} carries credentials, which the proxy does not send")
    if parts.query or parts.fragment:
        raise ValueError(f"--url {url!r} has a query or fragment; give the broker's base URL")
    if port == 0:
        raise ValueError(f"--url {url!r} names port 0")
    return url


#: The longest Unix socket path in bytes (``sun_path`` is 108 bytes with its NUL).
MAX_SOCKET_PATH: Final = 107


def check_socket_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if a socket can be made there, else ``ValueError`` naming the path and
    the problem: too long for a Unix socket, or a directory that is missing, not a
    directory, or not writable by this user."""
    target = Path(path)
    size = len(os.fsencode(target))
    if size > MAX_SOCKET_PATH:
        raise ValueError(f"socket path {target} is {size} bytes; a Unix socket path must be "
                         f"at most {MAX_SOCKET_PATH}: choose a shorter one")
    directory = target.parent
    if not directory.exists():
        raise ValueError(f"the socket's directory {directory} does not exist")
    if not directory.is_dir():
        raise ValueError(f"the socket's directory {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"the socket's directory {directory} is not writable by you")
    return target


def wait_for_broker(url: str, timeout: float, clock: Clock = time.monotonic) -> str | None:
    """Wait until the broker's host and port accept a TCP connection, at most
    ``timeout`` seconds; None when they do, else why not (the last error)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = clock() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(1.0, max(timeout, 0.1))):
                return None
        except OSError as exc:
            if clock() >= deadline:
                return exc.strerror or str(exc)
        time.sleep(0.1)


class AttestationProxy:
    """Serves SVSM connections, up to ``max_connections`` at once; never dies on a bad peer."""

    def __init__(
        self,
        config: ProxyConfig,
        backend: Callable[[ProxyConfig, float], KbsBackend] = KbsBackend,
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config
        #: connections, attested, refused, closed_protocol, closed_kbs, closed_io,
        #: closed_timeout, closed_internal
        self.stats: collections.Counter[str] = collections.Counter()
        self._backend = backend
        self._clock = clock
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def metrics(self) -> list[Metric]:
        """``stats`` and the connections open now, for ``--metrics`` (``copra_aproxy_*``)."""
        with self._lock:
            stats = collections.Counter(self.stats)
            open_now = len(self._open)
        return [
            Metric.single("copra_aproxy_connections_total", "counter",
                          "SVSM connections accepted.", stats["connections"]),
            Metric.single("copra_aproxy_connections_open", "gauge",
                          "SVSM connections open now.", open_now),
            Metric("copra_aproxy_attestations_total", "counter",
                   "Attestations answered to an SVSM, by result.",
                   {labels(result=r): stats[r] for r in ("attested", "refused")}),
            Metric("copra_aproxy_connections_closed_total", "counter",
                   "SVSM connections closed before an answer, by reason.",
                   {labels(reason=r): stats[f"closed_{r}"]
                    for r in ("protocol", "kbs", "io", "timeout", "internal")}),
        ]

    def summary(self) -> str:
        """One line of ``stats``, for the log at the end."""
        with self._lock:
            stats = collections.Counter(self.stats)
        closed = ", ".join(f"{name[7:]} {n}" for name, n in sorted(stats.items())
                           if name.startswith("closed_") and n)
        return (f"{stats['connections']} SVSM connections: {stats['attested']} attested, "
                f"{stats['refused']} refused, closed early: {closed or 'none'}")

    def handle(self, conn: socket.socket) -> None:
        """Run one connection to its end or its deadline; closes ``conn``.

        When the key broker cannot be asked, the SVSM is told why before the connection
        closes: a :class:`NegotiationRefusal` in place of the negotiation reply, or a
        failure response with a ``detail`` after the AttestationRequest."""
        self._count("connections")
        deadline = self._clock() + self.config.connection_timeout
        channel = DeadlineChannel(conn, deadline, self.config.io_timeout, self._clock)
        backend: KbsBackend | None = None
        negotiated = False
        try:
            limit = self.config.max_frame_size
            hello = receive_message(channel, NegotiationRequest, limit)
            backend = self._backend(self.config, deadline)
            negotiation = backend.negotiate(hello)
            send_message(channel, negotiation)
            negotiated = True
            request = receive_message(channel, AttestationRequest, limit)
            if request.challenge != negotiation.challenge:
                response = KbsBackend._refused("the SVSM echoed a different challenge than "
                                               "the proxy negotiated")
            else:
                response = backend.attest(request)
            self._count("attested" if response.success else "refused")
            send_message(channel, response)
            self._drain(channel)
        except ProtocolError as exc:
            self._count("closed_protocol")
            log.warning("closing SVSM connection: %s", exc)
        except KbsClientError as exc:
            self._count("closed_kbs")
            why = f"the attestation proxy cannot ask the key broker at {self.config.url}: {exc}"
            log.warning("closing SVSM connection: %s", why)
            self._tell(channel, AttestationResponse.failure(why) if negotiated
                       else NegotiationRefusal(why))
        except TimeoutError as exc:
            self._count("closed_timeout")
            log.warning("closing SVSM connection: timed out: %s", exc)
        except OSError as exc:
            self._count("closed_io")
            log.warning("closing SVSM connection: I/O: %s", exc)
        except Exception:  # a bug or a peer input nothing above foresaw: not fatal
            self._count("closed_internal")
            log.exception("closing SVSM connection: internal error")
            why = "the attestation proxy failed with an internal error (its log has the details)"
            self._tell(channel, AttestationResponse.failure(why) if negotiated
                       else NegotiationRefusal(why))
        finally:
            if backend is not None:
                backend.close()
            conn.close()

    @staticmethod
    def _tell(channel: DeadlineChannel, message: AttestationResponse | NegotiationRefusal) -> None:
        """Send a last message on a connection about to close, if it still takes one."""
        with contextlib.suppress(OSError, TimeoutError):
            send_message(channel, message)

    @staticmethod
    def _drain(channel: DeadlineChannel) -> None:
        """Upstream reads until EOF after the exchange; bounded here."""
        remaining = _DRAIN_LIMIT
        while remaining > 0:
            chunk = channel.recv(min(remaining, 4096))
            if not chunk:
                return
            remaining -= len(chunk)
        raise ConnectionClosed("SVSM kept sending after the exchange")

    def _run(self, conn: socket.socket, slots: threading.BoundedSemaphore) -> None:
        try:
            self.handle(conn)
        finally:
            with self._lock:
                self._open.discard(conn)
            slots.release()

    def serve(self, listener: socket.socket) -> None:
        """Accept and handle connections until :meth:`stop`, then wait for those open.

        A connection is accepted only when one of ``max_connections`` slots is free,
        so excess peers wait in the listen backlog.
        """
        slots = threading.BoundedSemaphore(self.config.max_connections)
        workers: list[threading.Thread] = []
        try:
            while not self._stopping.is_set():
                slots.acquire()
                try:
                    conn, _ = listener.accept()
                except OSError:
                    slots.release()
                    if self._stopping.is_set():
                        return
                    raise
                with self._lock:
                    self._open.add(conn)
                    if self._stopping.is_set():  # stop() ran between accept and here
                        with contextlib.suppress(OSError):
                            conn.shutdown(socket.SHUT_RDWR)
                worker = threading.Thread(
                    target=self._run, args=(conn, slots), name="copra-aproxy-conn", daemon=True
                )
                worker.start()
                workers = [w for w in workers if w.is_alive()] + [worker]
        finally:
            for worker in workers:
                worker.join()

    def stop(self, listener: socket.socket) -> None:
        """Make :meth:`serve` return: wakes a blocked ``accept`` and ends open connections."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


def bind_unix(path: str | os.PathLike[str], *, force: bool = False) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600; a stale socket file is replaced
    only with ``force``."""
    target = Path(path)
    if target.exists() or target.is_symlink():
        if not force:
            raise FileExistsError(f"{target} exists (use --force to replace a stale socket)")
        if not stat.S_ISSOCK(target.lstat().st_mode):
            raise FileExistsError(f"{target} exists and is not a socket")
        target.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(target))
    except OSError:
        listener.close()
        raise
    try:
        # Before listen(): until then a connect is refused, so no peer slips in while
        # the mode is still the umask's.
        os.chmod(target, SOCKET_MODE)
        listener.listen(8)
    except OSError:
        listener.close()
        target.unlink(missing_ok=True)
        raise
    return listener
