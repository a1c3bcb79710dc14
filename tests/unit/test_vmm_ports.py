"""The guest port space: claimed ranges, open bus elsewhere, QEMU's isa-debug-exit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from copra.vmm.ports import ByteDevice, DebugExit, PortBus


class Registers:
    def __init__(self) -> None:
        self.values = [0x10 + i for i in range(8)]
        self.writes: list[tuple[int, int]] = []

    def read(self, offset: int) -> int:
        return self.values[offset]

    def write(self, offset: int, value: int) -> None:
        self.writes.append((offset, value))


def bus() -> tuple[PortBus, Registers, DebugExit]:
    b, regs, exit_ = PortBus(), Registers(), DebugExit()
    b.add(0x3F8, 8, ByteDevice(regs))
    b.add(0xF4, 4, exit_)
    return b, regs, exit_


@pytest.mark.parametrize(("size", "value"), [(1, 0xFF), (2, 0xFFFF), (4, 0xFFFF_FFFF)])
def test_unclaimed_port_reads_all_ones_and_counts_once(size: int, value: int) -> None:
    b, _, _ = bus()
    assert b.read(0x2E8, size) == value
    assert b.unclaimed_reads == 1


def test_unclaimed_port_write_is_ignored_and_counted() -> None:
    b, regs, exit_ = bus()
    b.write(0x80, 1, 0x12)
    assert (b.unclaimed_writes, regs.writes, exit_.value) == (1, [], None)


def test_wide_access_to_byte_registers_is_one_byte_per_register() -> None:
    b, regs, _ = bus()
    assert b.read(0x3F8, 4) == 0x13121110
    b.write(0x3FA, 2, 0xBBAA)
    assert regs.writes == [(2, 0xAA), (3, 0xBB)]


def test_access_straddling_a_range_end_is_split_into_bytes() -> None:
    b, regs, _ = bus()
    assert b.read(0x3FE, 4) == 0xFFFF1716
    assert b.unclaimed_reads == 2
    b.write(0x3F6, 4, 0x44332211)
    assert regs.writes == [(0, 0x33), (1, 0x44)]


def test_debug_exit_takes_the_whole_value_of_the_first_write() -> None:
    b, _, exit_ = bus()
    b.write(0xF4, 4, 0x1FF)
    b.write(0xF4, 1, 7)
    assert exit_.value == 0x1FF
    assert b.read(0xF4, 2) == 0xFFFF


@pytest.mark.parametrize(("base", "size"), [(0x3FC, 8), (0xF0, 5), (0xFFFF, 2), (-1, 1), (0, 0)])
def test_adding_a_range_that_overlaps_or_leaves_the_port_space_is_refused(
        base: int, size: int) -> None:
    b, _, _ = bus()
    with pytest.raises(ValueError):
        b.add(base, size, DebugExit())


@given(st.integers(0, 0xFFFF), st.sampled_from([1, 2, 4]), st.integers(0, (1 << 32) - 1))
def test_any_access_answers_within_its_size(port: int, size: int, value: int) -> None:
    b, _, _ = bus()
    b.write(port, size, value)
    assert 0 <= b.read(port, size) < 1 << (8 * size)
