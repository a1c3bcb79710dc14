"""The key broker's HTTP server on loopback (werkzeug's threaded server, a real socket):
what only a real server shows, such as how it hands a chunked body to the app."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from copra.attest.kbs.app import MAX_BODY, KbsServer
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


def test_kbs_server_chunked_auth_within_the_limit_returns_200(server: KbsServer) -> None:
    body = b'{"version": "0.4.0", "tee": "snp"}'
    assert _chunked_post(server, body).startswith(b"HTTP/1.1 200")
