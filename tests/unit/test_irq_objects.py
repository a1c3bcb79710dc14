"""IRQ objects and the vCPU side of delivery (vmm/irqobject.py, vmm/irq.py) without KVM:
an IRQ's signal lands in its APIC's IRR, a level IRQ is resampled at the guest's EOI
(SDM 11.8.4: TMR records the trigger mode; 11.8.5: EOI of a TMR vector), a signal for a
released VM answers ENOTFOUND, the timer thread fires an APIC timer, and ``attend``
injects only what the vCPU can take (11.8.4), asks for an interrupt window otherwise,
sleeps while halted with nothing deliverable, and starts a vCPU on SIPI (SDM 8.4.4.1)
in real mode at vector << 8."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from copra.abi.spec import Errno, Signal
from copra.hw.kvm import KVM_SYNC_X86_EVENTS, ExitReason, KvmRun
from copra.kernel.errors import SyscallError, WouldBlock
from copra.vmm.irq import ApicTimer, VcpuIrq, VcpuState
from copra.vmm.irqobject import IrqObject
from copra.vmm.x2apic import APIC_BASE_EXTD, ApicBus, Msr, X2Apic


class StubKvmVcpu:
    fd = -1

    def __init__(self) -> None:
        self.injected: list[int] = []

    def interrupt(self, vector: int) -> None:
        self.injected.append(vector)


@dataclass
class StubCpu:
    runner: int | None = None
    run_page: KvmRun = field(default_factory=KvmRun)
    vcpu: StubKvmVcpu = field(default_factory=StubKvmVcpu)


@dataclass
class StubThread:
    deadline: float | None = None
    resumed: bool = False


@dataclass
class StubCaller:
    """A RunCaller whose waits never find their signal raised (the thread would block)."""

    thread: StubThread = field(default_factory=StubThread)
    deadline: float | None = None

    def wait_for(self, thread: object, queue: object, mask: Signal) -> Signal:
        return Signal(0)


@dataclass
class StubGuest:
    available: bool = True


def setup(clock: object = None) -> tuple[ApicBus, X2Apic, VcpuIrq]:
    bus = ApicBus(clock or (lambda: 0))  # type: ignore[arg-type]
    apic = bus.create(0, bsp=True)
    assert apic.write_msr(Msr.APIC_BASE, apic.apic_base | APIC_BASE_EXTD) is None
    assert apic.write_msr(Msr.SVR, 0x1FF) is None
    irq = VcpuIrq(StubCpu(), apic, bus, ApicTimer(bus, "test"), started=True)  # type: ignore[arg-type]
    return bus, apic, irq


def test_irq_signal_edge_sets_irr_clears_tmr_and_wakes_the_vcpu() -> None:
    bus, apic, vcpu = setup()
    edge = IrqObject(StubGuest(), vcpu, 0x30, level=False)  # type: ignore[arg-type]
    edge.signal()
    assert apic.irr == 1 << 0x30 and apic.tmr == 0
    assert vcpu.wake.signals & Signal.READABLE  # a halted runner would wake
    edge.signal()  # still pending: merges (IRR holds one request per vector)
    assert apic.counters.coalesced == 1
    with bus.lock:
        assert apic.ack() == 0x30
        apic.eoi()
    assert not edge.queue.signals & Signal.READABLE  # edge: no resample


def test_irq_level_is_resampled_at_the_guests_eoi_and_unlistened_on_close() -> None:
    bus, apic, vcpu = setup()
    level = IrqObject(StubGuest(), vcpu, 0x31, level=True)  # type: ignore[arg-type]
    other = IrqObject(StubGuest(), vcpu, 0x32, level=True)  # type: ignore[arg-type]
    level.signal()
    assert apic.tmr == 1 << 0x31
    with bus.lock:
        assert apic.ack() == 0x31
    assert level.resamples == 0
    assert apic.write_msr(Msr.EOI, 0) is None  # the guest's EOI
    assert level.resamples == 1 and level.queue.signals & Signal.READABLE
    assert other.resamples == 0
    level.on_close()
    level.signal()
    with bus.lock:
        apic.ack()
    assert apic.write_msr(Msr.EOI, 0) is None
    assert level.resamples == 1  # closed: no longer hears the EOI


def test_irq_signal_after_the_vm_is_released_answers_enotfound() -> None:
    _bus, apic, vcpu = setup()
    guest = StubGuest()
    irq = IrqObject(guest, vcpu, 0x30, level=False)  # type: ignore[arg-type]
    guest.available = False
    with pytest.raises(SyscallError) as e:
        irq.signal()
    assert e.value.errno is Errno.ENOTFOUND
    assert apic.irr == 0


def test_vcpu_halt_and_wait_for_sipi_states() -> None:
    bus = ApicBus(lambda: 0)
    ap = bus.create(1)
    vcpu = VcpuIrq(StubCpu(), ap, bus, ApicTimer(bus, "t"), started=False)  # type: ignore[arg-type]
    assert vcpu.state is VcpuState.WAIT_SIPI and vcpu.attention


def test_apic_timer_thread_fires_a_one_shot_timer_and_stops() -> None:
    import time
    bus, apic, vcpu = setup(time.monotonic_ns)
    fired = threading.Event()
    vcpu.notify = lambda a: fired.set()  # type: ignore[method-assign]
    apic.notify = vcpu.notify
    with bus.lock:
        assert apic.write_msr(Msr.LVT_TIMER, 0x40) is None
        assert apic.write_msr(Msr.TIMER_DIVIDE, 0xB) is None
        assert apic.write_msr(Msr.TIMER_INITIAL, 1_000_000) is None  # 1 ms
    vcpu.msr_written(Msr.TIMER_INITIAL)
    assert fired.wait(10)
    assert apic.irr == 1 << 0x40
    vcpu.timer.stop()


def test_attend_injects_the_highest_vector_when_the_vcpu_can_take_it() -> None:
    _bus, apic, vcpu = setup()
    run = vcpu.cpu.run_page
    apic.raise_fixed(0x31)
    apic.raise_fixed(0x52)
    assert vcpu.attention
    run.ready_for_interrupt_injection, run.if_flag = 1, 1
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert vcpu.cpu.vcpu.injected == [0x52]  # the higher class first (11.8.4)
    assert apic.isr == 1 << 0x52 and apic.irr == 1 << 0x31
    # 0x31 is pending but below PPR (0x50): nothing deliverable, no window asked
    assert vcpu.attention and run.request_interrupt_window == 0


def synced_setup() -> tuple[X2Apic, VcpuIrq]:
    cpu = StubCpu()
    cpu.run_page.kvm_valid_regs = KVM_SYNC_X86_EVENTS
    bus = ApicBus(lambda: 0)  # type: ignore[arg-type]
    apic = bus.create(0, bsp=True)
    assert apic.write_msr(Msr.APIC_BASE, apic.apic_base | APIC_BASE_EXTD) is None
    assert apic.write_msr(Msr.SVR, 0x1FF) is None
    return apic, VcpuIrq(cpu, apic, bus, ApicTimer(bus, "test"), started=True)  # type: ignore[arg-type]


@pytest.mark.parametrize(("reason", "synced"), [
    (ExitReason.INTR, True), (ExitReason.HLT, True), (ExitReason.IRQ_WINDOW_OPEN, True),
    (ExitReason.IO, False), (ExitReason.MMIO, False), (ExitReason.X86_WRMSR, False),
    (ExitReason.X86_RDMSR, False), (ExitReason.INTERNAL_ERROR, True)])
def test_after_a_quiet_exit_the_interrupt_rides_the_synced_events_else_kvm_interrupt(
        reason: int, synced: bool) -> None:
    # api.rst 5 (KVM_SYNC_X86_EVENTS): events marked dirty are taken back at the next
    # KVM_RUN. After an exit KVM may still complete (a refused WRMSR queues #GP) the
    # vector must go through KVM_INTERRUPT, which injects only when the vCPU can take it.
    apic, vcpu = synced_setup()
    cpu = vcpu.cpu
    run = cpu.run_page
    events = run.s.events.raw
    events[14] = 1  # nmi.masked, as KVM published it: left alone
    events[20:24] = (0x0F, 0, 0, 0)  # flags KVM set (NMI pending, shadow, SMM valid...)
    run.exit_reason = reason
    run.ready_for_interrupt_injection, run.if_flag = 1, 1
    apic.raise_fixed(0x41)
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert vcpu.counters["injected"] == 1 and apic.isr == 1 << 0x41
    if synced:
        assert cpu.vcpu.injected == [] and vcpu.counters["synced"] == 1
        assert run.kvm_dirty_regs & KVM_SYNC_X86_EVENTS
        assert list(events[8:11]) == [1, 0x41, 0]  # interrupt.injected, .nr, .soft
        assert list(events[20:24]) == [0, 0, 0, 0]  # no NMI, shadow or SMM state rewritten
        assert events[14] == 1
    else:
        assert cpu.vcpu.injected == [0x41] and vcpu.counters["synced"] == 0
        assert not run.kvm_dirty_regs & KVM_SYNC_X86_EVENTS and events[8] == 0


@pytest.mark.parametrize("offset", [0, 3, 8, 12])  # exception injected/pending, irq, NMI
def test_an_event_kvm_still_has_in_flight_keeps_the_vector_on_kvm_interrupt(
        offset: int) -> None:
    # The exit's events show an exception, interrupt or NMI KVM must deliver first:
    # writing ours over them would lose it, so KVM_INTERRUPT queues ours behind it.
    apic, vcpu = synced_setup()
    run = vcpu.cpu.run_page
    run.exit_reason = ExitReason.INTERNAL_ERROR
    run.s.events.raw[offset] = 1
    apic.raise_fixed(0x50)
    vcpu.completed(b"\xcf", 0x202)  # an IRET the kernel completed: inject at once
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert vcpu.cpu.vcpu.injected == [0x50] and vcpu.counters["synced"] == 0


def test_an_iret_the_kernel_completed_ends_nmi_blocking_in_the_synced_events() -> None:
    # SDM 6.7.1: IRET ends NMI blocking; KVM did not run it, so its mask is cleared in
    # the events it published (no ioctl: the stub's fd would refuse one), next to the
    # vector that goes in right after the IRET.
    apic, vcpu = synced_setup()
    run = vcpu.cpu.run_page
    run.exit_reason = ExitReason.INTERNAL_ERROR
    events = run.s.events.raw
    events[14] = 1  # nmi.masked
    events[20:24] = (0x0F, 0, 0, 0)
    vcpu._nmi_blocked = True
    apic.raise_fixed(0x51)
    vcpu.completed(b"\x48\xcf", 0x202)  # IRETQ
    assert events[14] == 0 and list(events[20:24]) == [0, 0, 0, 0]
    assert run.kvm_dirty_regs & KVM_SYNC_X86_EVENTS
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert list(events[8:11]) == [1, 0x51, 0] and events[14] == 0
    assert vcpu.cpu.vcpu.injected == []


def test_without_synced_events_every_interrupt_goes_through_kvm_interrupt() -> None:
    _bus, apic, vcpu = setup()  # the stub's run page publishes no events
    run = vcpu.cpu.run_page
    run.exit_reason = ExitReason.INTR
    run.ready_for_interrupt_injection, run.if_flag = 1, 1
    apic.raise_fixed(0x40)
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert vcpu.cpu.vcpu.injected == [0x40] and not run.kvm_dirty_regs


def test_attend_asks_for_a_window_when_interrupts_are_blocked() -> None:
    _bus, apic, vcpu = setup()
    run = vcpu.cpu.run_page
    apic.raise_fixed(0x40)
    run.ready_for_interrupt_injection, run.if_flag = 0, 0
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert vcpu.cpu.vcpu.injected == [] and run.request_interrupt_window == 1
    assert apic.irr == 1 << 0x40 and vcpu.attention  # still IRR: acknowledged only at injection
    run.ready_for_interrupt_injection, run.if_flag = 1, 1  # the window exit
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert vcpu.cpu.vcpu.injected == [0x40] and run.request_interrupt_window == 0
    assert not vcpu.attention


def test_after_a_completed_iret_with_if_set_the_next_entry_injects_without_a_window() -> None:
    # The handler of a higher vector (a fast timer) returns: the kernel completed its
    # IRET (IF set again, no interrupt shadow: SDM 6.8.3). The exit KVM reported was
    # inside the handler (IF clear), yet the lower pending vector goes in at the next
    # entry, as on a processor, instead of waiting for a window the guest may close
    # with CLI before KVM opens it.
    _bus, apic, vcpu = setup()
    run = vcpu.cpu.run_page
    apic.raise_fixed(0x24)
    run.ready_for_interrupt_injection, run.if_flag = 0, 0
    vcpu.completed(b"\xcf", 0x202)  # IRET, RFLAGS.IF set
    assert vcpu.attention
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert vcpu.cpu.vcpu.injected == [0x24] and run.request_interrupt_window == 0
    # it holds for that one entry: the next blocked exit asks for a window again
    apic.raise_fixed(0x30)
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert vcpu.cpu.vcpu.injected == [0x24] and run.request_interrupt_window == 1


def test_a_handler_that_went_in_after_an_iret_chains_no_other_at_its_own_iret() -> None:
    # A source pending again whenever its handler returns (a periodic timer faster
    # than the handler runs) must not keep the guest's own code from running: the IRET
    # of a handler injected right after an IRET leaves the vCPU to its code.
    _bus, apic, vcpu = setup()
    run = vcpu.cpu.run_page
    run.ready_for_interrupt_injection, run.if_flag = 0, 0
    apic.raise_fixed(0x30)
    vcpu.completed(b"\xcf", 0x202)  # the first handler's IRET: 0x30 goes in at once
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert vcpu.cpu.vcpu.injected == [0x30]
    apic.write_msr(Msr.EOI, 0)
    apic.raise_fixed(0x30)  # pending again by the time that handler returns
    vcpu.completed(b"\xcf", 0x202)
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert vcpu.cpu.vcpu.injected == [0x30] and run.request_interrupt_window == 1
    run.ready_for_interrupt_injection, run.if_flag = 1, 1  # the guest's next HLT or window
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert vcpu.cpu.vcpu.injected == [0x30, 0x30]
    apic.write_msr(Msr.EOI, 0)
    apic.raise_fixed(0x30)
    run.ready_for_interrupt_injection, run.if_flag = 0, 0
    vcpu.completed(b"\xcf", 0x202)  # that handler went in normally: its IRET chains
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert vcpu.cpu.vcpu.injected == [0x30, 0x30, 0x30]


def test_a_completed_instruction_leaving_if_clear_changes_nothing() -> None:
    _bus, apic, vcpu = setup()
    run = vcpu.cpu.run_page
    apic.raise_fixed(0x24)
    run.ready_for_interrupt_injection, run.if_flag = 0, 0
    vcpu.completed(b"\xcf", 0x002)
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert vcpu.cpu.vcpu.injected == [] and run.request_interrupt_window == 1


def test_a_halted_vcpu_sleeps_until_the_timer_deadline_then_wakes_for_the_interrupt() -> None:
    now = [0]
    _bus, apic, vcpu = setup(lambda: now[0])
    run = vcpu.cpu.run_page
    run.s.regs.rflags = 0x202
    assert apic.write_msr(Msr.LVT_TIMER, 0x40) is None
    assert apic.write_msr(Msr.TIMER_DIVIDE, 0xB) is None
    assert apic.write_msr(Msr.TIMER_INITIAL, 5_000_000) is None  # 5 ms at 1 GHz
    assert vcpu.halt() and vcpu.state is VcpuState.HALTED
    caller = StubCaller(deadline=100.0)
    with pytest.raises(WouldBlock):
        vcpu.attend(caller)  # type: ignore[arg-type]
    assert caller.thread.deadline == pytest.approx(0.005)  # wakes for the timer, not at 100 s
    caller.thread.resumed = True
    vcpu.restore_deadline(caller)  # type: ignore[arg-type]
    assert caller.deadline == caller.thread.deadline == 100.0
    now[0] = 5_000_000  # the timer expired: the interrupt is deliverable
    run.ready_for_interrupt_injection, run.if_flag = 1, 1
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert vcpu.state is VcpuState.RUNNING and vcpu.cpu.vcpu.injected == [0x40]


def test_a_vcpu_waiting_for_sipi_sleeps_until_init_and_sipi_then_starts_in_real_mode() -> None:
    bus = ApicBus(lambda: 0)
    bsp = bus.create(0, bsp=True)
    assert bsp.write_msr(Msr.APIC_BASE, bsp.apic_base | APIC_BASE_EXTD) is None
    assert bsp.write_msr(Msr.SVR, 0x1FF) is None
    ap = bus.create(1)
    vcpu = VcpuIrq(StubCpu(), ap, bus, ApicTimer(bus, "t"), started=False)  # type: ignore[arg-type]
    with pytest.raises(WouldBlock):
        vcpu.attend(StubCaller())  # type: ignore[arg-type]
    assert bsp.write_msr(Msr.ICR, 1 << 32 | 0x4500) is None  # INIT, assert (11.6.1)
    assert bsp.write_msr(Msr.ICR, 1 << 32 | 0x4608) is None  # start-up, vector 8
    vcpu.attend(StubCaller())  # type: ignore[arg-type]
    sregs, regs = vcpu.cpu.run_page.s.sregs, vcpu.cpu.run_page.s.regs
    assert vcpu.state is VcpuState.RUNNING and vcpu.counters["sipis"] == 1
    assert (sregs.cs.selector, sregs.cs.base, regs.rip) == (0x0800, 0x8000, 0)
    assert sregs.cr0 & 1 == 0  # real mode
