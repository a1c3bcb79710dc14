"""The attestation proxy end to end: SVSM client -> Unix socket -> copra aproxy -> KBS on
loopback, with reports from the emulated SNP firmware. Threads, no sleeps."""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import shutil
import socket
import stat
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families

from copra.attest.aproxy import AttestationProxy, KbsBackend, ProxyConfig, bind_unix
from copra.attest.binding import Binding
from copra.attest.client import AttestationFailed, attest
from copra.attest.kbs.app import KbsServer
from copra.attest.kbs.broker import KeyBroker
from copra.attest.kbs.policy import ResourcePolicy
from copra.attest.kbs.store import ReferenceValues, ResourcePath, Store
from copra.attest.metrics import render
from copra.attest.protocol import (
    AttestationRequest,
    NegotiationRequest,
    NegotiationResponse,
    ProxyRefusal,
    PublicKeyBytes,
    SnpEvidence,
    Tee,
    receive_message,
    send_message,
)
from copra.attest.verify import Verifier
from copra.hw.snp import SnpFirmware, SnpGuest

SECRET = b"persistent state root key"


@pytest.fixture(scope="module")
def chip(tmp_path_factory: pytest.TempPathFactory) -> SnpFirmware:
    return SnpFirmware.create(tmp_path_factory.mktemp("snp") / "chip", key_size=2048)


@pytest.fixture(scope="module")
def guest(chip: SnpFirmware) -> SnpGuest:
    guest = chip.launch_start()
    guest.launch_update(0x100000, b"copra svsm image" * 512)
    guest.launch_finish()
    return guest


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, chip: SnpFirmware, guest: SnpGuest) -> Store:
    store = Store(tmp_path_factory.mktemp("kbs") / "kbs.db")
    store.set_resource(ResourcePath("default", "sample", "test"), SECRET,
                       ResourcePolicy(measurements=frozenset({guest.measurement})))
    from cryptography.hazmat.primitives.serialization import Encoding

    for cert in (chip.vcek, chip.ask):
        store.add_certificate(cert.subject.rfc4514_string(), cert.public_bytes(Encoding.DER))
    return store


@pytest.fixture(scope="module")
def kbs_server(store: Store, chip: SnpFirmware) -> Iterator[KbsServer]:
    with KbsServer(KeyBroker(store, Verifier([chip.ark]))) as server:
        yield server


@pytest.fixture
def kbs_url(kbs_server: KbsServer, store: Store, guest: SnpGuest) -> str:
    store.set_reference_values(ReferenceValues(measurements=frozenset({guest.measurement})))
    return kbs_server.url


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="aproxy-"))  # short: AF_UNIX paths are <108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


class RunningProxy:
    def __init__(
        self,
        config: ProxyConfig,
        path: Path,
        backend: Callable[[ProxyConfig, float], KbsBackend] = KbsBackend,
    ) -> None:
        self.path = str(path)
        self.proxy = AttestationProxy(config, backend)
        self.listener = bind_unix(path)
        self.thread = threading.Thread(target=self.proxy.serve, args=(self.listener,))
        self.thread.start()

    def connect(self) -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(10)
        conn.connect(self.path)
        return conn

    def stop(self) -> None:
        self.proxy.stop(self.listener)
        self.thread.join()
        self.listener.close()


def _proxy(url: str, path: Path, binding: Binding = Binding.COCONUT) -> Iterator[RunningProxy]:
    running = RunningProxy(ProxyConfig(url=url, binding=binding), path / "aproxy.sock")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def proxy(kbs_url: str, socket_dir: Path) -> Iterator[RunningProxy]:
    yield from _proxy(kbs_url, socket_dir)


@pytest.fixture
def trustee_proxy(kbs_url: str, socket_dir: Path) -> Iterator[RunningProxy]:
    yield from _proxy(kbs_url, socket_dir, Binding.TRUSTEE)


def _svsm(proxy: RunningProxy, guest: SnpGuest) -> bytes:
    with proxy.connect() as conn:
        return attest(conn, lambda data: guest.get_report(data, 0)).secret


