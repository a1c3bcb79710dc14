"""IRET completed by the VMM, checked against the SDM's IRET pseudo-code (vol. 2A,
"IRET/IRETD/IRETQ": PROTECTED-MODE, RETURN-TO-SAME-PRIVILEGE-LEVEL,
RETURN-TO-OUTER-PRIVILEGE-LEVEL), on plain register structures and a byte array."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from copra.hw.kvm import KvmRegs, KvmSregs
from copra.vmm.complete import Refused, complete, segment
from copra.vmm.descriptors import FLAT_CODE32, FLAT_DATA32, Descriptor

GDT = 0x1000
STACK = 0x8000
MEMORY = 0x10000
CODE3 = Descriptor(base=0, limit=0xFFFF_FFFF, type=0xB, s=1, dpl=3, present=1, db=1, g=1)
DATA3 = Descriptor(base=0, limit=0xFFFF_FFFF, type=0x3, s=1, dpl=3, present=1, db=1, g=1)
CODE16 = Descriptor(base=0x10000, limit=0xFFFF, type=0xB, s=1, dpl=0, present=1)
CONFORMING = Descriptor(base=0, limit=0xFFFF_FFFF, type=0xF, s=1, dpl=0, present=1, db=1, g=1)
ABSENT = Descriptor(base=0, limit=0xFFFF_FFFF, type=0xB, s=1, dpl=0, present=0, db=1, g=1)
SMALL = Descriptor(base=0, limit=0x1000, type=0xB, s=1, dpl=0, present=1, db=1)
ENTRIES = [None, FLAT_CODE32, FLAT_DATA32, CODE3, DATA3, CODE16, CONFORMING, ABSENT, SMALL]
SEL = {"code": 0x08, "data": 0x10, "code3": 0x1B, "data3": 0x23, "code16": 0x28,
       "conforming": 0x30, "absent": 0x38, "small": 0x40}
IRET = b"\xcf"


class Machine:
    def __init__(self) -> None:
        self.memory = bytearray(MEMORY)
        for i, d in enumerate(ENTRIES):
            raw = d.encode() if d is not None else 0
            struct.pack_into("<Q", self.memory, GDT + 8 * i, raw)
        self.regs = KvmRegs()
        self.regs.rflags = 0x2
        self.regs.rsp = STACK
        self.sregs = KvmSregs()
        self.sregs.cr0 = 1
        self.sregs.cs = segment(SEL["code"], FLAT_CODE32)
        data = segment(SEL["data"], FLAT_DATA32)
        self.sregs.ss = self.sregs.ds = self.sregs.es = self.sregs.fs = self.sregs.gs = data
        self.sregs.gdt.base = GDT
        self.sregs.gdt.limit = 8 * len(ENTRIES) - 1

    def push(self, *words: int, width: int = 4) -> None:
        fmt = "<I" if width == 4 else "<H"
        for w in reversed(words):
            self.regs.rsp -= width
            struct.pack_into(fmt, self.memory, self.regs.rsp, w)

    def read(self, address: int, size: int) -> bytes | None:
        if address + size > MEMORY:
            return None
        return bytes(self.memory[address:address + size])

    def iret(self, insn: bytes = IRET) -> str:
        return complete(insn, self.regs, self.sregs, self.read)


def test_same_level_iret_pops_eip_cs_eflags() -> None:
    m = Machine()
    m.push(0x101234, SEL["code"], 0x246)
    assert m.iret() == "iret"
    assert (m.regs.rip, m.regs.rsp, m.regs.rflags) == (0x101234, STACK, 0x246)
    assert (m.sregs.cs.selector, m.sregs.cs.db, m.sregs.cs.dpl) == (SEL["code"], 1, 0)


def test_iret_at_cpl0_loads_if_and_iopl() -> None:
    m = Machine()
    m.regs.rflags = 0x202
    m.push(0x1000, SEL["code"], 0x3002)
    m.iret()
    assert m.regs.rflags == 0x3002


def test_iret_keeps_reserved_flags_clear_and_bit_1_set() -> None:
    m = Machine()
    m.push(0x1000, SEL["code"], 0xFFFF_FFFF & ~(1 << 17))
    m.iret()
    assert m.regs.rflags == 0x3D7FD7


def test_operand_size_prefix_pops_16_bit_words_and_keeps_high_flags() -> None:
    m = Machine()
    m.regs.rflags = 0x40002  # AC set: a 16-bit IRET leaves it
    m.push(0x1234, SEL["code"], 0x0003, width=2)
    m.iret(b"\x66\xcf")
    assert (m.regs.rip, m.regs.rsp, m.regs.rflags) == (0x1234, STACK, 0x40003)


def test_iret_to_a_16_bit_code_segment_loads_it() -> None:
    m = Machine()
    m.push(0x0042, SEL["code16"], 0x2)
    m.iret()
    assert (m.regs.rip, m.sregs.cs.base, m.sregs.cs.db) == (0x42, 0x10000, 0)


def test_iret_to_a_conforming_segment_of_lower_dpl() -> None:
    m = Machine()
    m.push(0x1000, SEL["conforming"], 0x2)
    m.iret()
    assert m.sregs.cs.selector == SEL["conforming"]


def test_iret_to_cpl3_pops_esp_ss_and_nulls_kernel_data_segments() -> None:
    m = Machine()
    m.sregs.fs = segment(SEL["data3"], DATA3)
    m.push(0x400000, SEL["code3"], 0x202, 0x7000_0000, SEL["data3"])
    m.iret()
    assert (m.regs.rip, m.regs.rsp, m.regs.rflags) == (0x400000, 0x7000_0000, 0x202)
    assert (m.sregs.cs.selector, m.sregs.cs.dpl) == (SEL["code3"], 3)
    assert (m.sregs.ss.selector, m.sregs.ss.dpl) == (SEL["data3"], 3)
    assert [s.selector for s in (m.sregs.ds, m.sregs.es, m.sregs.gs)] == [0, 0, 0]
    assert all(s.unusable for s in (m.sregs.ds, m.sregs.es, m.sregs.gs))
    assert m.sregs.fs.selector == SEL["data3"]  # DPL 3: the new level may use it


def test_iret_from_cpl3_keeps_iopl_and_if_when_cpl_above_iopl() -> None:
    m = Machine()
    m.sregs.cs = segment(SEL["code3"], CODE3)
    m.sregs.ss = segment(SEL["data3"], DATA3)
    m.regs.rflags = 0x202
    m.push(0x400000, SEL["code3"], 0x3000)
    m.iret()
    assert m.regs.rflags == 0x202


def refusal(m: Machine, insn: bytes = IRET) -> str:
    before = (bytes(m.regs), bytes(m.sregs))
    with pytest.raises(Refused) as e:
        m.iret(insn)
    assert (bytes(m.regs), bytes(m.sregs)) == before  # nothing changed
    return str(e.value)


@pytest.mark.parametrize(("frame", "reason"), [
    ((0x1000, 0, 0x2), "null"),
    ((0x1000, 0x1008, 0x2), "beyond the GDT"),
    ((0x1000, 0x0C, 0x2), "LDT"),
    ((0x1000, SEL["data"], 0x2), "not a code segment"),
    ((0x1000, SEL["code"] | 3, 0x2), "DPL 0 != RPL 3"),
    ((0x1000, SEL["absent"], 0x2), "not present"),
    ((0x2000, SEL["small"], 0x2), "beyond the limit"),
    ((0x1_0000, SEL["code16"], 0x2), "beyond the limit"),
    ((0x1000, SEL["code"], 0x20002), "virtual-8086"),
    ((0x1000, SEL["code3"], 0x2, 0x7000, 0), "null SS"),
    ((0x1000, SEL["code3"], 0x2, 0x7000, SEL["data"]), "writable data segment of level 3"),
])
def test_iret_that_would_fault_is_refused(frame: tuple[int, ...], reason: str) -> None:
    m = Machine()
    m.push(*frame)
    assert reason in refusal(m)


def test_iret_to_an_inner_level_is_refused() -> None:
    m = Machine()
    m.sregs.cs = segment(SEL["code3"], CODE3)
    m.push(0x1000, SEL["code"], 0x2)
    assert "RPL 0 < CPL 3" in refusal(m)


@pytest.mark.parametrize(("setup", "reason"), [
    (lambda m: setattr(m.sregs, "cr0", 0), "real mode"),
    (lambda m: setattr(m.sregs, "cr0", 0x8000_0001), "paging"),
    (lambda m: setattr(m.sregs, "efer", 0x500), "long mode"),
    (lambda m: setattr(m.regs, "rflags", 0x20002), "virtual-8086"),
    (lambda m: setattr(m.regs, "rflags", 0x4002), "task return"),
    (lambda m: setattr(m.regs, "rsp", MEMORY - 4), "outside guest RAM"),
])
def test_iret_in_an_unsupported_state_is_refused(setup: object, reason: str) -> None:
    m = Machine()
    m.push(0x1000, SEL["code"], 0x2)
    setup(m)  # type: ignore[operator]
    assert reason in refusal(m)


def test_stack_beyond_its_segment_limit_is_refused() -> None:
    m = Machine()
    m.push(0x1000, SEL["code"], 0x2)
    m.sregs.ss.limit = STACK - 8
    assert "#SS" in refusal(m)


@pytest.mark.parametrize("insn", [b"\x90", b"\x66", b"\xf0\xcf", b"\x48\xcf"])
def test_other_instructions_are_refused(insn: bytes) -> None:
    assert "only IRET" in refusal(Machine(), insn)


def test_missing_instruction_bytes_are_refused() -> None:
    assert "could not be read" in refusal(Machine(), b"")


@given(st.binary(min_size=24, max_size=24), st.binary(min_size=8, max_size=8),
       st.integers(0, 0xFFFF_FFFF), st.sampled_from([b"\xcf", b"\x66\xcf"]))
def test_iret_on_any_stack_and_gdt_entry_completes_or_is_refused(
        stack: bytes, entry: bytes, flags: int, insn: bytes) -> None:
    m = Machine()
    m.memory[STACK:STACK + 24] = stack
    m.memory[GDT + 8:GDT + 16] = entry
    m.regs.rflags = (flags & 0x3D7FD5 & ~0x4000) | 2
    try:
        m.iret(insn)
    except Refused:
        return
    assert m.regs.rip <= m.sregs.cs.limit
    assert m.sregs.cs.s == 1 and m.sregs.cs.type & 0x8 and m.sregs.cs.present
