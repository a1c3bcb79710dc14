"""x86-64 encoders against layouts decoded by hand from the Intel SDM, Vol. 3A.

Expected values are written out byte by byte from the SDM layouts (3A 7.2.3 for the
64-bit TSS descriptor, 6.14.1 for the 64-bit interrupt gate, 3.4.5 for segment
descriptors), not computed with the code under test.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.hw import x86

# -- TSS descriptor (SDM 3A 7.2.3) -------------------------------------------------------


def test_tss_descriptor_places_base_limit_and_type_as_in_the_sdm() -> None:
    low, high = x86.tss_descriptor(0x1122_3344_5566_7788, 0x2068)
    # limit 15:0 | base 23:0 | P=1 DPL=0 0 type=1001 | G=0 limit 19:16=0 | base 31:24
    assert struct.pack("<Q", low) == bytes([0x68, 0x20, 0x88, 0x77, 0x66, 0x89, 0x00, 0x55])
    # base 63:32, then the reserved dword (its type field must be zero)
    assert struct.pack("<Q", high) == bytes([0x44, 0x33, 0x22, 0x11, 0, 0, 0, 0])


def test_tss_descriptor_puts_limit_bits_19_16_in_byte_6() -> None:
    low, high = x86.tss_descriptor(0, 0xA_BCDE)
    assert struct.pack("<Q", low) == bytes([0xDE, 0xBC, 0, 0, 0, 0x89, 0x0A, 0])
    assert high == 0


def test_tss_descriptor_for_copra_tss_is_present_available_and_byte_granular() -> None:
    base = 0xFFFF_8000_0000_3000
    low, high = x86.tss_descriptor(base, x86.TSS_SIZE + x86.IO_BITMAP_BYTES)
    access, flags_limit = (low >> 40) & 0xFF, (low >> 48) & 0xFF
    assert access >> 7 == 1  # P
    assert (access >> 5) & 3 == 0  # DPL 0
    assert access & 0x1F == 0b01001  # S=0, type 9: available 64-bit TSS
    assert flags_limit >> 4 == 0  # G=0: the limit counts bytes
    rebuilt = (low >> 16) & 0xFF_FFFF | ((low >> 56) & 0xFF) << 24 | high << 32
    assert rebuilt == base
    assert (low & 0xFFFF) | (flags_limit & 0xF) << 16 == 104 + 8192


# -- interrupt gate (SDM 3A 6.14.1) ------------------------------------------------------


def test_idt_gate_user_callable_with_ist_matches_sdm_layout() -> None:
    gate = x86.idt_gate(0xFFFF_8000_0000_1234, 0x08, dpl=3, ist=1)
    expected = bytes([
        0x34, 0x12,  # offset 15:0
        0x08, 0x00,  # segment selector
        0x01,  # IST 1, bits 7:3 zero
        0xEE,  # P=1, DPL=3, 0, type 1110 (64-bit interrupt gate)
        0x00, 0x00,  # offset 31:16
        0x00, 0x80, 0xFF, 0xFF,  # offset 63:32
        0x00, 0x00, 0x00, 0x00,  # reserved
    ])
    assert gate == expected


def test_idt_gate_kernel_only_without_ist_matches_sdm_layout() -> None:
    gate = x86.idt_gate(0x0000_0012_ABCD_EF01, 0x10, dpl=0)
    expected = bytes([0x01, 0xEF, 0x10, 0x00, 0x00, 0x8E, 0xCD, 0xAB,
                      0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00])
    assert gate == expected


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 0xFFFF), st.integers(0, 3), st.integers(0, 7))
def test_idt_gate_fields_decode_back_to_the_arguments(
    handler: int, selector: int, dpl: int, ist: int
) -> None:
    gate = x86.idt_gate(handler, selector, dpl, ist)
    assert len(gate) == 16
    lo16, sel, ist_byte, attr, mid16, hi32, reserved = struct.unpack("<HHBBHII", gate)
    assert lo16 | mid16 << 16 | hi32 << 32 == handler
    assert sel == selector
    assert ist_byte == ist
    assert attr == 0x80 | dpl << 5 | 0x0E
    assert reserved == 0


# -- I/O permission bitmap (SDM Vol. 1 19.5.2) -------------------------------------------


def _allowed(bitmap: bytes, port: int) -> bool:
    """A port is allowed when its bit (byte port // 8, bit port % 8) is clear."""
    return not bitmap[port // 8] >> (port % 8) & 1


def test_io_bitmap_with_no_ports_denies_every_port() -> None:
    bitmap = x86.io_bitmap(frozenset())
    assert bitmap == b"\xff" * (8192 + 1)


def test_io_bitmap_allows_exactly_the_given_ports() -> None:
    ports = frozenset({0, 7, 8, 0x3F8, 0x3F9, 0xCF8, 0xFFFF})
    bitmap = x86.io_bitmap(ports)
    assert len(bitmap) == x86.IO_BITMAP_BYTES + 1
    assert bitmap[-1] == 0xFF  # the terminating byte the CPU may read past the map
    assert [p for p in range(65536) if _allowed(bitmap, p)] == sorted(ports)


def test_io_bitmap_of_com1_data_port_clears_bit_0_of_byte_0x7f() -> None:
    bitmap = x86.io_bitmap(frozenset({0x3F8}))
    assert bitmap[0x7F] == 0xFE
    assert bitmap[:0x7F] == b"\xff" * 0x7F


@settings(max_examples=20, deadline=None)
@given(st.frozensets(st.integers(0, 0xFFFF), max_size=40))
def test_io_bitmap_allows_only_the_given_ports(ports: frozenset[int]) -> None:
    bitmap = x86.io_bitmap(ports)
    assert bitmap[-1] == 0xFF
    assert {p for p in range(65536) if _allowed(bitmap, p)} == ports


# -- canonical addresses (SDM 3A 3.3.7.1) ------------------------------------------------


@pytest.mark.parametrize(("addr", "canonical"), [
    (0, True),
    (0x0000_7FFF_FFFF_FFFF, True),  # top of the lower half
    (0x0000_8000_0000_0000, False),  # first address of the hole
    (0x0000_FFFF_FFFF_FFFF, False),
    (0x8000_0000_0000_0000, False),
    (0xFFFF_7FFF_FFFF_FFFF, False),  # last address of the hole
    (0xFFFF_8000_0000_0000, True),  # bottom of the upper half
    (0xFFFF_FFFF_FFFF_FFFF, True),
    (0x1_0000_0000_0000_0000, False),  # not a 64-bit value at all
])
def test_is_canonical_at_the_edges_of_the_hole(addr: int, canonical: bool) -> None:
    assert x86.is_canonical(addr) is canonical


# -- fixed encodings ---------------------------------------------------------------------


@pytest.mark.parametrize(("desc", "dpl", "code", "long_mode"), [
    (x86.DESC_KERNEL_CODE64, 0, True, True),
    (x86.DESC_KERNEL_DATA, 0, False, False),
    (x86.DESC_USER_DATA, 3, False, False),
    (x86.DESC_USER_CODE64, 3, True, True),
])
def test_segment_descriptor_has_the_dpl_and_type_of_its_selector(
    desc: int, dpl: int, code: bool, long_mode: bool
) -> None:
    access, flags = (desc >> 40) & 0xFF, (desc >> 52) & 0xF
    assert access >> 7 == 1  # P
    assert (access >> 5) & 3 == dpl
    assert (access >> 4) & 1 == 1  # S: code or data, not system
    assert (access >> 3) & 1 == code  # type bit 3: executable
    assert (access >> 1) & 1 == 1  # readable code / writable data
    assert (flags >> 1) & 1 == long_mode  # L
    if long_mode:
        assert (flags >> 2) & 1 == 0  # D must be 0 when L is 1


def test_selectors_index_the_gdt_with_the_rpl_of_their_privilege() -> None:
    assert (x86.SEL_KERNEL_CODE >> 3, x86.SEL_KERNEL_CODE & 3) == (1, 0)
    assert (x86.SEL_KERNEL_DATA >> 3, x86.SEL_KERNEL_DATA & 3) == (2, 0)
    assert (x86.SEL_USER_DATA >> 3, x86.SEL_USER_DATA & 3) == (3, 3)
    assert (x86.SEL_USER_CODE >> 3, x86.SEL_USER_CODE & 3) == (4, 3)
    assert x86.SEL_TSS >> 3 == 5


def test_vectors_with_error_code_match_table_6_1() -> None:
    assert sorted(x86.VECTORS_WITH_ERROR_CODE) == [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]


def test_page_table_entry_bits_match_sdm_4_5() -> None:
    bits = (x86.PTE_P, x86.PTE_W, x86.PTE_U, x86.PTE_A, x86.PTE_D, x86.PTE_PS, x86.PTE_G,
            x86.PTE_NX)
    assert bits == (1 << 0, 1 << 1, 1 << 2, 1 << 5, 1 << 6, 1 << 7, 1 << 8, 1 << 63)
    assert sum(1 << b for b in range(12, 52)) == x86.PTE_ADDR_MASK  # bits 51:12
