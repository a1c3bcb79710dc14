"""The XSAVE binding's structures and numbers, the initial XSAVE area and the CPUID policy.

References: arch/x86/include/uapi/asm/kvm.h (struct kvm_xcr, kvm_xcrs, kvm_xsave),
include/uapi/linux/kvm.h (ioctl and capability numbers; the values below are those the
kernel headers produce, as listed by strace's ioctl tables), the Intel SDM Vol. 1
13.4 (standard-format XSAVE area) and Vol. 2A CPUID. Nothing here needs /dev/kvm.
"""

from __future__ import annotations

import ctypes
import struct

import pytest

from copra.hw import kvm, x86
from copra.kernel.svsm_vm import xsave_cpuid


def test_xcr_structures_have_the_uapi_layout() -> None:
    assert ctypes.sizeof(kvm.KvmXcr) == 16
    assert kvm.KvmXcr.value.offset == 8
    assert ctypes.sizeof(kvm.KvmXcrs) == 392
    assert kvm.KvmXcrs.xcrs.offset == 8
    assert kvm.KvmXcrs.padding.offset == 8 + 16 * kvm.KVM_MAX_XCRS
    assert kvm.KVM_XSAVE_SIZE == 4096


def test_xsave_ioctl_numbers_match_the_kernel_headers() -> None:
    assert kvm.KVM_GET_XSAVE == 0x9000AEA4
    assert kvm.KVM_SET_XSAVE == 0x5000AEA5
    assert kvm.KVM_GET_XCRS == 0x8188AEA6
    assert kvm.KVM_SET_XCRS == 0x4188AEA7
    assert kvm.KVM_GET_XSAVE2 == 0x9000AECF
    assert (kvm.KVM_CAP_XSAVE, kvm.KVM_CAP_XCRS, kvm.KVM_CAP_XSAVE2) == (55, 56, 208)


def test_initial_xsave_holds_reset_values_and_marks_only_x87_and_sse() -> None:
    area = x86.initial_xsave(4096)
    assert len(area) == 4096
    assert struct.unpack_from("<H", area, 0)[0] == 0x037F  # FCW after FNINIT
    assert struct.unpack_from("<I", area, 24)[0] == 0x1F80  # MXCSR after reset
    assert struct.unpack_from("<Q", area, 512)[0] == 0b11  # XSTATE_BV: x87, SSE
    assert struct.unpack_from("<Q", area, 520)[0] == 0  # XCOMP_BV: standard format
    rest = bytearray(area)
    struct.pack_into("<H", rest, 0, 0)
    struct.pack_into("<I", rest, 24, 0)
    struct.pack_into("<Q", rest, 512, 0)
    assert rest == bytes(4096)  # every register, tag and other component is zero


def test_initial_xsave_smaller_than_legacy_area_and_header_is_refused() -> None:
    with pytest.raises(ValueError, match="576"):
        x86.initial_xsave(575)


def cpuid_table(xcr0: int, ecx1: int = 0, ebx7: int = 0, leaf_d: bool = True) -> kvm.KvmCpuid2:
    table = kvm.KvmCpuid2()
    leaves = [(1, 0, 0, 0, ecx1), (7, 0, 0, ebx7, 0)]
    if leaf_d:
        leaves.append((0xD, 0, xcr0 & 0xFFFF_FFFF, 0, 0))
    for i, (function, index, eax, ebx, ecx) in enumerate(leaves):
        entry = table.entries[i]
        entry.function, entry.index = function, index
        entry.eax, entry.ebx, entry.ecx = eax, ebx, ecx
        entry.edx = (xcr0 >> 32) if function == 0xD else 0
    table.nent = len(leaves)
    return table


def leaf(table: kvm.KvmCpuid2, function: int) -> kvm.KvmCpuidEntry2:
    entry = table.find(function)
    assert entry is not None
    return entry


def test_xsave_cpuid_on_a_pvm_like_table_adds_xsave_avx_and_avx512f() -> None:
    # PVM hosts list the AVX and AVX-512 components in leaf 0xD but clear the flags.
    table = cpuid_table(0xE7, ecx1=0x8120_2000, ebx7=0x0180_2852)
    assert xsave_cpuid(table) == 0xE7
    assert leaf(table, 1).ecx == 0x8120_2000 | 1 << 26 | 1 << 28
    assert leaf(table, 7).ebx == 0x0180_2852 | 1 << 16


def test_xsave_cpuid_without_avx512_state_clears_avx512f() -> None:
    table = cpuid_table(0x7, ebx7=1 << 16 | 1 << 5)
    assert xsave_cpuid(table) == 0x7
    assert leaf(table, 1).ecx & (1 << 28)
    assert leaf(table, 7).ebx == 1 << 5


def test_xsave_cpuid_without_avx_state_clears_avx() -> None:
    table = cpuid_table(0x3, ecx1=1 << 28)
    assert xsave_cpuid(table) == 0x3
    assert leaf(table, 1).ecx == 1 << 26


def test_xsave_cpuid_without_leaf_d_is_an_error() -> None:
    with pytest.raises(kvm.KvmError, match="0xD"):
        xsave_cpuid(cpuid_table(0, leaf_d=False))


def test_xsave_cpuid_without_sse_state_is_an_error() -> None:
    with pytest.raises(kvm.KvmError, match="x87 or SSE"):
        xsave_cpuid(cpuid_table(0x1))


def test_cpuid_find_uses_the_subleaf() -> None:
    table = cpuid_table(0xE7)
    assert table.find(0xD, 1) is None
    assert leaf(table, 0xD).eax == 0xE7
