"""Host files that hold keys or trusted state: opened only if the effective user owns them.

The emulated chip's state directory and the key broker's database hold private keys
and secrets that copra trusts without further proof. Checking their mode bits is not
enough: in a directory others can write (``/tmp``), another user can prepare the
file or the whole chip beforehand, with a mode that passes, and root would then use
it. So, as OpenSSH's StrictModes does for ``authorized_keys``:

- a *state directory* is opened with ``O_DIRECTORY | O_NOFOLLOW`` (a symbolic link is
  refused), must be owned by the effective user (or by root, who owns the system's
  directories and can do anything anyway) and must not be writable by group or
  others, so no one else can add, remove or swap what is in it;
- each *file* in it is opened relative to that directory's descriptor (``openat``),
  with ``O_NOFOLLOW | O_NONBLOCK``, so it is a file of the directory that was
  checked, not a link and never a FIFO that blocks; it must be a regular file owned
  by the effective user; a *private* file (a key, a database) must have no group or
  other permission at all, a public one (a certificate) no group or other write;
- at most ``limit`` bytes are read.

Every refusal raises :class:`UnsafeFile` naming the path and the reason; I/O errors
other than a refusal (``ENOENT``, ``EACCES``) pass through as ``OSError``.

Not checked: the ancestors of the state directory. Someone who can rename an
ancestor can move the checked directory away between two opens; each open here goes
through the directory's descriptor, so that affects only callers that reopen by path
(SQLite does: docs/attestation-protocol.md says what remains).

Stateless functions; safe from any thread.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Final

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeFile(Exception):
    """A state file or directory that copra refuses to trust; the message says why."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return f"file type {stat.S_IFMT(mode):o}"


def _check_owner(path: Path, info: os.stat_result, *, root_ok: bool) -> None:
    euid = os.geteuid()
    if info.st_uid == euid or (root_ok and info.st_uid == 0):
        return
    raise UnsafeFile(f"{path} is owned by uid {info.st_uid}, not by the effective user "
                     f"(uid {euid}): another user could have prepared it")


def _refuse_link(path: Path, exc: OSError) -> None:
    # O_NOFOLLOW on a link fails with ELOOP, or ENOTDIR when O_DIRECTORY is given too
    if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and path.is_symlink()):
        raise UnsafeFile(f"{path} is a symbolic link (refused: name the file itself)") from None
    if exc.errno == errno.ENOTDIR:
        raise UnsafeFile(f"{path} is not a directory") from None


def open_state_dir(path: Path) -> int:
    """A descriptor of the directory ``path``, checked as the module docstring says."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        _refuse_link(path, exc)
        raise
    try:
        info = os.fstat(fd)
        _check_owner(path, info, root_ok=True)
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o022:
            raise UnsafeFile(f"{path} is writable by group or others (mode {mode:04o}): "
                             f"they could replace what is in it; run chmod go-w {path}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_state_file(dir_fd: int, path: Path, *, private: bool) -> os.stat_result:
    """Check the file ``path`` (whose name is looked up in ``dir_fd``); its stat."""
    fd = _open_file(dir_fd, path, private=private)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def read_state_file(dir_fd: int, path: Path, *, private: bool, limit: int = 1 << 20) -> bytes:
    """The bytes of the checked file ``path`` (its name looked up in ``dir_fd``); a file
    over ``limit`` bytes is refused."""
    fd = _open_file(dir_fd, path, private=private)
    try:
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise UnsafeFile(f"{path} is larger than {limit} bytes")
    return data


def _open_file(dir_fd: int, path: Path, *, private: bool) -> int:
    try:
        fd = os.open(path.name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        _refuse_link(path, exc)
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(f"{path} is not a regular file ({_kind(info.st_mode)})")
        _check_owner(path, info, root_ok=False)
        mode = stat.S_IMODE(info.st_mode)
        if private and mode & 0o077:
            raise UnsafeFile(f"{path}: mode {mode:04o} lets group or others reach a secret; "
                             f"expected 0600 (run chmod 600 {path})")
        if not private and mode & 0o022:
            raise UnsafeFile(f"{path}: mode {mode:04o} lets group or others write it; "
                             f"run chmod go-w {path}")
    except BaseException:
        os.close(fd)
        raise
    return fd
