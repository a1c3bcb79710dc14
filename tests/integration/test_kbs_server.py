"""The key broker's HTTP server on loopback (waitress, a real socket): what only a real
server shows, such as how it hands a chunked body to the app, and its connection policy
(ServerLimits: eviction, request deadline, idle timeout). Floods: test_kbs_flood.py."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from copra.attest.kbs.app import MAX_BODY, KbsServer, ServerLimits
from copra.attest.kbs.broker import KeyBroker
from copra.attest.kbs.store import Store
from copra.attest.verify import Verifier


@pytest.fixture
def server(tmp_path: Path) -> Iterator[KbsServer]:
    with KbsServer(KeyBroker(Store(tmp_path / "kbs.db"), Verifier.with_amd_roots())) as server:
        yield server


def _chunked_post(server: KbsServer, body: bytes) -> bytes:
    """POST /kbs/v0/auth with ``body`` in 64 KiB chunks; the response's status line."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"POST /kbs/v0/auth HTTP/1.1\r\nHost: kbs\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/json\r\n\r\n")
        for start in range(0, len(body), 1 << 16):
            chunk = body[start : start + (1 << 16)]
            conn.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        conn.sendall(b"0\r\n\r\n")
        return conn.makefile("rb").readline()


def test_kbs_server_chunked_body_over_the_limit_returns_413(server: KbsServer) -> None:
    # r04: the body was cut at 1 MiB and answered 400 as bad JSON
    assert _chunked_post(server, b"x" * (MAX_BODY + 1)).startswith(b"HTTP/1.1 413")


def test_kbs_server_declared_body_of_exactly_the_limit_reaches_the_app(
    server: KbsServer,
) -> None:
    # waitress refuses a body of max_request_body_size itself: the server allows one more
    text = b'{"version": "0.4.0", "tee": "snp", "extra-params": ""}'
    body = text + b" " * (MAX_BODY - len(text))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"POST /kbs/v0/auth HTTP/1.1\r\nHost: kbs\r\nContent-Type: "
                     b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert conn.makefile("rb").readline().startswith(b"HTTP/1.1 200")


def test_kbs_server_declared_body_one_byte_over_the_limit_returns_413(
    server: KbsServer,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"POST /kbs/v0/auth HTTP/1.1\r\nHost: kbs\r\nContent-Length: %d\r\n\r\n"
                     % (MAX_BODY + 1))
        assert conn.makefile("rb").readline().startswith(b"HTTP/1.1 413")


def test_kbs_server_chunked_auth_within_the_limit_returns_200(server: KbsServer) -> None:
    body = b'{"version": "0.4.0", "tee": "snp", "extra-params": ""}'
    assert _chunked_post(server, body).startswith(b"HTTP/1.1 200")


def _closed_by_server(conn: socket.socket, trickle: bytes = b"", seconds: float = 30) -> bool:
    """Whether the server closes ``conn`` within ``seconds`` (a guard, not a measure),
    sending ``trickle`` one byte at a time meanwhile, one every 0.1 s."""
    conn.settimeout(0.1)
    for index in range(int(seconds * 10)):
        try:
            if not conn.recv(1):
                return True
        except TimeoutError:
            pass
        except OSError:
            return True
        if index < len(trickle):
            try:
                conn.sendall(trickle[index : index + 1])
            except OSError:
                return True
    return False


def _limited(tmp_path: Path, **limits: float) -> KbsServer:
    broker = KeyBroker(Store(tmp_path / "kbs.db"), Verifier.with_amd_roots())
    return KbsServer(broker, limits=ServerLimits(**limits))  # type: ignore[arg-type]


def test_kbs_server_at_the_connection_limit_closes_the_oldest_idle_connection(
    tmp_path: Path,
) -> None:
    with _limited(tmp_path, max_connections=2) as server:
        oldest = socket.create_connection(("127.0.0.1", server.port))
        middle = socket.create_connection(("127.0.0.1", server.port))
        newest = socket.create_connection(("127.0.0.1", server.port))
        with oldest, middle, newest:
            assert _closed_by_server(oldest)
            newest.sendall(b"GET /kbs/v0/nothing HTTP/1.1\r\nHost: kbs\r\n\r\n")
            assert newest.makefile("rb").readline().startswith(b"HTTP/1.1 404")
    assert server.counters["evicted"] == 1


def test_kbs_server_closes_a_request_trickling_past_its_deadline(tmp_path: Path) -> None:
    # r15: werkzeug waited for the rest of a request forever, one byte at a time
    request = b"POST /kbs/v0/auth HTTP/1.1\r\nHost: kbs\r\n" + b"X-Slow: y\r\n" * 100
    with _limited(tmp_path, request_timeout=1.0, idle_timeout=30.0) as server, \
            socket.create_connection(("127.0.0.1", server.port)) as conn:
        assert _closed_by_server(conn, trickle=request)
    assert server.counters["request_deadline"] == 1


def test_kbs_server_closes_a_silent_connection_after_the_idle_timeout(tmp_path: Path) -> None:
    with _limited(tmp_path, idle_timeout=1.0) as server, \
            socket.create_connection(("127.0.0.1", server.port)) as conn:
        assert _closed_by_server(conn)
    assert server.counters["idle_closed"] == 1


def test_kbs_server_metrics_include_its_connections(server: KbsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: kbs\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    samples = {(s.name, tuple(s.labels.items())): s.value
               for f in text_string_to_metric_families(body.decode()) for s in f.samples}
    assert samples[("copra_kbs_connections_open", ())] >= 1
    assert samples[("copra_kbs_connections_closed_total", (("reason", "evicted"),))] == 0
    assert ("kbs_attestation_requests_total", ()) in samples
