"""Interrupt delivery to guest vCPUs: the x2APIC model (vmm/x2apic.py) wired to VCPU_RUN.

``VcpuIrq`` is one guest vCPU's side of the APIC contract of docs/apic.md ("The VMM's
loop"), run by the thread inside VCPU_RUN (vmm/vcpu.py calls it at a few hook points):

- **before an entry, while ``attention`` is set** (``attend``; the loop's only cost
  otherwise is reading that flag): the TPR from CR8 and back (one register, SDM
  11.8.6.1); a latched NMI goes in with KVM_NMI; the highest deliverable vector is
  acknowledged (IRR -> ISR) and injected with KVM_INTERRUPT when the last exit said the
  vCPU can take it (``ready_for_interrupt_injection`` and IF), otherwise
  ``request_interrupt_window`` asks KVM for an exit as soon as it can
  (KVM_EXIT_IRQ_WINDOW_OPEN). No in-kernel irqchip: docs/apic.md says why.
  ``attention`` is set by ``notify`` (something became pending), by a HLT the kernel
  keeps, and while a vCPU waits for SIPI or still has something to deliver.
- **TPR and CR8** are synced lazily: at ``attend``, after a WRMSR of TPR, before an
  RDMSR of TPR or PPR (only a 64-bit guest can MOV to CR8 without an exit).
- **HLT with IF set** (``halt``): the kernel keeps the exit; the vCPU is HALTED and its
  thread sleeps inside VCPU_RUN (blocked, holding no SVSM CPU) until something can
  wake it: a deliverable interrupt, an NMI, an INIT, or VCPU_RUN's own reasons to stop
  (its timeout, a closed handle, the process ending). HLT with IF clear still goes to
  user mode: nothing but an NMI could wake it, and the VMM decides what that means.
- **INIT and SIPI** (SDM 8.4, 11.6.1): vCPUs other than 0 start in wait-for-SIPI;
  an INIT puts any vCPU there (the APIC has reset itself); a start-up IPI received
  there starts it in real mode at CS = vector << 8, IP = 0. A vCPU waiting for SIPI
  sleeps inside VCPU_RUN like a halted one.

``ApicTimer`` is one guest's host timer: a host thread that sleeps until the bus's next
APIC timer deadline, fires what is due (``expire_timers``, which raises the LVT timer
interrupt) and so kicks the vCPU that became pending. A guest's timer cannot make that
thread spin: it wakes at most once per ``MIN_TIMER_INTERVAL_NS`` (a periodic timer
faster than that coalesces its expirations into one interrupt, counted by the model).

When something becomes pending on an APIC (the model's ``notify``, under the bus lock),
``VcpuIrq.notify`` raises READABLE on the vCPU's private ``wake`` queue (a sleeping
runner is woken) and kicks the vCPU out of KVM_RUN when another host thread runs it,
so an IPI, a timer or an IRQ object's signal is injected promptly, not at the guest's
next unrelated exit.

Invariants:
- ``attention`` is set whenever the vCPU is not RUNNING, IRR is not empty or an
  interrupt window is requested (set under the bus lock by ``notify`` and ``attend``):
  a VCPU_RUN loop that finds it clear has nothing to deliver;
- ``state`` is RUNNING, HALTED or WAIT_SIPI; only the runner changes it;
- a vector leaves IRR only through ``ack`` right before its KVM_INTERRUPT, so KVM
  holds at most one injected vector and the model's ISR mirrors what the guest runs;
- ``wake`` has READABLE raised whenever something became pending since the runner last
  cleared it: the runner clears it before it looks, so no wake-up is lost.

Locking: the bus lock (class "vmm.apic") around every call into the model; ``notify``
runs under it and takes the wake queue's lock and the vCPU's (a kick), both later in
the order. The timer's condition is a leaf of its own.
"""

from __future__ import annotations

import ctypes
import fcntl
import struct
import threading
import time
from enum import Enum
from typing import TYPE_CHECKING, Final

from copra.abi.spec import Signal
from copra.hw import kvm
from copra.kernel.errors import WouldBlock
from copra.kernel.waitqueue import WaitQueue
from copra.vmm.x2apic import NS_PER_S, ApicBus, Msr, TscMap, X2Apic

if TYPE_CHECKING:
    from copra.kernel.thread import Thread
    from copra.vmm.irqobject import IrqObject
    from copra.vmm.vcpu import GuestCpu, RunCaller

