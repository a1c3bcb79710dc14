"""A map of disjoint address ranges with logarithmic lookup and first-fit search.

A process's mappings live here (kernel/process.py): each entry is a half-open range
``[start, end)`` with a value (the ``Region``). The structure is an AVL tree keyed by
``start`` and augmented, as Linux augments its VMA tree with ``rb_subtree_gap`` (and
its maple tree with per-node gaps), so that the lowest free range of a given size is
found without scanning:

Invariants, for every node ``n``:
- ``n.start < n.end``; every start in ``n.left`` is below ``n.start`` and every start
  in ``n.right`` above it (in-order = address order); ranges are pairwise disjoint, so
  in address order each range ends at or before the next one starts;
- ``n.height`` is 1 + the larger child height (an absent child has height 0), and the
  two child heights differ by at most 1: the height is at most ~1.44 log2(len + 2),
  which bounds every operation below;
- ``n.lo`` is the smallest start and ``n.hi`` the largest end in n's subtree (the
  first range's start, the last range's end);
- ``n.gap`` is the largest hole *between* two consecutive ranges of n's subtree
  (``next.start - prev.end``), 0 when the subtree holds one range. It is computed from
  the children alone (their ``gap``, ``lo`` and ``hi``), so rotations keep it exact
  by recomputing the two or three nodes they move, bottom-up.

Costs (n entries, k reported): ``insert``, ``remove``, ``get``, ``find``,
``is_free`` and ``first_fit`` are O(log n); ``overlapping`` is O(log n + k) and
visits only the two boundary paths and the overlapping entries; iteration is O(n).

``first_fit(size, lo, hi)`` returns the lowest ``a >= lo`` with ``[a, a + size)``
overlapping no entry and ``a + size <= hi``. The holes are those between consecutive
entries plus the one before the first (from 0) and after the last. Why it is
logarithmic: a subtree lying wholly below ``lo`` is skipped by its ``hi``; for a
subtree wholly at or above ``lo`` its ``gap`` (and the hole before it) answers
exactly whether it holds a fit, so the search enters it only to succeed; only the
subtrees whose range contains ``lo`` — one per level — may be entered and left
empty-handed.

The values are opaque here: a value whose range changes must be removed and
inserted again (``Process.grow`` does so).

Locking: none; the owner serialises every call (a process's ``mem_lock``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

V = TypeVar("V")


class _Node(Generic[V]):
    __slots__ = ("end", "gap", "height", "hi", "left", "lo", "right", "start", "value")

    def __init__(self, start: int, end: int, value: V) -> None:
        self.start = start
        self.end = end
        self.value = value
        self.left: _Node[V] | None = None
        self.right: _Node[V] | None = None
        self.height = 1
        self.lo = start
        self.hi = end
        self.gap = 0


def _height(n: _Node[V] | None) -> int:
    return 0 if n is None else n.height


def _update(n: _Node[V]) -> None:
    """Recompute n's augmented fields from its children (which must be up to date).

    Written without max() and helper calls: it runs at every level of every change."""
    left, right = n.left, n.right
    if left is None:
        lo, gap, height = n.start, 0, 1
    else:
        lo, gap, height = left.lo, n.start - left.hi, left.height + 1
        if left.gap > gap:
            gap = left.gap
    if right is None:
        hi = n.end
    else:
        hi = right.hi
        between = right.lo - n.end
        if between > gap:
            gap = between
        if right.gap > gap:
            gap = right.gap
        if right.height >= height:
            height = right.height + 1
    n.lo, n.hi, n.gap, n.height = lo, hi, gap, height


def _rotate_right(n: _Node[V]) -> _Node[V]:
    pivot = n.left
    assert pivot is not None
    n.left = pivot.right
    pivot.right = n
    _update(n)
    _update(pivot)
    return pivot


def _rotate_left(n: _Node[V]) -> _Node[V]:
    pivot = n.right
    assert pivot is not None
    n.right = pivot.left
    pivot.left = n
    _update(n)
    _update(pivot)
    return pivot


def _rebalance(n: _Node[V]) -> _Node[V]:
    """n with fresh fields, rotated so that its children's heights differ by <= 1
    (both children already satisfy every invariant)."""
    left, right = n.left, n.right
    balance = (0 if left is None else left.height) - (0 if right is None else right.height)
    if balance > 1:
        assert left is not None
        if _height(left.left) < _height(left.right):
            n.left = _rotate_left(left)
        return _rotate_right(n)
    if balance < -1:
        assert right is not None
        if _height(right.right) < _height(right.left):
            n.right = _rotate_right(right)
        return _rotate_left(n)
    _update(n)
    return n


def _insert(n: _Node[V] | None, new: _Node[V]) -> _Node[V]:
    if n is None:
        return new
    if new.start < n.start:
        n.left = _insert(n.left, new)
    else:
        n.right = _insert(n.right, new)
    return _rebalance(n)


def _pop_min(n: _Node[V]) -> tuple[_Node[V], _Node[V] | None]:
    """(the leftmost node of n's subtree, the subtree without it)."""
    if n.left is None:
        return n, n.right
    smallest, n.left = _pop_min(n.left)
    return smallest, _rebalance(n)


def _remove(n: _Node[V] | None, start: int, out: list[_Node[V]]) -> _Node[V] | None:
    if n is None:
        raise KeyError(start)
    if start < n.start:
        n.left = _remove(n.left, start, out)
    elif start > n.start:
        n.right = _remove(n.right, start, out)
    else:
        out.append(n)
        if n.left is None:
            return n.right
        if n.right is None:
            return n.left
        successor, rest = _pop_min(n.right)
        successor.left, successor.right = n.left, rest
        n = successor
    return _rebalance(n)


def _fit(n: _Node[V] | None, prev_end: int, lo: int, size: int) -> int | None:
    """The lowest a >= lo with [a, a + size) in a hole of n's subtree, counting the hole
    between prev_end (the end of the range before the subtree, or 0) and the subtree's
    first range, but not the one after its last range."""
    while n is not None:
        if n.hi <= lo:
            return None  # every hole of the subtree lies below lo
        first = max(prev_end, lo)
        if n.lo - first >= size:
            return first  # the hole before the subtree: the lowest there is
        if n.gap < size:
            return None  # no hole inside the subtree is large enough, even unclipped
        found = _fit(n.left, prev_end, lo, size)
        if found is not None:
            return found
        first = max(n.left.hi if n.left is not None else prev_end, lo)
        if n.start - first >= size:
            return first
        prev_end, n = n.end, n.right
    return None


class RegionMap(Generic[V]):
    """Disjoint half-open ranges ``[start, end)`` with a value each (see the module)."""

    def __init__(self) -> None:
        self._root: _Node[V] | None = None
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[V]:
        """The values in address order."""
        for node in self._nodes():
            yield node.value

    def ranges(self) -> Iterator[tuple[int, int, V]]:
        """(start, end, value) in address order."""
        for node in self._nodes():
            yield node.start, node.end, node.value

    def _nodes(self) -> Iterator[_Node[V]]:
        stack: list[_Node[V]] = []
        n = self._root
        while stack or n is not None:
            while n is not None:
                stack.append(n)
                n = n.left
            n = stack.pop()
            yield n
            n = n.right

    def clear(self) -> None:
        self._root = None
        self._len = 0

    # --- changes --------------------------------------------------------------------------

    def insert(self, start: int, end: int, value: V) -> None:
        """Add [start, end); ValueError if it is empty or overlaps an entry."""
        if start >= end:
            raise ValueError(f"empty range [{start:#x}, {end:#x})")
        if not self.is_free(start, end):
            raise ValueError(f"[{start:#x}, {end:#x}) overlaps an entry")
        self._root = _insert(self._root, _Node(start, end, value))
        self._len += 1

    def remove(self, start: int) -> V:
        """Remove the entry that starts at ``start`` and return its value (KeyError if none)."""
        out: list[_Node[V]] = []
        self._root = _remove(self._root, start, out)
        self._len -= 1
        return out[0].value

    # --- lookups --------------------------------------------------------------------------

    def _floor(self, addr: int) -> _Node[V] | None:
        """The entry with the largest start <= addr."""
        best = None
        n = self._root
        while n is not None:
            if n.start <= addr:
                best, n = n, n.right
            else:
                n = n.left
        return best

    def get(self, start: int) -> V | None:
        """The value of the entry starting exactly at ``start``."""
        n = self._root
        while n is not None:
            if start == n.start:
                return n.value
            n = n.left if start < n.start else n.right
        return None

    def find(self, addr: int) -> V | None:
        """The value of the entry containing ``addr``."""
        node = self._floor(addr)
        return node.value if node is not None and addr < node.end else None

    def is_free(self, start: int, end: int) -> bool:
        """Whether no entry overlaps [start, end) (an empty range is free)."""
        if start >= end:
            return True
        # Ranges are disjoint and sorted, so the last one starting below `end` is also
        # the one reaching highest among them.
        node = self._floor(end - 1)
        return node is None or node.end <= start

    def overlapping(self, start: int, end: int) -> list[tuple[int, int, V]]:
        """(start, end, value) of every entry overlapping [start, end), in address order."""
        out: list[tuple[int, int, V]] = []
        if start < end:
            self._collect(self._root, start, end, out)
        return out

    def _collect(self, n: _Node[V] | None, start: int, end: int,
                 out: list[tuple[int, int, V]]) -> None:
        while n is not None and n.lo < end and n.hi > start:
            if start < n.start:
                self._collect(n.left, start, end, out)  # left ranges end at or below n.start
            if n.start < end and n.end > start:
                out.append((n.start, n.end, n.value))
            if n.end >= end:
                return  # right ranges start at or above n.end
            n = n.right

    def first_fit(self, size: int, lo: int, hi: int) -> int | None:
        """The lowest a >= lo with [a, a + size) free and a + size <= hi, or None."""
        if size <= 0:
            raise ValueError(f"size {size} must be positive")
        root = self._root
        found = _fit(root, 0, lo, size)
        if found is None:
            found = max(root.hi if root is not None else 0, lo)  # the hole after the last
        return found if found + size <= hi else None

    # --- for tests ------------------------------------------------------------------------

    def check(self) -> None:
        """Raise AssertionError unless every invariant of the module docstring holds."""
        count = self._check(self._root, None, None)
        if count != self._len:
            raise AssertionError(f"{count} nodes, length {self._len}")
        previous_end = None
        for node in self._nodes():
            if previous_end is not None and node.start < previous_end:
                raise AssertionError(f"{node.start:#x} overlaps the previous range")
            previous_end = node.end

    def _check(self, n: _Node[V] | None, low: int | None, high: int | None) -> int:
        if n is None:
            return 0
        if n.start >= n.end:
            raise AssertionError(f"empty range at {n.start:#x}")
        if (low is not None and n.start <= low) or (high is not None and n.start >= high):
            raise AssertionError(f"{n.start:#x} out of order")
        count = 1 + self._check(n.left, low, n.start) + self._check(n.right, n.start, high)
        fields = (n.lo, n.hi, n.gap, n.height)
        _update(n)
        if fields != (n.lo, n.hi, n.gap, n.height):
            raise AssertionError(f"stale fields at {n.start:#x}: {fields}")
        if abs(_height(n.left) - _height(n.right)) > 1:
            raise AssertionError(f"unbalanced at {n.start:#x}")
        return count
