"""Frame allocator over a plain bytearray: zeroing, per-owner accounting, exhaustion."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.abi.spec import PAGE_SIZE
from copra.kernel.frames import FrameAllocator, FrameOwner, OutOfMemory, PhysicalMemory

BASE = 0x10_0000  # a non-zero base, so offsets and addresses differ


def allocator(pages: int = 8, reserved: int = 2) -> FrameAllocator:
    """``pages`` frames at BASE, of which the first ``reserved`` are never handed out."""
    memory = PhysicalMemory(memoryview(bytearray(pages * PAGE_SIZE)), base=BASE)
    return FrameAllocator(memory, BASE + reserved * PAGE_SIZE)


def test_physical_memory_of_partial_page_is_refused() -> None:
    with pytest.raises(ValueError):
        PhysicalMemory(memoryview(bytearray(PAGE_SIZE + 1)))


def test_allocator_with_unaligned_first_free_is_refused() -> None:
    memory = PhysicalMemory(memoryview(bytearray(4 * PAGE_SIZE)))
    with pytest.raises(ValueError):
        FrameAllocator(memory, 0x800)


def test_new_allocator_counts_frames_from_first_free_to_end() -> None:
    frames = allocator(pages=8, reserved=2)
    assert frames.total == 6
    assert frames.free_count == 6
    assert sum(frames.used.values()) == 0


def test_alloc_hands_out_low_addresses_first() -> None:
    frames = allocator(pages=8, reserved=2)
    got = [frames.alloc(FrameOwner.USER) for _ in range(6)]
    assert got == [BASE + i * PAGE_SIZE for i in range(2, 8)]


def test_alloc_never_hands_out_reserved_frames() -> None:
    frames = allocator(pages=8, reserved=3)
    got = {frames.alloc(FrameOwner.KERNEL) for _ in range(frames.total)}
    assert min(got) == BASE + 3 * PAGE_SIZE


def test_realloc_of_freed_dirty_frame_returns_zeroed_frame() -> None:
    frames = allocator(pages=3, reserved=2)  # exactly one frame, so realloc gets it back
    pa = frames.alloc(FrameOwner.USER)
    frames.memory.write(pa, b"\xa5" * PAGE_SIZE)
    frames.free(pa)
    again = frames.alloc(FrameOwner.PAGE_TABLE)
    assert again == pa
    assert frames.memory.read(again, PAGE_SIZE) == bytes(PAGE_SIZE)


def test_alloc_over_garbage_memory_returns_zeroed_frame() -> None:
    memory = PhysicalMemory(memoryview(bytearray(b"\xff" * (4 * PAGE_SIZE))))
    frames = FrameAllocator(memory, PAGE_SIZE)
    pa = frames.alloc(FrameOwner.USER)
    assert memory.read(pa, PAGE_SIZE) == bytes(PAGE_SIZE)


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 3)), max_size=12))
@settings(max_examples=60, deadline=None)
def test_zeroed_pool_hands_out_zero_frames_fresh_or_reused(steps: list[tuple[bool, int]]) -> None:
    # The pool starts zero (zeroed=True): fresh frames are not written, freed ones are
    # zeroed again when handed out. Every frame handed out reads as zero, and is then
    # dirtied by its owner, whether alloc or alloc_many took it.
    memory = PhysicalMemory(memoryview(bytearray(10 * PAGE_SIZE)), base=BASE)
    frames = FrameAllocator(memory, BASE + 2 * PAGE_SIZE, zeroed=True)
    held: list[int] = []
    for take, count in steps:
        if take and frames.free_count >= count:
            got = frames.alloc_many(count, FrameOwner.USER) if count > 1 else \
                [frames.alloc(FrameOwner.USER)]
            for pa in got:
                assert memory.read(pa, PAGE_SIZE) == bytes(PAGE_SIZE)
                memory.write(pa, b"\x5a" * PAGE_SIZE)
            held += got
        elif held:
            frames.free_many(held[:count])
            del held[:count]
    assert frames.free_count + len(held) == frames.total


@given(st.lists(st.integers(0, 199), unique=True, max_size=120))
@settings(max_examples=80, deadline=None)
def test_zero_frames_zeroes_exactly_the_frames_given_in_any_runs(pages: list[int]) -> None:
    # Adjacent frames are zeroed as one run (up to 64 pages a copy): every frame given
    # reads zero after, every other keeps its bytes.
    memory = PhysicalMemory(memoryview(bytearray(b"\xa5" * (200 * PAGE_SIZE))), base=BASE)
    given_frames = [BASE + page * PAGE_SIZE for page in sorted(pages)]
    memory.zero_frames(given_frames)
    for page in range(200):
        want = bytes(PAGE_SIZE) if page in pages else b"\xa5" * PAGE_SIZE
        assert memory.read(BASE + page * PAGE_SIZE, PAGE_SIZE) == want


def test_alloc_zeroes_only_its_own_frame() -> None:
    frames = allocator(pages=4, reserved=0)
    first = frames.alloc(FrameOwner.USER)
    frames.memory.write(first, b"\x5a" * PAGE_SIZE)
    frames.alloc(FrameOwner.USER)
    assert frames.memory.read(first, PAGE_SIZE) == b"\x5a" * PAGE_SIZE


def test_alloc_and_free_account_per_owner() -> None:
    frames = allocator(pages=8, reserved=0)
    kernel = frames.alloc(FrameOwner.KERNEL)
    tables = [frames.alloc(FrameOwner.PAGE_TABLE) for _ in range(2)]
    user = [frames.alloc(FrameOwner.USER) for _ in range(3)]
    assert frames.used == {FrameOwner.KERNEL: 1, FrameOwner.PAGE_TABLE: 2, FrameOwner.USER: 3}
    assert frames.owner_of(kernel) is FrameOwner.KERNEL
    assert all(frames.owner_of(pa) is FrameOwner.PAGE_TABLE for pa in tables)
    frames.free_many(user)
    assert frames.used[FrameOwner.USER] == 0
    assert frames.used[FrameOwner.PAGE_TABLE] == 2
    assert frames.owner_of(user[0]) is None
    assert frames.free_count == frames.total - 3


def test_free_of_never_allocated_frame_raises() -> None:
    frames = allocator()
    with pytest.raises(ValueError):
        frames.free(BASE + 5 * PAGE_SIZE)


def test_double_free_raises_and_leaves_counts_unchanged() -> None:
    frames = allocator()
    pa = frames.alloc(FrameOwner.USER)
    frames.free(pa)
    free_count = frames.free_count
    with pytest.raises(ValueError):
        frames.free(pa)
    assert frames.free_count == free_count
    assert frames.used[FrameOwner.USER] == 0


def test_alloc_when_exhausted_raises_out_of_memory() -> None:
    frames = allocator(pages=4, reserved=1)
    for _ in range(3):
        frames.alloc(FrameOwner.USER)
    with pytest.raises(OutOfMemory):
        frames.alloc(FrameOwner.KERNEL)
    assert frames.free_count == 0
    assert frames.used == {FrameOwner.USER: 3}


def test_alloc_after_out_of_memory_and_a_free_succeeds() -> None:
    frames = allocator(pages=4, reserved=1)
    held = [frames.alloc(FrameOwner.USER) for _ in range(3)]
    with pytest.raises(OutOfMemory):
        frames.alloc(FrameOwner.USER)
    frames.free(held[1])
    assert frames.alloc(FrameOwner.PAGE_TABLE) == held[1]


# -- shared frames -----------------------------------------------------------------------


def test_shared_frame_stays_allocated_until_its_last_reference_is_freed() -> None:
    frames = allocator()
    pa = frames.alloc(FrameOwner.FILE)
    frames.share(pa)
    frames.share(pa)
    assert frames.refcount(pa) == 3
    free_count = frames.free_count
    frames.free(pa)
    frames.free(pa)
    assert frames.refcount(pa) == 1
    assert frames.owner_of(pa) is FrameOwner.FILE
    assert frames.free_count == free_count
    assert frames.used[FrameOwner.FILE] == 1
    frames.free(pa)
    assert frames.refcount(pa) == 0
    assert frames.free_count == free_count + 1
    assert frames.used[FrameOwner.FILE] == 0


def test_share_of_unallocated_frame_raises() -> None:
    frames = allocator()
    pa = frames.alloc(FrameOwner.FILE)
    frames.free(pa)
    with pytest.raises(ValueError):
        frames.share(pa)
    assert frames.refcount(pa) == 0


def test_free_after_last_reference_of_shared_frame_raises() -> None:
    frames = allocator()
    pa = frames.alloc(FrameOwner.FILE)
    frames.share(pa)
    frames.free(pa)
    frames.free(pa)
    with pytest.raises(ValueError):
        frames.free(pa)


def test_realloc_of_frame_freed_after_sharing_has_one_reference() -> None:
    frames = allocator(pages=3, reserved=2)
    pa = frames.alloc(FrameOwner.FILE)
    frames.share(pa)
    frames.free(pa)
    frames.free(pa)
    assert frames.alloc(FrameOwner.USER) == pa
    assert frames.refcount(pa) == 1
    frames.free(pa)
    assert frames.free_count == 1


# -- property: any alloc/share/free sequence --------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["alloc", "share", "free"]),
                          st.sampled_from(FrameOwner), st.integers(0, 15)),
                max_size=60))
def test_random_alloc_share_free_sequence_keeps_accounting_invariants(
    steps: list[tuple[str, FrameOwner, int]],
) -> None:
    frames = allocator(pages=12, reserved=2)
    held: dict[int, tuple[FrameOwner, int]] = {}  # pa -> (owner, references)
    for op, owner, pick in steps:
        if op == "alloc":
            if len(held) == frames.total:
                with pytest.raises(OutOfMemory):
                    frames.alloc(owner)
            else:
                pa = frames.alloc(owner)
                assert pa not in held
                assert pa % PAGE_SIZE == 0
                assert BASE + 2 * PAGE_SIZE <= pa < BASE + 12 * PAGE_SIZE
                assert frames.memory.read(pa, PAGE_SIZE) == bytes(PAGE_SIZE)
                frames.memory.write(pa, b"\xee" * PAGE_SIZE)  # dirty it for the next owner
                held[pa] = (owner, 1)
        elif held:
            pa = sorted(held)[pick % len(held)]
            tag, refs = held[pa]
            if op == "share":
                frames.share(pa)
                held[pa] = (tag, refs + 1)
            else:
                frames.free(pa)
                if refs == 1:
                    del held[pa]
                else:
                    held[pa] = (tag, refs - 1)
        assert frames.total - frames.free_count == len(held) == sum(frames.used.values())
        for tag in FrameOwner:
            assert frames.used[tag] == sum(1 for o, _ in held.values() if o is tag)
        for pa, (tag, refs) in held.items():
            assert frames.owner_of(pa) is tag
            assert frames.refcount(pa) == refs


# --- the quarantine: frames KVM may still translate to ---------------------------------


def test_retired_frames_stay_allocated_until_the_quarantine_is_taken_and_freed() -> None:
    frames = allocator(pages=8, reserved=2)
    pa = frames.alloc(FrameOwner.USER)
    frames.retire([pa])
    assert (frames.quarantined, frames.owner_of(pa), frames.free_count) == (1, FrameOwner.USER, 5)
    assert frames.available == 6
    frames.free_many(frames.take_quarantine())
    assert (frames.quarantined, frames.owner_of(pa), frames.free_count) == (0, None, 6)


def test_alloc_from_an_empty_pool_reclaims_the_quarantine_first() -> None:
    frames = allocator(pages=4, reserved=2)
    held = [frames.alloc(FrameOwner.USER) for _ in range(2)]
    frames.retire(held)
    reclaims: list[int] = []

    def reclaim() -> None:  # what the VM does: invalidate, then free what waited
        reclaims.append(frames.quarantined)
        frames.free_many(frames.take_quarantine())

    frames.reclaim = reclaim
    assert frames.alloc(FrameOwner.USER) in held
    assert reclaims == [2] and frames.free_count == 1


def test_alloc_with_nothing_free_or_quarantined_is_out_of_memory_without_reclaim() -> None:
    frames = allocator(pages=3, reserved=2)
    frames.alloc(FrameOwner.USER)
    frames.reclaim = lambda: pytest.fail("nothing to reclaim")
    with pytest.raises(OutOfMemory):
        frames.alloc(FrameOwner.USER)


def test_quarantined_reference_to_a_shared_frame_drops_only_that_reference() -> None:
    frames = allocator()
    pa = frames.alloc(FrameOwner.FILE)
    frames.share(pa)
    frames.retire([pa])
    frames.free_many(frames.take_quarantine())
    assert frames.refcount(pa) == 1


def test_alloc_many_hands_out_zeroed_low_frames_first_or_nothing() -> None:
    frames = allocator(pages=8, reserved=2)
    frames.memory.write(BASE + 2 * PAGE_SIZE, b"\xff" * PAGE_SIZE)
    got = frames.alloc_many(3, FrameOwner.USER)
    assert got == [BASE + i * PAGE_SIZE for i in (2, 3, 4)]
    assert frames.memory.read(got[0], PAGE_SIZE) == bytes(PAGE_SIZE)
    assert frames.used[FrameOwner.USER] == 3
    with pytest.raises(OutOfMemory):
        frames.alloc_many(4, FrameOwner.USER)
    assert frames.free_count == 3 and frames.used[FrameOwner.USER] == 3
