"""A process: an address space, a handle table, one thread's CPU context, a status.

Invariants:
- ``regions`` lists every user mapping, sorted by address and pairwise disjoint; page
  i of a region is mapped to ``frames[i]`` in the page tables and nothing else of the
  user half is mapped;
- a private region's frames (FrameOwner.USER) belong to this process alone; a shared
  region's frames are RAM-fs file frames on which the region holds one reference
  each (``FrameAllocator.share``); ``release`` and unmapping drop exactly those
  references, so every frame is returned once, whatever the kind;
- handle 0 is the task's log from creation until it is closed or the process ends;
- ``status`` is None while the process lives, then the packed exit status
  (spec.EXIT_STATUS_SHIFT / KILLED_BY_EXCEPTION); a process is released once.

Unmapping hands the frames back to the caller instead of freeing them: KVM may still
translate through the removed entries until the machine invalidates its mappings, so
the caller invalidates first and frees after (Kernel.exit_process, sys_munmap).

Locking: ``mem_lock`` serialises changes to the address space and every copy through
usermem; the scheduler owns ``state`` (only the vCPU thread changes it).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from enum import Enum

from copra.abi.spec import (
    MMAP_BASE,
    PAGE_SIZE,
    USER_INITIAL_RSP,
    USER_MAP_END,
    USER_STACK_SIZE,
    USER_STACK_TOP,
    USER_START,
    Errno,
)
from copra.kernel.errors import SyscallError
from copra.kernel.frames import FrameAllocator, FrameOwner, OutOfMemory
from copra.kernel.handles import HandleTable, Rights
from copra.kernel.machine import UserContext
from copra.kernel.objects.log import Log
from copra.kernel.pagetable import AddressSpace
from copra.kernel.ramfs import Directory

#: The end of the area MMAP may use: the stack's guard page and the stack sit above it.
MAP_AREA_END = USER_MAP_END


class State(Enum):
    RUNNABLE = "runnable"
    BLOCKED = "blocked"
    EXITED = "exited"


class RegionKind(Enum):
    IMAGE = "image"  #: an ELF segment
    STACK = "stack"
    ANONYMOUS = "anonymous"  #: MMAP ANONYMOUS: private zeroed frames
    FILE_PRIVATE = "file-private"  #: MMAP of a file with WRITE: a private copy
    FILE_SHARED = "file-shared"  #: MMAP of a file, read-only: the RAM fs's own frames


@dataclass
class Region:
    """[start, start + len(frames) * PAGE_SIZE) mapped with one protection."""

    start: int
    writable: bool
    executable: bool
    kind: RegionKind
    frames: list[int] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.start + len(self.frames) * PAGE_SIZE

    @property
    def mmapped(self) -> bool:
        return self.kind in (RegionKind.ANONYMOUS, RegionKind.FILE_PRIVATE,
                             RegionKind.FILE_SHARED)


class Process:
    def __init__(self, pid: int, name: str, parent: int, frames: FrameAllocator,
                 kernel_entries: dict[int, int], log: Log, root: Directory) -> None:
        self.pid = pid
        self.name = name
        self.parent = parent
        self.root = root
        self.frames = frames
        self.space = AddressSpace(frames, kernel_entries)
        self.mem_lock = threading.RLock()
        self.regions: list[Region] = []
        self.handles = HandleTable()
        self.log = log
        self.handles.install(log, Rights.WRITE)
        self.context = UserContext(self.space.pml4)
        self.state = State.RUNNABLE
        self.status: int | None = None
        self.blocked_on: int | None = None  # pid a WAIT is waiting for
        self.syscalls = 0

    # --- building the address space -------------------------------------------------------

    def _insert(self, region: Region) -> None:
        bisect.insort(self.regions, region, key=lambda r: r.start)

    def map_anonymous(self, start: int, pages: int, *, writable: bool, executable: bool,
                      kind: RegionKind = RegionKind.ANONYMOUS) -> Region:
        """Back [start, start + pages) with fresh zeroed frames (all or nothing)."""
        with self.mem_lock:
            if pages > self.frames.free_count:
                raise OutOfMemory(f"{pages} pages asked, {self.frames.free_count} free")
            frames: list[int] = []
            try:
                for _ in range(pages):
                    frames.append(self.frames.alloc(FrameOwner.USER))
                return self.map_frames(start, frames, writable=writable,
                                       executable=executable, kind=kind)
            except BaseException:
                self.frames.free_many(frames)
                raise

    def map_frames(self, start: int, frames: list[int], *, writable: bool, executable: bool,
                   kind: RegionKind) -> Region:
        """Map frames the caller holds a reference on, as one region (all or nothing:
        on failure nothing stays mapped and the references are still the caller's).

        The page tables may grow (OutOfMemory when no frame is left for them); pages
        mapped before a failure are removed again. They were never visible to the
        CPU — the process is in this syscall — so no invalidation is needed."""
        with self.mem_lock:
            region = Region(start, writable, executable, kind, frames)
            done = 0
            try:
                for done, pa in enumerate(frames):
                    self.space.map(start + done * PAGE_SIZE, pa, writable=writable,
                                   executable=executable)
                done = len(frames)
            except BaseException:
                for i in range(done):
                    self.space.unmap(start + i * PAGE_SIZE)
                raise
            self._insert(region)
            return region

    def map_stack(self) -> None:
        self.map_anonymous(USER_STACK_TOP - USER_STACK_SIZE, USER_STACK_SIZE // PAGE_SIZE,
                           writable=True, executable=False, kind=RegionKind.STACK)

    def start_at(self, entry: int) -> None:
        self.context = UserContext.initial(self.space.pml4, entry, USER_INITIAL_RSP)

    # --- the MMAP area --------------------------------------------------------------------

    def is_free(self, start: int, end: int) -> bool:
        return all(r.end <= start or r.start >= end for r in self.regions)

    def find_free(self, pages: int, hint: int) -> int:
        """A free range of pages in the MMAP area: at the hint if it fits, else the
        lowest one at or above MMAP_BASE (ENOMEM if there is none)."""
        size = pages * PAGE_SIZE
        if hint and hint >= USER_START and hint + size <= MAP_AREA_END \
                and self.is_free(hint, hint + size):
            return hint
        candidate = MMAP_BASE
        for region in self.regions:
            if region.end <= candidate:
                continue
            if region.start >= candidate + size:
                break
            candidate = region.end
        if candidate + size > MAP_AREA_END:
            raise SyscallError(Errno.ENOMEM, f"no free range of {pages} pages")
        return candidate

    def region_at(self, start: int) -> Region | None:
        for region in self.regions:
            if region.start == start:
                return region
        return None

    def unmap_range(self, start: int, end: int) -> list[int]:
        """Remove every mapped page in [start, end), splitting regions; returns the
        frames (references) the caller must free after invalidating."""
        released: list[int] = []
        with self.mem_lock:
            kept: list[Region] = []
            for region in self.regions:
                if region.end <= start or region.start >= end:
                    kept.append(region)
                    continue
                lo = max(region.start, start)
                hi = min(region.end, end)
                first, last = (lo - region.start) // PAGE_SIZE, (hi - region.start) // PAGE_SIZE
                for i in range(first, last):
                    self.space.unmap(region.start + i * PAGE_SIZE)
                released += region.frames[first:last]
                if first:
                    kept.append(Region(region.start, region.writable, region.executable,
                                       region.kind, region.frames[:first]))
                if last < len(region.frames):
                    kept.append(Region(hi, region.writable, region.executable, region.kind,
                                       region.frames[last:]))
            self.regions = sorted(kept, key=lambda r: r.start)
        return released

    def grow(self, region: Region, pages: int) -> None:
        """Extend an anonymous region by zeroed pages right after it (ENOMEM if taken)."""
        with self.mem_lock:
            end = region.end
            if end + pages * PAGE_SIZE > MAP_AREA_END or not self.is_free(end, end + pages *
                                                                          PAGE_SIZE):
                raise SyscallError(Errno.ENOMEM, "the range after the mapping is taken")
            extra = self.map_anonymous(end, pages, writable=region.writable,
                                       executable=region.executable)
            self.regions.remove(extra)
            region.frames += extra.frames

    # --- the end -----------------------------------------------------------------------------

    def release(self) -> list[int]:
        """Close every handle and unmap everything; returns the frames to free (after
        the machine has invalidated its mappings), page-table frames included."""
        self.handles.close_all()
        with self.mem_lock:
            frames = self.unmap_range(0, 1 << 47)
            frames += self.space.table_frames()
            return frames