def test_aproxy_coconut_binding_releases_secret_to_svsm(
    proxy: RunningProxy, guest: SnpGuest
) -> None:
    assert _svsm(proxy, guest) == SECRET
    assert proxy.proxy.stats["attested"] == 1


def test_aproxy_trustee_binding_releases_secret_to_svsm(
    trustee_proxy: RunningProxy, guest: SnpGuest
) -> None:
    assert _svsm(trustee_proxy, guest) == SECRET


def test_aproxy_returns_jwt_token_to_svsm(proxy: RunningProxy, guest: SnpGuest) -> None:
    with proxy.connect() as conn:
        result = attest(conn, lambda data: guest.get_report(data, 0))
    assert result.token is not None and result.token.value.count(".") == 2


def test_aproxy_serves_sequential_connections(proxy: RunningProxy, guest: SnpGuest) -> None:
    assert [_svsm(proxy, guest) for _ in range(3)] == [SECRET] * 3


def test_aproxy_wrong_measurement_gives_svsm_attestation_failed(
    proxy: RunningProxy, store: Store, guest: SnpGuest
) -> None:
    store.set_reference_values(ReferenceValues(measurements=frozenset({bytes(48)})))
    with pytest.raises(AttestationFailed, match="refused"):
        _svsm(proxy, guest)
    assert proxy.proxy.stats["refused"] == 1


def test_aproxy_metrics_count_attested_refused_and_closed_connections(
    proxy: RunningProxy, store: Store, guest: SnpGuest
) -> None:
    _svsm(proxy, guest)
    store.set_reference_values(ReferenceValues(measurements=frozenset({bytes(48)})))
    with pytest.raises(AttestationFailed):
        _svsm(proxy, guest)
    with proxy.connect() as conn:
        conn.sendall(b"\xff" * 8)  # a frame length far over the limit
        assert conn.recv(1) == b""
    text = render(proxy.proxy.metrics())
    samples = {(s.name, tuple(s.labels.items())): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("copra_aproxy_connections_total", ())] == 3
    assert samples[("copra_aproxy_attestations_total", (("result", "attested"),))] == 1
    assert samples[("copra_aproxy_attestations_total", (("result", "refused"),))] == 1
    assert samples[("copra_aproxy_connections_closed_total", (("reason", "protocol"),))] == 1
    assert proxy.proxy.summary() == ("3 SVSM connections: 1 attested, 1 refused, closed "
                                     "early: protocol 1")


def test_aproxy_oversized_frame_closes_connection_and_keeps_serving(
    proxy: RunningProxy, guest: SnpGuest
) -> None:
    with proxy.connect() as bad:
        bad.sendall(struct.pack("<Q", 1 << 40))
        assert bad.recv(1) == b""  # closed by the proxy
    assert proxy.proxy.stats["closed_protocol"] == 1
    assert _svsm(proxy, guest) == SECRET


def test_aproxy_garbage_json_closes_connection_and_keeps_serving(
    proxy: RunningProxy, guest: SnpGuest
) -> None:
    with proxy.connect() as bad:
        bad.sendall(struct.pack("<Q", 5) + b"{oops")
        assert bad.recv(1) == b""
    assert _svsm(proxy, guest) == SECRET


def test_aproxy_peer_hanging_up_mid_exchange_keeps_serving(
    proxy: RunningProxy, guest: SnpGuest
) -> None:
    with proxy.connect() as early:
        send_message(early, NegotiationRequest())
        receive_message(early, NegotiationResponse)
    assert _svsm(proxy, guest) == SECRET


def test_aproxy_unsupported_version_closes_connection(proxy: RunningProxy) -> None:
    with proxy.connect() as conn:
        send_message(conn, NegotiationRequest())  # valid first frame is not needed here
        receive_message(conn, NegotiationResponse)
        conn.sendall(struct.pack("<Q", 2) + b"[]")
        assert conn.recv(1) == b""
    assert proxy.proxy.stats["closed_protocol"] == 1


