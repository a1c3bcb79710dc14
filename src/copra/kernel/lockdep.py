"""The kernel's lock order, and a checker that enforces it at run time (like Linux's lockdep).

Every kernel lock is made here, by class name (``lock("sched")``); the names and the
one order in which they may nest are ``ORDER`` (outermost first), the list
docs/architecture.md ("Locking") gives and a test compares with it. A host thread
may acquire a lock only while every lock it already holds comes strictly earlier in
``ORDER``; a re-entrant lock it holds already may be taken again. That order is
total, so following it rules out every deadlock between these locks, not only the
inversions a run happens to exercise (what Linux's lockdep learns at run time, this
checker is told).

Checking is a debug mode: when ``COPRA_LOCKDEP=1`` is in the environment (the test
suite sets it, tests/conftest.py) or ``enable()`` ran before the locks were made,
``lock`` and ``rlock`` return checked locks; otherwise plain ``threading`` locks, at
no cost. A checked lock that would be taken out of order raises ``LockOrderError``
before it blocks, and the violation is recorded in ``violations`` (a handler that
swallows the exception cannot hide it: the suite fails every test that recorded one).
A non-blocking acquire is never refused (it cannot deadlock) but still tracked.

Invariants: ``ORDER`` has no duplicates; every lock the kernel makes has a name in it
(``lock`` refuses others). Locking: the held-lock stacks are per host thread; the
violation list has its own lock, a leaf outside the order.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Final, Protocol

#: Every kernel lock class, outermost first (docs/architecture.md, "Locking").
ORDER: Final = (
    "tasks",  # Kernel: the process table, pids, children bookkeeping
    "file",  # OpenFile: one handle's position (READ copies out under it)
    "directory",  # OpenDirectory: one handle's cursor (READDIR copies out under it)
    "event",  # Event: its counter (READ copies out under it)
    "console.input",  # ConsoleInput: the bytes of host input waiting (READ copies out under it)
    "channel.moves",  # one system-wide lock held by every SEND that carries handles
    "channel",  # Endpoint pair: both queues (SEND takes handles, RECV installs under it)
    "vmm.vm",  # GuestVm: its state (open, released) and MSR policy
    "vmm.device",  # DeviceEvent: its accesses (READ copies out under it); the VM's routes
    "vmm.apic",  # ApicBus: a guest's APIC models (IPIs, timers, injection, IRQ signals)
    "process.mem",  # Process: address space, regions, frame account, user copies
    "handles",  # HandleTable: ids -> objects
    "log",  # Log: one task's line buffer (emits lines under it)
    "logfile",  # LogFile: appends to /Log/logfile
    "ramfs",  # RamFs: the tree and every file's contents
    "waitqueue",  # WaitQueue: an object's signals and observers
    "sched",  # Scheduler: run queue, thread states, current thread per CPU
    "cpu.context",  # Cpu: the loaded context's bookkeeping, a parked context's XSAVE state
    "vm.gate",  # SvsmVm: which CPUs are in guest mode, the invalidation flag
    "vmm.vcpu",  # GuestCpu: its runner, dead and open flags (a CPU kick takes it)
    "frames",  # FrameAllocator: free list, owners, counts (finalisers take it too)
    "ramfs.pages",  # the RAM fs's page count (finalisers take it too)
    "budget",  # MetadataBudget (re-entrant; finalisers take it anywhere)
    "object.refs",  # KernelObject: one object's reference count
    "object.live",  # KernelObject.live: objects per kind
    "counters",  # Kernel.counters
)
_RANK: Final = {name: i for i, name in enumerate(ORDER)}
assert len(_RANK) == len(ORDER)

ENV: Final = "COPRA_LOCKDEP"
_enabled = os.environ.get(ENV, "") == "1"


class LockOrderError(RuntimeError):
    """A lock was about to be taken against the documented order."""


#: Every violation seen since the start (or since ``take_violations``), as messages.
violations: list[str] = []
_violations_lock = threading.Lock()


class KernelLock(Protocol):
    """What kernel code may do with a lock: a context manager, acquire and release."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...

    def __enter__(self) -> bool: ...

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None: ...


def enabled() -> bool:
    return _enabled


def enable() -> None:
    """Check every lock made from now on."""
    global _enabled
    _enabled = True


@contextmanager
def unchecked() -> Iterator[None]:
    """Locks made inside the block are plain, as in production: for measurements of
    host memory (a checked lock is a larger object). Not for concurrent use."""
    global _enabled
    was, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = was


def take_violations() -> list[str]:
    """The violations recorded so far; the list is emptied."""
    with _violations_lock:
        taken = violations[:]
        violations.clear()
    return taken


class _Held(threading.local):
    def __init__(self) -> None:
        self.stack: list[CheckedLock] = []


_held = _Held()


class CheckedLock:
    """A lock that refuses to be taken against ``ORDER``."""

    __slots__ = ("_count", "_lock", "_owner", "name", "rank", "reentrant")

    def __init__(self, name: str, reentrant: bool = False) -> None:
        self.name = name
        self.rank = _RANK[name]
        self.reentrant = reentrant
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._count = 0

    def _check(self) -> None:
        for held in _held.stack:
            if held.rank >= self.rank:
                how = "the same class" if held.rank == self.rank else "a later class"
                message = (f"lock {self.name!r} taken while holding {held.name!r} "
                           f"({how} in the order: {' < '.join(ORDER)})")
                with _violations_lock:
                    violations.append(message)
                raise LockOrderError(message)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        if self._owner == me:
            if not self.reentrant:
                message = f"lock {self.name!r} taken again by the thread that holds it"
                with _violations_lock:
                    violations.append(message)
                raise LockOrderError(message)
            self._count += 1
            return True
        if blocking:
            self._check()
        if not self._lock.acquire(blocking, timeout):
            return False
        self._owner = me
        self._count = 1
        _held.stack.append(self)
        return True

    def release(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError(f"release of lock {self.name!r} by a thread that does not hold it")
        self._count -= 1
        if self._count:
            return
        self._owner = None
        stack = _held.stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is self:
                del stack[i]
                break
        self._lock.release()

    def _is_owned(self) -> bool:  # threading.Condition asks this
        return self._owner == threading.get_ident()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _name(name: str) -> str:
    if name not in _RANK:
        raise ValueError(f"lock class {name!r} is not in lockdep.ORDER")
    return name


def lock(name: str) -> KernelLock:
    """A lock of class ``name`` (checked in debug mode)."""
    if _enabled:
        return CheckedLock(_name(name))
    _name(name)
    return threading.Lock()


def rlock(name: str) -> KernelLock:
    """A re-entrant lock of class ``name`` (checked in debug mode)."""
    if _enabled:
        return CheckedLock(_name(name), reentrant=True)
    _name(name)
    return threading.RLock()


def condition(lock: KernelLock) -> threading.Condition:
    """A condition variable on a (non-re-entrant) kernel lock."""
    return threading.Condition(lock)  # type: ignore[arg-type]


@contextmanager
def expect_violation() -> Iterator[None]:
    """For tests that provoke an inversion on purpose: the block must record one,
    which is then removed, so that it does not fail the test."""
    before = len(violations)
    yield
    with _violations_lock:
        recorded = len(violations) > before
        del violations[before:]
    if not recorded:
        raise AssertionError("no lock-order violation was recorded")
