"""The key broker's HTTP layer (flask): Trustee's ``/kbs/v0`` endpoints over a KeyBroker.

Endpoints: ``POST /kbs/v0/auth``, ``POST /kbs/v0/attest``,
``GET /kbs/v0/resource/<repository>/<type>/<tag>``, and ``GET /metrics``: the broker's
and the server's counters in the Prometheus text format (:mod:`copra.attest.metrics`),
unauthenticated, as Trustee's. Every failure, including
unknown routes, wrong methods, bodies over 1 MiB (413, however they are sent:
declared or chunked) and internal errors, answers
a JSON body ``{"type": ".../errors/<Kind>", "detail": "..."}`` with its status;
no request can take the server down.

:class:`KbsServer` serves the app through waitress, a production WSGI server, under
a connection policy (:class:`ServerLimits`): a bounded number of connections and
threads, a deadline for every request, bodies capped before they are read, and the
oldest idle connection closed when a new one needs its slot. A flood of idle or
slowly sent connections therefore neither exhausts descriptors or memory nor keeps a
guest's ``/auth`` waiting. It runs in a background thread (ephemeral ports for tests)
or in the foreground (``copra kbs serve``).

Thread safety: the app holds no state of its own; the broker is thread-safe. The
server's connection bookkeeping belongs to its event loop thread.
"""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final, cast

from flask import Flask, Response, request
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from copra.attest.kbs.broker import SESSION_COOKIE, KbsError, KeyBroker, Session
from copra.attest.kbs.limits import MAX_BODY, ServerLimits
from copra.attest.metrics import CONTENT_TYPE, Metric, labels, render
from copra.attest.text import escape_logger

log = escape_logger("copra.kbs")



def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _error(exc: KbsError) -> Response:
    return _json(exc.status, exc.to_json())


