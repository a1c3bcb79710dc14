"""A machine with no vCPU, for unit tests of the kernel's syscall handlers.

Guest memory is a bytearray; the frame allocator and page tables are the real ones;
the vCPU's registers are a plain ``KvmRegs``. It offers what ``Kernel`` and the
handlers use of ``Machine`` and nothing else, so handlers run unchanged.
"""

from __future__ import annotations

from copra.abi.spec import PAGE_SIZE
from copra.hw.kvm import KvmRegs
from copra.kernel.frames import FrameAllocator, PhysicalMemory
from copra.kernel.machine import UserContext


class FakeMachine:
    """What the kernel needs of a machine, with no vCPU: memory, frames, registers."""

    def __init__(self, pages: int = 2048) -> None:
        self.memory = PhysicalMemory(memoryview(bytearray(pages * PAGE_SIZE)))
        self.frames = FrameAllocator(self.memory, PAGE_SIZE)
        self.regs = KvmRegs()
        self.exits = 0
        self.invalidations = 0

    def kernel_pml4_entries(self) -> dict[int, int]:
        return {}

    def mark_regs_dirty(self) -> None:
        pass

    def invalidate_mappings(self) -> None:
        self.invalidations += 1

    def forget(self, ctx: UserContext) -> None:
        pass

    def load(self, ctx: UserContext) -> None:
        pass


