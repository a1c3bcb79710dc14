"""A process's handle table: u32 ids to kernel objects, lowest free id first.

Invariants (upstream COCONUT-SVSM's ``add_obj`` rule, plus a limit):
- ids are allocated lowest-free-first starting at 0; id 0 is installed at process
  creation with the task's log, so the first handle a program opens is 1;
- at most ``limit`` entries (the boot's ``limits.handles``, kernel/limits.py; by
  default ``spec.MAX_HANDLES``); one more is EMFILE (upstream has no limit);
- every entry holds one reference on its object (``KernelObject.acquire``); removing
  the entry releases it, and ``close_all`` empties the table when the process ends.

Each entry also carries the rights the handle grants (``Rights``): READ, WRITE, MAP.
A file handle gets READ and WRITE from its open mode and MAP with READ; the log
gets WRITE. ``get`` is the one checked lookup every syscall uses: a missing id is
ENOTFOUND, an object of another kind is ENOTSUPP (upstream's codes), a missing right
is the error the syscall names (EWRONLY for a read, ERDONLY for a write, as upstream;
EPERM otherwise).

A syscall that changes state before it has its object (OPEN with CREATE or TRUNC,
OPENDIR, THREAD_CREATE...) first ``reserve``s an id: the id counts against the limit
(EMFILE comes before the change) and names nothing yet (a lookup or CLOSE of it finds
no handle) until ``fill`` installs the object, or ``cancel`` gives it back. So a refused
call is free of side effects even when another thread takes the last id meanwhile.

Locking: one lock serialises changes to the table (install, reserve, fill, cancel,
remove, close_all);
lookups read the dict without it (a single dict read is atomic under the GIL, and
the object returned stays alive: the caller's lookup result holds it). Objects are
returned with no lock held.
"""

from __future__ import annotations

import heapq
from enum import IntFlag
from typing import TypeVar, overload

from copra.abi.spec import MAX_HANDLES, Errno
from copra.kernel import lockdep
from copra.kernel.errors import SyscallError
from copra.kernel.objects import KernelObject

T = TypeVar("T", bound=KernelObject)
U = TypeVar("U", bound=KernelObject)
V = TypeVar("V", bound=KernelObject)


class Rights(IntFlag):
    NONE = 0
    READ = 1  #: READ, READDIR
    WRITE = 2  #: WRITE, TRUNCATE
    MAP = 4  #: MMAP of the object
    WAIT = 8  #: wait for the object's signals and read its result (JOIN)
    ALL = READ | WRITE | MAP | WAIT


