"""The run page of a VCPU: what the kernel writes there, and what it takes back.

The layout is ``spec.RUN_PAGE`` (version ``RUN_PAGE_VERSION``) with the payload
structures ``VcpuIo``, ``VcpuMmio``, ``VcpuMsr``, ``VcpuCpuid`` and ``VcpuFailure``
overlaid at ``RUN_PAGE_PAYLOAD`` by exit reason; docs/abi.md has the table of who
writes which field and when. The rules this module enforces:

- The kernel writes ``version`` at VCPU_OPEN, and at every return of VCPU_RUN with 0
  the exit reason, its payload (every field, the answer fields zeroed or preset to
  the value KVM would give), the I/O data of an OUT and the guest's registers.
- The kernel never trusts what it wrote: it keeps the exit it reported (``Pending``)
  and reads back only the **answer** fields of that exit (MSR_READ: ``data`` and
  ``error``; MSR_WRITE: ``error``; MMIO read: ``data``; IN: the ``io_data`` bytes;
  CPUID: the four registers) and ``regs_dirty`` with ``regs``. Whatever user mode
  scribbled elsewhere is ignored.
- ``read_answer`` validates before anything changes: ``error`` other than 0 or 1,
  ``regs_dirty`` other than 0 or REGS_DIRTY, and registers no x86 CPU can hold
  (RFLAGS with reserved bits, a non-canonical RIP) raise ``AnswerError``, which
  VCPU_RUN turns into EINVAL with the guest untouched: the exit stays pending and a
  corrected answer completes it.

Pure functions over a writable buffer (the page, seen through the SVSM's memory): no
KVM, no locks. The caller (vmm/vcpu.py) holds the VCPU's runner claim.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from copra.abi.spec import (
    GUEST_REGISTERS,
    REGS_DIRTY,
    RUN_PAGE,
    RUN_PAGE_IO_DATA,
    RUN_PAGE_IO_DATA_SIZE,
    RUN_PAGE_PAYLOAD,
    RUN_PAGE_PAYLOAD_SIZE,
    RUN_PAGE_VERSION,
    IoDirection,
    VcpuExit,
)

Buffer = memoryview | bytearray

_OFF = {f.name: f.offset for f in RUN_PAGE.fields}
VERSION_OFFSET: Final = _OFF["version"]
REASON_OFFSET: Final = _OFF["exit_reason"]
DIRTY_OFFSET: Final = _OFF["regs_dirty"]
REGS_OFFSET: Final = _OFF["regs"]
REGS_SIZE: Final = 8 * len(GUEST_REGISTERS)
_P = RUN_PAGE_PAYLOAD
_U32 = struct.Struct("<I")
_IO = struct.Struct("<HBBI")  # port, size, direction, count
_MMIO = struct.Struct("<QIB3xQ")  # address, length, is_write, data
_MSR = struct.Struct("<IB3xQ")  # index, error, data
_CPUID = struct.Struct("<IIIIII")  # leaf, subleaf, eax, ebx, ecx, edx
_FAILURE = struct.Struct("<II16s")  # code, insn_length, insn
_REGS = struct.Struct(f"<{len(GUEST_REGISTERS)}Q")
_RIP = GUEST_REGISTERS.index("rip")
_RFLAGS = GUEST_REGISTERS.index("rflags")
#: RFLAGS bits that must be 0 (1, 3, 5, 15 and 22-63 reserved; bit 1 must be 1).
RFLAGS_RESERVED: Final = ~0x3F_7FD7 & ((1 << 64) - 1)
RFLAGS_FIXED: Final = 1 << 1


class AnswerError(ValueError):
    """User mode left a value in the run page no answer may hold (EINVAL)."""


@dataclass(frozen=True, slots=True)
class Io:
    port: int
    size: int
    is_write: bool
    count: int  #: items in this piece (count * size <= RUN_PAGE_IO_DATA_SIZE)


@dataclass(frozen=True, slots=True)
class Mmio:
    address: int
    length: int
    is_write: bool
    data: int  #: the value written (a write)


@dataclass(frozen=True, slots=True)
class Msr:
    index: int
    is_write: bool
    data: int  #: the value written (a write)


@dataclass(frozen=True, slots=True)
class Cpuid:
    leaf: int
    subleaf: int


@dataclass(frozen=True, slots=True)
class Plain:
    """An exit with no answer: HLT, SHUTDOWN."""

    reason: VcpuExit


@dataclass(frozen=True, slots=True)
class Failure:
    reason: VcpuExit  #: EMULATION_FAILURE or INTERNAL_ERROR
    code: int
    insn: bytes


Pending = Io | Mmio | Msr | Cpuid | Plain | Failure


@dataclass(frozen=True, slots=True)
class Answer:
    """What user mode answered to a pending exit, validated."""

    error: bool = False  #: MSR: inject #GP
    value: int = 0  #: MSR_READ data, MMIO read data
    data: bytes = b""  #: IN: size * count bytes
    cpuid: tuple[int, int, int, int] = (0, 0, 0, 0)


def init_page(page: Buffer) -> None:
    page[:RUN_PAGE.size] = bytes(RUN_PAGE.size)
    _U32.pack_into(page, VERSION_OFFSET, RUN_PAGE_VERSION)


def io_capacity(size: int) -> int:
    """Items of ``size`` bytes one IO exit carries."""
    return RUN_PAGE_IO_DATA_SIZE // size


def write_exit(page: Buffer, ex: Pending, out_data: bytes = b"") -> None:
    """Publish ``ex`` (every payload byte written; ``out_data``: an OUT's items)."""
    page[_P:_P + RUN_PAGE_PAYLOAD_SIZE] = bytes(RUN_PAGE_PAYLOAD_SIZE)
    if isinstance(ex, Io):
        reason = VcpuExit.IO
        _IO.pack_into(page, _P, ex.port, ex.size,
                      IoDirection.OUT if ex.is_write else IoDirection.IN, ex.count)
        if ex.is_write:
            page[RUN_PAGE_IO_DATA:RUN_PAGE_IO_DATA + len(out_data)] = out_data
    elif isinstance(ex, Mmio):
        reason = VcpuExit.MMIO
        _MMIO.pack_into(page, _P, ex.address, ex.length, int(ex.is_write),
                        ex.data if ex.is_write else 0)
    elif isinstance(ex, Msr):
        reason = VcpuExit.MSR_WRITE if ex.is_write else VcpuExit.MSR_READ
        _MSR.pack_into(page, _P, ex.index, 0, ex.data if ex.is_write else 0)
    elif isinstance(ex, Cpuid):
        reason = VcpuExit.CPUID
        _CPUID.pack_into(page, _P, ex.leaf, ex.subleaf, 0, 0, 0, 0)
    elif isinstance(ex, Failure):
        reason = ex.reason
        _FAILURE.pack_into(page, _P, ex.code, len(ex.insn), ex.insn[:16])
    else:
        reason = ex.reason
    _U32.pack_into(page, REASON_OFFSET, reason)


def set_reason(page: Buffer, reason: VcpuExit) -> None:
    """Report ``reason`` with the payload ``write_exit`` just wrote (DEVICE_GONE)."""
    _U32.pack_into(page, REASON_OFFSET, reason)


def write_regs(page: Buffer, raw: bytes) -> None:
    """The guest's registers (KVM's struct kvm_regs bytes) into ``regs``."""
    page[REGS_OFFSET:REGS_OFFSET + REGS_SIZE] = raw


def read_answer(page: Buffer, ex: Pending | None) -> Answer | None:
    """The answer to ``ex`` (None: nothing to answer); AnswerError if it is garbage."""
    if ex is None or isinstance(ex, Plain | Failure):
        return None
    if isinstance(ex, Io):
        if ex.is_write:
            return None
        n = ex.size * ex.count
        return Answer(data=bytes(page[RUN_PAGE_IO_DATA:RUN_PAGE_IO_DATA + n]))
    if isinstance(ex, Mmio):
        if ex.is_write:
            return None
        (_, _, _, data) = _MMIO.unpack_from(page, _P)
        return Answer(value=data & ((1 << (8 * ex.length)) - 1))
    if isinstance(ex, Msr):
        (_, error, data) = _MSR.unpack_from(page, _P)
        if error not in (0, 1):
            raise AnswerError(f"VcpuMsr.error is {error}: 0 (complete) or 1 (#GP)")
        return Answer(error=bool(error), value=0 if ex.is_write else data)
    (_, _, eax, ebx, ecx, edx) = _CPUID.unpack_from(page, _P)
    return Answer(cpuid=(eax, ebx, ecx, edx))


def read_dirty_regs(page: Buffer) -> bytes | None:
    """The registers user mode asks VCPU_RUN to load (struct kvm_regs bytes), or None;
    AnswerError for a bad ``regs_dirty`` or registers no CPU can hold."""
    (dirty,) = _U32.unpack_from(page, DIRTY_OFFSET)
    if dirty == 0:
        return None
    if dirty != REGS_DIRTY:
        raise AnswerError(f"regs_dirty is {dirty:#x}: 0 or {REGS_DIRTY}")
    values = _REGS.unpack_from(page, REGS_OFFSET)
    rflags, rip = values[_RFLAGS], values[_RIP]
    if rflags & RFLAGS_RESERVED or not rflags & RFLAGS_FIXED:
        raise AnswerError(f"rflags {rflags:#x} sets a reserved bit or clears bit 1")
    if not (rip < 1 << 47 or rip >= (1 << 64) - (1 << 47)):
        raise AnswerError(f"rip {rip:#x} is not canonical")
    return bytes(page[REGS_OFFSET:REGS_OFFSET + REGS_SIZE])


def clear_dirty(page: Buffer) -> None:
    _U32.pack_into(page, DIRTY_OFFSET, 0)
