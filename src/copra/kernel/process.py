"""A process: an address space, a handle table, one thread's CPU context, a status.

Invariants:
- ``regions`` lists every user mapping; each page of a region is backed by a frame
  of FrameOwner.USER owned by this process alone (no sharing yet), so ``release``
  frees exactly ``sum(len(r.frames))`` user frames plus the page-table frames;
- handle 0 is the task's log from creation until the process ends;
- ``status`` is None while the process lives, then the packed exit status
  (spec.EXIT_STATUS_SHIFT / KILLED_BY_EXCEPTION); a process is released once.

Locking: ``mem_lock`` serialises changes to the address space and every copy
through usermem; the scheduler owns ``state`` (only the vCPU thread changes it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import Enum

from copra.abi.spec import PAGE_SIZE, USER_INITIAL_RSP, USER_STACK_SIZE, USER_STACK_TOP
from copra.kernel.frames import FrameAllocator, FrameOwner
from copra.kernel.handles import HandleTable
from copra.kernel.machine import UserContext
from copra.kernel.objects.log import Log
from copra.kernel.pagetable import AddressSpace
from copra.kernel.ramfs import Directory


class State(Enum):
    RUNNABLE = "runnable"
    BLOCKED = "blocked"
    EXITED = "exited"


@dataclass
class Region:
    """[start, start + len(frames) * PAGE_SIZE) mapped with one protection."""

    start: int
    writable: bool
    executable: bool
    frames: list[int] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.start + len(self.frames) * PAGE_SIZE


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
        self.handles.install(log)
        self.context = UserContext(self.space.pml4)
        self.state = State.RUNNABLE
        self.status: int | None = None
        self.blocked_on: int | None = None  # pid a WAIT is waiting for
        self.syscalls = 0

    def map_anonymous(self, start: int, pages: int, *, writable: bool,
                      executable: bool) -> Region:
        """Back [start, start + pages) with fresh zeroed frames (all or nothing)."""
        with self.mem_lock:
            region = Region(start, writable, executable)
            try:
                for i in range(pages):
                    pa = self.frames.alloc(FrameOwner.USER)
                    region.frames.append(pa)
                    self.space.map(start + i * PAGE_SIZE, pa, writable=writable,
                                   executable=executable)
            except BaseException:
                for i, pa in enumerate(region.frames):
                    self.space.unmap(start + i * PAGE_SIZE)
                    self.frames.free(pa)
                raise
            self.regions.append(region)
            return region

    def map_stack(self) -> None:
        pages = USER_STACK_SIZE // PAGE_SIZE
        self.map_anonymous(USER_STACK_TOP - USER_STACK_SIZE, pages, writable=True,
                           executable=False)

    def start_at(self, entry: int) -> None:
        self.context = UserContext.initial(self.space.pml4, entry, USER_INITIAL_RSP)

    def release(self) -> None:
        """Return every object, frame and page table the process holds."""
        self.handles.close_all()
        with self.mem_lock:
            for region in self.regions:
                for i, pa in enumerate(region.frames):
                    self.space.unmap(region.start + i * PAGE_SIZE)
                    self.frames.free(pa)
            self.regions.clear()
            self.space.destroy()