KVM_NMI: Final = (kvm.KVMIO << 8) | 0x9A  #: _IO(KVMIO, 0x9a), api.rst 4.38
#: struct kvm_vcpu_events (api.rst 4.31): 64 bytes; nmi.masked at 14, flags at 20.
KVM_VCPU_EVENTS_SIZE: Final = 64
KVM_GET_VCPU_EVENTS: Final = (2 << 30) | (64 << 16) | (kvm.KVMIO << 8) | 0x9F
KVM_SET_VCPU_EVENTS: Final = (1 << 30) | (64 << 16) | (kvm.KVMIO << 8) | 0xA0
_NMI_MASKED: Final = 14
_EVENTS_FLAGS: Final = 20
#: exception.injected and .pending, interrupt.injected, .nr and .soft, nmi.injected in
#: the same struct.
_EXC_INJECTED: Final = 0
_EXC_PENDING: Final = 3
_INT_INJECTED: Final = 8
_INT_NR: Final = 9
_INT_SOFT: Final = 10
_NMI_INJECTED: Final = 12
#: Exits after which KVM has nothing of its own left to finish at the next entry (no
#: port, MMIO or MSR access to complete, no exception it may queue doing so): an
#: interrupt goes in through the synced events there (``_deliver``). An emulation
#: failure is one: KVM ran nothing of the instruction, and the kernel completes it
#: (vmm/complete.py) or the guest stops.
_QUIET_EXITS: Final = frozenset({kvm.ExitReason.INTR, kvm.ExitReason.HLT,
                                 kvm.ExitReason.IRQ_WINDOW_OPEN,
                                 kvm.ExitReason.INTERNAL_ERROR})
RFLAGS_IF: Final = 1 << 9
#: The host timer wakes at most this often per guest (20,000 times a second): a
#: periodic APIC timer programmed faster coalesces its expirations (docs/apic.md).
MIN_TIMER_INTERVAL_NS: Final = 50_000
#: The MSRs whose writes can change when the APIC timer next fires.
TIMER_MSRS: Final = frozenset({Msr.TSC_DEADLINE, Msr.LVT_TIMER, Msr.TIMER_INITIAL,
                               Msr.TIMER_DIVIDE, Msr.SVR, Msr.APIC_BASE})


def _give_back(run: kvm.KvmRun) -> None:
    """Mark the events in ``run`` dirty, for KVM to take back at the next KVM_RUN; their
    flags cleared, so pending NMIs, the interrupt shadow and SMM stay as KVM has them."""
    run.s.events.raw[_EVENTS_FLAGS : _EVENTS_FLAGS + 4] = (0, 0, 0, 0)
    run.kvm_dirty_regs |= kvm.KVM_SYNC_X86_EVENTS


class VcpuState(Enum):
    RUNNING = "running"
    HALTED = "halted"  #: HLT with IF set: sleeps until an interrupt can be taken
    WAIT_SIPI = "wait-for-SIPI"  #: after INIT (and at power-up for vCPUs but 0)


