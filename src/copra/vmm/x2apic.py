"""The local APIC of one guest vCPU in x2APIC mode, and the bus that carries IPIs between
a guest's APICs: a pure model, driven by method calls and an injected clock.

Citations are to the Intel SDM, vol. 3A, chapter "Advanced Programmable Interrupt
Controller (APIC)": chapter 11 in current editions (chapter 10 in older ones, with the
same subsection numbers). docs/apic.md has the register table and the VMM contract.

What it emulates:
- IA32_APIC_BASE (MSR 0x1B) with the state machine of §11.12.5 (disabled, xAPIC, x2APIC;
  the illegal transitions answer #GP), and every x2APIC register of §11.12.1.2 that a
  guest needs: ID, version, TPR, PPR, EOI, LDR (derived from the ID, §11.12.10.2), SVR
  (software enable, §11.4.7.2), ISR/TMR/IRR (256 bits each), ESR (write, then read:
  §11.5.3), ICR (one 64-bit MSR, §11.12.9), the six LVT entries of §11.5.1, the timer
  (§11.5.4: one-shot, periodic and TSC-deadline with IA32_TSC_DEADLINE, MSR 0x6E0) and
  SELF IPI (§11.12.11).
- Delivery by priority (§11.8.3 - §11.8.5): PPR from TPR and the highest in-service
  class, ``highest_pending`` / ``ack`` (IRR -> ISR) / ``eoi``; an EOI of a vector whose TMR
  bit is set calls the EOI listener, so a level-triggered source can resample.
- IPIs (§11.6.1, §11.12.10): fixed, lowest priority, NMI, INIT and SIPI; shorthands self,
  all-including-self, all-excluding-self; physical and logical (cluster) destinations and
  the broadcast id 0xFFFFFFFF.

What it does not: the xAPIC MMIO page (a guest in xAPIC mode has an APIC that receives
interrupts but whose registers it cannot reach: switch to x2APIC), SMI, ExtINT and a
legacy PIC, LVT CMCI (the version register announces 6 LVT entries; MSR 0x82F is
reserved), directed EOI (SVR bit 12 is reserved), remote IRR and level-triggered LINT
pins, spurious interrupts (``ack`` is atomic with the priority check, so none arises;
the SVR vector is storage), arbitration ids and focus processors. NMI, INIT and SIPI
are latched here for the VMM, which owns the vCPU's run state (wait-for-SIPI, CS:IP).

Reserved registers and reserved bits answer the architectural #GP as a value, never an
exception: ``read_msr`` returns ``int | Gp`` and ``write_msr`` returns ``Gp | None``; a
``Gp`` means "inject #GP(0)" (§11.12.1.3: non-zero writes to reserved bits, including
bits 63:32 of every register but the ICR; §11.12.2: x2APIC registers outside x2APIC
mode). Illegal vectors (0-15) set ESR bits and are not delivered (§11.5.2, §11.5.3).

Invariants (tests/unit/test_x2apic_state.py checks them after every random step):
- IRR and ISR never hold a vector below 16;
- the ISR holds at most one vector per priority class (acceptance needs a class above
  PPR, which is at least the highest in-service class);
- PPR = TPR if TPR[7:4] >= the highest in-service class, else that class with [3:0] = 0;
- ``highest_pending`` is None or a vector whose class is above PPR[7:4];
- the timer's current count never exceeds its initial count.

Time: ``clock()`` returns monotonic nanoseconds. The APIC timer counts at ``timer_hz``
divided by the divide configuration; the guest's TSC is ``TscMap.tsc_at(ns)``. The model
never sleeps: ``next_deadline_ns`` says when its timer next needs attention and
``expire_timers`` fires whatever is due. Every register access and priority query first
catches the timer up to the clock, so what the guest reads is consistent whenever the
VMM's host timer wakes it.

Interrupt injection (decided in docs/apic.md): no in-kernel irqchip, because the SVSM and
not the host owns the guest's APIC, and because with KVM's APIC in the kernel the x2APIC
MSRs never reach user space, whatever the MSR filter says (measured). Before each
KVM_RUN the VMM asks ``highest_pending()``; if the vCPU can take an interrupt
(``ready_for_interrupt_injection`` and IF), it calls ``ack()`` and injects the vector with
KVM_INTERRUPT, otherwise it sets ``request_interrupt_window`` and tries again at the
window exit. TPR and CR8 are one register (§11.8.6.1): the VMM copies ``kvm_run.cr8``
into ``cr8`` after each exit and ``cr8`` back before each entry.

Locking: none inside. The caller holds ``ApicBus.lock`` around every call into the bus
or any of its APICs (an ICR write touches other vCPUs' APICs). Callbacks (``notify``,
the EOI listener) run with that lock held and must not block or call back in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum, IntEnum, IntFlag
from typing import Final

NS_PER_S: Final = 1_000_000_000
U32: Final = 0xFFFF_FFFF
U64: Final = (1 << 64) - 1

X2APIC_MSR_FIRST: Final = 0x800
X2APIC_MSR_LAST: Final = 0x8FF
BROADCAST: Final = 0xFFFF_FFFF  #: destination id that reaches every APIC (§11.12.9)


class Msr(IntEnum):
    """The MSRs this model answers (§11.12.1.2; APIC_BASE §11.4.4; TSC_DEADLINE §11.5.4.1)."""

    APIC_BASE = 0x1B
    TSC_DEADLINE = 0x6E0
    ID = 0x802
    VERSION = 0x803
    TPR = 0x808
    PPR = 0x80A
    EOI = 0x80B
    LDR = 0x80D
    SVR = 0x80F
    ISR0 = 0x810  #: ISR0-ISR7: 0x810-0x817, bits 32n+31..32n
    TMR0 = 0x818  #: TMR0-TMR7: 0x818-0x81F
    IRR0 = 0x820  #: IRR0-IRR7: 0x820-0x827
    ESR = 0x828
    ICR = 0x830
    LVT_TIMER = 0x832
    LVT_THERMAL = 0x833
    LVT_PMI = 0x834
    LVT_LINT0 = 0x835
    LVT_LINT1 = 0x836
    LVT_ERROR = 0x837
    TIMER_INITIAL = 0x838
    TIMER_CURRENT = 0x839
    TIMER_DIVIDE = 0x83E
    SELF_IPI = 0x83F


class _M:
    """``Msr``'s values as plain class attributes, for the register accesses of every
    guest RDMSR/WRMSR: an IntEnum member costs ~130 ns a lookup on CPython 3.11 (its
    members are descriptors there), a plain attribute ~30 ns."""

    APIC_BASE: Final = int(Msr.APIC_BASE)
    TSC_DEADLINE: Final = int(Msr.TSC_DEADLINE)
    ID: Final = int(Msr.ID)
    VERSION: Final = int(Msr.VERSION)
    TPR: Final = int(Msr.TPR)
    PPR: Final = int(Msr.PPR)
    EOI: Final = int(Msr.EOI)
    LDR: Final = int(Msr.LDR)
    SVR: Final = int(Msr.SVR)
    ISR0: Final = int(Msr.ISR0)
    IRR0: Final = int(Msr.IRR0)
    ESR: Final = int(Msr.ESR)
    ICR: Final = int(Msr.ICR)
    LVT_TIMER: Final = int(Msr.LVT_TIMER)
    LVT_ERROR: Final = int(Msr.LVT_ERROR)
    TIMER_INITIAL: Final = int(Msr.TIMER_INITIAL)
    TIMER_CURRENT: Final = int(Msr.TIMER_CURRENT)
    TIMER_DIVIDE: Final = int(Msr.TIMER_DIVIDE)
    SELF_IPI: Final = int(Msr.SELF_IPI)


class Gp(Enum):
    """A refused access: the VMM injects #GP(0) (``kvm_run.msr.error = 1``). Never an int."""

    NOT_APIC_MSR = "not an MSR of the local APIC"
    NOT_X2APIC = "x2APIC registers exist only in x2APIC mode (11.12.2)"
    RESERVED_REGISTER = "reserved x2APIC register (11.12.1.2)"
    READ_ONLY = "write to a read-only x2APIC register (11.12.1.2)"
    WRITE_ONLY = "read of a write-only x2APIC register (11.12.1.2)"
    RESERVED_BITS = "non-zero write to reserved bits (11.12.1.3)"
    ILLEGAL_TRANSITION = "illegal IA32_APIC_BASE mode transition (11.12.5)"


