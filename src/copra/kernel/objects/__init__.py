"""Kernel objects: one module per kind, each a subclass of ``KernelObject``.

Every object carries a ``kind`` tag (for messages and accounting); the handle table's
checked lookup asks for the Python class a syscall expects (no ``as_<kind>()``
downcasts). An object counts
the handles that refer to it; ``on_close`` runs once, when the last one goes away
(CLOSE or process exit), and releases what the object holds.

An object kind may be ``exclusive`` (VM and VCPU objects): at most one handle refers
to it at any time, so DUPLICATE refuses it and only a move gives it away. A kind whose
pages a process may map subclasses ``MappableObject``.

Locking: the reference count is guarded by a per-object lock; each kind states its
own rule for its state at the top of its module.
"""

from __future__ import annotations

from collections import Counter
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

from copra.kernel import lockdep

if TYPE_CHECKING:
    from copra.kernel.syscalls.table import Call
    from copra.kernel.usermem import UserPtr
    from copra.kernel.waitqueue import WaitQueue


class ObjectKind(Enum):
    LOG = "log"
    FILE = "file"
    DIRECTORY = "directory"
    THREAD = "thread"
    PROCESS = "process"
    EVENT = "event"
    VM = "vm"
    VCPU = "vcpu"
    GUEST_MEMORY = "guest memory"
    IO_EVENT = "io event"
    MMIO_EVENT = "mmio event"
    IRQ = "irq"
    CHANNEL = "channel"
    CONSOLE_INPUT = "console input"


class KernelObject:
    """Base of every kernel object."""

    kind: ObjectKind
    #: At most one handle may refer to the object (DUPLICATE refuses it).
    exclusive: ClassVar[bool] = False
    #: Objects referred to by at least one handle, per kind, system-wide (for tests
    #: and accounting: every count returns to its baseline when processes end).
    live: ClassVar[Counter[ObjectKind]] = Counter()
    _live_lock: ClassVar[lockdep.KernelLock] = lockdep.lock("object.live")

    def __init__(self) -> None:
        self._refs = 0
        self._ref_lock = lockdep.lock("object.refs")

    def acquire(self) -> None:
        with self._ref_lock:
            self._refs += 1
            first = self._refs == 1
        if first:
            with KernelObject._live_lock:
                KernelObject.live[self.kind] += 1

    def release(self) -> None:
        with self._ref_lock:
            self._refs -= 1
            last = self._refs == 0
        if last:
            with KernelObject._live_lock:
                KernelObject.live[self.kind] -= 1
            self.on_close()

    def on_close(self) -> None:
        """Release what the object holds; called once, when its last handle goes."""

    def on_moved(self) -> None:
        """A handle on the object just left its process's table to travel in a move
        (SEND, EXEC_HANDLES): the object stays alive. Called with no lock held."""

    def wait_queue(self) -> WaitQueue | None:
        """The queue of the object's signals, for WAIT_MANY; None: it raises none."""
        return None


class MappableObject(KernelObject):
    """An object whose pages MMAP maps into a process, shared with the kernel."""

    def map_pages(self, first: int, pages: int, writable: bool) -> list[int]:
        """Physical frames for pages [first, first + pages) of the object, one reference
        each for the mapping (``FrameAllocator.share``; frames of a foreign range
        need none), given up by unmapping. Raises SyscallError (EINVAL past the
        object's end, EPERM for a write the object refuses)."""
        raise NotImplementedError


class StreamObject(KernelObject):
    """An object that READ and WRITE exchange records with (not a file): a device
    model's event takes guest accesses with READ and answers them with WRITE. The
    handlers check the handle's rights (READ, WRITE) first; the object does the rest:
    validates the length, copies through the caller's memory, blocks (WouldBlock)."""

    def read_stream(self, c: Call, buf: UserPtr, length: int) -> int:
        raise NotImplementedError

    def write_stream(self, c: Call, buf: UserPtr, length: int) -> int:
        raise NotImplementedError
