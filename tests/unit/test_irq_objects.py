"""IRQ objects and the vCPU side of delivery (vmm/irqobject.py, vmm/irq.py) without KVM:
an IRQ's signal lands in its APIC's IRR, a level IRQ is resampled at the guest's EOI
(SDM 11.8.4: TMR records the trigger mode; 11.8.5: EOI of a TMR vector), a signal for a
released VM answers ENOTFOUND, and the timer thread fires an APIC timer on time."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from copra.abi.spec import Errno, Signal
from copra.kernel.errors import SyscallError
from copra.vmm.irq import ApicTimer, VcpuIrq, VcpuState
from copra.vmm.irqobject import IrqObject
from copra.vmm.x2apic import APIC_BASE_EXTD, ApicBus, Msr, X2Apic


@dataclass
class StubCpu:
    runner: int | None = None


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
