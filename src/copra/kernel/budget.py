"""The metadata budget: the host memory the kernel may spend on bookkeeping no frame backs.

Guest memory (the frame pool) bounds what programs store in files and mappings. The
Python objects the kernel creates on their behalf live in host memory instead: RAM-fs
names, directory and file nodes, OPENDIR snapshots and open-directory handles. A
``MetadataBudget`` bounds them. Each is charged, in estimated host bytes, before it is
created, and refused with ``SyscallError(ENOMEM)`` when the charge would pass the
limit; the charge is released when the Python object it pays for dies (for the RAM fs,
at UNLINK or RMDIR of a name nobody else holds, or at the CLOSE or process exit that
drops the last holder). The charge constants are estimates measured with tracemalloc
(docs/ramfs.md, "Metadata budget"); tests hold each within a band of the measurement.

The default limit is ``default_metadata_limit(memory)``: one eighth of the SVSM's
memory size, 512 host bytes for every 4 KiB guest page, enough for a RAM fs in which
every page is a separate one-page file (about 460 bytes of metadata each).

Invariants: ``0 <= in_use``; ``in_use <= limit`` whenever ``limit`` is not None (a
charge that would pass it is refused and changes nothing); ``in_use`` is the sum of
the charges of live objects; ``peak`` is the largest ``in_use`` seen; ``refused``
counts refused charges.

Locking: one re-entrant lock, a leaf: releases run from finalisers (``__del__``,
``weakref.finalize``), which may fire inside any allocation of the same thread, even
one made while that thread holds this lock. Nothing is called out under it.
"""

from __future__ import annotations

from copra.abi.spec import Errno
from copra.kernel import lockdep
from copra.kernel.errors import SyscallError

#: The default limit is the SVSM memory size divided by this.
MEMORY_SHARE = 8


def default_metadata_limit(memory_size: int) -> int:
    """The default budget for an SVSM of ``memory_size`` bytes: one eighth of it."""
    if memory_size < 0:
        raise ValueError(f"memory size {memory_size} is negative")
    return memory_size // MEMORY_SHARE


class MetadataBudget:
    """Estimated host bytes of kernel metadata, charged against ``limit`` (None: no limit)."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"metadata limit must be >= 0, not {limit}")
        self.limit = limit
        self._lock = lockdep.rlock("budget")
        self._in_use = 0
        self._peak = 0
        self._refused = 0

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def peak(self) -> int:
        return self._peak

    @property
    def refused(self) -> int:
        return self._refused

    def charge(self, nbytes: int, what: str) -> None:
        """Take ``nbytes`` for ``what`` (a phrase for the message), or ENOMEM and take none."""
        if nbytes < 0:
            raise ValueError(f"negative charge {nbytes}")
        with self._lock:
            if self.limit is not None and self._in_use + nbytes > self.limit:
                self._refused += 1
                in_use = self._in_use
            else:
                self._in_use += nbytes
                self._peak = max(self._peak, self._in_use)
                return
        raise SyscallError(
            Errno.ENOMEM,
            f"{what}: the kernel metadata budget is spent ({in_use} of {self.limit} "
            f"host bytes in use, {nbytes} more needed); remove names or close "
            "directory handles",
        )

    def release(self, nbytes: int) -> None:
        """Give back ``nbytes`` of an earlier charge. Never raises (finalisers call it)."""
        with self._lock:
            self._in_use -= nbytes
