"""Segment descriptors: the 8-byte encoding (SDM vol. 3A, 3.4.5) both ways."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from copra.vmm.descriptors import FLAT_CODE32, FLAT_DATA32, Descriptor


def test_flat_segments_encode_as_the_sdm_layout() -> None:
    assert FLAT_CODE32.encode() == 0x00CF9B000000FFFF
    assert FLAT_DATA32.encode() == 0x00CF93000000FFFF


def test_decode_expands_a_page_granular_limit_to_bytes() -> None:
    d = Descriptor.decode(0x00CF9B000000FFFF)
    assert (d.base, d.limit, d.type, d.s, d.dpl, d.present, d.db, d.g) == (
        0, 0xFFFF_FFFF, 0xB, 1, 0, 1, 1, 1)
    assert d.is_code and not d.is_writable_data


def test_decode_reads_a_split_base() -> None:
    assert Descriptor.decode(0xAB40F3CD_EF01_FFFF).base == 0xABCDEF01


def test_encode_refuses_a_limit_g_cannot_express() -> None:
    with pytest.raises(ValueError, match="4 KiB units"):
        Descriptor(base=0, limit=0x1000, type=3, s=1, dpl=0, present=1, g=1).encode()
    with pytest.raises(ValueError, match="needs G"):
        Descriptor(base=0, limit=0x100000, type=3, s=1, dpl=0, present=1).encode()


@given(st.integers(0, (1 << 64) - 1))
def test_decode_then_encode_is_the_identity(raw: int) -> None:
    assert Descriptor.decode(raw).encode() == raw
