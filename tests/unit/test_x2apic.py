"""The x2APIC model against the Intel SDM, vol. 3A, chapter "Advanced Programmable
Interrupt Controller (APIC)" (chapter 11 in current editions, 10 in older ones; the
section numbers in each docstring are those of the current edition).
"""

from __future__ import annotations

import pytest

from copra.vmm.x2apic import (
    APIC_BASE_BSP,
    APIC_BASE_EN,
    APIC_BASE_EXTD,
    BROADCAST,
    ApicBus,
    DeliveryMode,
    Esr,
    Gp,
    Lvt,
    Msr,
    Shorthand,
    TscMap,
    X2Apic,
    divisor,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def x2apic_on(apic: X2Apic) -> X2Apic:
    assert apic.write_msr(Msr.APIC_BASE, apic.apic_base | APIC_BASE_EXTD) is None
    assert apic.write_msr(Msr.SVR, 0x1FF) is None
    return apic


def guest(ids: tuple[int, ...] = (0, 1), **kw: object) -> tuple[Clock, ApicBus, list[X2Apic]]:
    clock = Clock()
    bus = ApicBus(clock, **kw)  # type: ignore[arg-type]
    return clock, bus, [x2apic_on(bus.create(i, bsp=i == 0)) for i in ids]


def icr(vector: int, *, dest: int = 0, mode: DeliveryMode = DeliveryMode.FIXED,
        logical: bool = False, shorthand: Shorthand = Shorthand.NONE, level: bool = False,
        assert_: bool = True) -> int:
    return (dest << 32 | shorthand << 18 | int(level) << 15 | int(assert_) << 14
            | int(logical) << 11 | mode << 8 | vector)


def bit(vector: int) -> int:
    return 1 << vector


# -- IA32_APIC_BASE and the mode state machine (11.4.4, 11.12.2, 11.12.5) -------------


def test_reset_apic_base_is_enabled_xapic_at_fee00000_with_bsp_flag_on_bsp() -> None:
    """11.4.4 / 11.12.5.1: after reset the APIC is enabled in xAPIC mode at FEE00000H."""
    bus = ApicBus(Clock())
    assert bus.create(0, bsp=True).apic_base == 0xFEE0_0000 | APIC_BASE_EN | APIC_BASE_BSP
    assert bus.create(1).apic_base == 0xFEE0_0000 | APIC_BASE_EN


def test_x2apic_register_in_xapic_mode_answers_gp() -> None:
    """11.12.2: RDMSR/WRMSR of 800H-8FFH outside x2APIC mode raise #GP."""
    apic = ApicBus(Clock()).create(0)
    assert apic.read_msr(Msr.ID) is Gp.NOT_X2APIC
    assert apic.write_msr(Msr.TPR, 0) is Gp.NOT_X2APIC


def test_apic_base_xapic_to_x2apic_succeeds() -> None:
    """11.12.5.1: from xAPIC mode, setting EXTD enters x2APIC mode."""
    apic = ApicBus(Clock()).create(3)
    assert apic.write_msr(Msr.APIC_BASE, apic.apic_base | APIC_BASE_EXTD) is None
    assert apic.x2apic_mode and apic.read_msr(Msr.ID) == 3


def test_apic_base_x2apic_to_xapic_answers_gp() -> None:
    """11.12.5.1: x2APIC -> xAPIC is not a valid transition."""
    _, _, (apic, _) = guest()
    assert apic.write_msr(Msr.APIC_BASE, apic.apic_base & ~APIC_BASE_EXTD) \
        is Gp.ILLEGAL_TRANSITION
    assert apic.x2apic_mode


def test_apic_base_invalid_state_en0_extd1_answers_gp() -> None:
    """11.12.5.1: EN=0 with EXTD=1 is the invalid state; a WRMSR into it raises #GP."""
    apic = ApicBus(Clock()).create(0)
    assert apic.write_msr(Msr.APIC_BASE, 0xFEE0_0000 | APIC_BASE_EXTD) is Gp.ILLEGAL_TRANSITION


def test_apic_base_disabled_to_x2apic_answers_gp_but_to_xapic_succeeds() -> None:
    """11.12.5.1: from the disabled state the only valid transition is to xAPIC mode."""
    apic = ApicBus(Clock()).create(0)
    assert apic.write_msr(Msr.APIC_BASE, 0xFEE0_0000) is None
    assert not apic.hw_enabled
    assert apic.write_msr(Msr.APIC_BASE, 0xFEE0_0000 | APIC_BASE_EN | APIC_BASE_EXTD) \
        is Gp.ILLEGAL_TRANSITION
    assert apic.write_msr(Msr.APIC_BASE, 0xFEE0_0000 | APIC_BASE_EN) is None


def test_apic_base_x2apic_to_disabled_succeeds() -> None:
    """11.12.5.1: from x2APIC mode, clearing EN and EXTD together disables the APIC."""
    _, _, (apic, _) = guest()
    assert apic.write_msr(Msr.APIC_BASE, 0xFEE0_0000) is None
    assert not apic.hw_enabled


@pytest.mark.parametrize("value", [APIC_BASE_EN | 1, APIC_BASE_EN | 1 << 9,
                                   APIC_BASE_EN | 1 << 46, APIC_BASE_EN | 1 << 63])
def test_apic_base_reserved_bits_answer_gp(value: int) -> None:
    """11.4.4: bits 7:0, 9 and those above the physical-address width are reserved."""
    apic = ApicBus(Clock(), phys_addr_bits=46).create(0)
    before = apic.apic_base
    assert apic.write_msr(Msr.APIC_BASE, 0xFEE0_0000 | value) is Gp.RESERVED_BITS
    assert apic.apic_base == before


def test_disabled_apic_refuses_interrupts_and_resets_registers() -> None:
    """11.4.3: a globally disabled APIC takes no interrupts; its registers restart at
    the power-up values of 11.4.7.1 (the SDM leaves them undefined)."""
    _, _, (apic, _) = guest()
    apic.write_msr(Msr.TPR, 0x20)
    apic.write_msr(Msr.APIC_BASE, 0xFEE0_0000)
    assert apic.raise_fixed(0x40) is False
    apic.write_msr(Msr.APIC_BASE, 0xFEE0_0000 | APIC_BASE_EN)
    apic.write_msr(Msr.APIC_BASE, 0xFEE0_0000 | APIC_BASE_EN | APIC_BASE_EXTD)
    assert apic.read_msr(Msr.TPR) == 0
    assert apic.read_msr(Msr.SVR) == 0xFF


def test_msr_outside_the_apic_answers_not_apic_msr() -> None:
    _, _, (apic, _) = guest()
    assert not X2Apic.handles(0x10)
    assert X2Apic.handles(Msr.APIC_BASE) and X2Apic.handles(0x8FF)
    assert apic.read_msr(0x10) is Gp.NOT_APIC_MSR
    assert apic.write_msr(0x900, 0) is Gp.NOT_APIC_MSR


def test_write_of_value_wider_than_64_bits_is_a_caller_error() -> None:
    _, _, (apic, _) = guest()
    with pytest.raises(ValueError):
        apic.write_msr(Msr.TPR, 1 << 64)


# -- the x2APIC register table (11.12.1.2, 11.12.1.3) ----------------------------------


def test_id_register_reads_the_32_bit_x2apic_id() -> None:
    """11.12.1.3: the x2APIC ID is 32 bits wide, read at 802H."""
    _, _, (apic,) = guest((0x1234_5678,))
    assert apic.read_msr(Msr.ID) == 0x1234_5678


def test_version_register_reads_0x14_with_six_lvt_entries_and_no_directed_eoi() -> None:
    """11.4.8: version in bits 7:0, max LVT entry in 23:16, EOI suppression in bit 24."""
    _, _, (apic, _) = guest()
    assert apic.read_msr(Msr.VERSION) == 0x0005_0014


@pytest.mark.parametrize(("apic_id", "ldr"), [(0, 0x1), (1, 0x2), (15, 0x8000),
                                              (16, 0x1_0001), (0x25, 0x2_0020)])
def test_ldr_is_derived_from_the_id(apic_id: int, ldr: int) -> None:
    """11.12.10.2: cluster = id[31:4] in LDR[31:16], 1 << id[3:0] in LDR[15:0]."""
    _, _, (apic,) = guest((apic_id,))
    assert apic.read_msr(Msr.LDR) == ldr


@pytest.mark.parametrize("index", [Msr.ID, Msr.VERSION, Msr.PPR, Msr.LDR, Msr.TIMER_CURRENT,
                                   Msr.ISR0, Msr.TMR0 + 3, Msr.IRR0 + 7])
def test_write_to_read_only_register_answers_gp(index: int) -> None:
    """11.12.1.2, table of x2APIC registers: WRMSR of a read-only register raises #GP."""
    _, _, (apic, _) = guest()
    before = apic.read_msr(index)
    assert apic.write_msr(index, 0) is Gp.READ_ONLY
    assert apic.read_msr(index) == before


@pytest.mark.parametrize("index", [Msr.EOI, Msr.SELF_IPI])
def test_read_of_write_only_register_answers_gp(index: int) -> None:
    """11.12.1.2: RDMSR of a write-only register (EOI, SELF IPI) raises #GP."""
    _, _, (apic, _) = guest()
    assert apic.read_msr(index) is Gp.WRITE_ONLY


@pytest.mark.parametrize("index", [0x800, 0x801, 0x804, 0x807, 0x809, 0x80C, 0x80E, 0x829,
                                   0x82F, 0x831, 0x83A, 0x83D, 0x840, 0x8FF])
def test_reserved_register_answers_gp_on_read_and_write(index: int) -> None:
    """11.12.1.2: addresses without a register, DFR (80EH), the xAPIC ICR high half (831H)
    and LVT CMCI (82FH, not announced by the version register) raise #GP."""
    _, _, (apic, _) = guest()
    assert apic.read_msr(index) is Gp.RESERVED_REGISTER
    assert apic.write_msr(index, 0) is Gp.RESERVED_REGISTER


def test_write_to_high_half_of_a_32_bit_register_answers_gp() -> None:
    """11.12.1.3: bits 63:32 of every register but the ICR are reserved."""
    _, _, (apic, _) = guest()
    assert apic.write_msr(Msr.TIMER_INITIAL, 1 << 32) is Gp.RESERVED_BITS
    assert apic.read_msr(Msr.TIMER_INITIAL) == 0


def test_tpr_reserved_bits_answer_gp_and_keep_the_value() -> None:
    """11.12.1.2: TPR bits 31:8 are reserved."""
    _, _, (apic, _) = guest()
    apic.write_msr(Msr.TPR, 0x30)
    assert apic.write_msr(Msr.TPR, 0x130) is Gp.RESERVED_BITS
    assert apic.read_msr(Msr.TPR) == 0x30


# -- priorities and delivery (11.8.3 - 11.8.6) ----------------------------------------


def test_ppr_is_tpr_when_tpr_class_is_at_least_the_in_service_class() -> None:
    """11.8.3.1: TPR[7:4] >= ISRV[7:4] gives PPR = TPR."""
    _, _, (apic, _) = guest()
    apic.raise_fixed(0x41)
    assert apic.ack() == 0x41
    apic.write_msr(Msr.TPR, 0x47)
    assert apic.read_msr(Msr.PPR) == 0x47


def test_ppr_is_the_in_service_class_when_above_tpr() -> None:
    """11.8.3.1: otherwise PPR[7:4] = ISRV[7:4] and PPR[3:0] = 0."""
    _, _, (apic, _) = guest()
    apic.write_msr(Msr.TPR, 0x25)
    apic.raise_fixed(0x6A)
    apic.ack()
    assert apic.read_msr(Msr.PPR) == 0x60


def test_pending_vector_in_a_class_not_above_ppr_is_held() -> None:
    """11.8.4: an IRR vector is dispatched only if its class is above PPR[7:4]."""
    _, _, (apic, _) = guest()
    apic.write_msr(Msr.TPR, 0x50)
    apic.raise_fixed(0x5F)
    assert apic.highest_pending() is None
    assert apic.ack() is None
    assert apic.read_msr(Msr.IRR0 + 2) == bit(0x5F - 64)
    apic.write_msr(Msr.TPR, 0x40)
    assert apic.highest_pending() == 0x5F


def test_highest_vector_is_delivered_first() -> None:
    """11.8.4: the highest-priority vector in IRR goes first."""
    _, _, (apic, _) = guest()
    for vector in (0x31, 0x90, 0x45):
        apic.raise_fixed(vector)
    assert [apic.ack(), apic.ack(), apic.ack()] == [0x90, None, None]


def test_ack_moves_the_vector_from_irr_to_isr() -> None:
    """11.8.4: on acceptance by the processor the IRR bit clears and the ISR bit sets."""
    _, _, (apic, _) = guest()
    apic.raise_fixed(0x33)
    assert apic.ack() == 0x33
    assert apic.read_msr(Msr.IRR0 + 1) == 0
    assert apic.read_msr(Msr.ISR0 + 1) == bit(0x33 - 32)


def test_nested_interrupt_needs_a_higher_class_than_the_one_in_service() -> None:
    """11.8.3.1 / 11.8.4: an in-service vector raises PPR, blocking its own class."""
    _, _, (apic, _) = guest()
    apic.raise_fixed(0x52)
    apic.ack()
    apic.raise_fixed(0x5E)
    assert apic.highest_pending() is None
    apic.raise_fixed(0x61)
    assert apic.ack() == 0x61
    assert apic.isr == bit(0x52) | bit(0x61)


def test_cr8_is_the_tpr_priority_class() -> None:
    """11.8.6.1: CR8[3:0] is TPR[7:4]; writing CR8 clears TPR[3:0]."""
    _, _, (apic, _) = guest()
    apic.write_msr(Msr.TPR, 0x9C)
    assert apic.cr8 == 0x9
    apic.cr8 = 0x3
    assert apic.read_msr(Msr.TPR) == 0x30


def test_repeated_fixed_interrupt_coalesces_in_irr() -> None:
    """11.8.4: IRR holds one bit per vector; a second request before acceptance merges."""
    _, _, (apic, _) = guest()
    assert apic.raise_fixed(0x40) and apic.raise_fixed(0x40)
    assert apic.counters.coalesced == 1
    assert apic.ack() == 0x40 and apic.ack() is None


def test_level_triggered_interrupt_sets_tmr_and_edge_clears_it() -> None:
    """11.8.4: on acceptance into IRR, TMR is set for level and cleared for edge."""
    _, _, (apic, _) = guest()
    apic.raise_fixed(0x70, level=True)
    assert apic.read_msr(Msr.TMR0 + 3) == bit(0x70 - 96)
    apic.ack()
    apic.eoi()
    apic.raise_fixed(0x70)
    assert apic.read_msr(Msr.TMR0 + 3) == 0


# -- EOI (11.8.5) ---------------------------------------------------------------------


def test_eoi_clears_the_highest_isr_bit() -> None:
    """11.8.5: an EOI write clears the highest-priority ISR bit."""
    _, _, (apic, _) = guest()
    apic.raise_fixed(0x30)
    apic.ack()
    apic.raise_fixed(0x80)
    apic.ack()
    assert apic.write_msr(Msr.EOI, 0) is None
    assert apic.isr == bit(0x30)


def test_eoi_of_a_level_triggered_vector_calls_the_eoi_listener() -> None:
    """11.8.5: EOI of a vector whose TMR bit is set is broadcast (here: the listener)."""
    heard: list[int] = []
    bus = ApicBus(Clock())
    apic = x2apic_on(bus.create(0, eoi_listener=heard.append))
    apic.raise_fixed(0x44, level=True)
    apic.ack()
    apic.write_msr(Msr.EOI, 0)
    assert heard == [0x44]


def test_eoi_of_an_edge_vector_does_not_call_the_listener() -> None:
    """11.8.5: only level-triggered vectors (TMR set) send an EOI message."""
    heard: list[int] = []
    apic = x2apic_on(ApicBus(Clock()).create(0, eoi_listener=heard.append))
    apic.raise_fixed(0x44)
    apic.ack()
    apic.eoi()
    assert heard == []


def test_eoi_write_of_nonzero_answers_gp() -> None:
    """11.12.1.2: WRMSR of a non-zero value to the EOI register raises #GP."""
    _, _, (apic, _) = guest()
    apic.raise_fixed(0x44)
    apic.ack()
    assert apic.write_msr(Msr.EOI, 1) is Gp.RESERVED_BITS
    assert apic.isr == bit(0x44)


def test_eoi_with_nothing_in_service_changes_nothing() -> None:
    _, _, (apic, _) = guest()
    apic.raise_fixed(0x44)
    apic.eoi()
    assert apic.irr == bit(0x44) and apic.isr == 0


# -- spurious-interrupt vector register and software enable (11.4.7, 11.9) -------------


def test_reset_svr_is_0xff_and_software_disabled() -> None:
    """11.4.7.1: SVR = 000000FFH after reset: the APIC is software-disabled."""
    apic = ApicBus(Clock()).create(0)
    apic.write_msr(Msr.APIC_BASE, apic.apic_base | APIC_BASE_EXTD)
    assert apic.read_msr(Msr.SVR) == 0xFF and not apic.sw_enabled


def test_software_disabled_apic_drops_fixed_interrupts() -> None:
    """11.4.7.2: a software-disabled APIC does not take fixed interrupts (KVM agrees)."""
    _, _, (apic, _) = guest()
    apic.write_msr(Msr.SVR, 0xFF)
    assert apic.raise_fixed(0x40) is False
    assert apic.counters.dropped_sw_disabled == 1


def test_software_disable_masks_every_lvt_entry_and_keeps_it_masked() -> None:
    """11.4.7.2: the mask bits are set and cannot be cleared while software-disabled."""
    _, _, (apic, _) = guest()
    apic.write_msr(Msr.LVT_LINT0, 0x40)
    apic.write_msr(Msr.SVR, 0xFF)
    assert apic.read_msr(Msr.LVT_LINT0) == 0x1_0040
    apic.write_msr(Msr.LVT_TIMER, 0x41)
    assert apic.read_msr(Msr.LVT_TIMER) == 0x1_0041


def test_software_disabled_apic_still_takes_nmi_init_and_sipi() -> None:
    """11.4.7.2: the local APIC responds normally to INIT, NMI and SIPI messages."""
    _, _, (a, b) = guest()
    b.write_msr(Msr.SVR, 0xFF)
    a.write_msr(Msr.ICR, icr(0, dest=1, mode=DeliveryMode.NMI))
    a.write_msr(Msr.ICR, icr(0x9A, dest=1, mode=DeliveryMode.STARTUP))
    assert b.take_nmi() and b.take_sipi() == 0x9A


def test_svr_reserved_bits_answer_gp() -> None:
    """11.9 with 11.4.8: bit 12 (EOI-broadcast suppression) is reserved when the version
    register does not announce it; bits 31:13 and 11:10 are reserved."""
    _, _, (apic, _) = guest()
    assert apic.write_msr(Msr.SVR, 0x11FF) is Gp.RESERVED_BITS
    assert apic.write_msr(Msr.SVR, 0x5FF) is Gp.RESERVED_BITS
    assert apic.read_msr(Msr.SVR) == 0x1FF


# -- error status register (11.5.2, 11.5.3) --------------------------------------------


def test_esr_shows_errors_only_after_a_write() -> None:
    """11.5.3: errors collect unseen; a write moves them into the readable ESR and
    starts collecting afresh."""
    _, _, (apic, _) = guest()
    apic.write_msr(Msr.SELF_IPI, 3)
    assert apic.read_msr(Msr.ESR) == 0
    apic.write_msr(Msr.ESR, 0)
    assert apic.read_msr(Msr.ESR) == Esr.RECEIVE_ILLEGAL_VECTOR
    apic.write_msr(Msr.ESR, 0)
    assert apic.read_msr(Msr.ESR) == 0


def test_esr_write_of_nonzero_answers_gp() -> None:
    """11.12.1.2: only zero may be written to the ESR in x2APIC mode."""
    _, _, (apic, _) = guest()
    assert apic.write_msr(Msr.ESR, 0x40) is Gp.RESERVED_BITS


def test_self_ipi_with_illegal_vector_sets_receive_illegal_vector_and_is_dropped() -> None:
    """11.5.2: vectors 0-15 are illegal; an interrupt received with one is not delivered
    and sets receive-illegal-vector (11.5.3)."""
    _, _, (apic, _) = guest()
    apic.write_msr(Msr.SELF_IPI, 0x0F)
    apic.write_msr(Msr.ESR, 0)
    assert apic.read_msr(Msr.ESR) == Esr.RECEIVE_ILLEGAL_VECTOR
    assert apic.irr == 0 and apic.counters.illegal_vectors == 1


def test_fixed_ipi_with_illegal_vector_sets_send_and_receive_bits() -> None:
    """11.5.3: the sender detects send-illegal-vector, the receiver receive-illegal-vector."""
    _, _, (a, b) = guest()
    a.write_msr(Msr.ICR, icr(0x05, dest=1))
    a.write_msr(Msr.ESR, 0)
    b.write_msr(Msr.ESR, 0)
    assert a.read_msr(Msr.ESR) == Esr.SEND_ILLEGAL_VECTOR
    assert b.read_msr(Msr.ESR) == Esr.RECEIVE_ILLEGAL_VECTOR
    assert b.irr == 0


def test_error_raises_the_error_lvt_interrupt() -> None:
    """11.5.3: a detected error raises the interrupt of the LVT error entry."""
    _, _, (apic, _) = guest()
    apic.write_msr(Msr.LVT_ERROR, 0xFE)
    apic.write_msr(Msr.SELF_IPI, 0x01)
    assert apic.highest_pending() == 0xFE


# -- ICR and IPIs (11.6.1, 11.12.9, 11.12.10, 11.12.11) --------------------------------


def test_icr_reads_back_the_64_bit_value_without_delivery_status() -> None:
    """11.12.9: one 64-bit ICR; bit 12 (delivery status) is gone and ignored on write."""
    _, _, (a, _) = guest()
    value = icr(0x40, dest=1) | 1 << 12
    assert a.write_msr(Msr.ICR, value) is None
    assert a.read_msr(Msr.ICR) == value & ~(1 << 12)


@pytest.mark.parametrize("reserved", [1 << 13, 1 << 16, 1 << 17, 1 << 20, 1 << 31])
def test_icr_reserved_bits_answer_gp_and_send_nothing(reserved: int) -> None:
    """11.12.9 / 11.12.1.3: the ICR's reserved bits (13, 17:16, 31:20) raise #GP."""
    _, _, (a, b) = guest()
    assert a.write_msr(Msr.ICR, icr(0x40, dest=1) | reserved) is Gp.RESERVED_BITS
    assert b.irr == 0 and a.read_msr(Msr.ICR) == 0


def test_fixed_ipi_with_physical_destination_reaches_only_that_apic() -> None:
    """11.12.10: physical destination mode addresses one x2APIC id."""
    _, _, (a, b, c) = guest((0, 1, 2))
    a.write_msr(Msr.ICR, icr(0x40, dest=2))
    assert (a.irr, b.irr, c.irr) == (0, 0, bit(0x40))


def test_fixed_ipi_to_an_absent_id_reaches_nobody() -> None:
    _, bus, apics = guest()
    apics[0].write_msr(Msr.ICR, icr(0x40, dest=7))
    assert all(a.irr == 0 for a in bus)


@pytest.mark.parametrize("logical", [False, True])
def test_broadcast_destination_reaches_every_apic(logical: bool) -> None:
    """11.12.9: destination FFFF_FFFFH broadcasts in both destination modes."""
    _, bus, (a, *_) = guest((0, 1, 17))
    a.write_msr(Msr.ICR, icr(0x40, dest=BROADCAST, logical=logical))
    assert all(x.irr == bit(0x40) for x in bus)


def test_logical_destination_matches_cluster_and_member_bits() -> None:
    """11.12.10.1: the cluster (bits 31:16) must equal LDR's, and the 16-bit mask must
    share a bit with LDR[15:0]."""
    _, bus, (a, *_) = guest((0, 1, 2, 16, 17))
    a.write_msr(Msr.ICR, icr(0x40, dest=0x1_0002, logical=True))  # cluster 1, member 1
    a.write_msr(Msr.ICR, icr(0x50, dest=0x0_0005, logical=True))  # cluster 0, members 0, 2
    got = {x.apic_id: x.irr for x in bus}
    assert got == {0: bit(0x50), 1: 0, 2: bit(0x50), 16: 0, 17: bit(0x40)}


def test_shorthand_self_reaches_only_the_sender() -> None:
    """11.6.1: shorthand 01 (self) ignores the destination field."""
    _, _, (a, b) = guest()
    a.write_msr(Msr.ICR, icr(0x40, dest=1, shorthand=Shorthand.SELF))
    assert (a.irr, b.irr) == (bit(0x40), 0)


def test_shorthand_all_including_self_reaches_everyone() -> None:
    """11.6.1: shorthand 10."""
    _, _, (a, b) = guest()
    a.write_msr(Msr.ICR, icr(0x40, shorthand=Shorthand.ALL_INCLUDING_SELF))
    assert (a.irr, b.irr) == (bit(0x40), bit(0x40))


def test_shorthand_all_excluding_self_reaches_all_others() -> None:
    """11.6.1: shorthand 11."""
    _, _, (a, b, c) = guest((0, 1, 2))
    a.write_msr(Msr.ICR, icr(0x40, shorthand=Shorthand.ALL_EXCLUDING_SELF))
    assert (a.irr, b.irr, c.irr) == (0, bit(0x40), bit(0x40))


def test_lowest_priority_ipi_goes_to_the_destination_with_lowest_ppr() -> None:
    """11.6.2.4: lowest-priority delivery picks the addressed processor of lowest
    priority (here by PPR)."""
    _, _, (a, b, c) = guest((0, 1, 2))
    b.write_msr(Msr.TPR, 0x30)
    c.write_msr(Msr.TPR, 0x20)
    a.write_msr(Msr.TPR, 0x40)
    a.write_msr(Msr.ICR, icr(0x70, dest=0x7, logical=True, mode=DeliveryMode.LOWEST_PRIORITY))
    assert (a.irr, b.irr, c.irr) == (0, 0, bit(0x70))


def test_lowest_priority_tie_goes_to_the_lowest_id() -> None:
    """11.6.2.4 leaves the tie-break to the implementation: here the lowest id."""
    _, _, (a, b, c) = guest((0, 1, 2))
    a.write_msr(Msr.ICR, icr(0x70, dest=0x6, logical=True, mode=DeliveryMode.LOWEST_PRIORITY))
    assert (a.irr, b.irr, c.irr) == (0, bit(0x70), 0)


def test_nmi_ipi_latches_an_nmi_for_the_vmm() -> None:
    """11.6.1: delivery mode 100 (NMI) ignores the vector."""
    _, _, (a, b) = guest()
    a.write_msr(Msr.ICR, icr(0, dest=1, mode=DeliveryMode.NMI))
    assert b.take_nmi() is True and b.take_nmi() is False and b.irr == 0


def test_init_ipi_resets_registers_but_keeps_x2apic_mode_and_id() -> None:
    """11.12.5.1: INIT in x2APIC mode keeps the mode and the 32-bit ID and initialises
    every other register (SVR back to FFH, LVT masked, IRR/ISR clear)."""
    _, _, (a, b) = guest()
    b.write_msr(Msr.TPR, 0x40)
    b.raise_fixed(0x80)
    a.write_msr(Msr.ICR, icr(0, dest=1, mode=DeliveryMode.INIT))
    assert b.take_init() is True
    assert b.x2apic_mode and b.read_msr(Msr.ID) == 1
    assert (b.read_msr(Msr.TPR), b.read_msr(Msr.SVR), b.irr) == (0, 0xFF, 0)
    assert b.read_msr(Msr.LVT_TIMER) == 0x1_0000


def test_startup_ipi_latches_its_vector() -> None:
    """11.6.1: delivery mode 110 (start-up) carries the start page number in the vector."""
    _, _, (a, b) = guest()
    a.write_msr(Msr.ICR, icr(0x08, dest=1, mode=DeliveryMode.STARTUP))
    assert b.take_sipi() == 0x08 and b.take_sipi() is None


def test_init_level_deassert_is_ignored() -> None:
    """11.6.1, valid ICR combinations: a level-triggered IPI with the level bit clear
    (INIT level de-assert) is ignored."""
    _, _, (a, b) = guest()
    a.write_msr(Msr.ICR, icr(0, dest=1, mode=DeliveryMode.INIT, level=True, assert_=False))
    assert b.take_init() is False and a.counters.ipis_ignored == 1


def test_level_triggered_ipi_with_level_set_is_sent_as_edge() -> None:
    """11.6.1, valid ICR combinations: a level-triggered IPI with level 1 is treated as edge."""
    _, _, (a, b) = guest()
    a.write_msr(Msr.ICR, icr(0x40, dest=1, level=True))
    assert b.irr == bit(0x40) and b.tmr == 0


@pytest.mark.parametrize("shorthand", [Shorthand.SELF, Shorthand.ALL_INCLUDING_SELF])
def test_self_shorthands_carry_only_fixed_interrupts(shorthand: Shorthand) -> None:
    """11.6.1, valid ICR combinations: self and all-including-self with lowest priority,
    NMI, INIT or SIPI are invalid: nothing is sent."""
    _, _, (a, b) = guest()
    a.write_msr(Msr.ICR, icr(0, shorthand=shorthand, mode=DeliveryMode.NMI))
    assert not a.take_nmi() and not b.take_nmi()


@pytest.mark.parametrize("mode", [2, 3, 7])
def test_smi_extint_and_reserved_delivery_modes_are_ignored_and_counted(mode: int) -> None:
    """11.12.9: delivery modes 011 and 111 are reserved; SMI (010) is not emulated."""
    _, _, (a, b) = guest()
    a.write_msr(Msr.ICR, 1 << 32 | mode << 8 | 0x40)
    assert b.irr == 0 and a.counters.unsupported_delivery == 1


def test_self_ipi_register_delivers_an_edge_interrupt_to_self() -> None:
    """11.12.11: writing the vector to 83FH is a fixed, edge, self IPI."""
    _, _, (a, b) = guest()
    assert a.write_msr(Msr.SELF_IPI, 0x55) is None
    assert (a.irr, a.tmr, b.irr) == (bit(0x55), 0, 0)


def test_self_ipi_reserved_bits_answer_gp() -> None:
    """11.12.11: SELF IPI bits 31:8 are reserved."""
    _, _, (a, _) = guest()
    assert a.write_msr(Msr.SELF_IPI, 0x155) is Gp.RESERVED_BITS
    assert a.irr == 0


def test_notify_hears_each_delivery_to_its_apic() -> None:
    heard: list[int] = []
    bus = ApicBus(Clock())
    a = x2apic_on(bus.create(0))
    x2apic_on(bus.create(1, notify=lambda apic: heard.append(apic.apic_id)))
    a.write_msr(Msr.ICR, icr(0x40, dest=1))
    a.write_msr(Msr.ICR, icr(0, dest=1, mode=DeliveryMode.NMI))
    assert heard == [1, 1]


def test_bus_refuses_a_duplicate_id() -> None:
    bus = ApicBus(Clock())
    bus.create(4)
    with pytest.raises(ValueError):
        bus.create(4)


# -- local vector table (11.5.1) -------------------------------------------------------


@pytest.mark.parametrize("index", range(Msr.LVT_TIMER, Msr.LVT_ERROR + 1))
def test_reset_lvt_entries_are_masked(index: int) -> None:
    """11.4.7.1: the LVT entries reset to 0 with the mask bit set."""
    _, _, (apic, _) = guest()
    assert apic.read_msr(index) == 0x1_0000


@pytest.mark.parametrize(("index", "value"), [(Msr.LVT_TIMER, 1 << 8), (Msr.LVT_TIMER, 1 << 15),
                                              (Msr.LVT_ERROR, 4 << 8), (Msr.LVT_THERMAL, 1 << 13),
                                              (Msr.LVT_LINT0, 1 << 17)])
def test_lvt_reserved_bits_answer_gp(index: int, value: int) -> None:
    """11.5.1: e.g. the timer and error entries have no delivery mode; thermal has no
    polarity; nothing above bit 16 exists outside the timer mode."""
    _, _, (apic, _) = guest()
    assert apic.write_msr(index, value | 0x40) is Gp.RESERVED_BITS
    assert apic.read_msr(index) == 0x1_0000


def test_lvt_read_only_bits_are_ignored_on_write() -> None:
    """11.5.1: delivery status (12) and remote IRR (14) are read-only."""
    _, _, (apic, _) = guest()
    assert apic.write_msr(Msr.LVT_LINT1, 0x40 | 1 << 12 | 1 << 14) is None
    assert apic.read_msr(Msr.LVT_LINT1) == 0x40


def test_masked_lint0_delivers_nothing() -> None:
    """11.5.1: the mask bit inhibits reception of the interrupt."""
    _, _, (apic, _) = guest()
    apic.write_msr(Msr.LVT_LINT0, 0x1_0040)
    assert apic.raise_lvt(Lvt.LINT0) is False and apic.irr == 0


def test_unmasked_fixed_lint0_delivers_its_vector() -> None:
    _, _, (apic, _) = guest()
    apic.write_msr(Msr.LVT_LINT0, 0x40)
    assert apic.raise_lvt(Lvt.LINT0) is True and apic.irr == bit(0x40)


def test_lint1_in_nmi_mode_delivers_an_nmi() -> None:
    """11.5.1: delivery mode 100 delivers an NMI and ignores the vector."""
    _, _, (apic, _) = guest()
    apic.write_msr(Msr.LVT_LINT1, 4 << 8)
    assert apic.raise_lvt(Lvt.LINT1) is True and apic.take_nmi() and apic.irr == 0


def test_lvt_extint_is_not_emulated_and_counted() -> None:
    _, _, (apic, _) = guest()
    apic.write_msr(Msr.LVT_LINT0, 7 << 8)
    assert apic.raise_lvt(Lvt.LINT0) is False and apic.counters.unsupported_delivery == 1


# -- timer (11.5.4, 11.5.4.1) ----------------------------------------------------------


@pytest.mark.parametrize(("dcr", "div"), [(0b0000, 2), (0b0001, 4), (0b0010, 8), (0b0011, 16),
                                          (0b1000, 32), (0b1001, 64), (0b1010, 128),
                                          (0b1011, 1)])
def test_divide_configuration_table(dcr: int, div: int) -> None:
    """11.5.4, divide configuration register: bits 3, 1:0 select the divisor."""
    assert divisor(dcr) == div


def test_divide_configuration_bit_2_is_reserved() -> None:
    _, _, (apic, _) = guest()
    assert apic.write_msr(Msr.TIMER_DIVIDE, 0b0100) is Gp.RESERVED_BITS


def arm(apic: X2Apic, lvt: int, initial: int, dcr: int = 0b1011) -> None:
    assert apic.write_msr(Msr.TIMER_DIVIDE, dcr) is None
    assert apic.write_msr(Msr.LVT_TIMER, lvt) is None
    assert apic.write_msr(Msr.TIMER_INITIAL, initial) is None


def test_one_shot_timer_fires_once_after_initial_count_times_divisor() -> None:
    """11.5.4: one-shot: the count runs down once at bus clock / divisor; at zero the
    timer interrupt is raised. Bus clock 1 MHz, divisor 4, count 250: 1 ms."""
    clock, _, (apic, _) = guest(timer_hz=1_000_000)
    arm(apic, 0x40, 250, dcr=0b0001)
    assert apic.next_deadline_ns() == 1_000_000
    clock.now = 999_999
    assert apic.highest_pending() is None
    clock.now = 1_000_000
    assert apic.highest_pending() == 0x40
    assert apic.next_deadline_ns() is None


def test_one_shot_current_count_runs_down_and_stays_at_zero() -> None:
    """11.5.4: the current count reads the remaining count; zero after expiry."""
    clock, _, (apic, _) = guest()
    arm(apic, 0x40, 1000)
    clock.now = 300
    assert apic.read_msr(Msr.TIMER_CURRENT) == 700
    clock.now = 5000
    assert apic.read_msr(Msr.TIMER_CURRENT) == 0
    assert apic.read_msr(Msr.TIMER_INITIAL) == 1000


def test_periodic_timer_reloads_and_fires_every_period() -> None:
    """11.5.4: periodic: at zero the count reloads from the initial count."""
    clock, _, (apic, _) = guest()
    arm(apic, 0x40 | 1 << 17, 1000)
    fired = []
    for now in range(0, 3500, 100):
        clock.now = now
        if apic.expire_timers():
            fired.append(now)
            assert apic.ack() == 0x40
            apic.eoi()
    assert fired == [1000, 2000, 3000]
    clock.now = 3250
    assert apic.read_msr(Msr.TIMER_CURRENT) == 750
    assert apic.next_deadline_ns() == 4000


def test_periodic_expirations_missed_by_the_vmm_coalesce_into_one_interrupt() -> None:
    """11.8.4: IRR holds one request per vector, so five missed periods are one interrupt."""
    clock, _, (apic, _) = guest()
    arm(apic, 0x40 | 1 << 17, 1000)
    clock.now = 5500
    assert apic.expire_timers() is True
    assert apic.ack() == 0x40 and apic.ack() is None
    assert apic.counters.timer_coalesced == 4
    assert apic.next_deadline_ns() == 6000


def test_zero_initial_count_stops_the_timer() -> None:
    """11.5.4: writing 0 to the initial count stops the timer in both count modes."""
    clock, _, (apic, _) = guest()
    arm(apic, 0x40 | 1 << 17, 1000)
    clock.now = 500
    apic.write_msr(Msr.TIMER_INITIAL, 0)
    clock.now = 5000
    assert apic.expire_timers() is False
    assert apic.next_deadline_ns() is None and apic.read_msr(Msr.TIMER_CURRENT) == 0


def test_masked_timer_counts_but_raises_no_interrupt() -> None:
    """11.5.1: the mask bit inhibits the interrupt, not the count."""
    clock, _, (apic, _) = guest()
    arm(apic, 0x1_0040 | 1 << 17, 1000)
    clock.now = 1500
    assert apic.expire_timers() is True
    assert apic.irr == 0 and apic.read_msr(Msr.TIMER_CURRENT) == 500


def test_divide_change_mid_count_continues_from_the_current_count() -> None:
    """11.5.4: the divisor sets the rate from the moment it is written."""
    clock, _, (apic, _) = guest()
    arm(apic, 0x40, 1000)  # divide by 1
    clock.now = 400
    apic.write_msr(Msr.TIMER_DIVIDE, 0b0000)  # divide by 2: 600 counts left take 1200 ns
    assert apic.read_msr(Msr.TIMER_CURRENT) == 600
    assert apic.next_deadline_ns() == 1600


def test_one_shot_to_periodic_keeps_counting() -> None:
    """11.5.4.1 limits the disarm to TSC-deadline transitions; one-shot <-> periodic
    changes how the count ends, not where it is."""
    clock, _, (apic, _) = guest()
    arm(apic, 0x40, 1000)
    clock.now = 400
    apic.write_msr(Msr.LVT_TIMER, 0x40 | 1 << 17)
    assert apic.read_msr(Msr.TIMER_CURRENT) == 600
    clock.now = 1000
    assert apic.expire_timers() and apic.next_deadline_ns() == 2000


def deadline_guest() -> tuple[Clock, X2Apic]:
    clock, _, (apic, _) = guest(tsc=TscMap(hz=2_000_000_000, offset=10_000))
    apic.write_msr(Msr.LVT_TIMER, 0x40 | 2 << 17)
    return clock, apic


def test_tsc_deadline_fires_when_the_tsc_reaches_the_deadline() -> None:
    """11.5.4.1: the interrupt is raised when the TSC reaches IA32_TSC_DEADLINE, which
    then reads 0 (the timer disarms)."""
    clock, apic = deadline_guest()
    apic.write_msr(Msr.TSC_DEADLINE, 12_000)  # TSC 2 GHz from 10,000: at 1000 ns
    assert apic.read_msr(Msr.TSC_DEADLINE) == 12_000
    assert apic.next_deadline_ns() == 1000
    clock.now = 999
    assert apic.expire_timers() is False
    clock.now = 1000
    assert apic.highest_pending() == 0x40
    assert apic.read_msr(Msr.TSC_DEADLINE) == 0 and apic.next_deadline_ns() is None


def test_tsc_deadline_in_the_past_fires_at_once() -> None:
    """11.5.4.1: a deadline already reached raises the interrupt immediately."""
    clock, apic = deadline_guest()
    clock.now = 5000
    apic.write_msr(Msr.TSC_DEADLINE, 1)
    assert apic.irr == bit(0x40)


def test_tsc_deadline_write_of_zero_disarms() -> None:
    """11.5.4.1: writing 0 to IA32_TSC_DEADLINE disarms the timer."""
    clock, apic = deadline_guest()
    apic.write_msr(Msr.TSC_DEADLINE, 12_000)
    apic.write_msr(Msr.TSC_DEADLINE, 0)
    clock.now = 10_000
    assert apic.expire_timers() is False and apic.irr == 0


def test_tsc_deadline_msr_outside_deadline_mode_reads_zero_and_ignores_writes() -> None:
    """11.5.4.1: in the other timer modes IA32_TSC_DEADLINE reads 0, writes are ignored."""
    clock, _, (apic, _) = guest()
    assert apic.write_msr(Msr.TSC_DEADLINE, 500) is None
    assert apic.read_msr(Msr.TSC_DEADLINE) == 0
    clock.now = 1000
    assert apic.expire_timers() is False


def test_initial_count_write_is_ignored_in_deadline_mode() -> None:
    """11.5.4.1: in TSC-deadline mode writes to the initial count are ignored and the
    current count reads 0."""
    _, apic = deadline_guest()
    apic.write_msr(Msr.TIMER_INITIAL, 1000)
    assert apic.read_msr(Msr.TIMER_INITIAL) == 0
    assert apic.read_msr(Msr.TIMER_CURRENT) == 0 and apic.next_deadline_ns() is None


def test_switch_to_deadline_mode_disarms_a_counting_timer() -> None:
    """11.5.4.1: a transition between TSC-deadline and the other modes disarms the timer."""
    clock, _, (apic, _) = guest()
    arm(apic, 0x40, 1000)
    apic.write_msr(Msr.LVT_TIMER, 0x40 | 2 << 17)
    clock.now = 5000
    assert apic.expire_timers() is False and apic.irr == 0


def test_switch_from_deadline_mode_disarms_the_deadline() -> None:
    clock, apic = deadline_guest()
    apic.write_msr(Msr.TSC_DEADLINE, 12_000)
    apic.write_msr(Msr.LVT_TIMER, 0x40)
    apic.write_msr(Msr.LVT_TIMER, 0x40 | 2 << 17)
    clock.now = 5000
    assert apic.expire_timers() is False and apic.read_msr(Msr.TSC_DEADLINE) == 0


def test_reserved_timer_mode_never_runs() -> None:
    """11.5.4: timer mode 11 is reserved; this model's timer then stays stopped."""
    clock, _, (apic, _) = guest()
    arm(apic, 0x40 | 3 << 17, 1000)
    clock.now = 5000
    assert apic.expire_timers() is False and apic.next_deadline_ns() is None


def test_bus_next_deadline_is_the_earliest_of_its_apics() -> None:
    _, bus, (a, b) = guest()
    arm(a, 0x40, 3000)
    arm(b, 0x40, 2000)
    assert bus.next_deadline_ns() == 2000


def test_tsc_map_ns_at_is_the_first_time_the_tsc_reaches_the_value() -> None:
    tsc = TscMap(hz=3_000_000_000, offset=7)
    for value in (0, 7, 8, 9, 10, 1_000_003):
        ns = tsc.ns_at(value)
        assert tsc.tsc_at(ns) >= value
        assert ns == 0 or tsc.tsc_at(ns - 1) < value


def test_external_vector_outside_a_byte_is_a_caller_error() -> None:
    _, _, (apic, _) = guest()
    with pytest.raises(ValueError):
        apic.raise_fixed(256)
