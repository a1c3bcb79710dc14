"""The attestation driver: attest at boot, mount the persistent state, seal it at the end.

Upstream's SVSM attests in early boot (``kernel/src/attest.rs``): it negotiates with a
host proxy over vsock port 1995, asks the SNP firmware for a report binding the
proxy's challenge and an ephemeral P-521 key, and unwraps the secret the key broker
releases, which unlocks its persistent volume. copra does the same as two boot stages
(:class:`copra.kernel.boot.BootConfig`):

``before_init`` (:meth:`AttestationDriver.before_init`)
  1. connect to the proxy's Unix socket (standing in for vsock port 1995), waiting at
     most :attr:`AttestSettings.timeout` (30 s): without a proxy there is no
     attestation, so that is found out before anything else is done;
  2. open the emulated SNP chip in the state directory, creating it if there is none
     (and saying so in the log: a verifier must be given its new ARK);
  3. launch the guest on it and measure the boot (:mod:`copra.attest.measure`);
  4. run :func:`copra.attest.client.attest` with VMPL 0 reports and a certificate
     table holding the chip's VCEK and ASK, every read and write within one deadline,
     :attr:`AttestSettings.timeout` from the first message: a proxy that trickles
     bytes cannot hold the boot past it;
  5. open the persistent store (:mod:`copra.attest.persist`) with the secret, create
     ``/persist`` in the RAM fs and put the store's files under it.

``after_run`` (:meth:`AttestationDriver.after_run`)
  only if the store was mounted: pack every file under ``/persist`` (recursively)
  and seal it back, one generation later.

Failure behaviour. With :attr:`AttestMode.OPTIONAL` any failure is one kernel log line
(``attestation failed: <why>; /persist stays sealed``, or ``persistent store FILE is
corrupted or sealed with another key: not mounted (...)``), is counted in
``kernel.counters``, and the boot goes on without ``/persist``. With
:attr:`AttestMode.REQUIRE` the same line is logged and the boot stops with
:class:`~copra.kernel.boot.AttestationRefused` (``copra run`` exits 123). A store
that did not open is never sealed, so the file stays as it was. Why the key broker
refused is in the line: copra's proxy adds the broker's reason to its ``success:
false`` (a ``detail`` member, docs/attestation-protocol.md §1), e.g. ``attestation
failed: the key broker refused the evidence: 401 AttestationFailed: MeasurementMismatch:
measurement 5e3f...``; behind a proxy that gives none, the line says so.

Secrets: neither the secret nor the ephemeral private key (which never leaves the
client) is logged, put in an exception message or written anywhere but into the AEAD.
The secret is held in this object from mount to seal and dropped after sealing
(Python cannot wipe immutable bytes; copra offers no protection against its host
anyway).

Locking: the stages run on the boot thread, before the first and after the last
process; one driver serves one boot and is not shared.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.serialization import Encoding

from copra.abi.spec import Errno
from copra.attest.client import AttestationFailed, attest
from copra.attest.measure import launch_guest
from copra.attest.persist import (
    StoreContents,
    StoreError,
    StoreSealed,
    WeakSecret,
    read_store,
    write_store,
)
from copra.attest.protocol import DeadlineChannel
from copra.hw.snp import SnpFirmware, SnpFirmwareError, StateMissing
from copra.hw.snp_report import CertGuid, build_cert_table
from copra.kernel.boot import AttestationRefused
from copra.kernel.errors import SyscallError
from copra.kernel.kernel import Kernel
from copra.kernel.packit import PackItEntry, PackItError, encode
from copra.kernel.ramfs import File, RamFs

PERSIST_DIR: Final = "/persist"
#: Seconds the whole exchange with the proxy may take, from connect to the last byte.
DEFAULT_TIMEOUT: Final = 30.0
#: RSA modulus of the ARK and ASK of a chip the driver creates (AMD's).
DEFAULT_CHIP_KEY_SIZE: Final = 4096

Log = Callable[[str], None]


class AttestMode(StrEnum):
    """What a failed attestation does to the boot."""

    OPTIONAL = "optional"  #: log it and boot without /persist
    REQUIRE = "require"  #: log it and stop the boot


@dataclass(frozen=True)
class AttestSettings:
    mode: AttestMode
    aproxy: Path  #: the proxy's Unix socket (vsock port 1995 upstream)
    snp_state: Path  #: the emulated chip's state directory
    persist: Path | None = None  #: the sealed store; None: the secret unlocks nothing
    timeout: float = DEFAULT_TIMEOUT  #: the deadline of the whole exchange, seconds
    chip_key_size: int = DEFAULT_CHIP_KEY_SIZE  #: only used when the chip is created


class _Refused(Exception):
    """One step of the boot attestation failed; the message is the log line's reason."""


