"""A guest vCPU (``GuestCpu``) and the VCPU object a handle names (``Vcpu``).

``GuestCpu`` is one KVM vCPU of a guest VM, created at boot; ``run`` is VCPU_RUN. It
runs the vCPU on the **calling thread's host thread** (the SVSM CPU that dispatched the
syscall), as KVM_RUN runs a vCPU on its caller's thread: the kernel loops over exits
it owns (kernel-owned MSRs through the x2APIC model, an IRET KVM's emulator cannot run,
kicks) and returns 0 with the exit in the run page for every other one (vmm/runpage.py).
User mode answers in the page and calls again; the next call validates the answer,
completes the instruction in KVM's kvm_run and enters the guest again. (KVM vCPU fds
may be used from any host thread; copra uses the caller's so that a guest exit costs no
thread switch, and so that a VMM thread blocked in VCPU_RUN holds exactly one SVSM CPU.)

Kicks: while it runs a guest the SVSM CPU's ``nested`` is this GuestCpu, so every
kick of that CPU reaches it (``kick``: ``immediate_exit`` and KICK_SIGNAL to the runner's
host thread). After each kick the loop looks at why: the calling thread's process is
ending, the VM was released, the run is stopping or the timeout passed: VCPU_RUN
answers EINTR (the exit already completed stays completed); the time slice ended and
another thread waits for the CPU: the thread yields and VCPU_RUN goes on when it runs
again (the syscall is dispatched again and finds nothing pending), so a guest that
spins or floods kernel-owned exits never holds a CPU past its slice.

Invariants:
- at most one thread runs a GuestCpu (``runner``, the host thread id; a second
  VCPU_RUN answers EBUSY) and only that thread touches its kvm_run, its pending exit
  and the run page of the VCPU it came through;
- ``pending`` is the exit user mode has to answer, or None; it is completed exactly
  once (an answer refused as garbage leaves it pending);
- once ``dead`` (its VM released) the GuestCpu never enters KVM_RUN again; release
  waits for the runner to leave before the KVM vCPU is closed;
- ``opened``: a Vcpu object exists for it (VCPU_OPEN is exclusive);
- its queue's READABLE is raised exactly while an exit waits for user mode's answer
  (from the return of VCPU_RUN with 0 until the next call has taken the answer):
  WAIT_MANY on a VCPU handle (WAIT right) waits for that.

Locking: ``lock`` (class "vmm.vcpu", after "vm.gate": a CPU kick takes it under the
gate) guards ``runner``, ``dead``, ``opened`` and ``_awaited``; everything else belongs to
the runner.
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from copra.abi.spec import PAGE_SIZE, Errno, Signal, VcpuExit
from copra.hw import kvm
from copra.hw.kvm import ExitReason, KvmRegs
from copra.kernel import lockdep, wakeq
from copra.kernel.cpu import KICK_SIGNAL, Cpu, install_kick_handler
from copra.kernel.errors import SyscallError, WouldBlock
from copra.kernel.frames import FrameAllocator, FrameOwner
from copra.kernel.objects import MappableObject, ObjectKind
from copra.kernel.thread import Thread, ThreadState
from copra.kernel.waitqueue import WaitQueue
from copra.vmm import exits, runpage
from copra.vmm.complete import Refused, complete
from copra.vmm.device import DeviceAccess, DeviceRouter
from copra.vmm.irq import ApicTimer, VcpuIrq
from copra.vmm.msr import (
    MSR_APIC_BASE,
    MSR_TSC_DEADLINE,
    X2APIC_FIRST,
    X2APIC_LAST,
    MsrPolicy,
)
from copra.vmm.runpage import Pending
from copra.vmm.x2apic import ApicBus, Gp, Msr, X2Apic

if TYPE_CHECKING:
    from copra.kernel.scheduler import Scheduler

INSN_BYTES: Final = 15
_REGS_SIZE: Final = ctypes.sizeof(KvmRegs)
#: The kernel-owned MSRs outside the x2APIC range (msr.KERNEL_OWNED, inlined for speed).
_OTHER_KERNEL_OWNED: Final = frozenset({MSR_APIC_BASE, MSR_TSC_DEADLINE})
_TPR_PPR: Final = frozenset({int(Msr.TPR), int(Msr.PPR)})  #: reads that sync CR8 first
_WRMSR: Final = ExitReason.X86_WRMSR
_MSR_EXITS: Final = frozenset({ExitReason.X86_RDMSR, ExitReason.X86_WRMSR})
_INTR: Final = ExitReason.INTR


@dataclass
class _KvmIo:
    """A port access KVM reported, handed to user mode in pieces of at most a page's
    worth of data (``runpage.io_capacity``)."""

    port: int
    size: int
    is_write: bool
    count: int
    offset: int  #: where its data is in KVM's run area
    done: int = 0  #: items handed out and completed

    def piece(self) -> runpage.Io:
        n = min(self.count - self.done, runpage.io_capacity(self.size))
        return runpage.Io(self.port, self.size, self.is_write, n)


@dataclass
class RunCaller:
    """Who runs the guest: the SVSM thread, its CPU, the scheduler, the deadline."""

    thread: Thread
    cpu: Cpu
    sched: Scheduler
    deadline: float | None
    wait_for: Callable[[Thread, WaitQueue, Signal], Signal]
    stopping: bool = False  #: the kernel's run is ending


class GuestCpu:
    def __init__(self, index: int, vcpu: kvm.Vcpu, apic: X2Apic, bus: ApicBus,
                 memory: memoryview, started: bool, router: DeviceRouter,
                 timer: ApicTimer) -> None:
        self.index = index
        self.router = router
        self.vcpu = vcpu
        self.run_page = vcpu.run_page
        self._msr = self.run_page.exit.msr  # a view made once: the hot path allocates none
        self._area = vcpu.run_area
        self.apic = apic
        self._bus = bus
        self._memory = memory  #: the guest's RAM (guest-physical 0 = offset 0)
        self.started = started
        self.policy = MsrPolicy()  #: replaced whole by VM_SET_MSR_FILTER
        self.lock = lockdep.lock("vmm.vcpu")
        self._left = lockdep.condition(self.lock)
        #: Threads in ``_wait_runner_left`` (under ``lock``): the runner notifies
        #: ``_left`` on its way out only when one waits.
        self._awaited = 0
        self.runner: int | None = None
        self.dead = False
        self.opened = False
        self.closing = False  #: its Vcpu object is going: the runner must leave
        #: The runner's host thread when its handle was moved away mid-run: that
        #: runner leaves with EINTR (``evict``); cleared when it has left.
        self.evicted: int | None = None
        self.pending: Pending | None = None
        self._io: _KvmIo | None = None
        #: An access a device model's event serves, and the exit it came from; the
        #: runner waits for its answer (vmm/device.py).
        self._device: DeviceAccess | None = None
        self.shutdown = False
        #: READABLE while an exit waits for user mode's answer (WAIT_MANY on a VCPU).
        self.queue = WaitQueue()
        #: ``queue`` has READABLE raised (only ``_publish`` raises it; the runner's own
        #: note, so that a VCPU_RUN with nothing published skips the queue's lock).
        self._readable = False
        self.counters = {"exits": 0, "kernel_exits": 0, "user_exits": 0, "kicks": 0,
                         "yields": 0, "completed": 0, "device_exits": 0, "device_waits": 0}
        vcpu.enable_sync_regs(events=True)  # interrupts go in through them (vmm/irq.py)
        #: Interrupt delivery, HLT and INIT/SIPI (vmm/irq.py); vCPUs but 0 start in
        #: wait-for-SIPI.
        self.irq = VcpuIrq(self, apic, bus, timer, started)

    # --- other threads ---------------------------------------------------------------

    def kick(self, signal_it: bool) -> None:
        """Make the running (or next) KVM_RUN return at once (any thread; may be called
        under the VM gate's lock, or with ``signal_it`` False from a signal handler)."""
        run_page = getattr(self, "run_page", None)  # gone once released
        if run_page is None or self.dead:
            return
        run_page.immediate_exit = 1
        if signal_it:
            with self.lock:
                if self.runner is not None and self.runner != threading.get_ident():
                    self.counters["kicks"] += 1
                    signal.pthread_kill(self.runner, KICK_SIGNAL)

    def release(self) -> None:
        """The VM is released: kick the runner out and wait until it has left."""
        with self.lock:
            if self.dead:
                return
            self.dead = True
            self._wait_runner_left()
        self.irq.released(vm_gone=True)
        del self.run_page, self._area, self._msr

    def evict(self) -> None:
        """The VCPU's handle was moved to another table (a SEND) while a thread of the
        sender may run it: that runner leaves with EINTR, so the receiver can run the
        VCPU at once (its VCPU_RUN answers EBUSY only until then). No waiting here:
        the move happens inside the sender's syscall. A sender's thread asleep in a
        halted VCPU_RUN is woken: it finds its handle gone."""
        self.irq.released(vm_gone=False)
        with self.lock:
            if self.runner is None or self.dead:
                return
            self.evicted = self.runner
        self.kick(signal_it=True)

    def close_handle(self) -> None:
        """The Vcpu object goes: kick its runner out, wait until it has left."""
        with self.lock:
            self.closing = True
            if not self.dead:
                self._wait_runner_left()
            self.closing = False
            self.opened = False
        self.irq.released(vm_gone=False)

    def _wait_runner_left(self) -> None:
        """With ``lock`` held: kick the runner until it has left VCPU_RUN (it sees
        ``dead`` or ``closing`` at its next look and answers EINTR)."""
        signals = install_kick_handler()  # only where the no-op handler is installed
        wakeq.flush()  # a CPU's host thread may wait here (kernel/wakeq.py)
        self._awaited += 1
        try:
            while self.runner is not None:
                self.run_page.immediate_exit = 1
                if signals:
                    signal.pthread_kill(self.runner, KICK_SIGNAL)
                self._left.wait(0.05)
        finally:
            self._awaited -= 1

    # --- VCPU_RUN ------------------------------------------------------------------------

    def run(self, page: memoryview, caller: RunCaller) -> int:
        with self.lock:
            if self.dead:
                raise SyscallError(Errno.ENOTFOUND, "the VCPU's VM was released")
            if self.runner is not None:
                raise SyscallError(Errno.EBUSY, "another thread runs this VCPU")
            self.runner = threading.get_ident()
        self.irq.restore_deadline(caller)
        try:
            try:  # decode: nothing changes unless both are good
                answer = runpage.read_answer(page, self.pending)
                regs = runpage.read_dirty_regs(page)
            except runpage.AnswerError as e:
                raise SyscallError(Errno.EINVAL, str(e)) from e
            if self.pending is not None:
                self._complete(answer)
            if self._readable:
                self.queue.clear_signals(Signal.READABLE)
                self._readable = False
            if regs is not None:
                ctypes.memmove(ctypes.addressof(self.run_page.s.regs), regs, _REGS_SIZE)
                self.run_page.kvm_dirty_regs |= kvm.KVM_SYNC_X86_REGS
                runpage.clear_dirty(page)
            caller.cpu.nested = self
            try:
                return self._loop(page, caller)
            finally:
                caller.cpu.nested = None
        finally:
            with self.lock:
                self.runner = None
                self.evicted = None
                if self._awaited:
                    self._left.notify_all()

    def _complete(self, answer: runpage.Answer | None) -> None:
        """Finish the pending exit with user mode's answer (validated)."""
        ex = self.pending
        run = self.run_page
        io = self._io
        if isinstance(ex, runpage.Io) and io is not None:  # a pending Io has its _KvmIo
            if not ex.is_write and answer is not None:
                start = io.offset + io.done * io.size
                self._area[start:start + len(answer.data)] = answer.data
            io.done += ex.count
            if io.done >= io.count:
                self._io = None
        elif isinstance(ex, runpage.Mmio):
            if not ex.is_write and answer is not None:
                run.exit.mmio.data[:ex.length] = list(answer.value.to_bytes(ex.length, "little"))
        elif isinstance(ex, runpage.Msr) and answer is not None:
            run.exit.msr.error = 1 if answer.error else 0
            if not ex.is_write:
                run.exit.msr.data = answer.value
        elif isinstance(ex, runpage.Cpuid) and answer is not None:
            regs = run.s.regs
            regs.rax, regs.rbx, regs.rcx, regs.rdx = answer.cpuid
            regs.rip += 2
            run.kvm_dirty_regs |= kvm.KVM_SYNC_X86_REGS
        if not isinstance(ex, runpage.Plain) or ex.reason is not VcpuExit.SHUTDOWN:
            self.pending = None

    def _publish(self, page: memoryview, ex: Pending, device_gone: bool = False) -> int:
        out = b""
        if isinstance(ex, runpage.Io) and ex.is_write and self._io is not None:
            start = self._io.offset + self._io.done * ex.size
            out = bytes(self._area[start:start + ex.count * ex.size])
        self.pending = None if device_gone else ex
        runpage.write_exit(page, ex, out)
        if device_gone:
            runpage.set_reason(page, VcpuExit.DEVICE_GONE)
        runpage.write_regs(page, bytes(self.run_page.s.regs))
        self.counters["user_exits"] += 1
        self.queue.raise_signals(Signal.READABLE)
        self._readable = True
        return 0

    def _interrupted(self, caller: RunCaller) -> str | None:
        thread = caller.thread
        if thread.state is ThreadState.EXITED or thread.process.ending:
            return "the process is ending"
        if self.dead:
            return "the VM was released"
        if caller.stopping or caller.sched.stopped:
            return "the kernel is stopping"
        if self.closing:
            return "the VCPU handle was closed"
        if self.evicted is not None and self.evicted == threading.get_ident():
            return "the VCPU handle was moved away (SEND, EXEC_HANDLES)"
        if caller.deadline is not None and time.monotonic() >= caller.deadline:
            return "the timeout passed"
        return None

    def _device_answered(self, access: DeviceAccess, page: memoryview,
                         caller: RunCaller) -> int | None:
        """``access`` (``_device``), which a device model serves: answered, it is
        completed in kvm_run (None: go on; 0: DEVICE_GONE is reported first); else the
        thread waits for it."""
        if not access.done:
            # Still unanswered: a timeout, CLOSE, release or the process ending gets
            # the caller out (EINTR) with the access still pending; else wait for it.
            why = self._interrupted(caller)
            if why is not None:
                raise SyscallError(Errno.EINTR, why)
            if not caller.wait_for(caller.thread, access.queue, Signal.READABLE):
                self.counters["device_waits"] += 1
                raise WouldBlock
        self._device = None
        run = self.run_page
        if access.is_mmio:
            if not access.is_write:
                run.exit.mmio.data[:access.size] = list(access.data.to_bytes(access.size,
                                                                             "little"))
            gone: Pending = runpage.Mmio(access.address, access.size, access.is_write,
                                         access.data if access.is_write else 0)
        else:
            io = self._io
            if not access.is_write and io is not None:  # a port access has its _KvmIo
                self._area[io.offset:io.offset + access.size] = access.data.to_bytes(
                    access.size, "little")
            self._io = None
            gone = runpage.Io(access.address, access.size, access.is_write, 1)
        if access.abandoned:
            return self._publish(page, gone, device_gone=True)
        return None

    def _loop(self, page: memoryview, caller: RunCaller) -> int:
        if self._device is not None:
            answered = self._device_answered(self._device, page, caller)
            if answered is not None:
                return answered
        if self._io is not None:  # the next piece of a long string access
            return self._publish(page, self._io.piece())
        if self.shutdown:
            return self._publish(page, runpage.Plain(VcpuExit.SHUTDOWN))
        cpu, run, vcpu, counters = caller.cpu, self.run_page, self.vcpu, self.counters
        irq, msr, apic = self.irq, self._msr, self.apic
        # Bound once: ``with lock`` costs twice an explicit acquire and release here.
        lock, unlock = self._bus.lock.acquire, self._bus.lock.release
        read_msr = apic.read_msr
        exits = kernel_exits = 0  # added to ``counters`` when the loop ends, not per exit
        kicked = True  # look at the reasons once on entry, then after every kick
        try:
            while True:
                if kicked:
                    # Every reason to stop comes with a kick (immediate_exit, so KVM_RUN
                    # returns INTR): the deadline's with the timer's kick at each slice.
                    why = self._interrupted(caller)
                    if why is not None:
                        raise SyscallError(Errno.EINTR, why)
                    if cpu.preempt_requested:
                        cpu.preempt_requested = False
                        if caller.sched.others_waiting():
                            counters["yields"] += 1
                            caller.sched.wake(caller.thread)  # runnable again at once: a yield
                            raise WouldBlock
                if irq.attention:  # interrupts to inject, INIT/SIPI, halted (may block)
                    irq.attend(caller)
                wakeq.flush()  # wake-ups this CPU deferred, before the guest runs
                try:
                    reason = vcpu.run()
                except InterruptedError:
                    reason = _INTR
                except OSError as e:
                    return self._publish(page, runpage.Failure(VcpuExit.INTERNAL_ERROR,
                                                               e.errno or 0, b""))
                exits += 1
                if reason in _MSR_EXITS:
                    # The hot path: an MSR of the kernel's x2APIC, answered in place.
                    index = msr.index
                    if X2APIC_FIRST <= index <= X2APIC_LAST or index in _OTHER_KERNEL_OWNED:
                        lock()
                        try:
                            if reason == _WRMSR:
                                result: int | Gp | None = apic.write_msr(index, int(msr.data))
                                if result is None:
                                    irq.msr_written(index)
                            else:
                                if index in _TPR_PPR:
                                    irq.sync_tpr()
                                result = read_msr(index)
                        finally:
                            unlock()
                        if type(result) is Gp:
                            msr.error = 1
                        else:
                            msr.error = 0
                            if result is not None:  # None: a write done
                                msr.data = result
                        kernel_exits += 1
                        kicked = False
                        continue
                kicked = reason == _INTR
                if kicked:
                    run.immediate_exit = 0
                    continue
                ex = self._exit(reason)
                if ex is not None:
                    return self._publish(page, ex)
                if self._device is not None:  # a device model serves it
                    counters["device_exits"] += 1
                    answered = self._device_answered(self._device, page, caller)
                    if answered is not None:
                        return answered
                    continue
                kernel_exits += 1
        finally:
            counters["exits"] += exits
            counters["kernel_exits"] += kernel_exits

    def _exit(self, reason: int) -> Pending | None:
        """The exit for user mode, or None when the kernel handled it."""
        run = self.run_page
        if reason == ExitReason.X86_RDMSR or reason == ExitReason.X86_WRMSR:
            # Not the kernel's x2APIC (``_loop`` answers those itself).
            msr = self._msr
            index, write = msr.index, reason == ExitReason.X86_WRMSR
            if self.policy.claimed(index, write):
                return runpage.Msr(index, write, int(msr.data) if write else 0)
            msr.error = 1  # unclaimed and unknown to KVM: #GP
            return None
        if reason == ExitReason.IO:
            io = run.exit.io
            size = io.size if io.size in (1, 2, 4) else 1
            kio = self._io = _KvmIo(io.port, size, io.direction == kvm.KVM_EXIT_IO_OUT,
                                    max(1, io.count), io.data_offset)
            if kio.count == 1 and self.router.io:
                data = int.from_bytes(self._area[kio.offset:kio.offset + size], "little")
                self._device = self.router.route(False, self.index, kio.port, size,
                                                 kio.is_write, data if kio.is_write else 0)
                if self._device is not None:
                    return None
            return kio.piece()
        if reason == ExitReason.MMIO:
            mmio = run.exit.mmio
            length = min(max(int(mmio.len), 1), 8)
            data = int.from_bytes(bytes(mmio.data[:length]), "little") if mmio.is_write else 0
            address, is_write = int(mmio.phys_addr), bool(mmio.is_write)
            if self.router.mmio:
                self._device = self.router.route(True, self.index, address, length, is_write,
                                                 data)
                if self._device is not None:
                    return None
            return runpage.Mmio(address, length, is_write, data)
        if reason == ExitReason.HLT:
            return None if self.irq.halt() else runpage.Plain(VcpuExit.HLT)
        if reason == ExitReason.IRQ_WINDOW_OPEN:
            return None
        if reason == ExitReason.SHUTDOWN:
            self.shutdown = True
            return runpage.Plain(VcpuExit.SHUTDOWN)
        if reason == ExitReason.INTERNAL_ERROR:
            internal = run.exit.internal
            ndata = min(int(internal.ndata), 16)
            return self._internal_error(exits.InternalError(
                internal.suberror, tuple(internal.data[i] for i in range(ndata))))
        if reason == ExitReason.FAIL_ENTRY:
            return runpage.Failure(VcpuExit.INTERNAL_ERROR, int(run.exit.hw_reason), b"")
        return runpage.Failure(VcpuExit.INTERNAL_ERROR, reason, b"")

    def _internal_error(self, ex: exits.InternalError) -> Pending | None:
        if ex.suberror != kvm.KVM_INTERNAL_ERROR_EMULATION:
            return runpage.Failure(VcpuExit.INTERNAL_ERROR, ex.suberror, b"")
        regs = self.vcpu.get_regs()
        sregs = self.vcpu.get_sregs()
        insn = exits.emulation_insn_bytes(ex) or self._read_linear(sregs.cs.base + regs.rip,
                                                                   sregs)
        try:
            complete(insn, regs, sregs, self._read_physical)
        except Refused:
            return runpage.Failure(VcpuExit.EMULATION_FAILURE, ex.suberror, insn)
        self.vcpu.set_regs(regs)
        self.vcpu.set_sregs(sregs)
        self.counters["completed"] += 1
        self.irq.completed(insn, regs.rflags)
        return None

    def _read_physical(self, address: int, size: int) -> bytes | None:
        if address < 0 or address + size > len(self._memory):
            return None
        return bytes(self._memory[address:address + size])

    def _read_linear(self, address: int, sregs: kvm.KvmSregs) -> bytes:
        if sregs.cr0 & (1 << 31):
            return b""
        address &= 0xFFFF_FFFF
        return self._read_physical(address, max(0, min(INSN_BYTES,
                                                       len(self._memory) - address))) or b""


class Vcpu(MappableObject):
    """A handle's view of a GuestCpu: VCPU_RUN runs it, MMAP maps its run page.

    The run page is a frame of the SVSM's memory (FrameOwner.KERNEL), allocated at
    VCPU_OPEN; each mapping holds a reference on it, so a page still mapped when the
    handle goes lives until it is unmapped. Exclusive: one handle at a time."""

    kind = ObjectKind.VCPU
    exclusive = True

    def __init__(self, cpu: GuestCpu, frames: FrameAllocator) -> None:
        super().__init__()
        self.cpu = cpu
        self._frames = frames
        regs = bytes(cpu.vcpu.get_regs())  # first: an OSError here leaves nothing behind
        self.page_pa = frames.alloc(FrameOwner.KERNEL)
        memory = frames.memory
        offset = self.page_pa - memory.base
        self.page = memory.view[offset:offset + PAGE_SIZE]
        runpage.init_page(self.page)
        runpage.write_regs(self.page, regs)

    def wait_queue(self) -> WaitQueue:
        return self.cpu.queue

    def map_pages(self, first: int, pages: int, writable: bool) -> list[int]:
        if first != 0 or pages != 1:
            raise SyscallError(Errno.EINVAL, "a VCPU maps exactly one page, at offset 0")
        self._frames.share(self.page_pa)
        return [self.page_pa]

    def on_moved(self) -> None:
        self.cpu.evict()

    def on_close(self) -> None:
        self.cpu.close_handle()
        self.page.release()
        self._frames.free(self.page_pa)
