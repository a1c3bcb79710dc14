"""The copra kernel: processes, the exit handlers of the CPUs, the syscall dispatcher.

The kernel is the driver of every CPU's loop (``Cpu.serve``, kernel/cpu.py): it
picks threads through the scheduler (kernel/scheduler.py) and handles each exit, a
plain ``Exit`` value; syscalls go to the table in kernel/syscalls/, faults end the
offending process only.

Invariants:
- pid 1 is reserved (upstream's initial kernel task); user pids count up from 2;
- a process is in ``processes`` from spawn until its parent reaps it with WAIT or
  the parent ends; its frames and objects are released the moment it exits, so a
  zombie holds nothing but its status;
- ``len(processes)`` (running and unreaped) never exceeds ``limits.tasks``, and a
  process never spawns while it has ``limits.children`` running children or
  ``limits.unreaped`` ended ones it has not reaped (EAGAIN, kernel/limits.py): a
  parent's ``children`` set and its two counts change only in ``spawn``,
  ``exit_process`` and ``reap``;
- a syscall handler either completes (rax is written, rip already points past the
  entry instruction), blocks (the thread is BLOCKED and the same syscall is
  dispatched again when it is woken, unless its waker completed it: ``resume``
  then only writes the result, kernel/thread.py's ``withdraw``), or ends the process;
- a host ``MemoryError`` never escapes the dispatcher: the caller gets ENOMEM and
  ``counters["host_memory_errors"]`` counts it (budgets such as the RAM fs's metadata
  budget are meant to refuse first; this is the last line). Every ENOMEM answer is
  counted (``counters["enomem"]``) and the 1st, 2nd, 4th, 8th... are logged with
  their reason, so a flood of them costs a few lines.

Statistics: while a run keeps them (``attach_stats``, until the end of ``serve``),
each CPU and its syscall context carry a ``CpuProbe`` (kernel/stats.py) that the exit
handlers and the dispatcher feed; otherwise ``cpu.probe`` is None and each hook is
that one check. The kernel's own lines have a level (``LogLevel``); those below
``log_level`` are not written.

Locking: ``tasks_lock`` (class "tasks", the outermost, kernel/lockdep.py) guards
``processes``, the pid counter, every process's ``status``, ``threads``, ``parent``
and child bookkeeping: spawn, exit, reap and WAIT's look-up take it. The scheduler
has its own lock; ``counters`` are changed under ``_counters_lock`` (a leaf), except
by boot stages, which run while no CPU does. Objects lock themselves.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import IntEnum
from time import perf_counter

from copra.abi.spec import (
    EXIT_STATUS_SHIFT,
    KILLED_BY_EXCEPTION,
    LOG_FILE_PATH,
    Entry,
    Errno,
    SyscallClass,
)
from copra.hw.x86 import Vector
from copra.kernel import lockdep, wakeq
from copra.kernel.cpu import (
    Cpu,
    CpuError,
    Exit,
    FaultExit,
    Next,
    PreemptExit,
    Runnable,
    SyscallExit,
    UserContext,
    install_kick_handler,
)
from copra.kernel.elf import ElfError
from copra.kernel.errors import SyscallError, ThreadEnded, WouldBlock
from copra.kernel.frames import FrameOwner, OutOfMemory, PhysicalMemory
from copra.kernel.layout import SYSCALL_LANDING
from copra.kernel.limits import DEFAULT_LIMITS, Limits
from copra.kernel.loader import ImageCache, load
from copra.kernel.objects import KernelObject
from copra.kernel.objects.log import Log
from copra.kernel.process import Process
from copra.kernel.ramfs import Directory, File, RamFs
from copra.kernel.scheduler import Scheduler, Waiter
from copra.kernel.stats import (
    CPU_ERROR,
    PREEMPTION,
    SYSCALL_DOORBELL,
    SYSCALL_INT80,
    RunStats,
    StatsReport,
)
from copra.kernel.svsm_vm import SvsmVm
from copra.kernel.syscalls import SYSCALLS, Call, SyscallSpec
from copra.kernel.thread import Thread, ThreadState
from copra.kernel.usermem import UserPtr, copy_in
from copra.kernel.waitqueue import Signal, WaitQueue

TIME_SLICE = 0.01  # seconds between preemption ticks
_INT80 = b"\xcd\x80"
_SYSCALL = b"\x0f\x05"
_VMMCALL = b"\x0f\x01\xd9"
PF_WRITE = 1 << 1  #: #PF error code: the access was a write (SDM 4.7)
#: ``Kernel.counters`` key per entry: how many syscalls came in through each (a program
#: built for upstream must show none through the doorbell). Each CPU counts its own
#: (``Cpu.entries``); they reach ``counters`` when ``serve`` returns.
ENTRY_COUNTERS = {Entry.DOORBELL: "syscalls_via_doorbell", Entry.INT80: "syscalls_via_int80"}
#: The statistics' exit kind per entry (kernel/stats.py).
EXIT_KINDS = {Entry.DOORBELL: SYSCALL_DOORBELL, Entry.INT80: SYSCALL_INT80}


class LogLevel(IntEnum):
    """How much the kernel logs (``copra run -q``/``-v``): a line is written when its
    level is at least the kernel's ``log_level``."""

    DEBUG = 10  #: each process's start and end (``-v``)
    INFO = 20  #: the boot banner, init's start and status (the default)
    WARNING = 30  #: kills, refusals, timeouts, interruptions (``-q`` keeps these)
    ERROR = 40  #: internal errors of the kernel