class HandleTable:
    def __init__(self, limit: int = MAX_HANDLES) -> None:
        self.limit = limit
        self._lock = lockdep.lock("handles")
        #: Entries, rights as a plain int; None for a reserved id (``reserve``).
        self._objects: dict[int, tuple[KernelObject, int] | None] = {}
        self._next = 0  # every id >= _next is free
        self._holes: list[int] = []  # free ids below _next (a min-heap)

    def __len__(self) -> int:
        return len(self._objects)

    def check_room(self) -> None:
        """EMFILE now if no handle could be installed (a hint: another thread may take
        the last id next; a call that acts before it installs ``reserve``s instead)."""
        if len(self._objects) >= self.limit:
            raise SyscallError(Errno.EMFILE,
                               f"the process holds its limit of {self.limit} handles")

    def _take_id(self) -> int:
        if len(self._objects) >= self.limit:
            raise SyscallError(Errno.EMFILE,
                               f"the process holds its limit of {self.limit} handles")
        if self._holes:
            return heapq.heappop(self._holes)
        handle = self._next
        self._next += 1
        return handle

    def install(self, obj: KernelObject, rights: Rights = Rights.ALL) -> int:
        with self._lock:
            handle = self._take_id()
            obj.acquire()
            self._objects[handle] = (obj, int(rights))
            return handle

    def reserve(self) -> int:
        """The lowest free id, taken for an object the caller is about to make; EMFILE
        if there is none. Until ``fill`` or ``cancel`` it names nothing."""
        with self._lock:
            handle = self._take_id()
            self._objects[handle] = None
            return handle

    def fill(self, handle: int, obj: KernelObject, rights: Rights = Rights.ALL) -> int:
        """Install ``obj`` at the id ``reserve`` returned; returns the id. Should the
        table have been emptied meanwhile (its process ended), the object is closed
        at once instead: nobody could ever name it."""
        obj.acquire()
        with self._lock:
            if handle in self._objects and self._objects[handle] is None:
                self._objects[handle] = (obj, int(rights))
                return handle
        obj.release()
        return handle

    def cancel(self, handle: int) -> None:
        """Give back an id ``reserve`` returned, unfilled."""
        with self._lock:
            if handle in self._objects and self._objects[handle] is None:
                del self._objects[handle]
                heapq.heappush(self._holes, handle)

    @overload
    def get(self, handle: int, kind: type[T], need: int = 0,
            denied: Errno = Errno.EPERM, *,
            refused_by_rights: tuple[type[KernelObject], ...] = ()) -> T: ...

    @overload
    def get(self, handle: int, kind: tuple[type[T], type[U]], need: int = 0,
            denied: Errno = Errno.EPERM, *,
            refused_by_rights: tuple[type[KernelObject], ...] = ()) -> T | U: ...

    @overload
    def get(self, handle: int, kind: tuple[type[T], type[U], type[V]], need: int = 0,
            denied: Errno = Errno.EPERM, *,
            refused_by_rights: tuple[type[KernelObject], ...] = ()) -> T | U | V: ...

    @overload
    def get(self, handle: int, kind: tuple[type[KernelObject], ...], need: int = 0,
            denied: Errno = Errno.EPERM, *,
            refused_by_rights: tuple[type[KernelObject], ...] = ()) -> KernelObject: ...

    def get(self, handle: int, kind: type[KernelObject] | tuple[type[KernelObject], ...],
            need: int = 0, denied: Errno = Errno.EPERM, *,
            refused_by_rights: tuple[type[KernelObject], ...] = ()) -> KernelObject:
        """The object behind ``handle`` if it is of ``kind`` (a class or a tuple of
        classes) and the handle grants the rights ``need``.

        An object of a ``refused_by_rights`` kind is answered as the rights say: with
        ``denied`` when its handle lacks ``need``, ENOTSUPP otherwise (the log on READ:
        upstream answers EWRONLY, the log being a write-only file)."""
        entry = self._objects.get(handle & 0xFFFF_FFFF)
        if entry is None:  # no such id, or one reserved and not yet filled
            raise SyscallError(Errno.ENOTFOUND, f"no handle {handle}")
        obj, rights = entry
        if not isinstance(obj, kind) and not isinstance(obj, refused_by_rights):
            raise SyscallError(Errno.ENOTSUPP, f"handle {handle} is a {obj.kind.value}")
        if need and need & ~rights:
            raise SyscallError(denied, f"handle {handle} lacks {Rights(need & ~rights)!r}")
        if not isinstance(obj, kind):
            raise SyscallError(Errno.ENOTSUPP, f"handle {handle} is a {obj.kind.value}")
        return obj

    def remove(self, handle: int) -> bool:
        """Drop the entry and its reference; False if there was none.

        Threads blocked on the object (a READ of an event, a JOIN, a WAIT_MANY) are
        woken: their call runs again and finds the handle gone (ENOTFOUND), or, if
        the id was reused meanwhile, whatever it names now. Waiters through another
        handle on the same object just look again and wait on."""
        with self._lock:
            entry = self._objects.get(handle & 0xFFFF_FFFF)
            if entry is None:  # none, or reserved: the reserving call owns it
                return False
            del self._objects[handle & 0xFFFF_FFFF]
            obj = entry[0]
            heapq.heappush(self._holes, handle & 0xFFFF_FFFF)
        queue = obj.wait_queue()
        if queue is not None:
            queue.wake(len(queue))
        obj.release()
        return True

    def close_all(self) -> None:
        with self._lock:
            objects = [entry[0] for entry in self._objects.values() if entry is not None]
            self._objects.clear()
            self._holes.clear()
            self._next = 0
        for obj in objects:
            obj.release()
