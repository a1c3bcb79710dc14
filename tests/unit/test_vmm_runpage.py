"""Unit: the run page's layout and codec (vmm/runpage.py) and the MSR policy
(vmm/msr.py), without KVM."""

from __future__ import annotations

import ctypes
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.abi.spec import (
    GUEST_REGISTERS,
    PAGE_SIZE,
    RUN_PAGE,
    RUN_PAGE_IO_DATA,
    RUN_PAGE_PAYLOAD,
    RUN_PAGE_PAYLOAD_SIZE,
    RUN_PAGE_VERSION,
    VCPU_CPUID,
    VCPU_FAILURE,
    VCPU_IO,
    VCPU_MMIO,
    VCPU_MSR,
    MsrFilterFlag,
    VcpuExit,
)
from copra.hw.kvm import KvmRegs
from copra.vmm import runpage
from copra.vmm.msr import KVM_BITMAP_BITS, ClaimRange, MsrPolicy, PolicyError, kernel_owned


def _page() -> bytearray:
    page = bytearray(PAGE_SIZE)
    runpage.init_page(page)
    return page


def _u32(page: bytearray, offset: int) -> int:
    return int(struct.unpack_from("<I", page, offset)[0])


def test_run_page_layout_fits_a_page_with_every_payload_in_the_payload_area() -> None:
    assert RUN_PAGE.size == PAGE_SIZE
    offsets = {f.name: f.offset for f in RUN_PAGE.fields}
    assert offsets["payload"] == RUN_PAGE_PAYLOAD and offsets["io_data"] == RUN_PAGE_IO_DATA
    for payload in (VCPU_IO, VCPU_MMIO, VCPU_MSR, VCPU_CPUID, VCPU_FAILURE):
        assert payload.size == RUN_PAGE_PAYLOAD_SIZE
    assert runpage.REGS_SIZE == ctypes.sizeof(KvmRegs) == 8 * len(GUEST_REGISTERS)
    assert [n for n, _ in KvmRegs._fields_] == list(GUEST_REGISTERS)


def test_init_page_writes_the_version_and_zeros_the_rest() -> None:
    page = bytearray(b"\xff" * PAGE_SIZE)
    runpage.init_page(page)
    assert _u32(page, runpage.VERSION_OFFSET) == RUN_PAGE_VERSION
    assert page[4:] == bytes(PAGE_SIZE - 4)


def test_msr_read_exit_is_published_with_a_zero_answer_and_read_back() -> None:
    page = _page()
    ex = runpage.Msr(0x4000_0200, is_write=False, data=0)
    page[RUN_PAGE_PAYLOAD:RUN_PAGE_PAYLOAD + 64] = b"\xee" * 64  # stale garbage
    runpage.write_exit(page, ex)
    assert _u32(page, runpage.REASON_OFFSET) == VcpuExit.MSR_READ
    assert struct.unpack_from("<IB3xQ", page, RUN_PAGE_PAYLOAD) == (0x4000_0200, 0, 0)
    assert page[RUN_PAGE_PAYLOAD + 16:RUN_PAGE_PAYLOAD + 64] == bytes(48)
    struct.pack_into("<Q", page, RUN_PAGE_PAYLOAD + 8, 0x1234)
    assert runpage.read_answer(page, ex) == runpage.Answer(value=0x1234)


def test_msr_error_byte_other_than_0_or_1_is_refused() -> None:
    page = _page()
    ex = runpage.Msr(0x10, is_write=True, data=5)
    runpage.write_exit(page, ex)
    page[RUN_PAGE_PAYLOAD + 4] = 7
    with pytest.raises(runpage.AnswerError):
        runpage.read_answer(page, ex)
    page[RUN_PAGE_PAYLOAD + 4] = 1
    assert runpage.read_answer(page, ex) == runpage.Answer(error=True)


def test_out_exit_carries_its_data_and_in_answer_takes_size_times_count_bytes() -> None:
    page = _page()
    runpage.write_exit(page, runpage.Io(0x3F8, 1, True, 3), b"abc")
    assert struct.unpack_from("<HBBI", page, RUN_PAGE_PAYLOAD) == (0x3F8, 1, 1, 3)
    assert page[RUN_PAGE_IO_DATA:RUN_PAGE_IO_DATA + 3] == b"abc"
    ex = runpage.Io(0x81, 2, False, 2)
    runpage.write_exit(page, ex)
    page[RUN_PAGE_IO_DATA:RUN_PAGE_IO_DATA + 4] = b"\x01\x02\x03\x04"
    assert runpage.read_answer(page, ex) == runpage.Answer(data=b"\x01\x02\x03\x04")


def test_mmio_read_answer_is_cut_to_the_access_length() -> None:
    page = _page()
    ex = runpage.Mmio(0xC000_0000, 2, False, 0)
    runpage.write_exit(page, ex)
    struct.pack_into("<Q", page, RUN_PAGE_PAYLOAD + 16, 0xFFFF_FFFF_FFFF_BEEF)
    assert runpage.read_answer(page, ex) == runpage.Answer(value=0xBEEF)


