"""A VM with no vCPU, for unit tests of the kernel's syscall handlers.

Guest memory is a bytearray; the frame allocator and page tables are the real ones;
the one CPU's registers are a plain ``KvmRegs``. It offers what ``Kernel`` and the
handlers use of ``SvsmVm`` and ``Cpu`` and nothing else, so handlers run unchanged.
"""

from __future__ import annotations

from copra.abi.spec import PAGE_SIZE
from copra.hw.kvm import KvmRegs
from copra.kernel.cpu import UserContext
from copra.kernel.frames import FrameAllocator, PhysicalMemory


class FakeCpu:
    """What the kernel needs of a CPU when nothing runs: registers to dispatch from."""

    def __init__(self, index: int = 0) -> None:
        self.index = index
        self.regs = KvmRegs()
        self.exits = 0
        self.ring0_preemptions = 0
        self.probe = None  # no statistics

    def mark_regs_dirty(self) -> None:
        pass

    def forget(self, ctx: UserContext) -> None:
        pass

    def load(self, ctx: UserContext) -> None:
        pass

    def save(self) -> None:
        pass

    def park(self) -> None:
        pass

    def kick(self) -> None:
        pass


class FakeVm:
    """What the kernel needs of a VM, with no vCPU: memory, frames, one fake CPU."""

    def __init__(self, pages: int = 2048) -> None:
        self.memory = PhysicalMemory(memoryview(bytearray(pages * PAGE_SIZE)))
        self.frames = FrameAllocator(self.memory, PAGE_SIZE)
        self.frames.reclaim = self.invalidate_mappings
        self.cpus = [FakeCpu()]
        self.invalidations = 0
        self.dropped: list[int] = []  #: page-table entries ``drop_translations`` was given

    @property
    def exits(self) -> int:
        return 0

    def kick_one(self, index: int) -> None:
        pass

    def kernel_pml4_entries(self) -> dict[int, int]:
        return {}

    def invalidate_mappings(self) -> None:
        self.invalidations += 1
        self.frames.free_many(self.frames.take_quarantine())

    def drop_translations(self, cpu: int, entries: list[int]) -> None:
        self.dropped += entries

    def flush_quarantine(self) -> None:
        if self.frames.quarantined:
            self.invalidate_mappings()
