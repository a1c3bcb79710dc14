"""The shape of a syscall table and the narrow context its handlers get.

A table is data, one row per syscall (gVisor's linux64.go): number, handler, status
against upstream, and the rights its handle argument must grant (with the error a
missing right gets). Each class of syscalls is a module with its table (core.py,
fs.py, info.py); the package joins them.

Every handler has one shape, seL4's decode-then-invoke: read and validate every
argument with no side effect, look up handles through ``Call.handle`` (the expected
kind; the rights come from the row), act, then copy results out. A handler returns
the value for rax or raises ``SyscallError`` (the dispatcher writes -errno),
``WouldBlock`` or ``ThreadEnded`` (kernel/errors.py). Arguments come from rdi,
rsi, r8, r9, r10 (spec.ARG_REGISTERS); handle arguments use the low 32 bits, as
upstream.

What a handler may use is ``Call``: the calling thread and its process, its row, and
``Services``, the few kernel operations syscalls need (the Kernel provides them). No
handler sees the Kernel itself, and nothing here imports kernel/kernel.py.

Locking: a ``Call`` belongs to one CPU and is refilled for each dispatch on it;
handlers run on that CPU's host thread, with no lock held. Copies through user
memory take the process's ``mem_lock``; objects lock themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, TypeVar

from copra.abi.spec import PATH_MAX, Errno, Sys, SyscallClass
from copra.hw.kvm import KvmRegs
from copra.kernel.frames import PhysicalMemory
from copra.kernel.handles import Rights
from copra.kernel.lockdep import KernelLock
from copra.kernel.objects import KernelObject
from copra.kernel.process import Process
from copra.kernel.ramfs import Directory, RamFs
from copra.kernel.stats import CpuProbe
from copra.kernel.thread import Thread
from copra.kernel.usermem import UserPtr, copy_in_str
from copra.kernel.waitqueue import Signal, WaitQueue

T = TypeVar("T", bound=KernelObject)
U = TypeVar("U", bound=KernelObject)
V = TypeVar("V", bound=KernelObject)


class Status(Enum):
    UPSTREAM = "as upstream"
    IMPROVED = "upstream number, copra semantics differ (docs/abi.md)"
    COPRA = "copra addition"


class Services(Protocol):
    """The kernel operations a handler may ask for (kernel/kernel.py has them)."""

    @property
    def fs(self) -> RamFs: ...

    @property
    def memory(self) -> PhysicalMemory: ...

    @property
    def tasks_lock(self) -> KernelLock: ...

    def spawn(self, path: str, parent: int = 0, root: Directory | None = None,
              give: Callable[[Process], int] | None = None) -> Process:
        ...

    def exit_process(self, proc: Process, status: int, caller: Thread | None = None) -> None:
        ...

    def new_thread(self, proc: Process, entry: int, stack: int, arg: int,
                   fs_base: int) -> Thread: ...

    def start_thread(self, thread: Thread) -> None: ...

    def end_thread(self, thread: Thread, code: int) -> None: ...

    def child(self, parent: Process, pid: int) -> Process | None:
        """``parent``'s child ``pid``, running or unreaped (caller holds tasks_lock)."""
        ...

    def reap(self, parent: Process, child: Process) -> int: ...

    def wait_for(self, thread: Thread, queue: WaitQueue, mask: Signal) -> Signal: ...

    def wake(self, thread: Thread) -> None:
        """Make a BLOCKED thread runnable (a waker that completed its syscall)."""
        ...

    def sync_wake(self, cpu: int) -> AbstractContextManager[None]:
        """The first thread woken inside runs on CPU ``cpu`` next: the caller, CPU
        ``cpu``'s thread, blocks right after (or calls ``unsync``)."""
        ...

    def unsync(self, cpu: int) -> None:
        """The caller did not block after ``sync_wake``: wake the thread normally."""
        ...

    def release_unmapped(self, cpu: int, frames: list[int], entries: list[int]) -> None:
        """Frames just unmapped from the page-table entries at ``entries`` by a syscall
        on CPU ``cpu``: no CPU may translate to them any more, then free."""
        ...

    def syscall_spec(self, number: int) -> SyscallSpec | None:
        """The row of ``number`` in the kernel's table (BATCH runs records by it)."""
        ...

    def error_result(self, proc: Process, number: int, e: Exception) -> int:
        """The -errno a handler's exception answers, logged and counted as the
        dispatcher does it (BATCH uses it per record)."""
    def context_of(self, cls: SyscallClass) -> object | None:
        """What a class registered at boot (Kernel.register_class) gave its handlers."""
        ...

    def vm_bitmap(self) -> int:
        """CAPABILITIES' VM bitmap: the guest VMs that can be opened."""
        ...


Handler = Callable[["Call", KvmRegs], int]


@dataclass(frozen=True)
class SyscallSpec:
    number: Sys
    handler: Handler
    status: Status
    #: What the handle argument's handle must grant (nothing for syscalls without one).
    rights: Rights = Rights.NONE
    #: The error of a handle that lacks ``rights`` (upstream: EWRONLY for a read...).
    denied: Errno = Errno.EPERM


def table(specs: Iterable[SyscallSpec]) -> dict[int, SyscallSpec]:
    rows = {int(s.number): s for s in specs}
    return rows


class Call:
    """One syscall's context: who calls, which row, what the kernel offers."""

    __slots__ = ("cpu", "kernel", "probe", "process", "spec", "thread")

    def __init__(self, kernel: Services, cpu: int = 0) -> None:
        self.kernel = kernel
        #: This CPU's statistics probe while a run keeps them (BATCH counts its
        #: records there), else None.
        self.probe: CpuProbe | None = None
        self.cpu = cpu  #: the index of the CPU whose syscalls this context serves
        self.thread: Thread
        self.process: Process
        self.spec: SyscallSpec

    def start(self, thread: Thread, spec: SyscallSpec) -> None:
        self.thread = thread
        self.process = thread.process
        self.spec = spec

    def end(self) -> None:
        """Forget the caller: an ended process must not live on in a CPU's context."""
        del self.thread, self.process, self.spec

    def handle(self, handle: int, kind: type[T], *,
               refused_by_rights: tuple[type[KernelObject], ...] = ()) -> T:
        """The object of ``kind`` behind ``handle``, which must grant the row's rights."""
        spec = self.spec
        return self.process.handles.get(handle, kind, spec.rights, spec.denied,
                                        refused_by_rights=refused_by_rights)

    def handle_either(self, handle: int, first: type[T], second: type[U], *,
                      refused_by_rights: tuple[type[KernelObject], ...] = ()) -> T | U:
        """The object of either kind behind ``handle``, with the row's rights."""
        spec = self.spec
        return self.process.handles.get(handle, (first, second), spec.rights, spec.denied,
                                        refused_by_rights=refused_by_rights)

    def handle_of(self, handle: int, first: type[T], second: type[U], third: type[V], *,
                  refused_by_rights: tuple[type[KernelObject], ...] = ()) -> T | U | V:
        """The object of one of three kinds behind ``handle``, with the row's rights."""
        spec = self.spec
        return self.process.handles.get(handle, (first, second, third), spec.rights,
                                        spec.denied, refused_by_rights=refused_by_rights)

    def path(self, addr: int) -> str:
        """A NUL-terminated path from the caller's memory."""
        proc = self.process
        with proc.mem_lock:
            return copy_in_str(proc.space, UserPtr(addr), PATH_MAX)


def u32(value: int) -> int:
    """A handle or index argument: the register's low 32 bits, as upstream."""
    return value & 0xFFFF_FFFF