def test_aproxy_changed_challenge_gets_failure_response(
    proxy: RunningProxy, guest: SnpGuest
) -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    numbers = key.public_key().public_numbers()
    point = PublicKeyBytes(numbers.x.to_bytes(66, "big"), numbers.y.to_bytes(66, "big"))
    with proxy.connect() as conn:
        send_message(conn, NegotiationRequest())
        negotiation = receive_message(conn, NegotiationResponse)
        report = guest.get_report(bytes(64), 0)
        other = bytes(b ^ 0xFF for b in negotiation.challenge)
        send_message(conn, AttestationRequest(Tee.SNP, SnpEvidence(report), other, point))
        from copra.attest.protocol import AttestationResponse

        assert receive_message(conn, AttestationResponse).success is False


def test_aproxy_unreachable_kbs_tells_the_svsm_why_and_closes(
    socket_dir: Path, guest: SnpGuest
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
        for running in _proxy(url, socket_dir):
            with pytest.raises(AttestationFailed) as info:
                _svsm(running, guest)
            assert str(info.value).startswith(
                f"the attestation proxy cannot ask the key broker at {url}: POST /auth: ")
            assert running.proxy.stats["closed_kbs"] == 1


def test_bind_unix_existing_regular_file_is_refused_even_with_force(socket_dir: Path) -> None:
    path = socket_dir / "not-a-socket"
    path.write_text("keep me")
    with pytest.raises(FileExistsError, match="not a socket"):
        bind_unix(path, force=True)
    assert path.read_text() == "keep me"


def test_bind_unix_stale_socket_needs_force(socket_dir: Path) -> None:
    path = socket_dir / "stale.sock"
    bind_unix(path).close()  # leaves the socket file behind
    with pytest.raises(FileExistsError, match="--force"):
        bind_unix(path)
    bind_unix(path, force=True).close()


def test_aproxy_cli_bad_resource_path_exits_with_error(socket_dir: Path) -> None:
    from click.testing import CliRunner

    from copra.attest.aproxy_cli import aproxy

    result = CliRunner().invoke(
        aproxy,
        ["--socket", str(socket_dir / "s"), "--url", "http://127.0.0.1:1", "--resource", "a/b"],
    )
    assert result.exit_code != 0 and "REPOSITORY/TYPE/TAG" in result.output


def test_proxy_hiding_its_key_in_the_challenge_gets_no_report_and_no_secret(
    kbs_url: str, guest: SnpGuest
) -> None:
    """r01 end to end: a hostile proxy asks the real KBS for a nonce, then negotiates
    [Challenge] with challenge = x' || y' || nonce for its own key."""
    import base64

    import requests

    from copra.attest.jwe import EcPoint
    from copra.attest.protocol import NegotiationParam

    http = requests.Session()
    auth = http.post(f"{kbs_url}/kbs/v0/auth",
                     json={"version": "0.4.0", "tee": "snp", "extra-params": ""})
    nonce = base64.b64decode(auth.json()["nonce"])
    theirs = EcPoint.from_public_key(ec.generate_private_key(ec.SECP521R1()).public_key())
    seen: list[object] = []

    def hostile_proxy(conn: socket.socket) -> None:
        with conn:
            receive_message(conn, NegotiationRequest)
            challenge = theirs.x + theirs.y + nonce
            send_message(conn, NegotiationResponse(challenge, (NegotiationParam.CHALLENGE,)))
            try:
                seen.append(receive_message(conn, AttestationRequest))
            except Exception as exc:  # the SVSM hangs up instead of sending a report
                seen.append(type(exc).__name__)

    svsm_end, proxy_end = socket.socketpair()
    thread = threading.Thread(target=hostile_proxy, args=(proxy_end,))
    thread.start()
    asked: list[bytes] = []
    with svsm_end, pytest.raises(AttestationFailed, match="do not bind the SVSM's key"):
        attest(svsm_end, lambda data: asked.append(data) or guest.get_report(data, 0))
    thread.join()
    assert asked == [] and seen == ["ConnectionClosed"]


# --- a hostile or broken key broker ------------------------------------------------------


class FixedReplyKbs:
    """An HTTP server on loopback answering every request with one fixed reply; with
    ``length=False`` the body is delimited by closing the connection (HTTP/1.0)."""

    def __init__(self, status: int, body: bytes, *, length: bool = True) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self) -> None:
                # read the request body: closing with unread input would reset the connection
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the proxy may stop reading
                    self.wfile.write(body)

            do_GET = do_POST = _reply

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever)

    def __enter__(self) -> FixedReplyKbs:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()


