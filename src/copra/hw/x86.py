"""x86-64 architectural constants and descriptor encoders.

Sources: Intel SDM Vol. 3A, chapter 2 (control registers, EFER), chapter 3.4.5
(segment descriptors), 4.5 (4-level paging entries), 6.14 (64-bit IDT gates),
7.2.3 (64-bit TSS), 7.7 / Vol. 1 19.5.2 (I/O permission bitmap), 6.3 (exception table);
Vol. 1 chapter 13 (XSAVE: state components, XCR0, the standard-format area) and
Vol. 2A CPUID (feature bits). Pure data and pure functions: nothing here touches KVM.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

# Control registers (SDM 3A 2.5).
CR0_PE: Final = 1 << 0
CR0_MP: Final = 1 << 1
CR0_ET: Final = 1 << 4
CR0_NE: Final = 1 << 5
CR0_WP: Final = 1 << 16
CR0_AM: Final = 1 << 18
CR0_PG: Final = 1 << 31
CR4_PAE: Final = 1 << 5
CR4_OSFXSR: Final = 1 << 9
CR4_OSXMMEXCPT: Final = 1 << 10
CR4_UMIP: Final = 1 << 11  #: SGDT, SIDT, SLDT, SMSW, STR fault (#GP) at CPL > 0 (SDM 2.5)
CR4_OSXSAVE: Final = 1 << 18
EFER_SCE: Final = 1 << 0
EFER_LME: Final = 1 << 8
EFER_LMA: Final = 1 << 10
EFER_NXE: Final = 1 << 11
MSR_LSTAR: Final = 0xC000_0082  #: SYSCALL's 64-bit target RIP (SDM vol. 4, table 2-2)
#: CPUID.(EAX=7, ECX=0):ECX bit 2: the CPU (or KVM's emulation) supports CR4.UMIP.
CPUID7_ECX_UMIP: Final = 1 << 2
RFLAGS_IF: Final = 1 << 9
RFLAGS_RESERVED1: Final = 1 << 1

# Page-table entry bits (SDM 3A 4.5, tables 4-14 to 4-19).
PTE_P: Final = 1 << 0
PTE_W: Final = 1 << 1
PTE_U: Final = 1 << 2
PTE_A: Final = 1 << 5
PTE_D: Final = 1 << 6
PTE_PS: Final = 1 << 7
PTE_G: Final = 1 << 8
PTE_NX: Final = 1 << 63
PTE_ADDR_MASK: Final = 0x000F_FFFF_FFFF_F000

# Page-fault error code bits (SDM 3A 4.7).
PF_PRESENT: Final = 1 << 0
PF_WRITE: Final = 1 << 1
PF_USER: Final = 1 << 2
PF_RSVD: Final = 1 << 3
PF_FETCH: Final = 1 << 4


class Vector(IntEnum):
    """Exception vectors (SDM 3A table 6-1)."""

    DE = 0
    DB = 1
    NMI = 2
    BP = 3
    OF = 4
    BR = 5
    UD = 6
    NM = 7
    DF = 8
    CSO = 9
    TS = 10
    NP = 11
    SS = 12
    GP = 13
    PF = 14
    RES15 = 15
    MF = 16
    AC = 17
    MC = 18
    XM = 19
    VE = 20
    CP = 21
    RES22 = 22
    RES23 = 23
    RES24 = 24
    RES25 = 25
    RES26 = 26
    RES27 = 27
    HV = 28
    VC = 29
    SX = 30
    RES31 = 31


#: Vectors for which the CPU pushes an error code (SDM 3A 6.13).
VECTORS_WITH_ERROR_CODE: Final = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})

# Selectors of copra's GDT. User data precedes user code (the SYSRET layout).
SEL_KERNEL_CODE: Final = 0x08
SEL_KERNEL_DATA: Final = 0x10
SEL_USER_DATA: Final = 0x18 | 3
SEL_USER_CODE: Final = 0x20 | 3
SEL_TSS: Final = 0x28  # the first TSS descriptor (two slots); kernel/layout.py has one per CPU

DESC_KERNEL_CODE64: Final = 0x00AF_9A00_0000_FFFF
DESC_KERNEL_DATA: Final = 0x00CF_9200_0000_FFFF
DESC_USER_DATA: Final = 0x00CF_F200_0000_FFFF
DESC_USER_CODE64: Final = 0x00AF_FA00_0000_FFFF

TSS_SIZE: Final = 104
TSS_RSP0_OFFSET: Final = 4
TSS_IOMAP_BASE_OFFSET: Final = 102
IO_BITMAP_BYTES: Final = 8192  # 65536 ports, one bit each; a 0 bit allows the port


# XSAVE-managed state (SDM Vol. 1 13.1-13.4). XCR0 bit i enables state component i.
class XFeature(IntEnum):
    """User state components (SDM Vol. 1 13.1); the bit in XCR0 and XSTATE_BV."""

    X87 = 0
    SSE = 1
    AVX = 2  # upper halves of ymm0-15
    BNDREGS = 3
    BNDCSR = 4
    OPMASK = 5  # k0-k7
    ZMM_HI256 = 6  # upper 256 bits of zmm0-15
    HI16_ZMM = 7  # zmm16-31
    PKRU = 9
    XTILECFG = 17  # AMX tile configuration
    XTILEDATA = 18  # AMX tiles tmm0-7


XCR0_X87_SSE: Final = (1 << XFeature.X87) | (1 << XFeature.SSE)
XCR0_AVX512: Final = (1 << XFeature.OPMASK) | (1 << XFeature.ZMM_HI256) | (1 << XFeature.HI16_ZMM)

# The legacy region (FXSAVE layout) and the header of a standard-format XSAVE area.
XSAVE_FCW_OFFSET: Final = 0
XSAVE_MXCSR_OFFSET: Final = 24
XSAVE_XMM_OFFSET: Final = 160
XSAVE_XSTATE_BV_OFFSET: Final = 512
XSAVE_XCOMP_BV_OFFSET: Final = 520
XSAVE_LEGACY_AND_HEADER: Final = 576
FCW_INITIAL: Final = 0x037F  # after FNINIT: all exceptions masked, 64-bit precision
MXCSR_INITIAL: Final = 0x1F80  # after reset: all exceptions masked, round to nearest

# CPUID feature bits (SDM Vol. 2A, CPUID).
CPUID1_ECX_XSAVE: Final = 1 << 26
CPUID1_ECX_OSXSAVE: Final = 1 << 27
CPUID1_ECX_AVX: Final = 1 << 28
CPUID7_EBX_AVX512F: Final = 1 << 16


def initial_xsave(size: int) -> bytes:
    """A standard-format XSAVE area of ``size`` bytes holding the initial state.

    XSTATE_BV marks x87 and SSE present with their initial values (FCW 0x037F, empty
    tags, MXCSR 0x1F80, zeroed registers) and every other component absent, which
    XRSTOR loads as that component's initial configuration (zeros). The two legacy
    components are spelled out so that the area states all of the state, MXCSR
    included (it lives in the legacy region but belongs to SSE and AVX, SDM 13.5.2).
    """
    if size < XSAVE_LEGACY_AND_HEADER:
        raise ValueError(f"an XSAVE area has at least {XSAVE_LEGACY_AND_HEADER} bytes")
    area = bytearray(size)
    struct.pack_into("<H", area, XSAVE_FCW_OFFSET, FCW_INITIAL)
    struct.pack_into("<I", area, XSAVE_MXCSR_OFFSET, MXCSR_INITIAL)
    struct.pack_into("<Q", area, XSAVE_XSTATE_BV_OFFSET, XCR0_X87_SSE)
    return bytes(area)


def tss_descriptor(base: int, limit: int) -> tuple[int, int]:
    """The two 8-byte halves of a 64-bit available-TSS descriptor (SDM 3A 7.2.3)."""
    low = (
        (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x89 << 40)  # present, DPL 0, type 9 = available 64-bit TSS
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56)
    )
    return low, base >> 32


def idt_gate(handler: int, selector: int, dpl: int, ist: int = 0) -> bytes:
    """A 16-byte 64-bit interrupt gate (SDM 3A 6.14.1)."""
    type_attr = 0x80 | (dpl << 5) | 0x0E
    return struct.pack(
        "<HHBBHII",
        handler & 0xFFFF,
        selector,
        ist,
        type_attr,
        (handler >> 16) & 0xFFFF,
        handler >> 32,
        0,
    )


def io_bitmap(allowed_ports: frozenset[int]) -> bytes:
    """The TSS I/O permission bitmap plus its terminating 0xFF byte."""
    bitmap = bytearray(b"\xff" * IO_BITMAP_BYTES)
    for port in allowed_ports:
        bitmap[port // 8] &= ~(1 << (port % 8)) & 0xFF
    return bytes(bitmap) + b"\xff"


def is_canonical(addr: int) -> bool:
    """48-bit canonical form: bits 63:47 all equal."""
    top = addr >> 47
    return top == 0 or top == (1 << 17) - 1