class AttestationDriver:
    """The two boot stages of one attested boot of ``archive`` with ``memory`` bytes."""

    def __init__(self, settings: AttestSettings, archive: bytes, memory: int) -> None:
        self.settings = settings
        self._archive = archive
        self._memory = memory
        self._secret: bytes | None = None
        self._mounted: StoreContents | None = None
        self.measurement: bytes | None = None

    @property
    def mounted(self) -> bool:
        """True between a successful mount and the seal."""
        return self._mounted is not None

    # -- the boot stages ----------------------------------------------------------------

    def before_init(self, kernel: Kernel) -> None:
        self.mount(kernel.log, kernel.fs, kernel.counters)

    def after_run(self, kernel: Kernel) -> None:
        self.seal(kernel.log, kernel.fs, kernel.counters)

    # -- mount --------------------------------------------------------------------------

    def mount(self, log: Log, fs: RamFs, counters: Counter[str]) -> None:
        """Attest and mount /persist; on failure log, count, and stop if required."""
        try:
            secret = self._attest(log)
        except _Refused as exc:
            counters["attestation_failed"] += 1
            self._fail(log, f"attestation failed: {exc}; {PERSIST_DIR} stays sealed")
            return
        counters["attested"] += 1
        log(f"attestation succeeded: the key broker released the secret ({len(secret)} bytes)")
        store = self.settings.persist
        if store is None:
            log(f"no persistent store given (--persist): the secret unlocks nothing, "
                f"{PERSIST_DIR} is not mounted")
            return
        try:
            contents = self._open_store(store, secret, fs)
        except _Refused as exc:
            counters["persist_not_mounted"] += 1
            self._fail(log, str(exc))
            return
        self._secret = secret
        self._mounted = contents
        size = sum(len(f.data) for f in contents.files)
        if contents.generation == 0 and not contents.files:
            log(f"persistent store {store}: new and empty, mounted at {PERSIST_DIR}")
        else:
            log(f"persistent store {store}: generation {contents.generation}, "
                f"{len(contents.files)} files ({size} bytes) mounted at {PERSIST_DIR}")

    def _fail(self, log: Log, line: str) -> None:
        log(line)
        if self.settings.mode is AttestMode.REQUIRE:
            raise AttestationRefused(f"{line}; the boot stops (--attest=require)")

    def _attest(self, log: Log) -> bytes:
        path = self.settings.aproxy
        timeout = self.settings.timeout
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                # The proxy first: a missing or dead proxy is reported before a chip is
                # created (RSA-4096 keys, seconds) for an attestation that cannot happen.
                conn.settimeout(timeout)
                try:
                    conn.connect(str(path))
                except TimeoutError:
                    raise
                except OSError as exc:
                    raise _Refused(f"cannot reach the attestation proxy at {path}: "
                                   f"{exc.strerror or exc}") from exc
                firmware = self._chip(log)
                try:
                    guest = launch_guest(firmware, self._archive, self._memory)
                except (SnpFirmwareError, ValueError) as exc:
                    raise _Refused(f"the emulated SNP firmware refused the launch: {exc}") from exc
                self.measurement = guest.measurement
                log(f"launch measurement {guest.measurement.hex()}")
                der = Encoding.DER
                certs = build_cert_table({CertGuid.VCEK: firmware.vcek.public_bytes(der),
                                          CertGuid.ASK: firmware.ask.public_bytes(der)})
                # One deadline for the whole exchange, from its first message: a proxy
                # trickling bytes cannot stretch it, however short the gaps between them.
                channel = DeadlineChannel(conn, time.monotonic() + timeout, timeout)
                result = attest(channel, lambda data: guest.get_report(data, 0), certs_buf=certs)
        except AttestationFailed as exc:
            raise _Refused(str(exc)) from exc
        except TimeoutError as exc:
            raise _Refused(f"the exchange with the attestation proxy at {path} did not "
                           f"complete within {timeout:g} s") from exc
        return result.secret

    def _chip(self, log: Log) -> SnpFirmware:
        state = self.settings.snp_state
        try:
            try:
                firmware = SnpFirmware.open(state)
                created = False
            except StateMissing:
                log(f"no emulated SNP chip in {state}: creating one "
                    f"(a key broker must trust its new root, {state / 'ark.pem'})")
                firmware = SnpFirmware.create(state, key_size=self.settings.chip_key_size)
                created = True
        except (SnpFirmwareError, OSError) as exc:
            raise _Refused(f"the emulated SNP chip in {state} is unusable: {exc}") from exc
        log(f"emulated SNP chip {'created' if created else 'opened'} in {state}: "
            f"{firmware.generation.value}, chip id {firmware.chip_id[:8].hex()}...")
        return firmware

    def _open_store(self, store: Path, secret: bytes, fs: RamFs) -> StoreContents:
        try:
            contents = read_store(store, secret)
        except WeakSecret as exc:
            raise _Refused(f"persistent store {store} cannot be keyed with the released "
                           f"secret: not mounted ({exc})") from exc
        except StoreSealed as exc:
            raise _Refused(f"persistent store {store} is corrupted or sealed with another "
                           f"key: not mounted ({exc})") from exc
        except StoreError as exc:
            raise _Refused(f"persistent store {store} cannot be opened: not mounted "
                           f"({exc})") from exc
        try:
            directory = fs.mkdir(PERSIST_DIR)
        except SyscallError as exc:
            raise _Refused(f"cannot mount {store}: {PERSIST_DIR}: {exc.message}") from exc
        try:
            fs.populate(encode(contents.files), root=directory)
        except (SyscallError, PackItError) as exc:
            fs.rmdir(PERSIST_DIR)  # populate changed nothing: the directory is empty
            raise _Refused(f"persistent store {store} does not fit the RAM fs: not mounted "
                           f"({exc})") from exc
        return contents

    # -- seal ---------------------------------------------------------------------------

    def seal(self, log: Log, fs: RamFs, counters: Counter[str]) -> None:
        """Write /persist back into the store, if it was mounted."""
        if self._mounted is None or self._secret is None or self.settings.persist is None:
            return
        store = self.settings.persist
        generation = self._mounted.generation + 1
        try:
            files = tuple(_collect(fs, PERSIST_DIR))
        except SyscallError as exc:
            if exc.errno is not Errno.ENOTFOUND:
                counters["persist_seal_failed"] += 1
                self._fail(log, f"cannot seal {PERSIST_DIR} into {store}: {exc.message}; the "
                           f"store keeps generation {self._mounted.generation}")
                return
            files = ()  # removed by a program: it was empty, so the store is now empty
        try:
            write_store(store, self._secret, StoreContents(generation, files))
        except StoreError as exc:
            counters["persist_seal_failed"] += 1
            self._fail(log, f"cannot seal {PERSIST_DIR} into {store}: {exc}")
            return
        finally:
            self._secret = None
            self._mounted = None
        size = sum(len(f.data) for f in files)
        counters["persist_sealed"] += 1
        log(f"sealed {len(files)} files ({size} bytes) from {PERSIST_DIR} into {store}, "
            f"generation {generation}")


def _collect(fs: RamFs, top: str) -> list[PackItEntry]:
    """Every file under ``top`` (depth first, directory order) with paths relative to it."""
    out: list[PackItEntry] = []
    pending: list[tuple[str, str]] = [(top, "")]
    while pending:
        path, relative = pending.pop()
        subdirs: list[tuple[str, str]] = []
        for entry in fs.opendir(path):
            child, child_rel = f"{path}/{entry.name}", f"{relative}/{entry.name}"
            if isinstance(entry.node, File):
                out.append(PackItEntry(child_rel, entry.node.read(0, entry.node.size)))
            else:
                subdirs.append((child, child_rel))
        pending.extend(reversed(subdirs))
    return out