class ApicTimer:
    """One guest's host timer thread (started by the first timer write that leaves a
    timer armed, stopped with the VM): whenever a timer is armed the thread exists."""

    def __init__(self, bus: ApicBus, name: str) -> None:
        self._bus = bus
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._dirty = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.fired = 0  #: wake-ups that found a timer due

    def changed(self, armed: bool = True) -> None:
        """A timer register was written (any thread): look at the deadline again.
        ``armed``: the writer's APIC has a timer armed now; without one and with no
        thread yet, nothing is due and no thread is started (a guest that only turns
        its x2APIC on costs no thread start, ~1 ms of CPU here)."""
        with self._cond:
            if self._stopped:
                return
            self._dirty = True
            if self._thread is None:
                if not armed:
                    return
                self._thread = threading.Thread(target=self._main, name=f"apic-timer-{self._name}",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _main(self) -> None:
        bus = self._bus
        last = 0
        while True:
            with self._cond:
                if self._stopped:
                    return
                self._dirty = False
            with bus.lock:
                if any([apic.expire_timers() for apic in bus]):
                    self.fired += 1
                    last = time.monotonic_ns()
                deadline = bus.next_deadline_ns()
            with self._cond:
                if self._stopped:
                    return
                if self._dirty:
                    continue
                if deadline is None:
                    self._cond.wait()
                    continue
                now = time.monotonic_ns()
                wake_at = max(deadline, last + MIN_TIMER_INTERVAL_NS)
                if wake_at > now:
                    self._cond.wait((wake_at - now) / 1e9)


class VcpuIrq:
    """The interrupt side of one guest vCPU (see the module docstring)."""

    def __init__(self, cpu: GuestCpu, apic: X2Apic, bus: ApicBus, timer: ApicTimer,
                 started: bool) -> None:
        self.cpu = cpu
        self.apic = apic
        self.bus = bus
        self.timer = timer
        self.state = VcpuState.RUNNING if started else VcpuState.WAIT_SIPI
        #: Something may need doing before the next entry (an interrupt pending, a
        #: window requested, halted, waiting for SIPI): the VCPU_RUN loop's one check.
        self.attention = not started
        self.wake = WaitQueue()
        self._nmi_blocked = False  #: an NMI was injected and no IRET has run since
        #: The kernel completed an instruction that left IF set: the next entry can
        #: inject although the last exit said otherwise (``completed``).
        self._ready = False
        #: The handler running now went in that way: its own IRET does not chain another.
        self._chained = False
        self._saved: tuple[Thread, float | None] | None = None
        #: KVM publishes the vCPU's events in its run page (GuestCpu asked for them).
        self._sync_events = bool(cpu.run_page.kvm_valid_regs & kvm.KVM_SYNC_X86_EVENTS)
        self.counters = {"injected": 0, "windows": 0, "nmis": 0, "halts": 0, "sleeps": 0,
                         "inits": 0, "sipis": 0, "synced": 0}
        #: Level-triggered IRQ objects by vector: they hear the guest's EOI (resample).
        self._level: dict[int, list[IrqObject]] = {}
        apic.notify = self.notify
        apic.eoi_listener = self._eoi

    # --- any thread (the bus lock held) --------------------------------------------------

    def notify(self, apic: X2Apic) -> None:
        self.attention = True
        self.wake.raise_signals(Signal.READABLE)
        cpu = self.cpu
        runner = cpu.runner
        if runner is not None and runner != threading.get_ident():
            run = getattr(cpu, "run_page", None)  # None once the VM is released
            if run is not None and not run.immediate_exit:  # kicks coalesce
                cpu.kick(signal_it=True)

    def listen(self, vector: int, irq: IrqObject) -> None:
        """A level IRQ object of this APIC (bus lock held)."""
        self._level.setdefault(vector, []).append(irq)

    def unlisten(self, vector: int, irq: IrqObject) -> None:
        irqs = self._level.get(vector, [])
        if irq in irqs:
            irqs.remove(irq)

    def _eoi(self, vector: int) -> None:
        for irq in self._level.get(vector, ()):
            irq.resampled()

    # --- the runner ----------------------------------------------------------------------

    def attend(self, caller: RunCaller) -> None:
        """Before an entry while ``attention`` is set: take INIT and SIPI, sleep (raise
        WouldBlock, the thread blocked until ``wake``) while the vCPU is halted or waits
        for SIPI and nothing can wake it, then inject what can be injected."""
        apic, run = self.apic, self.cpu.run_page
        while True:
            self.wake.clear_signals(Signal.READABLE)
            with self.bus.lock:
                self.attention = False
                if run.cr8 != apic.cr8:  # a 64-bit guest's MOV to CR8 (TPR, 11.8.6.1)
                    apic.cr8 = run.cr8
                if apic.take_init():
                    self.counters["inits"] += 1
                    self.state = VcpuState.WAIT_SIPI
                vector = apic.take_sipi()
                if self.state is VcpuState.WAIT_SIPI and vector is not None:
                    self._start(vector)
                elif self.state is VcpuState.HALTED and (
                        apic.nmi_pending or apic.highest_pending() is not None):
                    self.state = VcpuState.RUNNING
                if self.state is VcpuState.RUNNING:
                    self._inject(run)
                    return
                self.attention = True  # still asleep: look again when woken
                due = apic.next_deadline_ns()
            if not caller.wait_for(caller.thread, self.wake, Signal.READABLE):
                self.counters["sleeps"] += 1
                self._sleep_until(caller, due)
                raise WouldBlock

    def _sleep_until(self, caller: RunCaller, due: int | None) -> None:
        """The thread's wait ends at the APIC timer's deadline ``due`` too (or VCPU_RUN's
        own timeout, if earlier): the scheduler then sees a timed wait, not a thread that
        nothing can wake, and ``restore_deadline`` gives VCPU_RUN its own back."""
        if due is None:
            return
        wake_at = due / NS_PER_S
        thread = caller.thread
        self._saved = (thread, caller.deadline)
        if caller.deadline is None or wake_at < caller.deadline:
            thread.deadline = wake_at

    def restore_deadline(self, caller: RunCaller) -> None:
        """At VCPU_RUN's start: undo what ``_sleep_until`` did to the deadline."""
        saved, self._saved = self._saved, None
        if saved is not None and saved[0] is caller.thread and caller.thread.resumed:
            caller.deadline = caller.thread.deadline = saved[1]

    def _start(self, vector: int) -> None:
        """SIPI in wait-for-SIPI (SDM 8.4.4.1): real mode at CS = vector << 8, IP = 0."""
        self.counters["sipis"] += 1
        run = self.cpu.run_page
        sregs = run.s.sregs
        for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss, sregs.cs):
            seg.selector, seg.base, seg.limit = 0, 0, 0xFFFF
            seg.type, seg.present, seg.dpl, seg.db, seg.s, seg.l, seg.g = 3, 1, 0, 0, 1, 0, 0
            seg.unusable = 0
        sregs.cs.selector, sregs.cs.base, sregs.cs.type = vector << 8, vector << 12, 0xB
        sregs.cr0 = 0x6000_0010
        sregs.cr4 = 0
        sregs.efer = 0
        regs = run.s.regs
        ctypes.memset(ctypes.addressof(regs), 0, ctypes.sizeof(regs))
        regs.rflags = 2
        run.kvm_dirty_regs |= kvm.KVM_SYNC_X86_REGS | kvm.KVM_SYNC_X86_SREGS
        self.state = VcpuState.RUNNING

    def _inject(self, run: kvm.KvmRun) -> None:
        """With the bus lock held, the vCPU running: CR8 from the TPR, a latched NMI with
        KVM_NMI, and the highest deliverable vector acknowledged and injected when the
        last exit said the vCPU can take it, else an interrupt window requested.
        ``attention`` stays set while anything is left to deliver."""
        apic = self.apic
        run.cr8 = apic.cr8
        if apic.take_nmi():
            self.counters["nmis"] += 1
            fcntl.ioctl(self.cpu.vcpu.fd, KVM_NMI)
            self._nmi_blocked = True
        ready, self._ready = self._ready, False
        vector = apic.highest_pending()
        if vector is None:
            run.request_interrupt_window = 0
        elif ready or (run.ready_for_interrupt_injection and run.if_flag):
            apic.take(vector)  # ack: IRR -> ISR
            self._deliver(run, vector)
            self.counters["injected"] += 1
            self._chained = ready and not (run.ready_for_interrupt_injection and run.if_flag)
            run.request_interrupt_window = 0
        else:
            self.counters["windows"] += 1
            run.request_interrupt_window = 1
        if apic.irr or run.request_interrupt_window:
            self.attention = True

    def halt(self) -> bool:
        """A HLT exit: True when the kernel keeps it (IF set: the vCPU sleeps until an
        interrupt), False when user mode must see it (IF clear)."""
        if not self.cpu.run_page.s.regs.rflags & RFLAGS_IF:
            return False
        self.counters["halts"] += 1
        self.state = VcpuState.HALTED
        self.attention = True
        return True

    def completed(self, insn: bytes, rflags: int) -> None:
        """The kernel completed an instruction KVM's emulator could not run, leaving
        ``rflags``. With IF set the vCPU can take an interrupt before its next
        instruction (an IRET or far return leaves no interrupt shadow, SDM 6.8.3): the
        next entry injects what is pending then (``_ready``), as the processor does
        right after an IRET; the exit KVM reported (IF clear, inside the handler) no
        longer says so, and waiting for an interrupt window instead starves a lower
        vector when a higher one (a fast timer) is pending at every HLT. One handler
        chains at most one more this way (``_chained``): the IRET of a handler that went
        in right after an IRET leaves the vCPU to its interrupted code until the next
        window or HLT, so a source that is always pending again by the time its handler
        returns (a periodic timer faster than the emulated handler runs) cannot keep
        the guest's own code from running. An IRET also
        ends NMI blocking (SDM 6.7.1), which KVM cannot know when it did not run the
        IRET: its NMI mask is cleared here, or no later NMI would ever be delivered."""
        if rflags & RFLAGS_IF:
            with self.bus.lock:
                if self._chained:
                    self._chained = False
                else:
                    self._ready = True
                    self.attention = True
        if not self._nmi_blocked:
            return
        opcode = insn.lstrip(b"\x66\x67\x48")[:1]
        if opcode != b"\xcf":  # IRET, IRETD, IRETQ
            return
        self._nmi_blocked = False
        run = self.cpu.run_page
        if self._sync_events:  # the events KVM published at this exit, taken back dirty
            synced = run.s.events.raw
            if synced[_NMI_MASKED]:
                synced[_NMI_MASKED] = 0
                _give_back(run)
            return
        events = bytearray(KVM_VCPU_EVENTS_SIZE)
        fcntl.ioctl(self.cpu.vcpu.fd, KVM_GET_VCPU_EVENTS, events)
        if events[_NMI_MASKED]:
            events[_NMI_MASKED] = 0
            struct.pack_into("<I", events, _EVENTS_FLAGS, 0)  # leave pending NMIs alone
            fcntl.ioctl(self.cpu.vcpu.fd, KVM_SET_VCPU_EVENTS, bytes(events))

    def _deliver(self, run: kvm.KvmRun, vector: int) -> None:
        """Give ``vector`` to KVM for the next entry. After a quiet exit (``_QUIET_EXITS``)
        it goes into the events KVM published at that exit, marked dirty: KVM takes them
        back at the next KVM_RUN (KVM_SYNC_X86_EVENTS, api.rst 5) as an interrupt in
        flight and delivers it on entry, with no ioctl of its own (KVM_INTERRUPT costs
        ~10-20 us on PVM hosts). Nothing else of the events changes: KVM put them there
        at that exit and only this thread touches the vCPU until the next entry; their
        flags are cleared, so pending NMIs, the interrupt shadow and SMM are left as KVM
        has them. After any other exit KVM may still finish an instruction at the next
        entry and queue an exception doing so (a refused WRMSR's #GP); an interrupt
        already in flight would then be taken inside that exception's handler with IF
        clear, so KVM_INTERRUPT is used there: KVM injects it only when the vCPU can take
        it, and so it is when KVM still has an event in flight (an exception, an NMI or
        an interrupt it must deliver first, which the exit's events show). The exit
        reason is the run page's: a KVM_RUN that ``immediate_exit`` ended early leaves
        the previous one there, whose completion it has just run. An NMI's end of
        blocking at an IRET the kernel completed goes through the same events
        (``completed``), so the two never undo each other."""
        events = run.s.events.raw
        if self._sync_events and run.exit_reason in _QUIET_EXITS and not (
                events[_EXC_INJECTED] | events[_EXC_PENDING] | events[_INT_INJECTED]
                | events[_NMI_INJECTED]):  # nothing in flight KVM must deliver first
            events[_INT_INJECTED], events[_INT_NR], events[_INT_SOFT] = 1, vector, 0
            _give_back(run)
            self.counters["synced"] += 1
        else:
            self.cpu.vcpu.interrupt(vector)

    def msr_written(self, index: int) -> None:
        """After a WRMSR the APIC took (bus lock held)."""
        if index in TIMER_MSRS:
            self.timer.changed(self.apic.next_deadline_ns() is not None)
        elif index == Msr.TPR:
            self.cpu.run_page.cr8 = self.apic.cr8

    def sync_tpr(self) -> None:
        """Before an RDMSR of TPR or PPR (bus lock held): a 64-bit guest may have
        changed the TPR with MOV to CR8 since."""
        cr8 = self.cpu.run_page.cr8
        if cr8 != self.apic.cr8:
            self.apic.cr8 = cr8

    def released(self, vm_gone: bool) -> None:
        """The VCPU handle or the whole VM goes: wake a sleeping runner so that it
        leaves; with the VM, also the device models waiting for a resample (their READ
        then answers ENOTFOUND)."""
        self.wake.raise_signals(Signal.READABLE)
        if not vm_gone:
            return
        with self.bus.lock:
            irqs = [irq for irqs in self._level.values() for irq in irqs]
        for irq in irqs:
            irq.queue.raise_signals(Signal.READABLE)



