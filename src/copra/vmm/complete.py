"""Instructions a guest executes that KVM's instruction emulator cannot: the VMM does them.

On PVM hosts KVM runs a guest's ring 0 in its instruction emulator, which cannot execute
IRET in protected or long mode: the guest stops with KVM_EXIT_INTERNAL_ERROR, suberror 1
(emulation failure), at the IRET itself, with its state intact
(measured on PVM hosts, docs/guests.md; QEMU 7.2 on the same host stops the same
way). ``complete`` finishes such an instruction on the guest's state
(struct kvm_regs / kvm_sregs and guest memory), so the VMM can write the state back and
resume the guest.

Completed: IRET (opcode CF; a 66 prefix switches the operand size) in 16- and 32-bit
protected mode with paging off, following the IRET pseudo-code of the Intel SDM vol. 2A
("IRET/IRETD/IRETQ": PROTECTED-MODE, RETURN-TO-SAME-PRIVILEGE-LEVEL and
RETURN-TO-OUTER-PRIVILEGE-LEVEL):

- pops (E)IP, CS and (E)FLAGS from SS:(E)SP (the stack's B bit picks ESP or SP);
- the new CS must be a present code segment of the GDT with RPL >= CPL and DPL = RPL
  (non-conforming) or DPL <= RPL (conforming), and (E)IP must be within its limit;
- to an outer level (RPL > CPL, e.g. into the guest's own CPL3) it also pops (E)SP and SS
  (a present writable data segment with RPL = DPL = the new CPL), and nulls each of DS,
  ES, FS, GS whose segment the new level may not use;
- EFLAGS: the operand's bits, except that IOPL, VIF and VIP change only at CPL 0 and IF
  only at CPL <= IOPL; with a 16-bit operand only the low 16 bits change.

Refused, with the reason (the guest is then stopped and the report shows the instruction
bytes): every case in which the SDM raises an exception (copra stops the guest rather than
deliver a fault on its behalf: a wrong completion would be silent, a stop is not); real
mode and virtual-8086 mode (KVM's emulator runs real-mode IRET itself; a return to
virtual-8086 mode is not done); a task return (EFLAGS.NT); long mode (IRETQ); paging on
(there is no guest page walk yet); LDT selectors; expand-down stacks; any other
instruction or prefix. The accessed bit of a loaded descriptor is not written back to
the guest's GDT. Interrupt shadows and NMI blocking are left to KVM.

Pure functions over the state they are given; no locks (the vCPU's thread calls them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from copra.hw.kvm import KvmRegs, KvmSegment, KvmSregs
from copra.vmm.descriptors import TYPE_CODE_CONFORMING, TYPE_DATA_EXPAND_DOWN, Descriptor

CR0_PE: Final = 1 << 0
CR0_PG: Final = 1 << 31
EFER_LMA: Final = 1 << 10
FLAG_IF: Final = 1 << 9
FLAG_IOPL: Final = 3 << 12
FLAG_NT: Final = 1 << 14
FLAG_VM: Final = 1 << 17
FLAG_VIF: Final = 1 << 19
FLAG_VIP: Final = 1 << 20
#: EFLAGS bits an IRET may load: CF PF AF ZF SF TF IF DF OF IOPL NT RF AC VIF VIP ID.
IRET_FLAGS: Final = 0x3F7FD5 & ~FLAG_VM
FLAGS_FIXED_ONE: Final = 1 << 1
OPERAND_SIZE_PREFIX: Final = 0x66
IRET: Final = 0xCF

#: Reads ``size`` bytes of guest-physical memory at an address; None outside RAM.
ReadMemory = Callable[[int, int], bytes | None]


class Refused(Exception):
    """The instruction is not one copra completes, or completing it would fault."""


def complete(insn: bytes, regs: KvmRegs, sregs: KvmSregs, read: ReadMemory) -> str:
    """Execute the instruction at the start of ``insn`` on regs/sregs (changed in place
    only on success); returns its name. Raises Refused saying why not."""
    if not insn:
        raise Refused("the instruction's bytes could not be read (outside guest RAM)")
    prefixes = 0
    operand_toggle = False
    while prefixes < len(insn) and insn[prefixes] == OPERAND_SIZE_PREFIX:
        operand_toggle = True
        prefixes += 1
    if prefixes >= len(insn) or insn[prefixes] != IRET:
        raise Refused("not an instruction copra completes (only IRET)")
    _iret(regs, sregs, read, operand_toggle)
    return "iret"


def _iret(regs: KvmRegs, sregs: KvmSregs, read: ReadMemory, operand_toggle: bool) -> None:
    if not sregs.cr0 & CR0_PE:
        raise Refused("real mode (KVM's emulator runs real-mode IRET itself)")
    if sregs.efer & EFER_LMA:
        raise Refused("long mode: IRETQ is not completed yet")
    if sregs.cr0 & CR0_PG:
        raise Refused("paging is on: there is no guest page walk yet")
    if regs.rflags & FLAG_VM:
        raise Refused("virtual-8086 mode")
    if regs.rflags & FLAG_NT:
        raise Refused("task return (EFLAGS.NT set)")
    op32 = bool(sregs.cs.db) != operand_toggle
    width = 4 if op32 else 2
    cpl = sregs.cs.selector & 3
    stack = _Stack(sregs.ss, regs.rsp, read)
    new_ip = stack.pop(width)
    new_cs = stack.pop(width) & 0xFFFF
    new_flags = stack.pop(width)
    if op32 and new_flags & FLAG_VM and cpl == 0:
        raise Refused("return to virtual-8086 mode")
    if new_cs & ~3 == 0:
        raise Refused("#GP: return to a null CS")
    code = _descriptor(new_cs, sregs, read, "CS")
    rpl = new_cs & 3
    if rpl < cpl:
        raise Refused(f"#GP: return to CS {new_cs:#x} with RPL {rpl} < CPL {cpl}")
    if not code.is_code:
        raise Refused(f"#GP: CS {new_cs:#x} is not a code segment")
    if code.type & TYPE_CODE_CONFORMING and code.dpl > rpl:
        raise Refused(f"#GP: conforming CS {new_cs:#x} has DPL {code.dpl} > RPL {rpl}")
    if not code.type & TYPE_CODE_CONFORMING and code.dpl != rpl:
        raise Refused(f"#GP: CS {new_cs:#x} has DPL {code.dpl} != RPL {rpl}")
    if not code.present:
        raise Refused(f"#NP: CS {new_cs:#x} is not present")
    if not op32:
        new_ip &= 0xFFFF
    if new_ip > code.limit:
        raise Refused(f"#GP: EIP {new_ip:#x} beyond the limit of CS {new_cs:#x}")
    flags = _new_flags(regs.rflags, new_flags, op32, cpl)

    outer: tuple[int, int, Descriptor] | None = None
    if rpl > cpl:
        new_sp = stack.pop(width)
        new_ss = stack.pop(width) & 0xFFFF
        if new_ss & ~3 == 0:
            raise Refused("#GP: return to an outer level with a null SS")
        data = _descriptor(new_ss, sregs, read, "SS")
        if new_ss & 3 != rpl or not data.is_writable_data or data.dpl != rpl:
            raise Refused(f"#GP: SS {new_ss:#x} is not a writable data segment of level {rpl}")
        if not data.present:
            raise Refused(f"#SS: SS {new_ss:#x} is not present")
        outer = (new_sp, new_ss, data)

    # Nothing can fail from here: commit.
    regs.rip = new_ip
    regs.rflags = flags
    _load(sregs.cs, new_cs, code)
    if outer is None:
        regs.rsp = stack.final_rsp()
        return
    new_sp, new_ss, data = outer
    regs.rsp = new_sp if data.db else (regs.rsp & ~0xFFFF) | (new_sp & 0xFFFF)
    _load(sregs.ss, new_ss, data)
    for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs):
        conforming_code = seg.s and seg.type & 0x8 and seg.type & TYPE_CODE_CONFORMING
        if not seg.unusable and seg.dpl < rpl and not conforming_code:
            _null(seg)


def _new_flags(old: int, popped: int, op32: bool, cpl: int) -> int:
    mask = IRET_FLAGS if op32 else IRET_FLAGS & 0xFFFF
    if cpl > 0:
        mask &= ~(FLAG_IOPL | FLAG_VIF | FLAG_VIP)
    if cpl > (old & FLAG_IOPL) >> 12:
        mask &= ~FLAG_IF
    return ((old & ~mask) | (popped & mask) | FLAGS_FIXED_ONE) & 0xFFFF_FFFF


class _Stack:
    """Pops from SS:(E)SP, checking the segment limit as the processor does (#SS)."""

    def __init__(self, ss: KvmSegment, rsp: int, read: ReadMemory) -> None:
        if ss.s and not ss.type & 0x8 and ss.type & TYPE_DATA_EXPAND_DOWN:
            raise Refused("an expand-down stack segment")
        self._ss = ss
        self._mask = 0xFFFF_FFFF if ss.db else 0xFFFF
        self._rsp = rsp
        self._sp = rsp & self._mask
        self._read = read

    def pop(self, width: int) -> int:
        if self._sp + width - 1 > self._ss.limit:
            raise Refused(f"#SS: stack pointer {self._sp:#x} beyond the stack's limit")
        raw = self._read((self._ss.base + self._sp) & 0xFFFF_FFFF, width)
        if raw is None:
            raise Refused(f"the stack at {self._ss.base + self._sp:#x} is outside guest RAM")
        self._sp = (self._sp + width) & self._mask
        return int.from_bytes(raw, "little")

    def final_rsp(self) -> int:
        return (self._rsp & ~self._mask) | self._sp


def _descriptor(selector: int, sregs: KvmSregs, read: ReadMemory, what: str) -> Descriptor:
    if selector & 4:
        raise Refused(f"{what} {selector:#x} is in the LDT (not supported)")
    offset = selector & ~7
    if offset + 7 > sregs.gdt.limit:
        raise Refused(f"#GP: {what} {selector:#x} is beyond the GDT's limit")
    raw = read((sregs.gdt.base + offset) & 0xFFFF_FFFF, 8)
    if raw is None:
        raise Refused(f"the GDT entry of {what} {selector:#x} is outside guest RAM")
    return Descriptor.decode(int.from_bytes(raw, "little"))


def _load(seg: KvmSegment, selector: int, d: Descriptor) -> None:
    seg.selector = selector
    seg.base = d.base
    seg.limit = d.limit
    seg.type = d.type | 1  # loading a segment marks it accessed
    seg.present = d.present
    seg.dpl = d.dpl
    seg.db = d.db
    seg.s = d.s
    seg.l = d.l
    seg.g = d.g
    seg.avl = d.avl
    seg.unusable = 0


def _null(seg: KvmSegment) -> None:
    seg.selector = 0
    seg.base = 0
    seg.limit = 0
    seg.type = 0
    seg.present = 0
    seg.dpl = 0
    seg.db = 0
    seg.s = 0
    seg.l = 0
    seg.g = 0
    seg.avl = 0
    seg.unusable = 1


def segment(selector: int, d: Descriptor) -> KvmSegment:
    """struct kvm_segment for a loaded descriptor."""
    seg = KvmSegment()
    _load(seg, selector, d)
    return seg