class Lvt(IntEnum):
    """The local vector table's entries, in MSR order (§11.5.1)."""

    TIMER = 0
    THERMAL = 1
    PMI = 2
    LINT0 = 3
    LINT1 = 4
    ERROR = 5


class DeliveryMode(IntEnum):
    """ICR and LVT bits 10:8 (§11.5.1, §11.6.1). 3 is reserved; 7 is ExtINT in an LVT."""

    FIXED = 0
    LOWEST_PRIORITY = 1
    SMI = 2
    NMI = 4
    INIT = 5
    STARTUP = 6
    EXTINT = 7


class Shorthand(IntEnum):
    """ICR bits 19:18 (§11.6.1)."""

    NONE = 0
    SELF = 1
    ALL_INCLUDING_SELF = 2
    ALL_EXCLUDING_SELF = 3


class TimerMode(IntEnum):
    """LVT timer bits 18:17 (§11.5.4); 3 is reserved: such a timer never runs."""

    ONE_SHOT = 0
    PERIODIC = 1
    TSC_DEADLINE = 2
    RESERVED = 3


class Esr(IntFlag):
    """The error bits this model sets (§11.5.3); 0-4 and 7 never arise in x2APIC mode here."""

    SEND_ILLEGAL_VECTOR = 1 << 5
    RECEIVE_ILLEGAL_VECTOR = 1 << 6


