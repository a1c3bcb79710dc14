"""Physical memory of the SVSM VM and its page-frame allocator.

The SVSM's "physical" memory is one block of host memory handed to KVM as memory
slot 0; ``PhysicalMemory`` is the kernel's view of it (a writable buffer indexed by
guest-physical address). ``FrameAllocator`` hands out 4 KiB frames from it.

Invariants:
- a frame is either free or allocated to exactly one owner tag, with a reference
  count >= 1; ``share`` adds a reference (a RAM-fs page mapped into a process),
  ``free`` drops one and returns the frame when the last goes; ``free`` of a frame
  that is not allocated is a kernel bug and raises;
- every allocated frame is zero-filled when handed out, so no data crosses owners;
  a frame handed out for the first time from memory that came zeroed (the VM's fresh
  anonymous memory, ``zeroed=True``) is not written: it is zero already, and the host
  then faults in only the pages the kernel or the guest really use;
- ``used[tag]`` counts the frames each owner holds; the sum equals
  ``total - free_count``. Tests read these counts to prove nothing leaks.
- the quarantine holds references whose owner gave them up (an ended process's
  pages and page tables, an unmapped range) but which KVM may still translate to: a
  CPU's shadow MMU can hold stale translations of page tables written from the host
  until the VM invalidates (kernel/svsm_vm.py). They are dropped (``free``) only by
  ``take_quarantine``'s caller after an invalidation that began after they were
  retired; until then the frames stay allocated, counted in ``used`` and in
  ``quarantined``. ``alloc`` that finds no free frame asks ``reclaim`` (the VM's
  invalidation) to empty the quarantine first, so quarantined frames never cause
  an ENOMEM.

Foreign ranges (``add_foreign``) are physical memory outside the pool that processes
may map (a guest's RAM, added as another memory slot): their frames are never
allocated or counted here, and ``free`` of one is a no-op, so unmapping and tearing
down treat every mapped frame alike.

``FrameAccount`` is one process's view of the allocator: the frames it allocates
(private pages, page tables) are charged against its limit (kernel/limits.py).

Locking: one lock (class "frames", a leaf) guards the free list and the counters; the
memory buffer itself is not locked (each frame has one owner, who serialises its own
use).
A ``FrameAccount`` is changed only under its process's ``mem_lock`` (or before the
process is visible to anyone).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Protocol

from copra.abi.spec import PAGE_SIZE
from copra.kernel import lockdep

_ZERO_PAGE = bytes(PAGE_SIZE)
#: Zeroes for runs of up to 64 adjacent frames (``zero_frames``; slices copy nothing).
_ZERO_RUN_MAX = 63 * PAGE_SIZE
_ZERO_RUN = memoryview(bytes(_ZERO_RUN_MAX + PAGE_SIZE))


class FrameOwner(Enum):
    """Who holds a frame: the unit of page accounting."""

    KERNEL = "kernel"  #: GDT, IDT, TSS, entry stubs, kernel stacks
    PAGE_TABLE = "page-table"  #: a process's paging structures
    USER = "user"  #: a process's private pages (segments, stack, anonymous memory)
    FILE = "file"  #: RAM-fs file pages (shared with read-only file mappings)

    #: Members are singletons compared by identity: hash them the same way, in C
    #: (Enum's own ``__hash__`` is Python code, run on every frame counted in ``used``).
    __hash__ = object.__hash__


class OutOfMemory(Exception):
    """No free frame is left."""


class PhysicalMemory:
    """Guest-physical memory [base, base + size) as one writable buffer."""

    def __init__(self, buffer: memoryview, base: int = 0) -> None:
        if len(buffer) % PAGE_SIZE:
            raise ValueError("physical memory must be a whole number of pages")
        self.view = buffer
        self.base = base
        self.size = len(buffer)

    def read(self, pa: int, length: int) -> bytes:
        off = pa - self.base
        return bytes(self.view[off : off + length])

    def write(self, pa: int, data: bytes | bytearray | memoryview) -> None:
        off = pa - self.base
        self.view[off : off + len(data)] = data

    def zero(self, pa: int) -> None:
        off = pa - self.base
        self.view[off : off + PAGE_SIZE] = _ZERO_PAGE

    def zero_frames(self, frames: list[int]) -> None:
        """Zero every frame of ``frames``, each run of adjacent ones with one copy (a
        process's frames usually come back to the pool, and out of it, in runs)."""
        view, base, i, n = self.view, self.base, 0, len(frames)
        while i < n:
            start = end = frames[i]
            i += 1
            while i < n and frames[i] == end + PAGE_SIZE and end - start < _ZERO_RUN_MAX:
                end += PAGE_SIZE
                i += 1
            off = start - base
            size = end + PAGE_SIZE - start
            view[off : off + size] = _ZERO_RUN[:size]


class FrameAllocator:
    """Allocates zeroed 4 KiB frames of ``PhysicalMemory``."""

    def __init__(self, memory: PhysicalMemory, first_free: int, *,
                 zeroed: bool = False) -> None:
        """The pool is [first_free, end of memory). ``zeroed``: that memory is all zero
        now (fresh anonymous host memory) and nothing but the frames' owners will
        write it, so a frame handed out for the first time needs no zeroing."""
        if first_free % PAGE_SIZE:
            raise ValueError("first_free must be page-aligned")
        self.memory = memory
        self._lock = lockdep.lock("frames")
        end = memory.base + memory.size
        # Hand out low addresses first: pop() takes from the end of the list.
        self._free: list[int] = list(range(end - PAGE_SIZE, first_free - 1, -PAGE_SIZE))
        #: ``_free[:_fresh]`` were never handed out (and are zero with ``zeroed``): a
        #: freed frame goes to the end of the list, so they stay a prefix of it.
        self._fresh = len(self._free) if zeroed else 0
        self._owner: dict[int, FrameOwner] = {}
        self._refs: dict[int, int] = {}  # only frames with more than one reference
        self.total = len(self._free)
        self.used: Counter[FrameOwner] = Counter()
        self._quarantine: list[int] = []
        self._foreign: list[tuple[int, int]] = []  # [start, end) outside the pool
        #: Called (no lock held) when ``alloc`` finds the pool empty but references in
        #: quarantine: it must invalidate and free what ``take_quarantine`` gives it.
        self.reclaim: Callable[[], None] | None = None

    @property
    def free_count(self) -> int:
        return len(self._free)

    @property
    def quarantined(self) -> int:
        """References waiting in quarantine for the next invalidation."""
        return len(self._quarantine)

    @property
    def available(self) -> int:
        """Frames an allocation may get: free ones, and at most the quarantined ones."""
        return len(self._free) + len(self._quarantine)

    def alloc(self, owner: FrameOwner) -> int:
        """A zeroed frame's physical address."""
        with self._lock:
            pa, fresh = self._pop()
            reclaim = self.reclaim if pa is None and self._quarantine else None
        if reclaim is not None:
            reclaim()  # invalidate: the quarantine goes back to the pool
            with self._lock:
                pa, fresh = self._pop()
        if pa is None:
            raise OutOfMemory(f"no free frame for {owner.value}")
        with self._lock:
            self._owner[pa] = owner
            self.used[owner] += 1
        if not fresh:
            self.memory.zero(pa)
        return pa

    def _pop(self) -> tuple[int | None, bool]:
        """(the next free frame or None, whether it was never handed out); lock held."""
        free = self._free
        if not free:
            return None, False
        fresh = len(free) <= self._fresh
        if fresh:
            self._fresh = len(free) - 1
        return free.pop(), fresh

    def alloc_many(self, count: int, owner: FrameOwner) -> list[int]:
        """``count`` zeroed frames (all or nothing: OutOfMemory, nothing taken)."""
        fresh = 0
        with self._lock:
            enough = len(self._free) >= count
            if enough:
                rest = len(self._free) - count
                fresh = max(0, self._fresh - rest)  # the first ``fresh`` taken
                self._fresh -= fresh
                frames = self._free[rest:]
                del self._free[rest:]
                frames.reverse()  # low addresses first, as ``alloc`` hands them out
                for pa in frames:
                    self._owner[pa] = owner
                self.used[owner] += count
        if not enough:  # the pool is short: one at a time, reclaiming as ``alloc`` does
            frames = []
            try:
                for _ in range(count):
                    frames.append(self.alloc(owner))
            except BaseException:
                self.free_many(frames)
                raise
            return frames
        self.memory.zero_frames(frames[: count - fresh])  # the fresh ones are last now
        return frames

    def retire(self, frames: Iterable[int]) -> None:
        """Give up references KVM may still translate to: they wait in quarantine."""
        with self._lock:
            self._quarantine.extend(frames)

    def take_quarantine(self) -> list[int]:
        """Every reference in quarantine now (the caller frees them once an
        invalidation that starts after this call has completed)."""
        with self._lock:
            taken, self._quarantine = self._quarantine, []
        return taken

    def share(self, pa: int) -> None:
        """Add a reference to an allocated frame."""
        with self._lock:
            if pa not in self._owner:
                raise ValueError(f"share of frame {pa:#x}, which is not allocated")
            self._refs[pa] = self._refs.get(pa, 1) + 1

    def refcount(self, pa: int) -> int:
        with self._lock:
            if pa not in self._owner:
                return 0
            return self._refs.get(pa, 1)

    def add_foreign(self, start: int, size: int) -> None:
        """Frames [start, start + size), outside the pool, that processes may map."""
        end = start + size
        pool = (self.memory.base, self.memory.base + self.memory.size)
        with self._lock:
            for lo, hi in [pool, *self._foreign]:
                if start < hi and lo < end:
                    raise ValueError(f"foreign range {start:#x}-{end:#x} overlaps {lo:#x}-{hi:#x}")
            self._foreign.append((start, end))

    def remove_foreign(self, start: int) -> None:
        with self._lock:
            self._foreign = [r for r in self._foreign if r[0] != start]

    def is_foreign(self, pa: int) -> bool:
        return any(lo <= pa < hi for lo, hi in self._foreign)

    def free(self, pa: int) -> None:
        """Drop one reference; the frame returns to the pool with the last (a no-op for a
        foreign frame)."""
        with self._lock:
            if self._foreign and self.is_foreign(pa):
                return
            refs = self._refs.get(pa)
            if refs is not None:
                if refs > 2:
                    self._refs[pa] = refs - 1
                else:
                    del self._refs[pa]
                return
            owner = self._owner.pop(pa, None)
            if owner is None:
                raise ValueError(f"free of frame {pa:#x}, which is not allocated")
            self.used[owner] -= 1
            self._free.append(pa)

    def free_many(self, frames: Iterable[int]) -> None:
        for pa in frames:
            self.free(pa)

    def owner_of(self, pa: int) -> FrameOwner | None:
        with self._lock:
            return self._owner.get(pa)


class FrameSource(Protocol):
    """Where an address space takes its table frames: the allocator or an account."""

    @property
    def memory(self) -> PhysicalMemory: ...

    def alloc(self, owner: FrameOwner) -> int: ...

    def free_many(self, frames: Iterable[int]) -> None: ...


class FrameAccount:
    """The frames one process holds, charged against its frame limit.

    Invariants: ``held`` counts the frames allocated through this account and not yet
    given back — the process's private frames (FrameOwner.USER) and its page tables
    (PAGE_TABLE) — and never exceeds ``limit``. RAM-fs frames a read-only mapping
    shares (FILE) were not allocated here and are never charged. A frame that is
    unmapped is uncharged at once (``uncharge``) and retired to the allocator's
    quarantine (Kernel.exit_process, MUNMAP), from which an invalidation frees it.
    """

    def __init__(self, frames: FrameAllocator, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"negative frame limit {limit}")
        self.frames = frames
        self.limit = limit
        self.held = 0

    @property
    def memory(self) -> PhysicalMemory:
        return self.frames.memory

    @property
    def available(self) -> int:
        """How many frames an allocation could get now: the pool and the limit allow."""
        return max(0, min(self.frames.available, self.limit - self.held))

    def alloc(self, owner: FrameOwner) -> int:
        if self.held >= self.limit:
            raise OutOfMemory(f"the process holds its limit of {self.limit} frames")
        pa = self.frames.alloc(owner)
        self.held += 1
        return pa

    def alloc_many(self, count: int, owner: FrameOwner) -> list[int]:
        """``count`` frames charged to this account (all or nothing)."""
        if self.held + count > self.limit:
            raise OutOfMemory(f"{count} frames asked; the process holds {self.held} of its "
                              f"limit of {self.limit} frames")
        frames = self.frames.alloc_many(count, owner)
        self.held += count
        return frames

    def charged(self, frames: Iterable[int]) -> int:
        """How many of ``frames`` (allocated, this process's or shared) are charged."""
        owner_of = self.frames.owner_of
        return sum(1 for pa in frames if owner_of(pa) not in (FrameOwner.FILE, None))

    def uncharge(self, frames: list[int]) -> None:
        """Take the charge off ``frames``, which the caller frees later itself."""
        self.held -= self.charged(frames)

    def uncharge_private(self, count: int) -> None:
        """Take the charge off ``count`` private frames, which the caller frees later."""
        self.held -= count

    def uncharge_all(self) -> None:
        """The process gave everything up (it ended)."""
        self.held = 0

    def free_many(self, frames: Iterable[int]) -> None:
        """Free frames that were never visible to the CPU, uncharging the charged ones."""
        frames = list(frames)
        self.uncharge(frames)
        self.frames.free_many(frames)
