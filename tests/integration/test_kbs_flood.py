"""Connection floods against `copra kbs serve` on loopback: a guest's /auth still answers and
the server's memory stays bounded (issue r15, point 1).

The broker runs as its own process, as deployed, so its descriptors and memory are its
own: the idle flood runs it with 1024 descriptors, the usual soft limit, and memory is
read from /proc/PID/status. The bounds are generous (the fixed server answers within
a fraction of a second and grows by a few tens of MiB); what they tell apart is a
server that never answers, or grows by the flood's whole size.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from copra.attest.kbs.limits import MAX_BODY

AUTH = {"version": "0.4.0", "tee": "snp", "extra-params": ""}
MAX_CONNECTIONS = 32
#: How long a guest's /auth may take while the flood runs (the fixed server: < 1 s).
AUTH_BOUND = 10.0


@dataclass
class Broker:
    process: subprocess.Popen[str]
    port: int

    def status(self, field: str) -> int:
        """A /proc/PID/status field in KiB (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0])
        raise KeyError(field)

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def auth(self) -> tuple[int, float]:
        """A guest's POST /kbs/v0/auth on a fresh connection: its status and seconds taken."""
        start = time.monotonic()
        try:
            with requests.Session() as http:
                http.trust_env = False
                reply = http.post(f"http://127.0.0.1:{self.port}/kbs/v0/auth", json=AUTH,
                                  timeout=AUTH_BOUND)
                status = reply.status_code
        except requests.RequestException as exc:
            print(f"\nthe guest's /auth failed: {exc!r}")
            status = 0
        return status, time.monotonic() - start


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@contextlib.contextmanager
def broker(tmp_path: Path) -> Iterator[Broker]:
    args = [sys.executable, "-m", "copra", "kbs", "--db", str(tmp_path / "kbs.db"), "serve",
            "--listen", "127.0.0.1:0", "--trust-root", "amd",
            "--max-connections", str(MAX_CONNECTIONS)]
    with open(tmp_path / "kbs.log", "w") as log:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True,
                                   preexec_fn=_limit_descriptors)
    assert process.stdout is not None
    try:
        line = process.stdout.readline()  # "copra kbs: serving http://127.0.0.1:PORT (...)"
        assert line, (tmp_path / "kbs.log").read_text()
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        yield Broker(process, port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def _connect(port: int) -> socket.socket:
    """A non-blocking connection attempt: a peer past the listen backlog just waits."""
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.setblocking(False)
    err = conn.connect_ex(("127.0.0.1", port))
    assert err in (0, errno.EINPROGRESS), errno.errorcode[err]
    return conn


class Flood:
    """Keeps ``width`` connections open to the broker and opens a new one for each the
    broker closes, from a process of its own (as an attacker is: the guest's requests
    made here do not wait for the flood's share of this interpreter), until the
    ``with`` block ends. Each connection sends ``payload`` as fast as the broker takes
    it, then holds still. :attr:`ready` is set once ``width`` connections were
    established and ``ready`` says the broker feels it, so a guest's request is made
    into a flood in full swing."""

    def __init__(self, port: int, width: int, ready: Callable[[Flood], bool],
                 payload: bytes = b"") -> None:
        self.port, self.width, self.payload, self._ready = port, width, payload, ready
        context = multiprocessing.get_context("fork")
        self._counts = context.Array("q", 3, lock=False)  # sent, established, closed
        self.ready = context.Event()
        self._stop = context.Event()
        self._process = context.Process(target=self._run, daemon=True)

    @property
    def sent(self) -> int:
        return int(self._counts[0])

    @property
    def established(self) -> int:
        return int(self._counts[1])

    @property
    def closed(self) -> int:
        """Connections the broker closed or reset."""
        return int(self._counts[2])

    def __enter__(self) -> Flood:
        self._process.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        offsets: dict[socket.socket, int] = {}

        def drop(conn: socket.socket, by_broker: bool) -> None:
            selector.unregister(conn)
            del offsets[conn]
            conn.close()
            self._counts[2] += by_broker

        while not self._stop.is_set():
            while len(offsets) < self.width:
                conn = _connect(self.port)
                offsets[conn] = -1  # not yet established
                selector.register(conn, selectors.EVENT_READ | selectors.EVENT_WRITE)
            for key, events in selector.select(timeout=0.05):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    if events & selectors.EVENT_READ and not conn.recv(4096):
                        drop(conn, True)  # the broker closed it
                        continue
                    if not events & selectors.EVENT_WRITE:
                        continue
                    if offsets[conn] < 0:
                        offsets[conn] = 0
                        self._counts[1] += 1
                    if offsets[conn] < len(self.payload):
                        n = conn.send(self.payload[offsets[conn] : offsets[conn] + (1 << 16)])
                        offsets[conn] += n
                        self._counts[0] += n
                    if offsets[conn] == len(self.payload):  # now hold still
                        selector.modify(conn, selectors.EVENT_READ)
                except BlockingIOError:
                    continue
                except OSError:  # refused or reset by the broker
                    drop(conn, True)
            if self.established >= self.width and self._ready(self):
                self.ready.set()
        for conn in list(offsets):
            drop(conn, False)
        selector.close()


def test_kbs_stalled_connection_flood_does_not_keep_a_guest_auth_waiting(tmp_path: Path) -> None:
    # r15: 1,100 idle connections exhausted werkzeug's descriptors; /auth never answered.
    # Each sends the first byte of a request line: a connection that sent nothing at all
    # is not even accepted while the listen backlog is full (Linux drops its handshake's
    # last ACK), so only a byte makes the flood land.
    with broker(tmp_path) as kbs:
        assert kbs.auth()[0] == 200
        # in full swing: the broker holds (nearly) 1,024 descriptors, or has closed 1,100
        def swamped(flood: Flood) -> bool:
            return flood.closed >= 1100 or kbs.descriptors() >= 1000

        with Flood(kbs.port, width=1100, ready=swamped, payload=b"P") as flood:
            assert flood.ready.wait(timeout=60), f"the flood never got going: {kbs.descriptors()}"
            status, seconds = kbs.auth()
            print(f"\nstalled flood: 1100 connections kept open ({flood.established} opened, "
                  f"{flood.closed} closed by the broker), /auth {status} in {seconds:.3f} s, "
                  f"broker: {kbs.descriptors()} descriptors, RSS {kbs.status('VmRSS') >> 10} MiB")
    assert status == 200
    assert seconds < AUTH_BOUND


def test_kbs_slow_body_flood_keeps_memory_bounded_and_auth_answering(tmp_path: Path) -> None:
    # r15: 300 connections each sending 1 MiB less one byte grew werkzeug by 328 MiB
    head = (b"POST /kbs/v0/auth HTTP/1.1\r\nHost: kbs\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % MAX_BODY)
    payload = head + b" " * (MAX_BODY - 1)
    with broker(tmp_path) as kbs:
        assert kbs.auth()[0] == 200
        before = kbs.status("VmHWM")
        def sent_300_mib(flood: Flood) -> bool:
            return flood.sent >= 300 << 20

        with Flood(kbs.port, width=300, ready=sent_300_mib, payload=payload) as flood:
            assert flood.ready.wait(timeout=60), f"the flood never got going: {kbs.descriptors()}"
            status, seconds = kbs.auth()
            growth = (kbs.status("VmHWM") - before) >> 10
            print(f"\nbody flood: 300 connections kept open, {flood.sent >> 20} MiB sent, "
                  f"/auth {status} in {seconds:.3f} s, server peak RSS grew {growth} MiB")
    assert status == 200
    assert seconds < AUTH_BOUND
    # at most MAX_CONNECTIONS bodies of 1 MiB are ever held, plus the interpreter's slack
    assert growth < 2 * MAX_CONNECTIONS + 32, f"the server grew by {growth} MiB"


@pytest.fixture(autouse=True)
def _enough_descriptors_here() -> None:
    """The test process itself holds the flood's 1,100 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