# IA32_APIC_BASE (§11.4.4)
APIC_BASE_BSP: Final = 1 << 8
APIC_BASE_EXTD: Final = 1 << 10
APIC_BASE_EN: Final = 1 << 11
_X2APIC_ENABLED: Final = APIC_BASE_EN | APIC_BASE_EXTD  #: both set: x2APIC mode (11.12.1)
APIC_BASE_DEFAULT: Final = 0xFEE0_0000

#: Version register (§11.4.8): version 0x14 (integrated APIC), max LVT entry 5 (six
#: entries, no CMCI), bit 24 clear (no directed EOI).
VERSION_VALUE: Final = 0x14 | (len(Lvt) - 1) << 16

SVR_ENABLE: Final = 1 << 8
SVR_WRITABLE: Final = 0x3FF  #: vector, software enable, focus checking (storage)
SVR_RESET: Final = 0xFF

LVT_MASKED: Final = 1 << 16
LVT_DELIVERY_STATUS: Final = 1 << 12  #: read-only, always 0: delivery is immediate
LVT_REMOTE_IRR: Final = 1 << 14  #: read-only, always 0: not modelled
LVT_LEVEL: Final = 1 << 15
#: Writable bits per entry (§11.5.1): timer = vector, mask, mode; thermal and PMI add the
#: delivery mode; LINT0/1 add polarity and trigger mode; error = vector and mask.
LVT_WRITABLE: Final = (0x700FF, 0x107FF, 0x107FF, 0x1A7FF, 0x1A7FF, 0x100FF)
#: Read-only bits per entry, ignored on write: delivery status, and remote IRR on LINT0/1.
LVT_READ_ONLY: Final = (LVT_DELIVERY_STATUS,) * 3 + (LVT_DELIVERY_STATUS | LVT_REMOTE_IRR,) * 2 \
    + (LVT_DELIVERY_STATUS,)

#: ICR bits that must be zero (§11.12.9: 13, 17:16, 31:20); bit 12 (delivery status)
#: is ignored on write and reads 0.
ICR_RESERVED: Final = (1 << 13) | (3 << 16) | (0xFFF << 20)
ICR_IGNORED: Final = 1 << 12

DIVIDE_WRITABLE: Final = 0b1011  #: bits 0, 1, 3 (§11.5.4); bit 2 and 31:4 reserved


def divisor(dcr: int) -> int:
    """Divide configuration register -> divisor: 000 /2, 001 /4 ... 110 /128, 111 /1."""
    code = (dcr & 3) | (dcr >> 1 & 4)
    return 1 if code == 7 else 2 << code


def logical_id(x2apic_id: int) -> int:
    """The logical x2APIC id in LDR (§11.12.10.2): cluster id = id[31:4] in bits 31:16,
    one bit for id[3:0] in bits 15:0."""
    return (x2apic_id >> 4) << 16 | 1 << (x2apic_id & 0xF)