KVM_GET_MSRS: Final = (3 << 30) | (8 << 16) | (kvm.KVMIO << 8) | 0x88  #: _IOWR, api.rst 4.18
KVM_GET_TSC_KHZ: Final = (kvm.KVMIO << 8) | 0xA3  #: _IO, api.rst 4.56
MSR_IA32_TSC: Final = 0x10


def guest_tsc(vcpu: kvm.Vcpu) -> TscMap:
    """How ``vcpu``'s TSC relates to the host's monotonic clock (for TSC-deadline mode):
    its frequency from KVM_GET_TSC_KHZ and its value now from KVM_GET_MSRS."""
    khz = fcntl.ioctl(vcpu.fd, KVM_GET_TSC_KHZ)
    buf = bytearray(24)
    struct.pack_into("<II", buf, 0, 1, 0)
    struct.pack_into("<IIQ", buf, 8, MSR_IA32_TSC, 0, 0)
    before = time.monotonic_ns()
    fcntl.ioctl(vcpu.fd, KVM_GET_MSRS, buf)
    after = time.monotonic_ns()
    tsc = struct.unpack_from("<Q", buf, 16)[0]
    hz = max(1, khz) * 1000
    return TscMap(hz=hz, offset=tsc - (before + after) // 2 * hz // NS_PER_S)
