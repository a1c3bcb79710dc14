"""The key broker's HTTP layer (flask): Trustee's ``/kbs/v0`` endpoints over a KeyBroker.

Endpoints: ``POST /kbs/v0/auth``, ``POST /kbs/v0/attest``,
``GET /kbs/v0/resource/<repository>/<type>/<tag>``. Every failure, including
unknown routes, wrong methods, bodies over 1 MiB (413, however they are sent:
declared or chunked) and internal errors, answers
a JSON body ``{"type": ".../errors/<Kind>", "detail": "..."}`` with its status;
no request can take the server down.

:class:`KbsServer` runs the app on werkzeug's threaded server in a background
thread (ephemeral ports for tests; ``copra kbs serve`` uses it in the foreground).

Thread safety: the app holds no state of its own; the broker is thread-safe.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Final

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.serving import BaseWSGIServer, make_server

from copra.attest.kbs.broker import SESSION_COOKIE, KbsError, KeyBroker, Session
from copra.attest.text import escape_logger

log = escape_logger("copra.kbs")

MAX_BODY: Final = 1 << 20


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


def create_app(broker: KeyBroker) -> Flask:
    app = Flask("copra.kbs")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY + 1  # see _body

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


class KbsServer:
    """The app on werkzeug's threaded server, in a daemon thread; a context manager."""

    def __init__(self, broker: KeyBroker, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server: BaseWSGIServer = make_server(host, port, create_app(broker), threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="copra-kbs",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://{self._server.host}:{self.port}"

    def start(self) -> KbsServer:
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> KbsServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