@dataclass(frozen=True, slots=True)
class TscMap:
    """How the guest's TSC relates to the clock: tsc = offset + ns * hz / 1e9."""

    hz: int = NS_PER_S
    offset: int = 0

    def tsc_at(self, ns: int) -> int:
        return self.offset + ns * self.hz // NS_PER_S

    def ns_at(self, tsc: int) -> int:
        """The first clock time at which the TSC reads ``tsc`` or more."""
        return max(0, -((self.offset - tsc) * NS_PER_S // self.hz))


@dataclass(frozen=True, slots=True)
class Ipi:
    """A decoded ICR write (§11.12.9)."""

    vector: int
    mode: int  #: DeliveryMode value, or a reserved one (3)
    logical: bool
    assert_level: bool
    level_triggered: bool
    shorthand: Shorthand
    destination: int

    @classmethod
    def decode(cls, icr: int) -> Ipi:
        return cls(vector=icr & 0xFF, mode=icr >> 8 & 7, logical=bool(icr >> 11 & 1),
                   assert_level=bool(icr >> 14 & 1), level_triggered=bool(icr >> 15 & 1),
                   shorthand=Shorthand(icr >> 18 & 3), destination=icr >> 32)


@dataclass(slots=True)
class ApicCounters:
    """What the model refused or merged, so that nothing is dropped silently."""

    illegal_vectors: int = 0  #: interrupts not delivered for a vector below 16
    dropped_sw_disabled: int = 0  #: fixed interrupts refused while SVR bit 8 is clear
    coalesced: int = 0  #: fixed interrupts that found their vector already in IRR
    timer_coalesced: int = 0  #: periodic expirations merged into one (the VMM was late)
    unsupported_delivery: int = 0  #: SMI, ExtINT, reserved modes: not emulated, ignored
    ipis_ignored: int = 0  #: ICR combinations §11.6.1 calls invalid, or de-assert INIT


class X2Apic:
    """The local APIC of one vCPU. Create it with ``ApicBus.create``."""

    __slots__ = (
        "_anchor_count", "_anchor_ns", "_apic_base", "_bus", "_divide", "_esr", "_esr_pending",
        "_fired", "_icr", "_init_pending", "_initial", "_irr", "_isr", "_lvt", "_nmi_pending",
        "_sipi_vector", "_svr", "_timer_armed", "_tmr", "_tpr", "_tsc_deadline", "apic_id",
        "counters", "eoi_listener", "notify",
    )

    def __init__(self, bus: ApicBus, apic_id: int, *, bsp: bool,
                 eoi_listener: Callable[[int], None] | None,
                 notify: Callable[[X2Apic], None] | None) -> None:
        if not 0 <= apic_id < BROADCAST:
            raise ValueError(f"x2APIC id {apic_id:#x} out of range")
        self._bus = bus
        self.apic_id = apic_id
        self.eoi_listener = eoi_listener
        self.notify = notify
        self.counters = ApicCounters()
        # Power-up (§11.12.5.1): enabled, xAPIC mode.
        self._apic_base = APIC_BASE_DEFAULT | APIC_BASE_EN | (APIC_BASE_BSP if bsp else 0)
        self._nmi_pending = False
        self._init_pending = False
        self._sipi_vector: int | None = None
        self._reset_registers()

    @property
    def apic_base(self) -> int:
        """IA32_APIC_BASE; changed only through ``write_msr`` and its checks."""
        return self._apic_base

    @property
    def nmi_pending(self) -> bool:
        return self._nmi_pending

    @property
    def init_pending(self) -> bool:
        return self._init_pending

    @property
    def sipi_vector(self) -> int | None:
        return self._sipi_vector

    # -- state -------------------------------------------------------------------------

    def _reset_registers(self) -> None:
        """Register values after power-up or INIT (§11.4.7.1, §11.4.7.3): everything but
        the ID and IA32_APIC_BASE."""
        self._tpr = 0
        self._svr = SVR_RESET
        self._irr = self._isr = self._tmr = 0
        self._esr = self._esr_pending = 0
        self._icr = 0
        self._lvt = [LVT_MASKED] * len(Lvt)
        self._divide = 0
        self._initial = 0
        self._timer_armed = False
        self._anchor_ns = self._anchor_count = self._fired = 0
        self._tsc_deadline = 0

    @property
    def x2apic_mode(self) -> bool:
        return self._apic_base & _X2APIC_ENABLED == _X2APIC_ENABLED

    @property
    def hw_enabled(self) -> bool:
        """IA32_APIC_BASE.EN: a globally disabled APIC takes no interrupts (§11.4.3)."""
        return bool(self._apic_base & APIC_BASE_EN)

    @property
    def sw_enabled(self) -> bool:
        return bool(self._svr & SVR_ENABLE)

    @property
    def ldr(self) -> int:
        return logical_id(self.apic_id)

    @property
    def ppr(self) -> int:
        """Processor priority (§11.8.3.1)."""
        isrv = self._isr.bit_length() - 1 if self._isr else 0
        return self._tpr if self._tpr >> 4 >= isrv >> 4 else isrv & 0xF0

    @property
    def tpr(self) -> int:
        return self._tpr

    @property
    def cr8(self) -> int:
        """CR8 is TPR[7:4] (§11.8.6.1)."""
        return self._tpr >> 4

    @cr8.setter
    def cr8(self, value: int) -> None:
        self._tpr = (value & 0xF) << 4

    @property
    def irr(self) -> int:
        return self._irr

    @property
    def isr(self) -> int:
        return self._isr

    @property
    def tmr(self) -> int:
        return self._tmr

    def lvt(self, entry: Lvt) -> int:
        return self._lvt[entry]

    @property
    def timer_mode(self) -> TimerMode:
        return TimerMode(self._lvt[Lvt.TIMER] >> 17 & 3)

    # -- MSR interface -----------------------------------------------------------------

    @staticmethod
    def handles(index: int) -> bool:
        """Whether ``index`` is an MSR this model answers (the VMM filters exactly these)."""
        return index in (Msr.APIC_BASE, Msr.TSC_DEADLINE) or (
            X2APIC_MSR_FIRST <= index <= X2APIC_MSR_LAST)

    def read_msr(self, index: int) -> int | Gp:
        """RDMSR: the value, or the reason to inject #GP. The timer catches up with the
        clock first when it is armed (when it is not, that is a no-op and the clock is
        not read)."""
        if index == _M.APIC_BASE:
            return self._apic_base
        armed = self._timer_armed or self._tsc_deadline
        if index == _M.TSC_DEADLINE:
            if armed:
                self._catch_up(self._bus.clock())
            return self._tsc_deadline if self.timer_mode is TimerMode.TSC_DEADLINE else 0
        if not X2APIC_MSR_FIRST <= index <= X2APIC_MSR_LAST:
            return Gp.NOT_APIC_MSR
        if self._apic_base & _X2APIC_ENABLED != _X2APIC_ENABLED:
            return Gp.NOT_X2APIC
        now = None
        if armed:
            now = self._bus.clock()
            self._catch_up(now)
        match index:
            case _M.ID:
                return self.apic_id
            case _M.VERSION:
                return VERSION_VALUE
            case _M.TPR:
                return self._tpr
            case _M.PPR:
                return self.ppr
            case _M.LDR:
                return self.ldr
            case _M.SVR:
                return self._svr
            case _M.ESR:
                return self._esr
            case _M.ICR:
                return self._icr
            case _M.TIMER_INITIAL:
                return self._initial
            case _M.TIMER_CURRENT:
                return self._current_count(self._bus.clock() if now is None else now)
            case _M.TIMER_DIVIDE:
                return self._divide
            case _M.EOI | _M.SELF_IPI:
                return Gp.WRITE_ONLY
        if _M.ISR0 <= index < _M.IRR0 + 8:
            bank = (self._isr, self._tmr, self._irr)[(index - _M.ISR0) >> 3]
            return bank >> (32 * (index & 7)) & U32
        if _M.LVT_TIMER <= index <= _M.LVT_ERROR:
            return self._lvt[index - _M.LVT_TIMER]
        return Gp.RESERVED_REGISTER

    def write_msr(self, index: int, value: int) -> Gp | None:
        """WRMSR of a 64-bit ``value``: None when done, or the reason to inject #GP.
        A refused write changes no register (the timer still catches up with the clock).
        A ``value`` outside 0..2**64-1 is the caller's bug: ValueError."""
        if not 0 <= value <= U64:
            raise ValueError(f"MSR value {value:#x} is not a u64")
        now = self._bus.clock()
        self._catch_up(now)
        if index == _M.APIC_BASE:
            return self._write_apic_base(value)
        if index == _M.TSC_DEADLINE:
            # Outside TSC-deadline mode the write is ignored (§11.5.4.1).
            if self.hw_enabled and self.timer_mode is TimerMode.TSC_DEADLINE:
                self._tsc_deadline = value  # 0 disarms
                self._catch_up(now)  # a deadline already past fires at once
            return None
        if not X2APIC_MSR_FIRST <= index <= X2APIC_MSR_LAST:
            return Gp.NOT_APIC_MSR
        if self._apic_base & _X2APIC_ENABLED != _X2APIC_ENABLED:
            return Gp.NOT_X2APIC
        if index == _M.ICR:
            if value & ICR_RESERVED:
                return Gp.RESERVED_BITS
            self._icr = value & ~ICR_IGNORED
            self._bus.send(self, Ipi.decode(self._icr))
            return None
        if index in _READ_ONLY:
            return Gp.READ_ONLY
        if index not in _WRITABLE:
            return Gp.RESERVED_REGISTER
        if value & ~_WRITABLE[index]:
            return Gp.RESERVED_BITS
        match index:
            case _M.TPR:
                self._tpr = value
            case _M.EOI:
                self.eoi()
            case _M.SVR:
                self._write_svr(value)
            case _M.ESR:
                self._esr, self._esr_pending = self._esr_pending, 0
            case _M.TIMER_INITIAL:
                self._write_initial_count(value, now)
            case _M.TIMER_DIVIDE:
                self._write_divide(value, now)
            case _M.SELF_IPI:
                self._accept_fixed(value, level=False)
            case _:
                self._write_lvt(Lvt(index - _M.LVT_TIMER), value, now)
        return None

    def _write_apic_base(self, value: int) -> Gp | None:
        """§11.4.4 and the transitions of §11.12.5.1."""
        reserved = ~(APIC_BASE_BSP | APIC_BASE_EXTD | APIC_BASE_EN
                     | ((1 << self._bus.phys_addr_bits) - 1) & ~0xFFF)
        if value & reserved:
            return Gp.RESERVED_BITS
        en, extd = bool(value & APIC_BASE_EN), bool(value & APIC_BASE_EXTD)
        if extd and not en:
            return Gp.ILLEGAL_TRANSITION  # the invalid state
        if self.x2apic_mode and en and not extd:
            return Gp.ILLEGAL_TRANSITION  # x2APIC -> xAPIC
        if not self.hw_enabled and extd:
            return Gp.ILLEGAL_TRANSITION  # disabled -> x2APIC
        if self.hw_enabled and not en:
            # The SDM leaves a disabled APIC's registers undefined; these are the power-up values.
            self._reset_registers()
        self._apic_base = value
        return None

    def _write_svr(self, value: int) -> None:
        self._svr = value
        if not value & SVR_ENABLE:  # §11.4.7.2: software disable masks every LVT entry
            self._lvt = [v | LVT_MASKED for v in self._lvt]

    def _write_lvt(self, entry: Lvt, value: int, now: int) -> None:
        if not self.sw_enabled:
            value |= LVT_MASKED  # cannot be unmasked while software-disabled (§11.4.7.2)
        if entry is Lvt.TIMER:
            old, new = self.timer_mode, TimerMode(value >> 17 & 3)
            if (old is TimerMode.TSC_DEADLINE) != (new is TimerMode.TSC_DEADLINE):
                # Switching to or from TSC-deadline mode disarms the timer (§11.5.4.1).
                self._timer_armed = False
                self._initial = 0
                self._tsc_deadline = 0
            elif old is not new and self._timer_armed:
                # One-shot <-> periodic: the count goes on from where it is.
                self._reanchor(now)
            if new is TimerMode.RESERVED:
                self._timer_armed = False
        self._lvt[entry] = value & ~LVT_READ_ONLY[entry]

    # -- delivery ----------------------------------------------------------------------

    def highest_pending(self) -> int | None:
        """The vector the vCPU would take now (§11.8.4): the highest in IRR, if its
        priority class is above PPR's. None when nothing may be delivered."""
        self._catch_up(self._bus.clock())
        if not self._irr or not self.hw_enabled:
            return None
        vector = self._irr.bit_length() - 1
        return vector if vector >> 4 > self.ppr >> 4 else None

    def ack(self) -> int | None:
        """The vCPU takes the interrupt (the INTA cycle): IRR -> ISR; the vector, or None."""
        vector = self.highest_pending()
        if vector is not None:
            self.take(vector)
        return vector

    def take(self, vector: int) -> None:
        """``ack`` of the vector ``highest_pending`` just answered (the caller holds the
        bus lock in between): IRR -> ISR, without looking for it again."""
        self._irr &= ~(1 << vector)
        self._isr |= 1 << vector

    def eoi(self) -> None:
        """End of interrupt (§11.8.5): clears the highest ISR bit; for a level-triggered
        vector (TMR set) the EOI listener hears the vector. No-op with an empty ISR."""
        if not self._isr:
            return
        vector = self._isr.bit_length() - 1
        self._isr &= ~(1 << vector)
        if self._tmr >> vector & 1 and self.eoi_listener is not None:
            self.eoi_listener(vector)

    def raise_fixed(self, vector: int, *, level: bool = False) -> bool:
        """An external fixed interrupt (an IRQ object's signal). Whether IRR took it.
        A vector outside 0..255 is the caller's bug: ValueError."""
        if not 0 <= vector <= 0xFF:
            raise ValueError(f"vector {vector} out of range")
        return self._accept_fixed(vector, level=level)

    def raise_lvt(self, entry: Lvt) -> bool:
        """A local interrupt source fires through its LVT entry (§11.5.1): LINT0/1 pins,
        thermal, performance counters. Whether something was delivered."""
        return self._fire_lvt(entry)

    def take_nmi(self) -> bool:
        """Consume a pending NMI (the VMM injects it with KVM_NMI). NMIs coalesce."""
        pending, self._nmi_pending = self._nmi_pending, False
        return pending

    def take_init(self) -> bool:
        """Consume a received INIT: the VMM puts the vCPU into wait-for-SIPI."""
        pending, self._init_pending = self._init_pending, False
        return pending

    def take_sipi(self) -> int | None:
        """Consume a received start-up vector: the VMM starts a vCPU that waits for SIPI
        at CS = vector << 8, IP = 0, and ignores it otherwise."""
        vector, self._sipi_vector = self._sipi_vector, None
        return vector

    def _accept_fixed(self, vector: int, *, level: bool) -> bool:
        """§11.8.4: a fixed interrupt enters IRR, TMR records its trigger mode."""
        if not self.hw_enabled:
            return False
        if vector < 16:  # §11.5.2
            self.counters.illegal_vectors += 1
            self._error(Esr.RECEIVE_ILLEGAL_VECTOR)
            return False
        if not self.sw_enabled:
            self.counters.dropped_sw_disabled += 1
            return False
        bit = 1 << vector
        if self._irr & bit:
            self.counters.coalesced += 1
        self._irr |= bit
        self._tmr = self._tmr | bit if level else self._tmr & ~bit
        self._notify()
        return True

    def _accept(self, mode: int, vector: int) -> None:
        """A message from the bus: fixed, NMI, INIT or SIPI (§11.6.1)."""
        if not self.hw_enabled:
            return
        if mode in (DeliveryMode.FIXED, DeliveryMode.LOWEST_PRIORITY):
            self._accept_fixed(vector, level=False)
        elif mode == DeliveryMode.NMI:
            self._nmi_pending = True
            self._notify()
        elif mode == DeliveryMode.INIT:
            # §11.12.5.1: INIT keeps the mode and the ID, resets the other registers.
            self._reset_registers()
            self._nmi_pending = False
            self._sipi_vector = None
            self._init_pending = True
            self._notify()
        elif mode == DeliveryMode.STARTUP:
            self._sipi_vector = vector
            self._notify()
        else:
            self.counters.unsupported_delivery += 1

    def _fire_lvt(self, entry: Lvt) -> bool:
        lvt = self._lvt[entry]
        if lvt & LVT_MASKED or not self.hw_enabled:
            return False
        mode = DeliveryMode.FIXED if entry in (Lvt.TIMER, Lvt.ERROR) else lvt >> 8 & 7
        if mode == DeliveryMode.FIXED:
            return self._accept_fixed(lvt & 0xFF, level=False)
        if mode == DeliveryMode.NMI:
            self._nmi_pending = True
            self._notify()
            return True
        self.counters.unsupported_delivery += 1
        return False

    def _error(self, bits: Esr) -> None:
        """§11.5.3: record in the ESR's hidden half; raise the error LVT interrupt, unless
        its own vector is illegal (which only records the receive error)."""
        self._esr_pending |= bits
        lvt = self._lvt[Lvt.ERROR]
        if lvt & LVT_MASKED or not self.sw_enabled:
            return
        if lvt & 0xFF < 16:
            self._esr_pending |= Esr.RECEIVE_ILLEGAL_VECTOR
            self.counters.illegal_vectors += 1
            return
        self._accept_fixed(lvt & 0xFF, level=False)

    def _notify(self) -> None:
        if self.notify is not None:
            self.notify(self)

    # -- timer -------------------------------------------------------------------------

    def next_deadline_ns(self) -> int | None:
        """Clock time of the timer's next expiry, or None when it is not armed."""
        mode = self.timer_mode
        if mode is TimerMode.TSC_DEADLINE:
            return self._bus.tsc.ns_at(self._tsc_deadline) if self._tsc_deadline else None
        if not self._timer_armed:
            return None
        position = self._anchor_count + (self._fired * self._initial
                                         if mode is TimerMode.PERIODIC else 0)
        return self._anchor_ns + self._ns_for_counts(position)

    def expire_timers(self) -> bool:
        """Fire whatever is due at the clock's time; whether the timer expired."""
        return self._catch_up(self._bus.clock())

    def _catch_up(self, now: int) -> bool:
        if not self._timer_armed and not self._tsc_deadline:
            return False  # the common case, on every access: nothing is armed
        mode = self.timer_mode
        if mode is TimerMode.TSC_DEADLINE:
            if self._tsc_deadline and self._bus.tsc.tsc_at(now) >= self._tsc_deadline:
                self._tsc_deadline = 0
                self._fire_lvt(Lvt.TIMER)
                return True
            return False
        if not self._timer_armed:
            return False
        elapsed = self._counts_since_anchor(now)
        if elapsed < self._anchor_count:
            return False
        if mode is TimerMode.ONE_SHOT:
            self._timer_armed = False
        else:
            expirations = 1 + (elapsed - self._anchor_count) // self._initial
            if expirations == self._fired:
                return False
            self.counters.timer_coalesced += expirations - self._fired - 1
            self._fired = expirations
        self._fire_lvt(Lvt.TIMER)
        return True

    def _counts_since_anchor(self, now: int) -> int:
        return (now - self._anchor_ns) * self._bus.timer_hz // (NS_PER_S * divisor(self._divide))

    def _ns_for_counts(self, counts: int) -> int:
        """Nanoseconds until the counter has moved ``counts`` times (rounded up)."""
        return -(-counts * NS_PER_S * divisor(self._divide) // self._bus.timer_hz)

    def _current_count(self, now: int) -> int:
        if not self._timer_armed or self.timer_mode is TimerMode.TSC_DEADLINE:
            return 0
        elapsed = self._counts_since_anchor(now)
        if elapsed < self._anchor_count:
            return self._anchor_count - elapsed
        if self.timer_mode is TimerMode.PERIODIC:
            return self._initial - (elapsed - self._anchor_count) % self._initial
        return 0

    def _reanchor(self, now: int) -> None:
        """Count on from the current value at ``now`` (divide or mode change)."""
        current = self._current_count(now)
        self._anchor_ns, self._anchor_count, self._fired = now, current, 0
        self._timer_armed = current > 0

    def _write_initial_count(self, value: int, now: int) -> None:
        mode = self.timer_mode
        if mode is TimerMode.TSC_DEADLINE:
            return  # ignored in TSC-deadline mode (§11.5.4.1)
        self._initial = value
        self._anchor_ns, self._anchor_count, self._fired = now, value, 0
        # A zero initial count stops the timer (§11.5.4).
        self._timer_armed = value != 0 and mode is not TimerMode.RESERVED

    def _write_divide(self, value: int, now: int) -> None:
        current = self._current_count(now) if self._timer_armed else 0
        self._divide = value
        if self._timer_armed:
            self._anchor_ns, self._anchor_count, self._fired = now, current, 0
            self._timer_armed = current > 0


_READ_ONLY: Final = frozenset(
    {Msr.ID, Msr.VERSION, Msr.PPR, Msr.LDR, Msr.TIMER_CURRENT} | set(range(Msr.ISR0, Msr.IRR0 + 8)))
#: Writable registers -> the bits a write may set (all others reserved, §11.12.1.3).
_WRITABLE: Final = {
    Msr.TPR: 0xFF,
    Msr.EOI: 0,  # only zero may be written
    Msr.SVR: SVR_WRITABLE,
    Msr.ESR: 0,  # only zero may be written in x2APIC mode
    Msr.TIMER_INITIAL: U32,
    Msr.TIMER_DIVIDE: DIVIDE_WRITABLE,
    Msr.SELF_IPI: 0xFF,
    **{Msr.LVT_TIMER + e: LVT_WRITABLE[e] | LVT_READ_ONLY[e] for e in Lvt},
}


class ApicBus:
    """The APICs of one guest, and the path an ICR write takes to its destinations.

    Routing follows §11.6.1 and §11.12.10; the valid combinations of shorthand, delivery
    mode and trigger mode are those of §11.6.1's table: a level-triggered IPI is sent as
    edge when its level bit is set and ignored otherwise (so INIT de-assert is ignored);
    self and all-including-self carry only fixed interrupts; reserved modes, SMI and
    ExtINT are ignored and counted. A lowest-priority IPI goes to the addressed APIC with
    the lowest PPR, the lowest id among equals (the SDM leaves the arbitration to the
    implementation). A fixed or lowest-priority IPI with a vector below 16 sets the
    sender's send-illegal-vector bit and each receiver's receive-illegal-vector bit.
    """

    def __init__(self, clock: Callable[[], int], *, timer_hz: int = NS_PER_S,
                 tsc: TscMap | None = None, phys_addr_bits: int = 46) -> None:
        if timer_hz <= 0:
            raise ValueError("timer_hz must be positive")
        self.clock = clock
        self.timer_hz = timer_hz
        self.tsc = tsc or TscMap()
        self.phys_addr_bits = phys_addr_bits
        self.lock = threading.Lock()  #: held by the caller around every call (see module)
        self._apics: dict[int, X2Apic] = {}

    def create(self, apic_id: int, *, bsp: bool = False,
               eoi_listener: Callable[[int], None] | None = None,
               notify: Callable[[X2Apic], None] | None = None) -> X2Apic:
        """A new APIC on this bus. ``notify(apic)`` runs whenever something becomes
        pending on it (interrupt, NMI, INIT, SIPI): the VMM kicks or wakes its vCPU."""
        if apic_id in self._apics:
            raise ValueError(f"x2APIC id {apic_id} already exists on this bus")
        apic = X2Apic(self, apic_id, bsp=bsp, eoi_listener=eoi_listener, notify=notify)
        self._apics[apic_id] = apic
        return apic

    def __getitem__(self, apic_id: int) -> X2Apic:
        return self._apics[apic_id]

    def __iter__(self) -> Iterator[X2Apic]:
        return iter(self._apics.values())

    def __len__(self) -> int:
        return len(self._apics)

    def next_deadline_ns(self) -> int | None:
        """The earliest timer deadline of all the guest's APICs."""
        deadlines = [d for a in self._apics.values() if (d := a.next_deadline_ns()) is not None]
        return min(deadlines, default=None)

    def send(self, sender: X2Apic, ipi: Ipi) -> None:
        mode = ipi.mode
        if ipi.level_triggered and not ipi.assert_level:
            sender.counters.ipis_ignored += 1  # de-assert (e.g. INIT level de-assert)
            return
        if mode not in (DeliveryMode.FIXED, DeliveryMode.LOWEST_PRIORITY, DeliveryMode.NMI,
                        DeliveryMode.INIT, DeliveryMode.STARTUP):
            sender.counters.unsupported_delivery += 1
            return
        if ipi.shorthand in (Shorthand.SELF, Shorthand.ALL_INCLUDING_SELF) \
                and mode != DeliveryMode.FIXED:
            sender.counters.ipis_ignored += 1
            return
        targets = self._destinations(sender, ipi)
        if mode in (DeliveryMode.FIXED, DeliveryMode.LOWEST_PRIORITY) and ipi.vector < 16:
            sender._error(Esr.SEND_ILLEGAL_VECTOR)
        if mode == DeliveryMode.LOWEST_PRIORITY:
            candidates = [a for a in targets if a.hw_enabled and a.sw_enabled]
            targets = [min(candidates, key=lambda a: (a.ppr, a.apic_id))] if candidates else []
        for target in targets:
            target._accept(mode, ipi.vector)

    def _destinations(self, sender: X2Apic, ipi: Ipi) -> list[X2Apic]:
        match ipi.shorthand:
            case Shorthand.SELF:
                return [sender]
            case Shorthand.ALL_INCLUDING_SELF:
                return list(self._apics.values())
            case Shorthand.ALL_EXCLUDING_SELF:
                return [a for a in self._apics.values() if a is not sender]
        dest = ipi.destination
        if dest == BROADCAST:
            return list(self._apics.values())
        if not ipi.logical:
            apic = self._apics.get(dest)
            return [apic] if apic is not None else []
        # §11.12.10.1: same cluster (bits 31:16), and a common bit in the 16-bit mask.
        return [a for a in self._apics.values()
                if a.ldr >> 16 == dest >> 16 and a.ldr & dest & 0xFFFF]
