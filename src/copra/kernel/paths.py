"""Path rules of the RAM fs, shared by the fs and the PackIt codec.

Upstream's rules (``kernel/src/fs/filesystem.rs``): a path is split on ``/`` and
empty components are dropped, so a leading, trailing or doubled ``/`` means nothing
and every path is relative to a root directory chosen by the caller. ``.`` and ``..``
are ordinary names. copra adds limits upstream checks only partly: the UTF-8 encoding
of the whole path is at most ``PATH_MAX - 1`` bytes (room for the NUL user mode
passes) and each component at most ``NAME_MAX`` bytes, else ENAMETOOLONG; a path must
be valid UTF-8 and hold no NUL, else EINVAL.

Invariants: every tuple :func:`split_path` returns holds non-empty components that
contain neither ``/`` nor NUL and fit the limits above.

Locking: pure functions on immutable values; no locking (``split_path``'s memo is
``functools.lru_cache``'s, which is thread-safe).
"""

from __future__ import annotations

import functools

from copra.abi.spec import NAME_MAX, PATH_MAX, Errno
from copra.kernel.errors import SyscallError

#: The longest path, in UTF-8 bytes, without the terminating NUL.
MAX_PATH_BYTES = PATH_MAX - 1


@functools.lru_cache(maxsize=256)
def split_path(path: str) -> tuple[str, ...]:
    """Split ``path`` into its non-empty components; ``()`` for "/" or "".

    Remembers the last 256 paths it split (a pure function of an immutable string:
    the log file's path is split for every line logged, a program's at every EXEC);
    a path it refuses raises again each time, nothing is remembered for it."""
    try:
        encoded = path.encode("utf-8", errors="strict")
    except UnicodeEncodeError:
        raise SyscallError(Errno.EINVAL, "path is not valid UTF-8 (lone surrogate)") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise SyscallError(
            Errno.ENAMETOOLONG, f"path is {len(encoded)} bytes, limit {MAX_PATH_BYTES}"
        )
    if "\0" in path:
        raise SyscallError(Errno.EINVAL, "path contains a NUL character")
    components = tuple(part for part in path.split("/") if part)
    for part in components:
        size = len(part.encode("utf-8"))
        if size > NAME_MAX:
            raise SyscallError(
                Errno.ENAMETOOLONG, f"path component is {size} bytes, limit {NAME_MAX}"
            )
    return components


def split_file_path(path: str) -> tuple[str, ...]:
    """Like :func:`split_path` but the path must name something: EINVAL for "/" or ""."""
    components = split_path(path)
    if not components:
        raise SyscallError(Errno.EINVAL, f"path {path!r} names no file (no components)")
    return components
