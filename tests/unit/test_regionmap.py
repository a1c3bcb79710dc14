"""RegionMap against a naive model (a sorted list scanned linearly), plus its costs.

The hypothesis tests drive random inserts, removals and queries through both and
compare every answer; ``check`` proves the tree's invariants after each change.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.kernel import regionmap
from copra.kernel.regionmap import RegionMap

# --- the model ------------------------------------------------------------------------------


@dataclass
class Model:
    ranges: list[tuple[int, int, int]] = field(default_factory=list)  # sorted by start

    def is_free(self, start: int, end: int) -> bool:
        return start >= end or all(e <= start or s >= end for s, e, _ in self.ranges)

    def insert(self, start: int, end: int, value: int) -> None:
        self.ranges.append((start, end, value))
        self.ranges.sort()

    def remove(self, start: int) -> int:
        for i, (s, _, v) in enumerate(self.ranges):
            if s == start:
                del self.ranges[i]
                return v
        raise KeyError(start)

    def get(self, start: int) -> int | None:
        return next((v for s, _, v in self.ranges if s == start), None)

    def find(self, addr: int) -> int | None:
        return next((v for s, e, v in self.ranges if s <= addr < e), None)

    def overlapping(self, start: int, end: int) -> list[tuple[int, int, int]]:
        return [r for r in self.ranges if r[0] < end and r[1] > start] if start < end else []

    def first_fit(self, size: int, lo: int, hi: int) -> int | None:
        candidate = lo
        for s, e, _ in self.ranges:
            if e <= candidate:
                continue
            if s >= candidate + size:
                break
            candidate = e
        return candidate if candidate + size <= hi else None


# --- hypothesis against the model -----------------------------------------------------------

SPACE = 256  # small address space: collisions, adjacency and full spaces are common

ranges = st.tuples(st.integers(0, SPACE), st.integers(1, 24)).map(lambda t: (t[0], t[0] + t[1]))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), ranges),
        st.tuples(st.just("remove"), st.integers(0, SPACE)),
        st.tuples(st.just("remove-existing"), st.integers(0, 1 << 16)),
    ),
    max_size=120,
)
queries = st.lists(
    st.tuples(st.integers(-2, SPACE + 30), st.integers(-2, SPACE + 30), st.integers(1, 40)),
    max_size=30,
)


def compare(tree: RegionMap[int], model: Model, query: tuple[int, int, int]) -> None:
    a, b, size = query
    lo, hi = min(a, b), max(a, b)
    assert tree.is_free(lo, hi) == model.is_free(lo, hi)
    assert tree.find(a) == model.find(a)
    assert tree.get(a) == model.get(a)
    assert tree.overlapping(lo, hi) == model.overlapping(lo, hi)
    assert tree.first_fit(size, max(lo, 0), hi + 40) == model.first_fit(size, max(lo, 0),
                                                                          hi + 40)


@settings(max_examples=300, deadline=None)
@given(ops, queries)
def test_regionmap_answers_as_the_naive_model(operations: list[tuple[str, object]],
                                              qs: list[tuple[int, int, int]]) -> None:
    tree: RegionMap[int] = RegionMap()
    model = Model()
    for value, (op, arg) in enumerate(operations):
        if op == "insert":
            assert isinstance(arg, tuple)
            start, end = arg
            if model.is_free(start, end):
                tree.insert(start, end, value)
                model.insert(start, end, value)
            else:
                with pytest.raises(ValueError):
                    tree.insert(start, end, value)
        elif op == "remove":
            assert isinstance(arg, int)
            if model.get(arg) is None:
                with pytest.raises(KeyError):
                    tree.remove(arg)
            else:
                assert tree.remove(arg) == model.remove(arg)
        elif model.ranges:
            assert isinstance(arg, int)
            start = model.ranges[arg % len(model.ranges)][0]
            assert tree.remove(start) == model.remove(start)
        tree.check()
        assert len(tree) == len(model.ranges)
        assert list(tree.ranges()) == model.ranges
        for q in qs[:3]:
            compare(tree, model, q)
    for q in qs:
        compare(tree, model, q)


@settings(max_examples=200, deadline=None)
@given(st.lists(ranges, max_size=60), st.integers(0, SPACE + 30), st.integers(1, 60))
def test_first_fit_is_the_lowest_free_range_at_or_above_lo(
        inserts: list[tuple[int, int]], lo: int, size: int) -> None:
    tree: RegionMap[None] = RegionMap()
    for start, end in inserts:
        if tree.is_free(start, end):
            tree.insert(start, end, None)
    found = tree.first_fit(size, lo, SPACE + 100)
    brute = next((a for a in range(lo, SPACE + 101 - size) if tree.is_free(a, a + size)), None)
    assert found == brute


# --- examples -----------------------------------------------------------------------------


def test_empty_map_fits_at_lo_and_nothing_overlaps() -> None:
    tree: RegionMap[str] = RegionMap()
    assert tree.first_fit(10, 100, 200) == 100
    assert tree.first_fit(10, 195, 200) is None
    assert tree.overlapping(0, 1 << 47) == []
    assert tree.find(5) is None
    assert tree.is_free(0, 1 << 47)


def test_insert_of_empty_or_overlapping_range_is_refused() -> None:
    tree: RegionMap[str] = RegionMap()
    tree.insert(10, 20, "a")
    for start, end in [(10, 10), (15, 12), (19, 30), (0, 11), (12, 13), (5, 25)]:
        with pytest.raises(ValueError):
            tree.insert(start, end, "x")
    tree.insert(20, 30, "b")  # adjacent is fine
    tree.insert(0, 10, "c")
    assert list(tree) == ["c", "a", "b"]


def test_remove_of_a_start_that_is_no_entry_is_keyerror() -> None:
    tree: RegionMap[str] = RegionMap()
    tree.insert(10, 20, "a")
    with pytest.raises(KeyError):
        tree.remove(11)
    assert len(tree) == 1


def test_first_fit_skips_holes_below_lo_and_too_small_ones() -> None:
    tree: RegionMap[str] = RegionMap()
    for start in range(0, 1000, 100):  # [0,50) [100,150) ... holes of 50
        tree.insert(start, start + 50, str(start))
    tree.remove(500)  # a hole of 150 at [450, 600)
    assert tree.first_fit(50, 0, 2000) == 50
    assert tree.first_fit(51, 0, 2000) == 450
    assert tree.first_fit(100, 470, 2000) == 470
    assert tree.first_fit(140, 470, 2000) == 950  # the clipped hole is too small now
    assert tree.first_fit(160, 0, 1000) is None  # the hole after the last is past hi


def test_first_fit_respects_hi() -> None:
    tree: RegionMap[str] = RegionMap()
    tree.insert(0, 10, "a")
    assert tree.first_fit(5, 0, 15) == 10
    assert tree.first_fit(5, 0, 14) is None


def test_clear_empties_the_map() -> None:
    tree: RegionMap[int] = RegionMap()
    for i in range(10):
        tree.insert(i * 2, i * 2 + 1, i)
    tree.clear()
    assert len(tree) == 0 and list(tree) == []
    tree.check()


# --- costs --------------------------------------------------------------------------------


class CountingMap(RegionMap[int]):
    """Counts the nodes the overlapping search enters."""

    def __init__(self) -> None:
        super().__init__()
        self.visits = 0

    def _collect(self, n, start, end, out):  # type: ignore[no-untyped-def]
        self.visits += 1
        super()._collect(n, start, end, out)


def test_height_stays_logarithmic_under_sequential_and_random_inserts() -> None:
    n = 4096
    ordered: RegionMap[int] = RegionMap()
    for i in range(n):
        ordered.insert(i * 2, i * 2 + 1, i)
    shuffled: RegionMap[int] = RegionMap()
    starts = list(range(n))
    random.Random(7).shuffle(starts)
    for i in starts:
        shuffled.insert(i * 2, i * 2 + 1, i)
    for tree in (ordered, shuffled):
        tree.check()
        assert tree._root is not None
        assert tree._root.height <= 1.45 * (n + 2).bit_length()
    for i in range(0, n, 2):  # delete half, in order: still balanced
        ordered.remove(i * 2)
    ordered.check()
    assert ordered._root is not None and ordered._root.height <= 1.45 * 13


def test_overlapping_enters_only_boundary_paths_and_the_overlapping_entries() -> None:
    tree = CountingMap()
    for i in range(1 << 14):
        tree.insert(i * 10, i * 10 + 5, i)
    tree.visits = 0
    assert [v for _, _, v in tree.overlapping(50_003, 50_033)] == [5000, 5001, 5002, 5003]
    assert tree.visits <= 2 * 21 + 4


def test_first_fit_in_a_large_packed_map_enters_few_nodes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    tree: RegionMap[int] = RegionMap()
    n = 1 << 14
    for i in range(n):
        tree.insert(i * 10, i * 10 + 9, i)  # holes of 1 everywhere
    tree.remove(12_340)  # one hole of 11 at [12339, 12350), below lo
    tree.remove(99_990)  # one of 11 at [99989, 100000)
    calls = 0
    fit = regionmap._fit

    def counting(*args):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return fit(*args)

    monkeypatch.setattr(regionmap, "_fit", counting)
    assert tree.first_fit(5, 20_000, 1 << 30) == 99_989
    assert tree.first_fit(5, 99_995, 1 << 30) == 99_995
    assert tree.first_fit(11, 20_000, 1 << 30) == 99_989
    assert tree.first_fit(12, 0, 1 << 30) == n * 10 - 1
    assert calls <= 3 * 2 * 21
