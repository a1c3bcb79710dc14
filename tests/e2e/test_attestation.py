"""Attested boot with persistent state, end to end on one machine.

The real command line throughout: `copra kbs` (loopback, an ephemeral port, trusting
a fresh emulated chip's ARK, reference = `copra measure` of the boot inputs, resource
= a random 32-byte secret) and `copra aproxy` (a Unix socket in a temp dir) run as
subprocesses; `copra run --init persist-demo.elf --attest ...` boots on KVM. The
replay and tamper tests speak the proxy protocol by hand through the same proxy.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from copra.attest.binding import report_data
from copra.attest.jwe import EcPoint
from copra.attest.kbs.store import ReferenceValues, Store
from copra.attest.measure import launch_guest
from copra.attest.persist import StoreContents, read_store, write_store
from copra.attest.protocol import (
    AttestationRequest,
    AttestationResponse,
    NegotiationRequest,
    NegotiationResponse,
    PublicKeyBytes,
    SnpEvidence,
    Tee,
    receive_message,
    send_message,
)
from copra.hw.snp import SnpFirmware, SnpGuest
from copra.kernel.image import build_boot_archive, packaged_program
from copra.kernel.packit import PackItEntry

COPRA = [sys.executable, "-u", "-m", "copra"]


def copra(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COPRA, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)


def checked(*args: str | Path) -> str:
    out = copra(*args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@dataclass
class Server:
    process: subprocess.Popen[str]
    first_line: str
    log: Path

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


def start(log: Path, *args: str | Path) -> Server:
    """Start a long-running copra command; its first stdout line says it is ready."""
    with open(log, "w") as errors:
        process = subprocess.Popen([*COPRA, *map(str, args)], stdout=subprocess.PIPE,
                                   stderr=errors, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        pytest.fail(f"{args[0]} did not start: {log.read_text()}")
    return Server(process, line.strip(), log)


@dataclass
class World:
    dir: Path
    chip: SnpFirmware
    demo: Path
    secret: bytes
    measurement: bytes
    db: Path
    kbs: Server
    aproxy: Server
    socket: Path

    def run(self, store: Path, mode: str = "require") -> subprocess.CompletedProcess[str]:
        return copra("run", "--init", self.demo, f"--attest={mode}", "--aproxy", self.socket,
                     "--snp-state", self.chip.state_dir, "--persist", store)

    def set_reference(self, measurement: bytes) -> None:
        Store(self.db).set_reference_values(ReferenceValues(measurements=frozenset({measurement})))

    def guest(self) -> SnpGuest:
        """A guest launched from the same boot inputs, for driving the protocol by hand."""
        return launch_guest(self.chip, build_boot_archive(None, self.demo, ()))

    def refusals(self, kind: str) -> int:
        """How many refusals of ``kind`` the broker has logged so far."""
        return sum(kind in line and "refused" in line
                   for line in self.kbs.log.read_text().splitlines())

    def connect(self) -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(20)
        conn.connect(str(self.socket))
        return conn


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    top = Path(tempfile.mkdtemp(prefix="copra-att-"))  # short: AF_UNIX paths are < 108 bytes
    servers: list[Server] = []
    try:
        chip = SnpFirmware.create(top / "chip", key_size=2048)  # tests' knob: fast keys
        demo = top / "persist-demo.elf"
        demo.write_bytes(packaged_program("persist-demo"))
        secret = secrets.token_bytes(32)
        (top / "secret.bin").write_bytes(secret)
        db = top / "kbs.db"
        measurement = checked("measure", "--init", demo).strip()
        checked("kbs", "--db", db, "set-resource", "default/sample/test", top / "secret.bin",
                "--measurement", measurement)
        checked("kbs", "--db", db, "set-reference", "--measurement", measurement)
        kbs = start(top / "kbs.log", "kbs", "--db", db, "serve", "--listen", "127.0.0.1:0",
                    "--trust-root", chip.state_dir / "ark.pem")
        servers.append(kbs)
        url = kbs.first_line.split("serving ", 1)[1].split()[0]
        sock = top / "aproxy.sock"
        aproxy = start(top / "aproxy.log", "aproxy", "--socket", sock, "--url", url)
        servers.append(aproxy)
        yield World(top, chip, demo, secret, bytes.fromhex(measurement), db, kbs, aproxy, sock)
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def w(world: World) -> World:
    world.set_reference(world.measurement)
    return world


def task_lines(out: subprocess.CompletedProcess[str], task: str) -> list[str]:
    prefix = f"[{task}] "
    return [line[len(prefix):] for line in out.stdout.splitlines() if line.startswith(prefix)]


def test_attested_boots_count_up_in_persistent_state(w: World, tmp_path: Path) -> None:
    store = tmp_path / "state.store"
    first = w.run(store)
    assert first.returncode == 0, first.stdout + first.stderr
    assert task_lines(first, "init") == ["persist-demo: boot 1"]
    assert f"launch measurement {w.measurement.hex()}" in task_lines(first, "kernel")
    second = w.run(store)
    assert second.returncode == 0, second.stdout + second.stderr
    assert task_lines(second, "init") == ["persist-demo: boot 2"]
    assert f"sealed 1 files (1 bytes) from /persist into {store}, generation 2" in (
        task_lines(second, "kernel"))
    assert read_store(store, w.secret) == StoreContents(2, (PackItEntry("/counter", b"2"),))


def test_wrong_reference_measurement_keeps_persist_sealed(w: World, tmp_path: Path) -> None:
    store = tmp_path / "state.store"
    write_store(store, w.secret, StoreContents(4, (PackItEntry("/counter", b"4"),)))
    before = store.read_bytes()
    w.set_reference(bytes(48))
    seen = w.refusals("MeasurementMismatch")
    out = w.run(store, "optional")
    assert out.returncode == 0, out.stdout + out.stderr
    refusal = [line for line in task_lines(out, "kernel") if "attestation failed" in line]
    assert len(refusal) == 1 and refusal[0].startswith(
        "attestation failed: the key broker refused the evidence: 401 AttestationFailed: "
        "MeasurementMismatch: measurement ")
    assert refusal[0].endswith("(0000000000000000...); /persist stays sealed")
    assert task_lines(out, "init") == ["persist-demo: no persistent state"]
    assert store.read_bytes() == before
    assert w.refusals("MeasurementMismatch") == seen + 1  # and in the broker's log


def test_wrong_reference_measurement_with_require_stops_in_one_line(
    w: World, tmp_path: Path
) -> None:
    w.set_reference(bytes(48))
    out = w.run(tmp_path / "state.store", "require")
    assert out.returncode == 123
    (line,) = out.stderr.splitlines()
    assert line.startswith("copra: attestation failed: the key broker refused the evidence: "
                           "401 AttestationFailed: MeasurementMismatch: ")
    assert line.endswith("; /persist stays sealed; the boot stops (--attest=require)")
    assert task_lines(out, "init") == []
    assert not (tmp_path / "state.store").exists()


def test_store_sealed_with_another_key_is_not_mounted_and_left_untouched(
    w: World, tmp_path: Path
) -> None:
    store = tmp_path / "state.store"
    write_store(store, secrets.token_bytes(32), StoreContents(1, (PackItEntry("/counter", b"1"),)))
    before = store.read_bytes(), store.stat().st_mtime_ns
    out = w.run(store, "optional")
    assert out.returncode == 0, out.stdout + out.stderr
    assert any(line.startswith(f"persistent store {store} is corrupted or sealed with another "
                               "key: not mounted") for line in task_lines(out, "kernel"))
    assert task_lines(out, "init") == ["persist-demo: no persistent state"]
    assert (store.read_bytes(), store.stat().st_mtime_ns) == before


def _attest_by_hand(w: World, tamper: bool = False) -> tuple[AttestationRequest, bool]:
    """One exchange through the proxy with a report bound to its challenge and a fresh key."""
    guest = w.guest()
    key = ec.generate_private_key(ec.SECP521R1())
    point = EcPoint.from_public_key(key.public_key())
    with w.connect() as conn:
        send_message(conn, NegotiationRequest())
        negotiation = receive_message(conn, NegotiationResponse)
        report = bytearray(guest.get_report(
            report_data(negotiation.params, negotiation.challenge, point), 0))
        if tamper:
            report[0x90] ^= 0x01  # one bit of MEASUREMENT: the signature no longer holds
        request = AttestationRequest(Tee.SNP, SnpEvidence(bytes(report), w.chip.cert_table()),
                                     negotiation.challenge, PublicKeyBytes(point.x, point.y))
        send_message(conn, request)
        return request, receive_message(conn, AttestationResponse).success


def _replay(w: World, request: AttestationRequest, *, fresh_challenge: bool) -> bool:
    with w.connect() as conn:
        send_message(conn, NegotiationRequest())
        negotiation = receive_message(conn, NegotiationResponse)
        if fresh_challenge:  # echo the new challenge; the report still binds the old one
            request = AttestationRequest(request.tee, request.evidence, negotiation.challenge,
                                         request.key)
        send_message(conn, request)
        return receive_message(conn, AttestationResponse).success


def test_replayed_attestation_request_is_refused(w: World) -> None:
    request, success = _attest_by_hand(w)
    assert success  # the recorded exchange itself was good
    assert _replay(w, request, fresh_challenge=False) is False  # the proxy: not its challenge
    seen = w.refusals("ReportDataMismatch")
    assert _replay(w, request, fresh_challenge=True) is False
    assert w.refusals("ReportDataMismatch") == seen + 1  # the broker: report binds the old nonce


def test_tampered_report_is_refused(w: World) -> None:
    seen = w.refusals("SignatureError")
    _, success = _attest_by_hand(w, tamper=True)
    assert success is False
    assert w.refusals("SignatureError") == seen + 1


def _forms(data: bytes) -> list[bytes]:
    out = [data, data.hex().encode(), data.hex().upper().encode(),
           base64.b64encode(data), base64.urlsafe_b64encode(data)]
    return out + [f.rstrip(b"=") for f in out[3:]]


def test_no_secret_or_store_plaintext_appears_in_any_output(w: World, tmp_path: Path) -> None:
    store = tmp_path / "state.store"
    marker = b"plaintext-" + secrets.token_hex(12).encode()
    write_store(store, w.secret, StoreContents(
        7, (PackItEntry("/counter", b"7"), PackItEntry("/notes/marker", marker))))
    good = w.run(store)
    assert task_lines(good, "init") == ["persist-demo: boot 8"]
    w.set_reference(bytes(48))
    failed = w.run(store, "optional")
    refused = w.run(store, "require")
    assert refused.returncode == 123
    outputs = [good.stdout, good.stderr, failed.stdout, failed.stderr, refused.stdout,
               refused.stderr, w.kbs.log.read_text(), w.aproxy.log.read_text(),
               w.kbs.first_line, w.aproxy.first_line]
    text = "\n".join(outputs).encode()
    for form in _forms(w.secret) + _forms(marker):
        assert form not in text
    sealed = read_store(store, w.secret)  # the marker was there all along, and still is
    assert (sealed.generation, dict((f.path, f.data) for f in sealed.files)) == (
        8, {"/counter": b"8", "/notes/marker": marker})
