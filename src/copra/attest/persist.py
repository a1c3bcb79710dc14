"""Persistent state sealed with the attestation secret: one encrypted file on the host.

What upstream keeps in a CocoonFs volume unlocked by the KBS secret, copra keeps in
one host file (``copra run --persist FILE``) holding a PackIt archive of the files
under ``/persist``, encrypted and authenticated (docs/attestation.md)::

    header (72 bytes, little-endian; all of it is the AEAD's associated data)
      0x00  magic "COPRAPST"                     8
      0x08  format version (1)                   u16
      0x0A  header size (72)                     u16
      0x0C  reserved, 0                          u32
      0x10  KDF salt                             32   fresh on every write
      0x30  generation                           u64  0 for a fresh store, +1 per seal
      0x38  nonce                                12   fresh on every write
      0x44  reserved, 0                          u32
    body
      AES-256-GCM(key, nonce, PackIt archive, associated data = header): ciphertext ‖ 16-byte tag

    key = HKDF-SHA256(IKM = secret, salt = header salt, info = "copra persist v1"), 32 bytes

Invariants:
- Every write draws a fresh salt and a fresh 96-bit nonce from the OS (``os.urandom``),
  so no (key, nonce) pair is ever used twice, even if the generation repeats.
- Nothing is returned from a store unless the whole file authenticated: magic,
  version, header size, reserved bytes, generation and the archive. Any failure,
  including a wrong secret, raises :class:`StoreSealed`; the two cannot be told apart
  (GCM authenticates, it does not say why it failed), and the message says so.
  :func:`decode_store` raises nothing else, whatever the bytes (hypothesis checks).
- A missing file is a fresh, empty store of generation 0. An empty file is not: it
  is a damaged one. The file is opened without following a symbolic link and without
  blocking (``O_NOFOLLOW | O_NONBLOCK``) and must be a regular file: a FIFO would hang
  the boot and a device such as ``/dev/zero`` has no end. At most
  :data:`MAX_STORE_SIZE` + 1 bytes are ever read, whatever ``st_size`` says. Every
  read, of a missing file too, first checks that the secret is long enough to seal
  the store again (:class:`WeakSecret`), so a store is never mounted that could not
  be written back.
- :func:`write_store` replaces the file atomically: a temporary file in the same
  directory (mode 0600), fsync, rename over the target, fsync of the directory. A
  crash leaves the old store or the new one, never a mix, and possibly the temporary
  ``.NAME.XXXXXXXX.tmp``; the next successful write of the same store removes such
  files once they are older than :data:`STALE_TEMP_AGE` (10 minutes; a younger one
  may be another write in progress).

Not protected: rollback (an older file of the same secret opens; the generation is
inside the authenticated header but nothing remembers the last one seen), and
concurrent boots sealing the same file (the last rename wins). Empty directories are
not kept: PackIt records files only.

Stateless functions; callers serialise writes to one path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from copra.kernel.packit import PackItEntry, PackItError, decode, encode

MAGIC: Final = b"COPRAPST"
FORMAT_VERSION: Final = 1
HEADER: Final = struct.Struct("<8sHHI32sQ12sI")
HEADER_SIZE: Final = HEADER.size  # 72
SALT_SIZE: Final = 32
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
KDF_INFO: Final = b"copra persist v1"
#: The shortest secret accepted as key material (a KBS resource may be anything).
MIN_SECRET_SIZE: Final = 16
#: Stores larger than this are refused unread.
MAX_STORE_SIZE: Final = 1 << 30
#: Seconds after which a write's temporary file left behind counts as a crash's debris.
STALE_TEMP_AGE: Final = 600.0
#: Length of the random part ``tempfile.mkstemp`` puts in a name.
_TEMP_RANDOM_SIZE: Final = 8


class StoreError(Exception):
    """The persistent store cannot be used; the message says why."""


class StoreSealed(StoreError):
    """The store is damaged or was sealed with another secret (indistinguishable)."""


class WeakSecret(StoreError):
    """The secret is too short to key a store."""


@dataclass(frozen=True)
class StoreContents:
    """What a store holds: its generation and its files (paths relative to /persist)."""

    generation: int
    files: tuple[PackItEntry, ...]


def derive_key(secret: bytes, salt: bytes) -> bytes:
    """The AES-256 key for one write: HKDF-SHA256(secret, salt, "copra persist v1")."""
    _check_secret(secret)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=KDF_INFO).derive(secret)


def encode_store(secret: bytes, contents: StoreContents, *, salt: bytes | None = None,
                 nonce: bytes | None = None) -> bytes:
    """The sealed bytes of ``contents``. ``salt`` and ``nonce`` are for tests with known
    vectors only; by default both are fresh random values, as they must be."""
    salt = os.urandom(SALT_SIZE) if salt is None else salt
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    if len(salt) != SALT_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError(f"salt is {SALT_SIZE} bytes, nonce {NONCE_SIZE}")
    if not 0 <= contents.generation < 1 << 64:
        raise ValueError("the generation is a u64")
    try:
        archive = encode(contents.files)
    except PackItError as exc:
        raise StoreError(f"cannot pack the files: {exc}") from exc
    header = HEADER.pack(MAGIC, FORMAT_VERSION, HEADER_SIZE, 0, salt, contents.generation,
                         nonce, 0)
    return header + AESGCM(derive_key(secret, salt)).encrypt(nonce, archive, header)


def decode_store(secret: bytes, data: bytes) -> StoreContents:
    """Open sealed bytes; raises :class:`StoreSealed` (or :class:`WeakSecret`), nothing else."""
    _check_secret(secret)
    if len(data) < HEADER_SIZE + TAG_SIZE:
        raise StoreSealed(f"{len(data)} bytes is too short for a store")
    magic, version, header_size, reserved, salt, generation, nonce, reserved2 = (
        HEADER.unpack_from(data)
    )
    if magic != MAGIC:
        raise StoreSealed("not a copra persistent store (bad magic)")
    if version != FORMAT_VERSION:
        raise StoreSealed(f"unknown store format version {version} (this copra reads "
                          f"{FORMAT_VERSION})")
    if header_size != HEADER_SIZE or reserved or reserved2:
        raise StoreSealed("malformed store header")
    header = bytes(data[:HEADER_SIZE])
    try:
        archive = AESGCM(derive_key(secret, salt)).decrypt(nonce, bytes(data[HEADER_SIZE:]),
                                                           header)
    except InvalidTag:
        raise StoreSealed("authentication failed: corrupted or sealed with another key") from None
    try:
        files = tuple(decode(archive))
    except PackItError as exc:  # authentic, so written by a holder of the key: still refused
        raise StoreSealed(f"the sealed archive is malformed: {exc}") from None
    return StoreContents(generation, files)


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_SIZE:
        raise WeakSecret(
            f"a {len(secret)}-byte secret is too short to key a store "
            f"(at least {MIN_SECRET_SIZE} bytes)"
        )


def read_store(path: Path, secret: bytes) -> StoreContents:
    """The store at ``path``: empty generation 0 if there is no file. Raises
    :class:`WeakSecret` if ``secret`` could not seal it again, missing file or not
    (so nothing is mounted that could not be written back), :class:`StoreSealed` for
    a damaged or foreign store, :class:`StoreError` if it cannot be read."""
    _check_secret(secret)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return StoreContents(0, ())
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StoreError(f"{path} is a symbolic link (refused: the store must be a "
                             f"regular file named directly)") from None
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(f"{path} is not a regular file ({_kind(info.st_mode)})")
        if info.st_size > MAX_STORE_SIZE:
            raise StoreSealed(f"{info.st_size} bytes is larger than any store copra writes")
        data = _read_at_most(fd, MAX_STORE_SIZE + 1)
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_STORE_SIZE:  # the file grew after fstat
        raise StoreSealed(f"{path} is larger than any store copra writes")
    return decode_store(secret, data)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return f"file type {stat.S_IFMT(mode):o}"


def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``fd``, fewer only at end of file."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def write_store(path: Path, secret: bytes, contents: StoreContents) -> None:
    """Seal ``contents`` into ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    data = encode_store(secret, contents)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
    _remove_stale_temporaries(directory, path.name)


def _remove_stale_temporaries(directory: Path, name: str) -> None:
    """Remove what crashed writes of the store ``name`` left: regular files named as
    :func:`write_store`'s temporaries (``.NAME.XXXXXXXX.tmp``) and older than
    :data:`STALE_TEMP_AGE`. Younger ones may belong to a write still running. Best
    effort: the store is already written, so a failure here changes nothing."""
    prefix, suffix = f".{name}.", ".tmp"
    cutoff = time.time() - STALE_TEMP_AGE
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            random_part = entry.name[len(prefix) : -len(suffix)]
            if not (
                entry.name.startswith(prefix)
                and entry.name.endswith(suffix)
                and len(random_part) == _TEMP_RANDOM_SIZE
                and entry.is_file(follow_symlinks=False)
            ):
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