@dataclass(frozen=True)
class RunResult:
    status: int | None  #: init's packed exit status, None if it did not end
    timed_out: bool
    still_running: tuple[str, ...]
    interrupted: bool = False  #: stopped by SIGINT (Ctrl-C) before everything ended
    #: the run's statistics when ``Kernel.attach_stats`` asked for them
    stats: StatsReport | None = None


def task_name(path: str) -> str:
    """A task's name, its log prefix: the last path component, made unforgeable.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_`` (a
    ``]`` or a space could fake another prefix), and the kernel's own name is
    reserved: a program called ``kernel`` logs as ``kernel_``.
    """
    last = path.rstrip("/").rsplit("/", 1)[-1] or "task"
    name = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in last)
    return name + "_" if name == "kernel" else name


def describe_status(status: int) -> str:
    if status & 0xFF == KILLED_BY_EXCEPTION:
        vector = (status >> 8) & 0xFF
        name = Vector(vector).name if vector < 32 else str(vector)
        return f"killed by #{name}"
    return f"exited with {status >> EXIT_STATUS_SHIFT}"


class Kernel:
    def __init__(self, vm: SvsmVm, fs: RamFs, console: Callable[[str], None],
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.vm = vm
        self.fs = fs
        self.console = console
        self.limits = limits
        self.tasks_lock = lockdep.lock("tasks")
        self.processes: dict[int, Process] = {}
        self.sched = Scheduler(len(vm.cpus))
        self._next_pid = 2
        self._tids = itertools.count(1)
        #: EXEC's prepared images by RAM-fs file (kernel/loader.py), under ``tasks_lock``.
        self.images = ImageCache()
        self.counters: Counter[str] = Counter()
        self._counters_lock = lockdep.lock("counters")
        self.stop_requested = False
        self._deadline: float | None = None
        self._timed_out = False
        self._table = SYSCALLS
        self._contexts: dict[SyscallClass, object] = {}
        self._vm_bitmap: Callable[[], int] = lambda: 0
        self._calls = [Call(self, cpu.index) for cpu in vm.cpus]  # one syscall context per CPU
        #: Kernel lines below this level are not written (``log``).
        self.log_level = LogLevel.INFO
        self._run_stats: RunStats | None = None

    def request_stop(self) -> None:
        """Stop the run at the next slice boundary, as a timeout does. A signal handler
        may call this: it takes no lock, only sets a flag and each CPU's
        ``immediate_exit``; the timer thread does the rest within a slice."""
        self.stop_requested = True
        for cpu in self.vm.cpus:
            cpu.kick(preempt=True, signal_it=False)

    @property
    def memory(self) -> PhysicalMemory:
        return self.vm.memory

    def log(self, message: str, level: LogLevel = LogLevel.INFO) -> None:
        if level >= self.log_level:
            self.console(f"[kernel] {message}")

    def syscall_spec(self, number: int) -> SyscallSpec | None:
        """The table's row for ``number`` (BATCH runs its records through it)."""
        return self._table.get(number)

    # --- statistics and tracing ---------------------------------------------------------

    def attach_stats(self, run: RunStats) -> None:
        """Count (and trace, when ``run`` has a Trace) on every CPU from now until the
        end of the next ``serve``, whose result carries the report. Call before
        ``serve``, while no CPU runs."""
        vm = self.vm
        probes = run.make_probes(len(vm.cpus), vm.invalidations, vm.invalidation_seconds,
                                 vm.kvm_counters())
        for cpu, call, probe in zip(vm.cpus, self._calls, probes, strict=True):
            cpu.probe = probe
            call.probe = probe
        if run.trace is not None:
            vm.on_invalidation = run.trace.invalidation
        self._run_stats = run

    def _detach_stats(self) -> StatsReport | None:
        run, self._run_stats = self._run_stats, None
        if run is None:
            return None
        vm = self.vm
        for cpu, call in zip(vm.cpus, self._calls, strict=True):
            cpu.probe = None
            call.probe = None
        vm.on_invalidation = None
        return run.report(vm.invalidations, vm.invalidation_seconds, vm.kvm_counters())
    def register_class(self, cls: SyscallClass, rows: dict[int, SyscallSpec], context: object,
                       vm_bitmap: Callable[[], int] | None = None) -> None:
        """Add a class of syscalls that lives in a higher layer (the VMM's, class 2),
        before any CPU runs; ``context`` is what its handlers find with ``context_of``,
        ``vm_bitmap`` what CAPABILITIES answers for its VM bitmap."""
        for number in rows:
            if number >> 32 != cls or number in self._table:
                raise ValueError(f"syscall {number:#x} is not a free number of class {cls}")
        self._table = {**self._table, **rows}
        self._contexts[cls] = context
        if vm_bitmap is not None:
            self._vm_bitmap = vm_bitmap

    def context_of(self, cls: SyscallClass) -> object | None:
        return self._contexts.get(cls)

    def vm_bitmap(self) -> int:
        return self._vm_bitmap()

    def _fold_entries(self) -> None:
        """Add the CPUs' syscall counts by entry (kept by each CPU's host thread, no
        lock on the exit path) to ``counters``; the CPU loops have ended."""
        for cpu in self.vm.cpus:
            for entry, n in enumerate(cpu.entries):
                if n:
                    self.count(ENTRY_COUNTERS[Entry(entry)], n)
                    cpu.entries[entry] = 0

    def count(self, key: str, n: int = 1) -> None:
        with self._counters_lock:
            self.counters[key] += n

    # --- processes --------------------------------------------------------------------

    def spawn(self, path: str, parent: int = 0, root: Directory | None = None,
              give: Callable[[Process], int] | None = None) -> Process:
        """Create a runnable process from an ELF file of the RAM fs.

        Raises SyscallError: EAGAIN at the limit of tasks, or of the parent's running
        or unreaped children; ENOTFOUND/ENOTDIR/EISDIR for the path, ENOEXEC when the
        file is not a loadable image, ENOMEM when frames run out or the image has
        more segments than the limit of mappings. Nothing is left behind on failure.

        ``give`` (EXEC_HANDLES) runs once the child is loaded, before it can run: it
        moves handles into the child and returns how many (the child's first thread
        starts with that count in ``rdi``). If it raises, the child is torn down
        and nothing else has changed (``give`` moves all or nothing).
        """
        with self.tasks_lock:
            owner = self.processes.get(parent)
            self._check_task_limits(owner)
            file = self.fs.open(path)
            name = task_name(path)
            pid = self._next_pid
            log = Log(name, self.console)
            try:
                proc = Process(pid, name, parent, self.vm.frames,
                               self.vm.kernel_pml4_entries(), log,
                               root if root is not None else self.fs.root, self.limits)
            except OutOfMemory as e:
                raise SyscallError(Errno.ENOMEM, f"{path}: {e}") from e
            try:
                prepared = self.images.get(file)
                load(proc, prepared)
                given = give(proc) if give is not None else 0
            except BaseException as e:
                # Never ran: KVM holds no translation of it, the frames can go at once.
                self.vm.frames.free_many(proc.tear_down())
                if isinstance(e, ElfError):
                    raise SyscallError(Errno.ENOEXEC, f"{path}: {e}") from e
                if isinstance(e, OutOfMemory):
                    raise SyscallError(Errno.ENOMEM, f"{path}: {e}") from e
                raise
            thread = proc.start_at(prepared.entry, next(self._tids), prepared.fs_base)
            thread.context.regs.rdi = given
            self._next_pid += 1
            self.processes[pid] = proc
            if owner is not None:
                owner.children.add(pid)
                owner.live_children += 1
        if self.log_level <= LogLevel.DEBUG:
            self.log(f"{path} started as task {pid} (parent {parent})", LogLevel.DEBUG)
        if prepared.has_wx:
            self.count("wx_images")
            self.log(f"{path} has a writable and executable segment", LogLevel.WARNING)
        self.sched.add(thread)
        return proc

    def _check_task_limits(self, owner: Process | None) -> None:
        limits = self.limits
        why = None
        if len(self.processes) >= limits.tasks:
            why = f"{len(self.processes)} tasks exist (running or unreaped), the limit"
        elif owner is not None and owner.live_children >= limits.children:
            why = f"the caller has {owner.live_children} running children, its limit"
        elif owner is not None and owner.unreaped_children >= limits.unreaped:
            why = (f"the caller has {owner.unreaped_children} ended children it has not "
                   "waited for, its limit")
        if why is not None:
            self.count("task_limit_refusals")
            raise SyscallError(Errno.EAGAIN, why)

    def child(self, parent: Process, pid: int) -> Process | None:
        """``parent``'s child ``pid``, running or unreaped; caller holds ``tasks_lock``."""
        child = self.processes.get(pid)
        return child if child is not None and child.parent == parent.pid else None

    def release_unmapped(self, cpu: int, frames: list[int], entries: list[int]) -> None:
        """Frames a process just unmapped from the page-table entries at ``entries``
        (their physical addresses), in a syscall on CPU ``cpu``: the range must fault
        at once on every CPU, so KVM drops those entries now; then the frames are free."""
        self.vm.drop_translations(cpu, entries)
        self.vm.frames.free_many(frames)

    def reap(self, parent: Process, child: Process) -> int:
        """Forget an ended child of parent (WAIT); returns its status. Caller holds
        ``tasks_lock``."""
        assert child.status is not None and child.parent == parent.pid
        del self.processes[child.pid]
        parent.children.discard(child.pid)
        parent.unreaped_children -= 1
        return child.status

    def exit_process(self, proc: Process, status: int, caller: Thread | None = None) -> None:
        """End proc and every thread of it; release what it holds; tell its parent.

        ``caller`` is the thread of proc that asks (EXIT, a fault), if any: it stays its
        CPU's current thread until that CPU sees it EXITED (``Kernel.handle``). Every
        other thread of proc is stopped first, on whatever CPU it runs: each such CPU
        is kicked and this waits until it has left the thread (a syscall it is in
        completes first), so that no CPU runs or touches proc's memory when its pages
        go. A second call while the first is under way returns at once."""
        with self.tasks_lock:
            if proc.ending:
                return
            proc.ending = True
            threads = list(proc.threads)
            for thread in threads:
                self.sched.exit(thread)
        self.sched.wait_left(threads, caller, self._kick_cpu)
        with self.tasks_lock:
            proc.threads.clear()
            for thread in threads:
                if thread.withdraw is not None:  # no waker completes its syscall now
                    thread.withdraw()
                    thread.withdraw = None
                if thread.waiter is not None:
                    thread.waiter.cancel()
                    thread.waiter = None  # a cycle would keep the process (its root) alive
            proc.futexes.clear()
            # KVM may still translate to them: they wait for the next invalidation.
            self.vm.frames.retire(proc.tear_down())
            # Orphans are nobody's to reap: forget ended ones, detach running ones.
            for pid in proc.children:
                child = self.processes[pid]
                child.parent = 0
                if child.ended:
                    del self.processes[pid]
            proc.children.clear()
            proc.live_children = proc.unreaped_children = 0
            parent = self.processes.get(proc.parent)
            if parent is None:
                self.processes.pop(proc.pid, None)  # nobody can reap it
            else:
                parent.live_children -= 1
                parent.unreaped_children += 1
            proc.status = status
            for thread in threads:
                if thread.code is None:
                    thread.code = status
                    thread.ended_queue.raise_signals(Signal.ENDED)
            proc.ended_queue.raise_signals(Signal.ENDED)
        if self.log_level <= LogLevel.DEBUG:
            self.log(f"{proc.name} (pid {proc.pid}) {describe_status(status)}", LogLevel.DEBUG)

    def _kick_cpu(self, index: int) -> None:
        self.vm.kick_one(index)

    def kill(self, proc: Process, why: str, status: int, caller: Thread | None = None) -> None:
        self.log(f"{proc.name} (pid {proc.pid}) killed: {why}", LogLevel.WARNING)
        self.count("killed")
        self.exit_process(proc, status, caller)

    # --- threads ------------------------------------------------------------------------

    def new_thread(self, proc: Process, entry: int, stack: int, arg: int,
                   fs_base: int) -> Thread:
        """A thread of proc that will start at ``entry`` with ``rsp`` = ``stack``,
        ``rdi`` = ``arg`` and FS base ``fs_base``; not started (``start_thread``).
        EAGAIN at the process's limit of threads."""
        with self.tasks_lock:
            if len(proc.threads) >= self.limits.threads:
                self.count("thread_limit_refusals")
                raise SyscallError(Errno.EAGAIN, f"the process holds its limit of "
                                                 f"{self.limits.threads} threads")
            context = UserContext.initial(proc.space.pml4, entry, stack)
            context.regs.rdi = arg
            context.fs_base = fs_base
            return Thread(next(self._tids), proc, context)

    def start_thread(self, thread: Thread) -> None:
        proc = thread.process
        with self.tasks_lock:
            if proc.ending:
                raise ThreadEnded  # the caller's process is ending under it
            if len(proc.threads) >= self.limits.threads:
                raise SyscallError(Errno.EAGAIN, f"the process holds its limit of "
                                                 f"{self.limits.threads} threads")
            proc.threads.append(thread)
        self.sched.add(thread)

    def end_thread(self, thread: Thread, code: int) -> None:
        """THREAD_EXIT: the calling thread ends; the last one ends its process, with
        the same status EXIT(code) would give."""
        proc = thread.process
        with self.tasks_lock:
            last = proc.threads == [thread]
            if not last and not proc.ending:
                proc.threads.remove(thread)
                self.sched.exit(thread)
                if thread.waiter is not None:
                    thread.waiter.cancel()
                    thread.waiter = None
                thread.code = code
                thread.ended_queue.raise_signals(Signal.ENDED)
                return
        if last:
            self.exit_process(proc, (code & 0xFFFF) << EXIT_STATUS_SHIFT, thread)

    def wake(self, thread: Thread) -> None:
        self.sched.wake(thread)

    def sync_wake(self, cpu: int) -> AbstractContextManager[None]:
        """Wake-ups inside go to CPU ``cpu``, whose thread blocks next (scheduler.py)."""
        return self.sched.sync(cpu)

    def unsync(self, cpu: int) -> None:
        self.sched.unsync(cpu)

    def wait_for(self, thread: Thread, queue: WaitQueue, mask: Signal) -> Signal:
        """The bits of ``mask`` raised on ``queue``; if none, the thread will be woken
        when one is (a handler then raises WouldBlock and is dispatched again)."""
        if thread.waiter is None:
            thread.waiter = Waiter(thread, self.sched.wake)
        return thread.waiter.watch(queue, mask)

    # --- the CPU loops --------------------------------------------------------------------

    def serve(self, init: Process, timeout: float | None = None,
              time_slice: float = TIME_SLICE) -> RunResult:
        """Run until every process has ended (or none can run any more) or ``timeout``
        seconds have passed, preempting each running thread every ``time_slice``
        seconds.

        Each CPU runs its loop on a host thread of its own; a timer thread kicks the
        busy CPUs every ``time_slice`` (preemption) and ends the run at the deadline
        or on ``request_stop``; the calling thread only waits for the CPUs. Where the
        caller is not the main thread and no kick handler was installed before, a
        kick cannot interrupt a running KVM_RUN: it takes effect at the thread's next
        exit (logged once)."""
        signals = install_kick_handler()
        if not signals:
            self.count("runs_without_kick_signal")
            self.log("not on the main thread: no kick signal; preemption and the timeout "
                     "act at a thread's next exit to the kernel")
        self.vm.use_kick_signal(signals)
        for cpu in self.vm.cpus:
            cpu.preempt_requested = False
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timed_out = False
        self._failure: BaseException | None = None
        ticking = threading.Event()
        timer = threading.Thread(target=self._tick, args=(time_slice, ticking),
                                 name="copra-timer", daemon=True)
        loops = [threading.Thread(target=self._cpu_main, args=(cpu,), name=f"copra-cpu{i}",
                                  daemon=True)
                 for i, cpu in enumerate(self.vm.cpus)]
        timer.start()
        for loop in loops:
            loop.start()
        try:
            for loop in loops:
                loop.join()
        except BaseException:  # KeyboardInterrupt where nobody handles SIGINT
            self.request_stop()
            self.sched.stop()
            for loop in loops:
                loop.join()
            raise
        finally:
            ticking.set()
            timer.join()
            self.vm.flush_quarantine()
            self._fold_entries()
            report = self._detach_stats()
        if self._failure is not None:
            raise RuntimeError("a CPU loop failed") from self._failure
        live = tuple(f"{p.name} (pid {p.pid})" for p in self.processes.values()
                     if not p.ended)
        return RunResult(init.status, self._timed_out, live,
                         self.stop_requested and not self._timed_out, report)

    def _cpu_main(self, cpu: Cpu) -> None:
        """A CPU's host thread. SIGINT is left to the main thread, which handles it."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            # Its wake-ups of idle CPUs wait until it lets go of the GIL (wakeq.py).
            with wakeq.deferred(self.sched.defer_wakeups):
                cpu.serve(self)
        except BaseException as e:  # a kernel bug outside any syscall: end the run
            self._failure = e
            self.request_stop()
            self.sched.stop()

    def _tick(self, time_slice: float, done: threading.Event) -> None:
        """The timer thread: a kick per slice for every busy CPU, the wake-up of timed
        waits whose deadline passed, and the end of the run at the deadline or when a
        stop was requested. It sleeps until the next slice or the next deadline,
        whichever comes first (a deadline set meanwhile is seen within a slice)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        next_slice = time.monotonic() + time_slice
        while True:
            now = time.monotonic()
            wake_at = next_slice
            next_deadline = self.sched.next_deadline()
            if next_deadline is not None:
                wake_at = min(wake_at, next_deadline)
            if done.wait(max(0.0, wake_at - now)):
                return
            now = time.monotonic()
            self.sched.expire(now)
            if now < next_slice:
                continue
            next_slice = now + time_slice
            deadline = self._deadline
            if deadline is not None and not self.stop_requested and now >= deadline:
                self._timed_out = True
                self.stop_requested = True
            if self.stop_requested:
                self.sched.stop()
            self.vm.kick(preempt=True)

    def pick(self, cpu: Cpu) -> Thread | None:
        thread = self.sched.pick(cpu.index)
        if thread is not None and cpu.probe is not None:
            cpu.probe.on_cpu(thread)
        return thread

    def resume(self, cpu: Cpu, thread: Runnable) -> Next:
        assert isinstance(thread, Thread)
        if not thread.retry:
            return Next.GO_ON
        # Woken from a blocking syscall: dispatch it again.
        thread.retry = False
        if thread.waiter is not None:
            thread.waiter.cancel()
        withdraw = thread.withdraw
        if withdraw is not None:
            thread.withdraw = None
            result = withdraw()
            if result is not None:  # its waker completed the syscall (thread.py)
                return self._complete(cpu, thread, result)
        thread.resumed = True
        try:
            return self.dispatch(cpu, thread)
        finally:
            thread.resumed = False

    def handle(self, cpu: Cpu, thread: Runnable, ex: Exit) -> Next:
        """What an exit of ``thread`` on ``cpu`` means, and whether it goes on."""
        assert isinstance(thread, Thread)
        if thread.state is ThreadState.EXITED:  # its process ended under it (a kick)
            return self._ended(cpu, thread)
        probe = cpu.probe
        if type(ex) is SyscallExit:
            cpu.entries[ex.entry] += 1  # into ``counters`` when the run ends
            if probe is not None:
                probe.exit(EXIT_KINDS[ex.entry])
            return self.dispatch(cpu, thread)
        if type(ex) is PreemptExit:
            self.count("preemptions")
            if probe is not None:
                probe.exit(PREEMPTION)
            if self.stop_requested:
                self.sched.stop()
            if not self.sched.others_waiting():
                return Next.GO_ON
            cpu.park()
            if probe is not None:
                probe.preempted()
            self.sched.yield_(thread)
            return Next.LEAVE
        proc = thread.process
        if type(ex) is FaultExit:
            if ex.vector == Vector.UD and self._is_int80(proc, ex.rip):
                cpu.entries[Entry.INT80] += 1
                if probe is not None:
                    probe.exit(SYSCALL_INT80)
                cpu.regs.rip = ex.rip + 2
                cpu.mark_regs_dirty()
                return self.dispatch(cpu, thread)
            if probe is not None:
                probe.fault(ex.vector, ex.rip)
            self._fault(cpu, thread, ex)
        else:
            assert isinstance(ex, CpuError)
            if probe is not None:
                probe.exit(CPU_ERROR)
            self.kill(proc, ex.reason, (int(Vector.GP) << 8) | KILLED_BY_EXCEPTION, thread)
        return self._ended(cpu, thread)

    def _ended(self, cpu: Cpu, thread: Thread) -> Next:
        """``thread``, ``cpu``'s current thread, has ended: it leaves the CPU for good."""
        cpu.forget(thread.context)
        self.sched.leave(thread)
        return Next.LEAVE

    def _is_int80(self, proc: Process, rip: int) -> bool:
        return self._code_is(proc, rip, _INT80)

    @staticmethod
    def _code_is(proc: Process, rip: int, code: bytes) -> bool:
        try:
            with proc.mem_lock:
                return copy_in(proc.space, UserPtr(rip), len(code)) == code
        except SyscallError:
            return False

    def _fault(self, cpu: Cpu, thread: Thread, ex: FaultExit) -> None:
        proc = thread.process
        if ex.vector == Vector.PF and ex.rip == SYSCALL_LANDING:
            # PVM hosts jump to LSTAR at CPL3 although EFER.SCE is clear; VMX/SVM
            # raise #UD at the instruction. Report both the same way.
            syscall_rip = (cpu.regs.rcx - len(_SYSCALL)) & 0xFFFF_FFFF_FFFF_FFFF
            if self._code_is(proc, syscall_rip, _SYSCALL):
                self.kill(proc, f"#UD (vector {int(Vector.UD)}) at rip {syscall_rip:#x}: "
                                "SYSCALL is not an entry to copra (use int 0x80 or the doorbell)",
                          (int(Vector.UD) << 8) | KILLED_BY_EXCEPTION, thread)
                return
        if ex.vector == Vector.PF and ex.address == ex.rip and ex.error_code & PF_WRITE \
                and self._code_is(proc, ex.rip, _VMMCALL):
            # KVM on PVM hosts emulates VMMCALL by rewriting it in place into the host's
            # hypercall instruction; the text page is read-only, so that write faults.
            self.kill(proc, f"#UD (vector {int(Vector.UD)}) at rip {ex.rip:#x}: VMMCALL is "
                            "not available to user programs",
                      (int(Vector.UD) << 8) | KILLED_BY_EXCEPTION, thread)
            return
        name = Vector(ex.vector).name
        what = f"#{name} (vector {ex.vector}) at rip {ex.rip:#x}"
        if ex.vector == Vector.PF:
            what += f", address {ex.address:#x}, error code {ex.error_code:#x}"
        elif ex.vector in (Vector.GP, Vector.SS, Vector.NP, Vector.TS):
            what += f", error code {ex.error_code:#x}"
        self.kill(proc, what, (ex.vector << 8) | KILLED_BY_EXCEPTION, thread)

    def dispatch(self, cpu: Cpu, thread: Thread) -> Next:
        """Dispatch the syscall in the registers of ``thread`` (loaded on ``cpu``),
        timed and counted when the run keeps statistics."""
        probe = cpu.probe
        if probe is None:
            return self._dispatch(cpu, thread)
        number = cpu.regs.rax
        probe.pending_block = False
        start = perf_counter()
        step = self._dispatch(cpu, thread)
        end = perf_counter()
        probe.syscall(number, start, end, cpu.regs.rax if step is Next.GO_ON else None,
                      probe.pending_block)
        return step

    def _dispatch(self, cpu: Cpu, thread: Thread) -> Next:
        regs = cpu.regs
        number = regs.rax
        proc = thread.process
        thread.syscalls += 1
        spec = self._table.get(number)
        try:
            if spec is None:
                raise SyscallError(Errno.ENOSYS, f"no syscall {number:#x}")
            call = self._calls[cpu.index]
            call.start(thread, spec)
            try:
                result = spec.handler(call, regs)
            finally:
                call.end()
        except WouldBlock:
            cpu.park()  # its registers, before another CPU may take it
            if cpu.probe is not None:
                cpu.probe.blocked()
            self.sched.block(thread)
            return Next.LEAVE
        except ThreadEnded:
            return self._ended(cpu, thread)
        except Exception as e:  # SyscallError, MemoryError, or a kernel bug
            result = self.error_result(proc, number, e)
        return self._complete(cpu, thread, result)

    def _complete(self, cpu: Cpu, thread: Thread, result: int) -> Next:
        """The syscall of ``thread`` is over with ``result``."""
        cpu.regs.rax = result & 0xFFFF_FFFF_FFFF_FFFF
        cpu.mark_regs_dirty()
        # The syscall is over: whatever it waited for is history.
        thread.deadline = None
        thread.half_done = False
        if thread.waiter is not None:
            thread.waiter.fired.clear()
        if thread.state is ThreadState.EXITED:  # its process ended meanwhile
            return self._ended(cpu, thread)
        return Next.GO_ON

    def error_result(self, proc: Process, number: int, e: Exception) -> int:
        """The result (-errno) of syscall ``number`` of ``proc`` whose handler raised
        ``e``; logged and counted as the module docstring says. Call it in the
        ``except`` block (an internal error's traceback is taken from there)."""
        if isinstance(e, SyscallError):
            if e.errno is Errno.ENOMEM:
                # Out of frames or of a budget: say why, without a line per call.
                seen = self._count_seen("enomem")
                if seen & (seen - 1) == 0:
                    self.log(f"ENOMEM #{seen} to {proc.name} (pid {proc.pid}): {e.message}",
                             LogLevel.WARNING)
            return int(e.errno)
        if isinstance(e, MemoryError):
            # The host ran out before a budget refused: not a bug in the handler, and
            # not worth a traceback per call (they come in floods). The caller gets
            # ENOMEM; the first, second, fourth, eighth... are logged, all counted.
            seen = self._count_seen("host_memory_errors")
            if seen & (seen - 1) == 0:
                self.log(f"host memory exhausted (#{seen}) in syscall {number:#x} of "
                         f"{proc.name} (pid {proc.pid}): answered ENOMEM", LogLevel.WARNING)
            return int(Errno.ENOMEM)
        # A kernel bug: the caller gets UNKNOWN, the kernel goes on.
        self.count("internal_errors")
        self.log(f"internal error in syscall {number:#x} of {proc.name}: {e!r}",
                 LogLevel.ERROR)
        for line in traceback.format_exc().splitlines():
            self.log(line, LogLevel.ERROR)
        return int(Errno.UNKNOWN)

    def _count_seen(self, key: str) -> int:
        with self._counters_lock:
            self.counters[key] += 1
            return self.counters[key]

    # --- accounting -------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        frames = self.vm.frames
        with self.tasks_lock:
            live = [p for p in self.processes.values() if not p.ended]
            tasks = len(self.processes)
        return {
            "processes": len(live),
            "tasks": tasks,
            "handles": sum(len(p.handles) for p in live),
            "objects": sum(KernelObject.live.values()),
            "user_frames": frames.used[FrameOwner.USER],
            "page_table_frames": frames.used[FrameOwner.PAGE_TABLE],
            "file_frames": frames.used[FrameOwner.FILE],
            "log_file_frames": self._log_file_pages(),  #: of file_frames, the log file's
            "free_frames": frames.free_count,
            "quarantined_frames": frames.quarantined,
            "metadata_bytes": self.fs.metadata.in_use,
        }

    def _log_file_pages(self) -> int:
        try:
            node = self.fs.lookup(LOG_FILE_PATH)
        except SyscallError:
            return 0
        return node.page_count if isinstance(node, File) else 0


__all__ = ["Entry", "Kernel", "RunResult", "ThreadEnded", "WouldBlock", "describe_status"]
