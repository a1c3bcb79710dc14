"""Random guests' MSR traffic against the x2APIC model (Hypothesis, stateful).

Two APICs on one bus take random RDMSR/WRMSR (the registers, their neighbours, any index
in 800H-8FFH, APIC_BASE and TSC_DEADLINE, with values that are mostly plausible and
sometimes any u64), external interrupts, acknowledgements, EOIs and clock steps.
Properties, after every step: no access raises; every answer is a u64 or a ``Gp``; and
the model's invariants hold (module docstring of copra.vmm.x2apic):
- IRR and ISR hold no vector below 16 (SDM 11.5.2);
- the ISR holds at most one vector per priority class (11.8.3.1 with 11.8.4);
- PPR, read through its MSR, follows the formula of 11.8.3.1 from TPR and ISR;
- ``highest_pending`` is None or above PPR's class (11.8.4);
- the current count never exceeds the initial count (11.5.4);
- an EOI listener hears only vectors whose TMR bit was set (11.8.5).
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from copra.vmm.x2apic import (
    APIC_BASE_EN,
    APIC_BASE_EXTD,
    U64,
    ApicBus,
    Gp,
    Msr,
    TscMap,
    X2Apic,
)

REGISTERS = [int(m) for m in Msr] + list(range(0x810, 0x828)) + [0x800, 0x80E, 0x82F, 0x831]
INDEXES = st.one_of(st.sampled_from(REGISTERS), st.integers(0x800, 0x8FF),
                    st.integers(0, 0xFFFF_FFFF))
APIC_BASES = st.sampled_from([0xFEE0_0000 | APIC_BASE_EN | APIC_BASE_EXTD,
                              0xFEE0_0000 | APIC_BASE_EN, 0xFEE0_0000,
                              0xFEE0_0000 | APIC_BASE_EXTD, 0xFEE0_0000 | APIC_BASE_EN | 1 << 9])
#: ICR values with valid low bits: destination 0, 1, absent, broadcast or a logical mask.
ICRS = st.builds(lambda d, s, lvl, m, lg, v: d << 32 | s << 18 | lvl << 14 | m << 8 | lg << 11 | v,
                 st.sampled_from([0, 1, 2, 3, 0xFFFF_FFFF]), st.integers(0, 3),
                 st.integers(0, 3), st.integers(0, 7), st.integers(0, 1), st.integers(0, 0xFF))
VALUES = st.one_of(
    st.integers(0, 0xFF),  # vectors, TPR, SELF IPI
    st.integers(0, 0x7_FFFF),  # LVT-shaped
    st.integers(0, 0xFFFF_FFFF),
    ICRS,
    st.integers(0, U64),
)


class ApicMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.bus = ApicBus(lambda: self.now, timer_hz=100_000_000,
                           tsc=TscMap(hz=3_000_000_000, offset=5))
        self.heard: list[tuple[X2Apic, int, bool]] = []
        self.apics = [self.bus.create(i, bsp=i == 0, eoi_listener=self._listener(i))
                      for i in range(2)]
        for apic in self.apics:  # most runs should reach x2APIC mode and software enable
            apic.write_msr(Msr.APIC_BASE, apic.apic_base | APIC_BASE_EXTD)
            apic.write_msr(Msr.SVR, 0x1FF)

    def _listener(self, i: int) -> Callable[[int], None]:
        def heard(vector: int) -> None:
            apic = self.apics[i]
            # Called during eoi(): the ISR bit is already clear, TMR still tells the trigger.
            self.heard.append((apic, vector, bool(apic.tmr >> vector & 1)))
        return heard

    @rule(which=st.integers(0, 1), index=INDEXES)
    def read(self, which: int, index: int) -> None:
        result = self.apics[which].read_msr(index)
        assert isinstance(result, Gp) or 0 <= result <= U64

    @rule(which=st.integers(0, 1), index=INDEXES, value=VALUES)
    def write(self, which: int, index: int, value: int) -> None:
        result = self.apics[which].write_msr(index, value)
        assert result is None or isinstance(result, Gp)

    @rule(which=st.integers(0, 1), value=ICRS)
    def send_ipi(self, which: int, value: int) -> None:
        assert self.apics[which].write_msr(Msr.ICR, value) in (None, Gp.NOT_X2APIC)

    @rule(which=st.integers(0, 1), mode=st.integers(0, 3), masked=st.sampled_from([0, 0, 1]),
          vector=st.one_of(st.integers(16, 0xFF), st.integers(0, 0xFF)),
          divide=st.sampled_from([0, 1, 2, 3, 8, 9, 10, 11]),
          count=st.integers(0, 2_000), deadline=st.integers(0, 50_000))
    def program_timer(self, which: int, mode: int, masked: int, vector: int, divide: int,
                      count: int, deadline: int) -> None:
        apic = self.apics[which]
        apic.write_msr(Msr.LVT_TIMER, mode << 17 | masked << 16 | vector)
        apic.write_msr(Msr.TIMER_DIVIDE, divide)
        apic.write_msr(Msr.TIMER_INITIAL, count)
        apic.write_msr(Msr.TSC_DEADLINE, deadline and self.bus.tsc.tsc_at(self.now) + deadline)

    @rule(which=st.integers(0, 1))
    def software_enable(self, which: int) -> None:
        # INIT IPIs and SVR writes disable the APIC often; this brings it back.
        self.apics[which].write_msr(Msr.SVR, 0x1FF)

    @rule(which=st.integers(0, 1), value=APIC_BASES)
    def write_apic_base(self, which: int, value: int) -> None:
        self.apics[which].write_msr(Msr.APIC_BASE, value)

    @rule(which=st.integers(0, 1), vector=st.integers(0, 0xFF), level=st.booleans())
    def external_interrupt(self, which: int, vector: int, level: bool) -> None:
        self.apics[which].raise_fixed(vector, level=level)

    @rule(which=st.integers(0, 1))
    def ack(self, which: int) -> None:
        apic = self.apics[which]
        expected = apic.highest_pending()
        assert apic.ack() == expected
        if expected is not None:
            assert apic.isr >> expected & 1 and not apic.irr >> expected & 1

    @rule(which=st.integers(0, 1))
    def eoi(self, which: int) -> None:
        self.apics[which].eoi()

    @rule(which=st.integers(0, 1))
    def take_events(self, which: int) -> None:
        apic = self.apics[which]
        apic.take_nmi()
        apic.take_init()
        sipi = apic.take_sipi()
        assert sipi is None or 0 <= sipi <= 0xFF

    @rule(step=st.one_of(st.integers(0, 20_000), st.integers(0, 10**10)))
    def advance(self, step: int) -> None:
        self.now += step
        for apic in self.apics:
            apic.expire_timers()
            # Whatever was due has fired: no deadline is left at or before now.
            deadline = apic.next_deadline_ns()
            assert deadline is None or deadline > self.now

    @invariant()
    def vectors_below_16_never_pending_or_in_service(self) -> None:
        for apic in self.apics:
            assert apic.irr & 0xFFFF == 0 and apic.isr & 0xFFFF == 0

    @invariant()
    def at_most_one_in_service_vector_per_class(self) -> None:
        for apic in self.apics:
            for cls in range(16):
                assert bin(apic.isr >> (16 * cls) & 0xFFFF).count("1") <= 1

    @invariant()
    def ppr_follows_the_formula(self) -> None:
        for apic in self.apics:
            ppr = apic.read_msr(Msr.PPR)
            if isinstance(ppr, Gp):
                assert not apic.x2apic_mode
                continue
            tpr = apic.read_msr(Msr.TPR)
            assert isinstance(tpr, int)
            isrv = apic.isr.bit_length() - 1 if apic.isr else 0
            assert ppr == (tpr if tpr >> 4 >= isrv >> 4 else isrv & 0xF0)

    @invariant()
    def highest_pending_is_above_ppr(self) -> None:
        for apic in self.apics:
            vector = apic.highest_pending()
            assert vector is None or (vector >> 4 > apic.ppr >> 4 and apic.irr >> vector & 1)

    @invariant()
    def current_count_at_most_initial(self) -> None:
        for apic in self.apics:
            if apic.x2apic_mode:
                current = apic.read_msr(Msr.TIMER_CURRENT)
                initial = apic.read_msr(Msr.TIMER_INITIAL)
                assert isinstance(current, int) and isinstance(initial, int)
                assert current <= initial

    @invariant()
    def eoi_listener_hears_only_level_triggered_vectors(self) -> None:
        assert all(level for _, _, level in self.heard)


ApicMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=50,
                                         deadline=None)
TestApicMachine = ApicMachine.TestCase