def test_failure_exit_carries_the_instruction_bytes() -> None:
    page = _page()
    runpage.write_exit(page, runpage.Failure(VcpuExit.EMULATION_FAILURE, 1, b"\xcf"))
    assert _u32(page, runpage.REASON_OFFSET) == VcpuExit.EMULATION_FAILURE
    assert struct.unpack_from("<II", page, RUN_PAGE_PAYLOAD) == (1, 1)
    assert page[RUN_PAGE_PAYLOAD + 8] == 0xCF


@pytest.mark.parametrize("dirty, rflags, rip", [
    (5, 0x2, 0x100000),  # regs_dirty neither 0 nor 1
    (1, 0x0, 0x100000),  # rflags bit 1 clear
    (1, 0x8002, 0x100000),  # rflags bit 15 (reserved) set
    (1, 0x2 | 1 << 40, 0x100000),  # rflags upper bits set
    (1, 0x2, 0x0000_8000_0000_0000),  # rip not canonical
])
def test_dirty_registers_no_cpu_can_hold_are_refused(dirty: int, rflags: int, rip: int) -> None:
    page = _page()
    struct.pack_into("<I", page, runpage.DIRTY_OFFSET, dirty)
    struct.pack_into("<Q", page, runpage.REGS_OFFSET + 16 * 8, rip)
    struct.pack_into("<Q", page, runpage.REGS_OFFSET + 17 * 8, rflags)
    with pytest.raises(runpage.AnswerError):
        runpage.read_dirty_regs(page)


def test_clean_registers_are_not_loaded_and_dirty_good_ones_are() -> None:
    page = _page()
    assert runpage.read_dirty_regs(page) is None
    struct.pack_into("<I", page, runpage.DIRTY_OFFSET, 1)
    struct.pack_into("<Q", page, runpage.REGS_OFFSET + 17 * 8, 0x202)
    raw = runpage.read_dirty_regs(page)
    assert raw is not None and KvmRegs.from_buffer_copy(raw).rflags == 0x202


_PENDING = st.one_of(
    st.none(),
    st.builds(runpage.Msr, st.integers(0, 2**32 - 1), st.booleans(), st.integers(0, 2**64 - 1)),
    st.builds(runpage.Io, st.integers(0, 0xFFFF), st.sampled_from([1, 2, 4]), st.booleans(),
              st.integers(1, 512)),
    st.builds(runpage.Mmio, st.integers(0, 2**64 - 1), st.integers(1, 8), st.booleans(),
              st.just(0)),
    st.builds(runpage.Cpuid, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.just(runpage.Plain(VcpuExit.HLT)),
)


@settings(max_examples=200, deadline=None)
@given(head=st.binary(max_size=224), seed=st.integers(0, 2**32), pending=_PENDING)
def test_any_page_content_gives_an_answer_or_answer_error(head: bytes, seed: int,
                                                          pending: runpage.Pending | None) -> None:
    page = bytearray(random.Random(seed).randbytes(PAGE_SIZE))
    page[:len(head)] = head
    try:
        runpage.read_answer(page, pending)
        runpage.read_dirty_regs(page)
    except runpage.AnswerError:
        pass


def _claim(base: int, *indices: int, flags: MsrFilterFlag = MsrFilterFlag.READ
           | MsrFilterFlag.WRITE, count: int = 64) -> ClaimRange:
    bitmap = bytearray((count + 7) // 8)
    for i in indices:
        bitmap[(i - base) // 8] |= 1 << ((i - base) % 8)
    return ClaimRange(flags, base, bytes(bitmap))


def test_kernel_owned_msrs_are_the_x2apic_range_apic_base_and_tsc_deadline() -> None:
    assert all(kernel_owned(i) for i in (0x1B, 0x6E0, 0x800, 0x8FF))
    assert not any(kernel_owned(i) for i in (0x10, 0x7FF, 0x900, 0x4000_0200))


def test_claiming_a_kernel_owned_msr_is_refused() -> None:
    with pytest.raises(PolicyError):
        MsrPolicy((_claim(0x7F0, 0x802),))


def test_claimed_msrs_are_denied_in_kvms_filter_with_apic_base_and_tsc_deadline() -> None:
    policy = MsrPolicy((_claim(0x4000_0200, 0x4000_0200),
                        _claim(0x10, 0x10, flags=MsrFilterFlag.READ)))
    assert policy.claimed(0x4000_0200, write=True) and policy.claimed(0x10, write=False)
    assert not policy.claimed(0x10, write=True) and not policy.claimed(0x11, write=False)
    denied: dict[int, set[int]] = {1: set(), 2: set()}
    for flags, base, bitmap in policy.kvm_ranges:
        assert 0 < len(bitmap) * 8 <= KVM_BITMAP_BITS
        for bit in range(len(bitmap) * 8):
            if not bitmap[bit // 8] >> (bit % 8) & 1:
                for direction in (1, 2):
                    if flags & direction:
                        denied[direction].add(base + bit)
    assert denied[1] == {0x10, 0x1B, 0x6E0, 0x4000_0200}
    assert denied[2] == {0x1B, 0x6E0, 0x4000_0200}


def test_claims_too_scattered_for_kvms_sixteen_ranges_are_refused() -> None:
    ranges = tuple(_claim(0x4000_0000 + i * 0x10_0000, 0x4000_0000 + i * 0x10_0000)
                   for i in range(16))
    with pytest.raises(PolicyError):
        MsrPolicy(ranges)
