"""Kernel objects: one module per kind, each a subclass of ``KernelObject``.

Every object carries a ``kind`` tag (for messages and accounting); the handle table's
checked lookup asks for the Python class a syscall expects (no ``as_<kind>()``
downcasts). An object counts
the handles that refer to it; ``on_close`` runs once, when the last one goes away
(CLOSE or process exit), and releases what the object holds.

Locking: the reference count is guarded by a per-object lock; each kind states its
own rule for its state at the top of its module.
"""

from __future__ import annotations

from collections import Counter
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

from copra.kernel import lockdep

if TYPE_CHECKING:
    from copra.kernel.waitqueue import WaitQueue


class ObjectKind(Enum):
    LOG = "log"
    FILE = "file"
    DIRECTORY = "directory"
    THREAD = "thread"
    PROCESS = "process"
    EVENT = "event"
    CHANNEL = "channel"


class KernelObject:
    """Base of every kernel object."""

    kind: ObjectKind
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

    def wait_queue(self) -> WaitQueue | None:
        """The queue of the object's signals, for WAIT_MANY; None: it raises none."""
        return None
