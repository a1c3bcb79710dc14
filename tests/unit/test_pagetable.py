"""4-level page tables over a plain bytearray, checked against the SDM (Vol. 3A 4.5) by hand.

The reference walk below decodes the tables from the raw bytes with its own constants
(bit numbers from SDM tables 4-15 to 4-20), so it shares no code with ``AddressSpace``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.abi.spec import PAGE_SIZE, USER_END
from copra.kernel.frames import FrameAllocator, FrameOwner, PhysicalMemory
from copra.kernel.pagetable import AddressSpace, MappingError

# SDM 3A 4.5: P is bit 0, R/W bit 1, U/S bit 2, XD bit 63; the frame is bits 51:12.
P, RW, US, A, D, XD = 1 << 0, 1 << 1, 1 << 2, 1 << 5, 1 << 6, 1 << 63
FRAME_BITS = ((1 << 52) - 1) & ~0xFFF

KERNEL_SLOT = 256
KERNEL_VA = 0xFFFF_8000_0000_0000 + 5 * PAGE_SIZE  # PML4 256, PDPT 0, PD 0, PT 5


def reference_walk(memory: PhysicalMemory, pml4: int, va: int) -> int | None:
    """The 4 KiB leaf entry for va, decoded by hand, or None where a level is not present."""
    table = pml4
    entry = 0
    for shift in (39, 30, 21, 12):
        index = (va >> shift) % 512
        raw = memory.read(table + index * 8, 8)
        entry = int.from_bytes(raw, "little")
        if not entry & P:
            return None
        table = entry & FRAME_BITS
    return entry


def entry_at(memory: PhysicalMemory, table: int, index: int) -> int:
    return int.from_bytes(memory.read(table + index * 8, 8), "little")


class Setup:
    """Memory, allocator, a kernel half mapping KERNEL_VA, and one address space."""

    def __init__(self, pages: int = 96) -> None:
        self.memory = PhysicalMemory(memoryview(bytearray(pages * PAGE_SIZE)))
        self.frames = FrameAllocator(self.memory, PAGE_SIZE)
        pdpt, pd, pt = (self.frames.alloc(FrameOwner.KERNEL) for _ in range(3))
        self.kernel_page = self.frames.alloc(FrameOwner.KERNEL)
        self.memory.write(pdpt, (pd | P | RW).to_bytes(8, "little"))
        self.memory.write(pd, (pt | P | RW).to_bytes(8, "little"))
        self.memory.write(pt + 5 * 8, (self.kernel_page | P | RW | XD).to_bytes(8, "little"))
        self.kernel_tables = (pdpt, pd, pt)
        self.kernel_entries = {KERNEL_SLOT: pdpt | P | RW}
        self.space = AddressSpace(self.frames, self.kernel_entries)

    def user_frame(self) -> int:
        return self.frames.alloc(FrameOwner.USER)

    def kernel_bytes(self) -> bytes:
        return b"".join(self.memory.read(t, PAGE_SIZE) for t in self.kernel_tables)


@pytest.fixture
def s() -> Setup:
    return Setup()


VA = 0x40_0000


# -- map, lookup, unmap ----------------------------------------------------------------


def test_map_then_lookup_returns_the_mapped_frame(s: Setup) -> None:
    pa = s.user_frame()
    s.space.map(VA, pa, writable=True, executable=False)
    entry = s.space.lookup(VA)
    assert entry is not None
    assert entry & FRAME_BITS == pa


def test_lookup_of_unmapped_address_returns_none(s: Setup) -> None:
    s.space.map(VA, s.user_frame(), writable=True, executable=False)
    assert s.space.lookup(VA + PAGE_SIZE) is None  # same page table, absent leaf
    assert s.space.lookup(0x7000_0000_0000) is None  # no tables at all


def test_lookup_of_non_canonical_address_returns_none(s: Setup) -> None:
    assert s.space.lookup(0x0000_8000_0000_0000 + 5 * PAGE_SIZE) is None
    assert s.space.lookup(1 << 64) is None


def test_unmap_returns_the_frame_and_lookup_then_returns_none(s: Setup) -> None:
    pa = s.user_frame()
    s.space.map(VA, pa, writable=False, executable=True)
    assert s.space.unmap(VA) == pa
    assert s.space.lookup(VA) is None
    assert reference_walk(s.memory, s.space.pml4, VA) is None


def test_unmap_of_unmapped_address_returns_none(s: Setup) -> None:
    assert s.space.unmap(VA) is None
    s.space.map(VA, s.user_frame(), writable=True, executable=False)
    assert s.space.unmap(VA + PAGE_SIZE) is None


def test_map_after_unmap_of_same_address_succeeds(s: Setup) -> None:
    first, second = s.user_frame(), s.user_frame()
    s.space.map(VA, first, writable=True, executable=False)
    s.space.unmap(VA)
    s.space.map(VA, second, writable=True, executable=False)
    assert reference_walk(s.memory, s.space.pml4, VA) == second | P | RW | US | A | D | XD


# -- entry bits ------------------------------------------------------------------------


@pytest.mark.parametrize("user", [True, False])
@pytest.mark.parametrize("executable", [True, False])
@pytest.mark.parametrize("writable", [True, False])
def test_leaf_entry_has_exactly_the_sdm_bits_for_the_access(
    s: Setup, writable: bool, executable: bool, user: bool
) -> None:
    pa = s.user_frame()
    s.space.map(VA, pa, writable=writable, executable=executable, user=user)
    expected = pa | P | A  # accessed and dirty preset: no shadow-MMU fault to set them
    if writable:
        expected |= RW | D
    if user:
        expected |= US
    if not executable:
        expected |= XD
    assert s.space.lookup(VA) == expected
    assert reference_walk(s.memory, s.space.pml4, VA) == expected


def test_intermediate_entries_are_present_writable_user_and_executable(s: Setup) -> None:
    s.space.map(VA, s.user_frame(), writable=False, executable=False)
    table = s.space.pml4
    for shift in (39, 30, 21):
        entry = entry_at(s.memory, table, (VA >> shift) % 512)
        assert entry & ~FRAME_BITS == P | RW | US | A  # the leaf alone restricts access
        table = entry & FRAME_BITS
        assert s.frames.owner_of(table) is FrameOwner.PAGE_TABLE


# -- the kernel half -------------------------------------------------------------------


def test_kernel_pml4_entries_are_copied_verbatim_without_user_bit(s: Setup) -> None:
    entry = entry_at(s.memory, s.space.pml4, KERNEL_SLOT)
    assert entry == s.kernel_entries[KERNEL_SLOT]
    assert not entry & US


def test_new_address_space_has_only_the_kernel_entries(s: Setup) -> None:
    present = [i for i in range(512) if entry_at(s.memory, s.space.pml4, i) & P]
    assert present == [KERNEL_SLOT]


def test_kernel_pages_are_visible_through_every_address_space(s: Setup) -> None:
    other = AddressSpace(s.frames, s.kernel_entries)
    for space in (s.space, other):
        entry = space.lookup(KERNEL_VA)
        assert entry == s.kernel_page | P | RW | XD
        assert reference_walk(s.memory, space.pml4, KERNEL_VA) == entry


def test_kernel_entry_in_the_user_half_is_refused_and_allocates_nothing(s: Setup) -> None:
    free = s.frames.free_count
    with pytest.raises(ValueError):
        AddressSpace(s.frames, {KERNEL_SLOT - 1: s.kernel_tables[0] | P | RW})
    assert s.frames.free_count == free


def test_kernel_entry_with_user_bit_is_refused_and_allocates_nothing(s: Setup) -> None:
    free = s.frames.free_count
    with pytest.raises(ValueError):
        AddressSpace(s.frames, {KERNEL_SLOT: s.kernel_tables[0] | P | RW | US})
    assert s.frames.free_count == free


# -- refusals --------------------------------------------------------------------------


def test_map_of_already_mapped_address_is_refused_and_keeps_the_first_mapping(s: Setup) -> None:
    first, second = s.user_frame(), s.user_frame()
    s.space.map(VA, first, writable=False, executable=True)
    with pytest.raises(MappingError):
        s.space.map(VA, second, writable=True, executable=False)
    assert s.space.lookup(VA) == first | P | US | A


@pytest.mark.parametrize(("va", "pa"), [(VA + 8, PAGE_SIZE), (VA, PAGE_SIZE + 8),
                                         (VA + 0x800, PAGE_SIZE + 0x800)])
def test_map_of_unaligned_address_is_refused(s: Setup, va: int, pa: int) -> None:
    with pytest.raises(MappingError):
        s.space.map(va, pa, writable=True, executable=False)
    assert reference_walk(s.memory, s.space.pml4, va) is None


@pytest.mark.parametrize("va", [
    USER_END,  # the guard page between user space and the canonical hole
    0x0000_8000_0000_0000,  # first non-canonical address
    0x1234_0000_0000_0000,  # deep in the hole
    0xFFFF_8000_0000_0000,  # first kernel-half address
    KERNEL_VA + PAGE_SIZE,
    0xFFFF_FFFF_FFFF_F000,
    -PAGE_SIZE,
])
def test_user_map_of_non_user_address_is_refused(s: Setup, va: int) -> None:
    kernel = s.kernel_bytes()
    with pytest.raises(MappingError):
        s.space.map(va, s.user_frame(), writable=True, executable=True)
    assert s.kernel_bytes() == kernel


@pytest.mark.parametrize("va", [0xFFFF_8000_0000_0000, KERNEL_VA + PAGE_SIZE,
                                0xFFFF_FFFF_FFFF_F000, 0x0000_8000_0000_0000])
def test_supervisor_map_outside_the_user_half_is_refused_and_shared_tables_unchanged(
    s: Setup, va: int
) -> None:
    kernel = s.kernel_bytes()
    tables = s.frames.used[FrameOwner.PAGE_TABLE]
    with pytest.raises(MappingError):
        s.space.map(va, s.user_frame(), writable=True, executable=False, user=False)
    assert s.kernel_bytes() == kernel
    assert s.frames.used[FrameOwner.PAGE_TABLE] == tables


@pytest.mark.parametrize("va", [KERNEL_VA, 0x0000_8000_0000_0000 + 5 * PAGE_SIZE])
def test_unmap_outside_the_user_half_is_refused_and_kernel_leaf_kept(s: Setup, va: int) -> None:
    # 0x8000_0000_0000 + 5 pages has the same table indices as KERNEL_VA.
    with pytest.raises(MappingError):
        s.space.unmap(va)
    assert s.space.lookup(KERNEL_VA) == s.kernel_page | P | RW | XD


# -- table frames ----------------------------------------------------------------------


def test_first_map_allocates_three_tables_and_neighbour_none(s: Setup) -> None:
    before = s.frames.used[FrameOwner.PAGE_TABLE]
    s.space.map(VA, s.user_frame(), writable=True, executable=False)
    assert s.frames.used[FrameOwner.PAGE_TABLE] == before + 3
    s.space.map(VA + PAGE_SIZE, s.user_frame(), writable=True, executable=False)
    assert s.frames.used[FrameOwner.PAGE_TABLE] == before + 3


def test_destroy_frees_exactly_the_table_frames_it_allocated() -> None:
    s = Setup()
    baseline_tables = s.frames.used[FrameOwner.PAGE_TABLE] - 1  # less the PML4
    baseline_free = s.frames.free_count + 1
    kernel = s.kernel_bytes()
    user: list[int] = []
    # Spread over distinct PML4, PDPT and PD slots so every level allocates.
    for va in (VA, VA + PAGE_SIZE, 0x4000_0000, 0x20_0000_0000, 0x7F00_0000_0000,
               USER_END - PAGE_SIZE):
        pa = s.user_frame()
        user.append(pa)
        s.space.map(va, pa, writable=True, executable=False)
    s.space.destroy()
    assert s.frames.used[FrameOwner.PAGE_TABLE] == baseline_tables
    assert s.frames.free_count == baseline_free - len(user)
    assert all(s.frames.owner_of(pa) is FrameOwner.USER for pa in user)
    assert all(s.frames.owner_of(t) is FrameOwner.KERNEL for t in s.kernel_tables)
    assert s.kernel_bytes() == kernel


def test_destroy_of_empty_space_frees_its_pml4() -> None:
    s = Setup()
    free = s.frames.free_count
    s.space.destroy()
    assert s.frames.free_count == free + 1
    assert s.frames.owner_of(s.space.pml4) is None


# -- property: random mappings against a dict model -----------------------------------

# Pages chosen to share and not share tables at every level, up to the last user page.
_PAGES = [VA + i * PAGE_SIZE for i in range(4)] + [
    0x3FE0_0000, 0x4000_0000, 0x80_0000_0000, 0x7FFF_FFE0_0000, USER_END - PAGE_SIZE,
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PAGES), st.booleans(), st.booleans(), st.booleans()),
                max_size=30))
def test_random_map_unmap_sequence_agrees_with_dict_model_and_reference_walk(
    ops: list[tuple[int, bool, bool, bool]],
) -> None:
    s = Setup(pages=64)
    model: dict[int, int] = {}
    for va, writable, executable, do_unmap in ops:
        if do_unmap:
            expected = model.pop(va, None)
            got = s.space.unmap(va)
            assert got == (None if expected is None else expected & FRAME_BITS)
            if got is not None:
                s.frames.free(got)
        elif va in model:
            with pytest.raises(MappingError):
                s.space.map(va, PAGE_SIZE, writable=writable, executable=executable)
        else:
            pa = s.user_frame()
            s.space.map(va, pa, writable=writable, executable=executable)
            model[va] = pa | P | US | A | (RW | D if writable else 0) | (0 if executable else XD)
    for va in _PAGES:
        for probe in (va, va + 1, va + PAGE_SIZE - 1):
            assert s.space.lookup(probe) == model.get(va)
            assert reference_walk(s.memory, s.space.pml4, probe) == model.get(va)
    tables = s.frames.used[FrameOwner.PAGE_TABLE]
    s.space.destroy()
    assert s.frames.used[FrameOwner.PAGE_TABLE] == 0
    assert tables >= 1
    assert s.frames.used[FrameOwner.USER] == len(model)


def test_map_run_across_a_table_boundary_matches_the_reference_walk(s: Setup) -> None:
    start = 0x20_0000 - 2 * PAGE_SIZE  # two pages in one table, two in the next
    frames = [s.user_frame() for _ in range(4)]
    mapped: list[int] = []
    s.space.map_run(start, frames, writable=False, executable=True, mapped=mapped)
    assert mapped == [start + i * PAGE_SIZE for i in range(4)]
    for i, pa in enumerate(frames):
        entry = reference_walk(s.memory, s.space.pml4, start + i * PAGE_SIZE)
        assert entry is not None and entry & FRAME_BITS == pa
        assert entry & (P | US) == P | US and not entry & (RW | XD)


def test_map_run_stops_at_a_table_holding_a_mapped_page_and_reports_what_it_mapped(
    s: Setup,
) -> None:
    start = 0x20_0000 - 2 * PAGE_SIZE  # two pages in one table, two in the next
    s.space.map(start + 3 * PAGE_SIZE, s.user_frame(), writable=True, executable=False)
    mapped: list[int] = []
    with pytest.raises(MappingError, match=f"{start + 3 * PAGE_SIZE:#x} is already mapped"):
        s.space.map_run(start, [s.user_frame() for _ in range(4)], writable=True,
                        executable=False, mapped=mapped)
    assert mapped == [start, start + PAGE_SIZE]  # the first table's part, nothing after
    assert reference_walk(s.memory, s.space.pml4, start + 2 * PAGE_SIZE) is None
