"""A process: an address space, a handle table, children, its threads, a status.

Invariants:
- ``regions`` (a RegionMap keyed by start, kernel/regionmap.py) holds every user
  mapping, pairwise disjoint; page i of a region is mapped to ``frames[i]`` in the
  page tables and nothing else of the user half is mapped; finding a free range,
  a region by address and the regions a range overlaps are O(log n) in the number
  of regions;
- at most ``limits.mappings`` regions: MMAP and EXEC answer ENOMEM beyond, and so
  does an unmap that would split a region in two at the limit;
- a private region's frames (FrameOwner.USER) belong to this process alone and are
  charged to its ``account`` (FrameAccount), as are its page tables, never more than
  its frame limit; a shared region's frames are RAM-fs file frames on which the
  region holds one reference each (``FrameAllocator.share``), not charged (zero
  pages past the file's end are private and charged); ``tear_down`` and unmapping drop
  exactly those references, so every frame is returned once, whatever the kind;
- handle 0 is the task's log from creation until it is closed or the process ends;
- ``status`` is None while the process lives, then the packed exit status
  (spec.EXIT_STATUS_SHIFT / KILLED_BY_EXCEPTION); a process is torn down once;
- ``threads`` holds its threads (kernel/thread.py) that have not ended; the first
  is created by ``start_at``, more by THREAD_CREATE (at most ``limits.threads``);
  every thread shares this process's address space and handle table, and when the
  process ends all of them end with it: every one has left its CPU before any page
  is released (Kernel.exit_process);
- ``children`` holds the pids of its children in the kernel's table, running or
  ended and not yet reaped; ``live_children`` and ``unreaped_children`` count them
  by state (the kernel keeps all three, kernel/kernel.py).

Unmapping hands the frames back to the caller instead of freeing them: KVM may still
translate through the removed entries until the VM drops them (a MUNMAP:
``SvsmVm.drop_translations``) or invalidates its mappings (a process's end), so the
caller does that first and frees after (Kernel.exit_process, sys_munmap). The
charge comes off at once: the frames are on their way back to the pool.

Locking: ``mem_lock`` serialises changes to the address space (regions, page tables,
the frame account) and every copy through usermem; the kernel owns ``threads``,
``status`` and the child bookkeeping (kernel/kernel.py says under which lock).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from copra.abi.spec import (
    MMAP_BASE,
    PAGE_SIZE,
    USER_INITIAL_RSP,
    USER_MAP_END,
    USER_START,
    Errno,
)
from copra.kernel import lockdep
from copra.kernel.cpu import UserContext
from copra.kernel.errors import SyscallError
from copra.kernel.frames import FrameAccount, FrameAllocator, FrameOwner, OutOfMemory
from copra.kernel.handles import HandleTable, Rights
from copra.kernel.limits import DEFAULT_LIMITS, Limits
from copra.kernel.objects import KernelObject, ObjectKind
from copra.kernel.objects.log import Log
from copra.kernel.pagetable import AddressSpace
from copra.kernel.ramfs import Directory
from copra.kernel.regionmap import RegionMap
from copra.kernel.thread import Thread
from copra.kernel.waitqueue import WaitQueue

#: The end of the area MMAP may use: the stack's guard page and the stack sit above it.
MAP_AREA_END = USER_MAP_END


class RegionKind(Enum):
    IMAGE = "image"  #: an ELF segment
    STACK = "stack"
    TLS = "tls"  #: the first thread's TLS block and TCB (kernel/loader.py)
    ANONYMOUS = "anonymous"  #: MMAP ANONYMOUS: private zeroed frames
    FILE_PRIVATE = "file-private"  #: MMAP of a file with WRITE: a private copy
    FILE_SHARED = "file-shared"  #: MMAP of a file, read-only: the RAM fs's own frames
    #: MMAP of an object's pages (a VCPU's run page, a guest's RAM): shared with the
    #: kernel, one reference per frame (foreign frames need none), never charged
    OBJECT = "object"


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
                             RegionKind.FILE_SHARED, RegionKind.OBJECT)


@dataclass(frozen=True, eq=False)
class RegionPlan:
    """A region EXEC maps (kernel/loader.py): ``pages`` fresh frames at ``start``, the
    pages listed in ``contents`` (index, its PAGE_SIZE bytes) filled, the rest zero."""

    start: int
    pages: int
    writable: bool
    executable: bool
    kind: RegionKind
    contents: tuple[tuple[int, bytes], ...]


class Process(KernelObject):
    """A process; also a kernel object: PROCESS_OPEN gives its parent a handle on it,
    which WAIT_MANY and JOIN wait on (ENDED) and JOIN reads the status through."""

    kind = ObjectKind.PROCESS

    def __init__(self, pid: int, name: str, parent: int, frames: FrameAllocator,
                 kernel_entries: dict[int, int], log: Log, root: Directory,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__()
        self.pid = pid
        self.name = name
        self.parent = parent
        self.root = root
        self.limits = limits
        self.frames = frames
        self.account = FrameAccount(frames, limits.frame_limit(frames.total))
        self.space = AddressSpace(self.account, kernel_entries)
        self.mem_lock = lockdep.rlock("process.mem")
        self.regions: RegionMap[Region] = RegionMap()
        self.handles = HandleTable(limits.handles)
        self.log = log
        self.handles.install(log, Rights.WRITE)
        self.threads: list[Thread] = []
        #: Set when the process starts to end (its threads are being stopped); the
        #: status comes once they have stopped and its memory is released.
        self.ending = False
        #: FUTEX_WAIT's queues by user address, under ``mem_lock``; a queue goes when
        #: its last waiter does.
        self.futexes: dict[int, WaitQueue] = {}
        self.status: int | None = None
        #: Raises Signal.ENDED when the process has ended (WAIT observes it).
        self.ended_queue = WaitQueue()
        self.children: set[int] = set()
        self.live_children = 0
        self.unreaped_children = 0

    # --- building the address space -------------------------------------------------------

    def check_mapping_room(self) -> None:
        """ENOMEM if one more region would pass the limit of mappings."""
        if len(self.regions) >= self.limits.mappings:
            raise SyscallError(Errno.ENOMEM, f"the process holds its limit of "
                                             f"{self.limits.mappings} mappings")

    def _alloc(self, pages: int) -> list[int]:
        """Fresh zeroed frames charged to this process (all or nothing)."""
        account = self.account
        if pages > account.limit - account.held:
            raise OutOfMemory(f"{pages} pages asked; the process holds {account.held} of "
                              f"its limit of {account.limit} frames")
        if pages > self.frames.available:
            raise OutOfMemory(f"{pages} pages asked, {self.frames.available} frames free")
        return self.account.alloc_many(pages, FrameOwner.USER)

    def _map_pages(self, start: int, frames: list[int], writable: bool,
                   executable: bool) -> None:
        """Enter frames at start in the page tables (all or nothing).

        The tables may grow (OutOfMemory when no frame is left for them, or the frame
        limit is reached); pages mapped before a failure are removed again. They were
        never visible to the CPU — the process is in this syscall — so no invalidation
        is needed."""
        mapped: list[int] = []
        try:
            self.space.map_run(start, frames, writable=writable, executable=executable,
                               mapped=mapped)
        except BaseException:
            for va in mapped:
                self.space.unmap(va)
            raise

    def map_anonymous(self, start: int, pages: int, *, writable: bool, executable: bool,
                      kind: RegionKind = RegionKind.ANONYMOUS) -> Region:
        """Back [start, start + pages) with fresh zeroed frames (all or nothing)."""
        with self.mem_lock:
            self.check_mapping_room()
            frames = self._alloc(pages)
            try:
                return self.map_frames(start, frames, writable=writable,
                                       executable=executable, kind=kind)
            except BaseException:
                self.account.free_many(frames)
                raise

    def map_frames(self, start: int, frames: list[int], *, writable: bool, executable: bool,
                   kind: RegionKind) -> Region:
        """Map frames the caller holds a reference on, as one region (all or nothing:
        on failure nothing stays mapped and the references are still the caller's)."""
        with self.mem_lock:
            self.check_mapping_room()
            region = Region(start, writable, executable, kind, frames)
            self._map_pages(start, frames, writable, executable)
            self.regions.insert(region.start, region.end, region)
            return region

    def map_image(self, plans: Sequence[RegionPlan]) -> None:
        """Map every plan as a region of fresh private frames, filled as the plan says
        (all or nothing). The plans are pairwise disjoint and meet no region of the
        process (EXEC calls this on a new process, kernel/loader.py). One allocation
        takes the frames of all of them, and the page tables are written run by run
        (``AddressSpace.map_run``); ENOMEM beyond the limit of mappings, OutOfMemory
        when frames run out."""
        with self.mem_lock:
            if len(self.regions) + len(plans) > self.limits.mappings:
                raise SyscallError(Errno.ENOMEM, f"{len(plans)} regions would pass the "
                                                 f"limit of {self.limits.mappings} mappings")
            frames = self._alloc(sum(plan.pages for plan in plans))
            mapped: list[int] = []
            try:
                view, base = self.frames.memory.view, self.frames.memory.base
                runs = []
                at = 0
                for plan in plans:
                    mine = frames[at : at + plan.pages]
                    at += plan.pages
                    for index, page in plan.contents:
                        offset = mine[index] - base
                        view[offset : offset + PAGE_SIZE] = page
                    self.space.map_run(plan.start, mine, writable=plan.writable,
                                       executable=plan.executable, mapped=mapped)
                    runs.append(Region(plan.start, plan.writable, plan.executable, plan.kind,
                                       mine))
            except BaseException:
                for va in mapped:
                    self.space.unmap(va)
                self.account.free_many(frames)
                raise
            for region in runs:
                self.regions.insert(region.start, region.end, region)

    def start_at(self, entry: int, tid: int, fs_base: int = 0) -> Thread:
        """Create the first thread, at ``entry`` with the initial stack pointer and
        FS base ``fs_base`` (its TCB, kernel/loader.py)."""
        context = UserContext.initial(self.space.pml4, entry, USER_INITIAL_RSP)
        context.fs_base = fs_base
        thread = Thread(tid, self, context)
        self.threads.append(thread)
        return thread

    @property
    def ended(self) -> bool:
        return self.status is not None

    def wait_queue(self) -> WaitQueue:
        return self.ended_queue

    # --- the MMAP area --------------------------------------------------------------------

    def is_free(self, start: int, end: int) -> bool:
        return self.regions.is_free(start, end)

    def find_free(self, pages: int, hint: int) -> int:
        """A free range of pages in the MMAP area: at the hint if it fits, else the
        lowest one at or above MMAP_BASE (ENOMEM if there is none)."""
        size = pages * PAGE_SIZE
        if hint and hint >= USER_START and hint + size <= MAP_AREA_END \
                and self.regions.is_free(hint, hint + size):
            return hint
        found = self.regions.first_fit(size, MMAP_BASE, MAP_AREA_END)
        if found is None:
            raise SyscallError(Errno.ENOMEM, f"no free range of {pages} pages")
        return found

    def region_at(self, start: int) -> Region | None:
        return self.regions.get(start)

    def unmap_range(self, start: int, end: int, entries: list[int] | None = None) -> list[int]:
        """Remove every mapped page in [start, end), splitting regions; returns the
        frames (references) the caller must free once no CPU translates to them, and
        appends the physical addresses of the page-table entries cleared to ``entries``.

        ENOMEM, with nothing changed, when the range lies strictly inside one region
        and the process already holds its limit of mappings (the split would add one).
        Visits only the regions the range overlaps."""
        released: list[int] = []
        with self.mem_lock:
            hits = self.regions.overlapping(start, end)
            if len(hits) == 1 and hits[0][0] < start and hits[0][1] > end:
                self.check_mapping_room()
            for region_start, _, region in hits:
                self.regions.remove(region_start)
                lo = max(region.start, start)
                hi = min(region.end, end)
                first, last = (lo - region.start) // PAGE_SIZE, (hi - region.start) // PAGE_SIZE
                for i in range(first, last):
                    self.space.unmap(region.start + i * PAGE_SIZE, entries)
                taken = region.frames[first:last]
                if region.kind is RegionKind.OBJECT:
                    pass  # never charged
                elif region.kind is RegionKind.FILE_SHARED:
                    self.account.uncharge(taken)
                else:
                    self.account.uncharge_private(len(taken))
                released += taken
                for piece in (
                    Region(region.start, region.writable, region.executable, region.kind,
                           region.frames[:first]),
                    Region(hi, region.writable, region.executable, region.kind,
                           region.frames[last:]),
                ):
                    if piece.frames:
                        self.regions.insert(piece.start, piece.end, piece)
        return released

    def grow(self, region: Region, pages: int) -> None:
        """Extend an anonymous region by zeroed pages right after it (ENOMEM if taken)."""
        with self.mem_lock:
            end = region.end
            new_end = end + pages * PAGE_SIZE
            if new_end > MAP_AREA_END or not self.regions.is_free(end, new_end):
                raise SyscallError(Errno.ENOMEM, "the range after the mapping is taken")
            frames = self._alloc(pages)
            try:
                self._map_pages(end, frames, region.writable, region.executable)
            except BaseException:
                self.account.free_many(frames)
                raise
            self.regions.remove(region.start)
            region.frames += frames
            self.regions.insert(region.start, region.end, region)

    # --- the end -----------------------------------------------------------------------------

    def tear_down(self) -> list[int]:
        """Close every handle and give up the address space; returns the frames to
        free (after the VM has invalidated its mappings), page tables included.

        The leaves are not cleared one by one: the table frames themselves go back to
        the pool (zeroed when next handed out), so the space is unusable afterwards."""
        self.handles.close_all()
        with self.mem_lock:
            frames: list[int] = []
            for region in self.regions:
                frames += region.frames
            self.regions.clear()
            frames += self.space.table_frames()
            self.account.uncharge_all()
            return frames
