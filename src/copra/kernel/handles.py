"""A process's handle table: u32 ids to kernel objects, lowest free id first.

Invariants (upstream COCONUT-SVSM's ``add_obj`` rule, plus a limit):
- ids are allocated lowest-free-first starting at 0; id 0 is installed at process
  creation with the task's log, so the first handle a program opens is 1;
- at most ``limit`` entries (the boot's ``limits.handles``, kernel/limits.py; by
  default ``spec.MAX_HANDLES``); one more is EMFILE (upstream has no limit);
- every entry holds one reference on its object (``KernelObject.acquire``); removing
  the entry releases it, and ``close_all`` empties the table when the process ends.

Each entry also carries the rights the handle grants (``Rights``, the ABI's
``spec.Right``): READ, WRITE, MAP, WAIT, TRANSFER, DUPLICATE. A file handle gets READ
and WRITE from its open mode and MAP with READ; the log gets WRITE only. Every other
handle a syscall makes (files, directories, events, channel endpoints, threads,
processes) also gets TRANSFER and DUPLICATE (``MOVABLE``): it may be sent (SEND,
EXEC_HANDLES) and duplicated. Rights are never added to a handle: DUPLICATE and
REPLACE only keep or reduce them, and a handle moves with its rights. An
``exclusive`` object (VM, VCPU) is never duplicated (EBUSY).

Moves (kernel/objects/channel.py): ``take`` removes a list of entries at once and
hands their references to the caller, or - on any error - removes none; ``adopt``
installs a list of (object, rights) whose references the caller hands over, all or
none (EMFILE). Neither acquires or releases a reference, so an object in transit is
never closed, never counted twice and never lost.

``get`` is the one checked lookup every syscall uses: a missing id is
ENOTFOUND, an object of another kind is ENOTSUPP (upstream's codes), a missing right
is the error the syscall names (EWRONLY for a read, ERDONLY for a write, as upstream;
EPERM otherwise).

A syscall that changes state before it has its object (OPEN with CREATE or TRUNC,
OPENDIR, THREAD_CREATE...) first ``reserve``s an id: the id counts against the limit
(EMFILE comes before the change) and names nothing yet (a lookup or CLOSE of it finds
no handle) until ``fill`` installs the object, or ``cancel`` gives it back. So a refused
call is free of side effects even when another thread takes the last id meanwhile.

Locking: one lock serialises changes to the table (install, reserve, fill, cancel,
remove, close_all, take, adopt, duplicate, restrict); no code holds two tables' locks
at once (a move takes from one table and installs into the other in two steps);
lookups read the dict without it (a single dict read is atomic under the GIL, and
the object returned stays alive: the caller's lookup result holds it). Objects are
returned with no lock held.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from enum import IntFlag
from typing import TypeVar, overload

from copra.abi.spec import MAX_HANDLES, RIGHTS_SAME, Errno, Right
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
    TRANSFER = 16
    DUPLICATE = 32
    ALL = READ | WRITE | MAP | WAIT
    MOVABLE = TRANSFER | DUPLICATE


assert {r.name: r.value for r in Right} == {
    r.name: r.value for r in Rights if r.name not in ("NONE", "ALL", "MOVABLE")}

#: One handle's entry in transit: the object (with the reference the entry held) and
#: its rights.
Entry = tuple[KernelObject, int]


class HandleTable:
    def __init__(self, limit: int = MAX_HANDLES) -> None:
        self.limit = limit
        self._lock = lockdep.lock("handles")
        self._objects: dict[int, tuple[KernelObject, int]] = {}  # rights as a plain int
        self._next = 0  # every id >= _next is free
        self._holes: list[int] = []  # free ids below _next (a min-heap)
        #: Ids ``reserve`` took and ``fill`` has not filled: they count against the
        #: limit and name nothing.
        self._reserved: set[int] = set()

    def __len__(self) -> int:
        return len(self._objects) + len(self._reserved)

    def check_room(self) -> None:
        """EMFILE now if no handle could be installed (a hint: another thread may take
        the last id next; a call that acts before it installs ``reserve``s instead)."""
        if len(self) >= self.limit:
            raise SyscallError(Errno.EMFILE,
                               f"the process holds its limit of {self.limit} handles")

    def install(self, obj: KernelObject, rights: Rights = Rights.ALL) -> int:
        with self._lock:
            return self._install(obj, int(rights))

    def _take_id(self) -> int:
        """The lowest free id; EMFILE at the limit. The caller holds the lock."""
        if len(self) >= self.limit:
            raise SyscallError(Errno.EMFILE,
                               f"the process holds its limit of {self.limit} handles")
        if self._holes:
            return heapq.heappop(self._holes)
        handle = self._next
        self._next += 1
        return handle

    def _install(self, obj: KernelObject, rights: int) -> int:
        """Install with a new reference; the caller holds the lock."""
        handle = self._take_id()
        obj.acquire()
        self._objects[handle] = (obj, rights)
        return handle

    def reserve(self) -> int:
        """The lowest free id, taken for an object the caller is about to make; EMFILE
        if there is none. Until ``fill`` or ``cancel`` it names nothing."""
        with self._lock:
            handle = self._take_id()
            self._reserved.add(handle)
            return handle

    def fill(self, handle: int, obj: KernelObject, rights: Rights = Rights.ALL) -> int:
        """Install ``obj`` at the id ``reserve`` returned; returns the id. Should the
        table have been emptied meanwhile (its process ended), the object is closed
        at once instead: nobody could ever name it."""
        obj.acquire()
        with self._lock:
            if handle in self._reserved:
                self._reserved.discard(handle)
                self._objects[handle] = (obj, int(rights))
                return handle
        obj.release()
        return handle

    def cancel(self, handle: int) -> None:
        """Give back an id ``reserve`` returned, unfilled."""
        with self._lock:
            if handle in self._reserved:
                self._reserved.discard(handle)
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
        if need and int(need) & ~int(rights):  # as ints: flag arithmetic costs ~2 us here
            raise SyscallError(denied, f"handle {handle} lacks {Rights(need & ~rights)!r}")
        if not isinstance(obj, kind):
            raise SyscallError(Errno.ENOTSUPP, f"handle {handle} is a {obj.kind.value}")
        return obj

    def names(self, handle: int, obj: KernelObject) -> bool:
        """Whether ``handle`` still names ``obj`` (a blocking call asks after it
        registered its waiter: an entry removed before that woke nobody)."""
        entry = self._objects.get(handle & 0xFFFF_FFFF)
        return entry is not None and entry[0] is obj

    def rights(self, handle: int) -> int:
        """The rights of ``handle`` (ENOTFOUND if there is none)."""
        entry = self._objects.get(handle & 0xFFFF_FFFF)
        if entry is None:
            raise SyscallError(Errno.ENOTFOUND, f"no handle {handle}")
        return entry[1]

    def take(self, handles: list[int], forbid: tuple[KernelObject, ...] = (),
             check: Callable[[KernelObject], None] | None = None) -> list[Entry]:
        """Remove every entry of ``handles`` at once and hand over their references.

        All or nothing: ENOTFOUND for a missing id, EPERM for one without TRANSFER,
        EINVAL for an object in ``forbid`` (a channel endpoint sent through itself or
        to its own queue), whatever ``check`` raises for an object; the table is then
        unchanged. The caller checks that the ids
        are distinct. Threads blocked on a taken object are woken, as by ``remove``."""
        with self._lock:
            entries: list[Entry] = []
            for handle in handles:
                entry = self._objects.get(handle)
                if entry is None:
                    raise SyscallError(Errno.ENOTFOUND, f"no handle {handle}")
                if not entry[1] & Rights.TRANSFER:
                    raise SyscallError(Errno.EPERM, f"handle {handle} lacks TRANSFER")
                if any(entry[0] is f for f in forbid):
                    raise SyscallError(Errno.EINVAL, f"handle {handle} is the sending "
                                                     "endpoint or its peer")
                if check is not None:
                    check(entry[0])
                entries.append(entry)
            for handle in handles:
                del self._objects[handle]
                heapq.heappush(self._holes, handle)
        self._wake(entries)
        for obj, _ in entries:
            obj.on_moved()
        return entries

    def adopt(self, entries: list[Entry]) -> list[int]:
        """Install every entry under the lowest free ids, in order, taking over the
        reference each holds; EMFILE (and nothing installed) if they do not all fit."""
        with self._lock:
            if len(self) + len(entries) > self.limit:
                raise SyscallError(Errno.EMFILE, f"{len(entries)} handles do not fit: the "
                                   f"process holds {len(self)} of {self.limit}")
            ids: list[int] = []
            for entry in entries:
                if self._holes:
                    handle = heapq.heappop(self._holes)
                else:
                    handle = self._next
                    self._next += 1
                self._objects[handle] = entry
                ids.append(handle)
            return ids

    def duplicate(self, handle: int, rights: int) -> int:
        """A new handle on the object of ``handle`` with ``rights`` (RIGHTS_SAME: the
        same): EPERM without the DUPLICATE right or for rights it does not hold, EBUSY
        for an exclusive object, EMFILE at the limit."""
        handle &= 0xFFFF_FFFF
        with self._lock:
            entry = self._objects.get(handle)
            if entry is None:
                raise SyscallError(Errno.ENOTFOUND, f"no handle {handle}")
            obj, have = entry
            if obj.exclusive:
                raise SyscallError(Errno.EBUSY, f"a {obj.kind.value} is exclusive: it has "
                                                "one handle only")
            if not have & Rights.DUPLICATE:
                raise SyscallError(Errno.EPERM, f"handle {handle} lacks DUPLICATE")
            if rights == RIGHTS_SAME:
                rights = have
            if rights & ~have:
                raise SyscallError(Errno.EPERM, f"handle {handle} lacks "
                                                f"{Rights(rights & ~have)!r}")
            return self._install(obj, rights)

    def restrict(self, handle: int, rights: int) -> None:
        """``handle`` keeps ``rights`` only: EPERM if it lacks any of them."""
        handle &= 0xFFFF_FFFF
        with self._lock:
            entry = self._objects.get(handle)
            if entry is None:
                raise SyscallError(Errno.ENOTFOUND, f"no handle {handle}")
            if rights & ~entry[1]:
                raise SyscallError(Errno.EPERM, f"handle {handle} lacks "
                                                f"{Rights(rights & ~entry[1])!r}")
            self._objects[handle] = (entry[0], rights)

    @staticmethod
    def _wake(entries: list[Entry]) -> None:
        for obj, _ in entries:
            queue = obj.wait_queue()
            if queue is not None:
                queue.wake(len(queue))

    def remove(self, handle: int) -> bool:
        """Drop the entry and its reference; False if there was none.

        Threads blocked on the object (a READ of an event, a JOIN, a WAIT_MANY) are
        woken: their call runs again and finds the handle gone (ENOTFOUND), or, if
        the id was reused meanwhile, whatever it names now. Waiters through another
        handle on the same object just look again and wait on."""
        with self._lock:
            entry = self._objects.pop(handle & 0xFFFF_FFFF, None)
            if entry is None:  # none, or reserved: the reserving call owns it
                return False
            obj = entry[0]
            heapq.heappush(self._holes, handle & 0xFFFF_FFFF)
        queue = obj.wait_queue()
        if queue is not None:
            queue.wake(len(queue))
        obj.release()
        return True

    def close_all(self) -> None:
        with self._lock:
            objects = [obj for obj, _ in self._objects.values()]
            self._objects.clear()
            self._reserved.clear()
            self._holes.clear()
            self._next = 0
        for obj in objects:
            obj.release()