def _closed_after_hello(running: RunningProxy) -> str:
    """Says hello; the proxy answers with its reason instead of a challenge (a copra
    extension), then closes. Returns the reason."""
    with running.connect() as conn:
        send_message(conn, NegotiationRequest())
        with pytest.raises(ProxyRefusal) as info:
            receive_message(conn, NegotiationResponse)
        assert conn.recv(1) == b""
    return info.value.detail


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("status", [200, 500])
def test_aproxy_deeply_nested_kbs_reply_closes_connection_and_keeps_serving(
    socket_dir: Path, status: int
) -> None:
    with FixedReplyKbs(status, DEEP) as kbs:
        for running in _proxy(kbs.url, socket_dir):
            _closed_after_hello(running)
            _closed_after_hello(running)  # r02: the first reply used to kill the proxy
            assert running.proxy.stats["closed_kbs"] == 2


@pytest.mark.parametrize("length", [True, False], ids=["announced", "streamed"])
def test_aproxy_kbs_reply_over_the_size_limit_is_refused(
    socket_dir: Path, length: bool, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"nonce": "' + b"A" * (2 << 20) + b'"}'
    with FixedReplyKbs(200, body, length=length) as kbs:
        for running in _proxy(kbs.url, socket_dir):
            assert f"exceeds {1 << 20} bytes" in _closed_after_hello(running)
            assert running.proxy.stats["closed_kbs"] == 1
    assert f"exceeds {1 << 20} bytes" in caplog.text


class BrokenBackend(KbsBackend):
    """A backend with a bug: every negotiation raises something nobody catches."""

    def negotiate(self, request: NegotiationRequest) -> NegotiationResponse:
        raise RuntimeError("a bug in the backend")


def test_aproxy_unexpected_error_is_logged_counted_and_serving_goes_on(
    socket_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    running = RunningProxy(ProxyConfig(url="http://127.0.0.1:1"), socket_dir / "s", BrokenBackend)
    try:
        _closed_after_hello(running)
        _closed_after_hello(running)
    finally:
        running.stop()
    assert running.proxy.stats["closed_internal"] == 2
    assert "internal error" in caplog.text and "a bug in the backend" in caplog.text


def test_aproxy_ignores_proxy_settings_from_the_environment(
    proxy: RunningProxy, guest: SnpGuest, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    assert _svsm(proxy, guest) == SECRET



# --- slow peers and who may connect ------------------------------------------------------


def test_aproxy_silent_peer_does_not_hold_other_connections(
    proxy: RunningProxy, guest: SnpGuest
) -> None:
    with proxy.connect() as slow:
        slow.sendall(struct.pack("<Q", 1 << 19) + b" ")  # r07: a frame that never ends
        assert _svsm(proxy, guest) == SECRET
    assert proxy.proxy.stats["attested"] == 1


def test_aproxy_connection_is_closed_at_its_deadline(socket_dir: Path, kbs_url: str) -> None:
    config = ProxyConfig(url=kbs_url, io_timeout=30.0, connection_timeout=0.5)
    running = RunningProxy(config, socket_dir / "s")
    try:
        with running.connect() as slow:
            slow.sendall(struct.pack("<Q", 1 << 19) + b" ")
            assert slow.recv(1) == b""  # well before io_timeout
    finally:
        running.stop()
    assert running.proxy.stats["closed_timeout"] == 1


def test_aproxy_stop_ends_open_connections(socket_dir: Path, kbs_url: str) -> None:
    running = RunningProxy(ProxyConfig(url=kbs_url), socket_dir / "s")
    with running.connect() as idle:
        send_message(idle, NegotiationRequest())
        receive_message(idle, NegotiationResponse)  # accepted; its handler now waits
        running.stop()  # returns although the handler would wait io_timeout (60 s)
        assert idle.recv(1) == b""


def test_bind_unix_socket_is_owner_only_whatever_the_umask(socket_dir: Path) -> None:
    old = os.umask(0)
    try:
        bind_unix(socket_dir / "s").close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((socket_dir / "s").stat().st_mode) == 0o600