def _body() -> object:
    """The request body as JSON; 413 for any body over :data:`MAX_BODY`.

    werkzeug enforces ``MAX_CONTENT_LENGTH`` on a declared Content-Length, but a
    chunked body is only *cut* at the limit, which would then fail as bad JSON (400).
    The app's limit is one byte more, so reading up to it tells a body of exactly
    ``MAX_BODY`` bytes from a longer one, however it was sent.
    """
    data = request.get_data(cache=False)
    if len(data) > MAX_BODY:
        raise RequestEntityTooLarge(f"the body exceeds {MAX_BODY} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise KbsError(400, "InvalidRequest", f"body is not JSON: {exc}") from exc


def create_app(
    broker: KeyBroker, server_metrics: Callable[[], list[Metric]] | None = None
) -> Flask:
    """The flask app over ``broker``; ``server_metrics`` adds the server's to /metrics."""
    app = Flask("copra.kbs")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY + 1  # see _body
    responses: collections.Counter[int] = collections.Counter()
    responses_lock = threading.Lock()

    @app.after_request
    def _count(response: Response) -> Response:
        if request.path != "/metrics":  # as Trustee: scraping is not traffic
            with responses_lock:
                responses[response.status_code] += 1
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        with responses_lock:
            by_status = dict(responses)
        http = [
            Metric.single("kbs_http_requests_total", "counter",
                          "HTTP requests the app answered (/metrics not counted).",
                          sum(by_status.values())),
            Metric("copra_kbs_http_responses_total", "counter",
                   "HTTP responses by status code.",
                   {labels(status=str(code)): n for code, n in by_status.items()}),
        ]
        extra = server_metrics() if server_metrics is not None else []
        return Response(render(broker.metrics() + http + extra), status=200,
                        content_type=CONTENT_TYPE)

    @app.errorhandler(KbsError)
    def _kbs_error(exc: KbsError) -> Response:
        return _error(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        return _json(
            status, KbsError(status, exc.name.replace(" ", ""), exc.description or "").to_json()
        )

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        log.exception("internal error")
        return _error(KbsError(500, "InternalError", type(exc).__name__))

    def _with_cookie(response: Response, session: Session) -> Response:
        """The session cookie, valid exactly as long as the session."""
        response.set_cookie(SESSION_COOKIE, session.id,
                            max_age=int(session.expires - broker.now()),
                            httponly=True, samesite="Strict")
        return response

    @app.post("/kbs/v0/auth")
    def auth() -> Response:
        session = broker.auth(_body())
        response = _json(200, {"nonce": session.nonce_b64, "extra-params": ""})
        return _with_cookie(response, session)

    @app.post("/kbs/v0/attest")
    def attest() -> Response:
        session = broker.attest(request.cookies.get(SESSION_COOKIE), _body())
        response = _json(200, {"token": session.token})
        return _with_cookie(response, session)

    @app.get("/kbs/v0/resource/<repository>/<type_>/<tag>")
    def resource(repository: str, type_: str, tag: str) -> Response:
        bearer = None
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise KbsError(401, "UnAuthenticated", "Authorization must be 'Bearer <token>'")
            bearer = value.strip()
        jwe = broker.resource(request.cookies.get(SESSION_COOKIE), bearer, repository, type_, tag)
        return _json(200, jwe.to_json())

    return app


class _Channel(HTTPChannel):
    """waitress's connection, remembering when the request being received began."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request_started = self.creation_time
        self.bytes_received = 0

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started = time.time()
        self.bytes_received += len(data)
        return super().received(data)

    def eviction_order(self, now: float) -> tuple[bool, bool, float]:
        """Sorts the connection to close first first: one past its grace period
        (:data:`EVICTION_GRACE`), then one that has sent something (a peer that sent a
        part of a request and stalls), then the oldest. A guest that has just connected
        and not yet been read is thus the last choice."""
        young = now - self.creation_time < EVICTION_GRACE
        return (young, young and self.bytes_received == 0, self.creation_time)


def _close_soon(channel: HTTPChannel) -> None:
    """Close ``channel`` from the event loop. ``shutdown`` first, so that a peer that
    stopped reading (a full send buffer, never writable) is closed too."""
    channel.will_close = True
    if channel.socket is not None:
        with contextlib.suppress(OSError):
            channel.socket.shutdown(socket.SHUT_RDWR)


#: Seconds a new connection is preferred to keep: a peer gets this long to be read.
EVICTION_GRACE: Final = 1.0


def _evictable(channel: HTTPChannel) -> bool:
    """Neither running a request nor holding a reply not yet sent: closing it loses
    no one's answer (a peer that never reads its reply is closed by the idle timeout)."""
    return not channel.requests and not channel.total_outbufs_len


class _Server(TcpWSGIServer):
    """waitress's TCP server with copra's connection policy (:class:`ServerLimits`).

    Runs on the event loop's thread only: ``readable`` is asked once per loop turn,
    and ``maintenance`` from it. ``counters`` (``evicted``, ``idle_closed``,
    ``request_deadline``) are written only there.
    """

    channel_class = _Channel

    def __init__(self, app: Any, limits: ServerLimits, **kwargs: Any) -> None:
        self.limits = limits
        self.counters: collections.Counter[str] = collections.Counter()
        super().__init__(app, **kwargs)

    def _channels(self) -> list[_Channel]:
        channels = cast(dict[int, _Channel], self.active_channels)
        return [c for c in channels.values() if not c.will_close]

    def readable(self) -> bool:
        """Whether to accept now: below the limit, or at it with a connection that
        :meth:`handle_accept` may close to make room."""
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = int(now) + self.adj.cleanup_interval
            self.maintenance(int(now))
        if not self.accepting:
            return False
        channels = self._channels()
        if len(channels) < self.limits.max_connections:
            return True
        return any(_evictable(c) for c in channels)  # else peers wait in the backlog

    def handle_accept(self) -> None:
        """Accept waiting peers, up to a quarter of ``max_connections`` per turn of the
        loop, closing for each, if every slot is taken, the oldest connection that is
        :func:`_evictable`. A connection thus gets at least four turns to be read
        before it can be the oldest: a guest whose request came with its connection is
        running it by then, and so is safe."""
        for _ in range(max(1, self.limits.max_connections // 4)):
            channels = self._channels()
            if len(channels) >= self.limits.max_connections:
                idle = [c for c in channels if _evictable(c)]
                if not idle:
                    return
                now = time.time()
                victim = min(idle, key=lambda c: c.eviction_order(now))
            else:
                victim = None
            before = len(self.active_channels)  # type: ignore[arg-type]
            super().handle_accept()
            if len(self.active_channels) == before:  # type: ignore[arg-type]
                return  # no one was waiting
            if victim is not None:
                _close_soon(victim)
                self.counters["evicted"] += 1

    def metrics(self) -> list[Metric]:
        """Connections open now and closed by the policy (read from another thread: a
        moment's staleness is accepted)."""
        counters = dict(self.counters)
        return [
            Metric.single("copra_kbs_connections_open", "gauge", "Connections open now.",
                          len(self.active_channels)),  # type: ignore[arg-type]
            Metric("copra_kbs_connections_closed_total", "counter",
                   "Connections the server closed under its limits, by reason.",
                   {labels(reason=r): counters.get(r, 0)
                    for r in ("evicted", "idle_closed", "request_deadline")}),
        ]

    def maintenance(self, now: float) -> None:
        now = time.time()
        for channel in self._channels():
            if channel.requests:  # the app is working on it
                continue
            if channel.last_activity < now - self.limits.idle_timeout:
                _close_soon(channel)
                self.counters["idle_closed"] += 1
            elif (
                channel.request is not None
                and channel.request_started < now - self.limits.request_timeout
            ):
                _close_soon(channel)
                self.counters["request_deadline"] += 1


class KbsServer:
    """The app on waitress (:class:`ServerLimits`), its event loop in a daemon thread
    (:meth:`start`) or the caller's (:meth:`serve_forever`); a context manager."""

    def __init__(
        self,
        broker: KeyBroker,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: ServerLimits | None = None,
    ) -> None:
        self.limits = limits or ServerLimits()
        self._map: dict[int, Any] = {}
        self._server = _Server(
            create_app(broker, lambda: self._server.metrics()),
            self.limits,
            map=self._map,
            adj=Adjustments(
                host=host,
                port=port,
                threads=self.limits.threads,
                connection_limit=1 << 30,  # _Server.readable enforces max_connections
                channel_timeout=1 << 30,  # _Server.maintenance enforces the timeouts
                cleanup_interval=1,
                max_request_header_size=self.limits.max_header_size,
                max_request_body_size=MAX_BODY + 1,  # waitress refuses a body of this size
                inbuf_overflow=MAX_BODY + 1,  # in memory, bounded: no temporary files
                asyncore_use_poll=True,  # select() fails past descriptor 1023
                log_socket_errors=False,  # a peer resetting its connection is no error
                ident="copra-kbs",
            ),
        )
        self._stopping = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self.serve_forever, name="copra-kbs",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.effective_port)  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        return f"http://{self._server.effective_host}:{self.port}"  # type: ignore[attr-defined]

    @property
    def counters(self) -> collections.Counter[str]:
        """Connections closed by the policy: ``evicted``, ``idle_closed``,
        ``request_deadline`` (written by the event loop; read them after :meth:`stop`
        or accept a moment's staleness)."""
        return self._server.counters

    def start(self) -> KbsServer:
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Run the event loop until :meth:`stop` (or an exception, e.g. Ctrl-C)."""
        while not self._stopping.is_set():
            wasyncore.poll2(1.0, self._map)

    def stop(self) -> None:
        """Stop the loop, close every connection and the listener, end the threads."""
        self._stopping.set()
        self._server.pull_trigger()
        if self._thread.is_alive():
            self._thread.join()
        if not self._closed:
            self._closed = True
            self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
            wasyncore.close_all(self._map)

    def __enter__(self) -> KbsServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
