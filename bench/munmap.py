"""Benchmark: what dropping unmapped pages from KVM costs, against the floor of the same run.

A MUNMAP must make the range fault at once on every vCPU. copra writes page tables
from the host, which KVM's shadow MMU (PVM hosts) does not see, so something must
make KVM forget the old translations. Two ways, timed here on a two-CPU VM of the
default memory size while CPU 1 runs a CPL3 loop (as another thread would):

- **stop-the-world**: ``SvsmVm.invalidate_mappings``: kick every CPU out of the guest,
  delete and re-add the memory slot (KVM drops every shadow page), resume;
- **zap**: ``Cpu.zap`` on CPU 0: a ring-0 stub rewrites the cleared entries, KVM's
  shadow MMU drops what it derived from them and flushes every vCPU's TLB.

Each round CPU 0 maps K fresh pages, touches a working set of W pages and them, the
host clears the K entries, and one way drops them (timed); then CPU 0 touches the
working set again (timed: the price paid afterwards, as every page that lost its
shadow entry faults into KVM again; the working set has page tables of its own, as
another thread's stack or heap would). The floor is one bare KVM_RUN exit (CPL3 ``out``).

Usage: python bench/munmap.py [ROUNDS]   (prints a table; timings are never tests)
"""

from __future__ import annotations

import platform
import statistics
import sys
import threading
import time

from copra.abi.spec import DOORBELL_PORT, PAGE_SIZE, USER_START
from copra.kernel.cpu import SyscallExit, UserContext, install_kick_handler
from copra.kernel.frames import FrameOwner
from copra.kernel.pagetable import AddressSpace
from copra.kernel.svsm_vm import DEFAULT_MEMORY, SvsmVm
from smp_throughput import floors

WORKING_SET = 256
VICTIMS = USER_START + 0x40_0000  # the K pages unmapped each round
WSET = USER_START + 0x80_0000  # the working set (another page table)


def toucher(base: int, pages: int, stride: int = PAGE_SIZE) -> bytes:
    """CPL3: read one byte of each of ``pages`` pages from ``base``, then the doorbell."""
    return bytes.fromhex(
        "48be" + base.to_bytes(8, "little").hex()  # mov rsi, base
        + "48b9" + max(pages, 1).to_bytes(8, "little").hex()  # mov rcx, pages
        + "8a06" + "4881c6" + stride.to_bytes(4, "little").hex()  # l: mov al,[rsi]; add rsi
        + "48ffc9" + "75f2"  # dec rcx; jnz l
    ) + bytes((0xE6, DOORBELL_PORT)) + b"\xeb\xfe"


def measure(way: str, victims: int, rounds: int) -> tuple[float, float]:
    """(seconds per drop, seconds per page to touch the working set afterwards)."""
    vm = SvsmVm(DEFAULT_MEMORY, cpus=2)
    install_kick_handler()
    vm.use_kick_signal(True)
    try:
        space = AddressSpace(vm.frames, vm.kernel_pml4_entries())

        def program(code: bytes, at: int) -> UserContext:
            text = vm.frames.alloc(FrameOwner.USER)
            vm.memory.write(text, code)
            space.map(at, text, writable=False, executable=True)
            return UserContext.initial(space.pml4, at, 0)

        touch_victims = program(toucher(VICTIMS, victims), USER_START)
        touch_wset = program(toucher(WSET, WORKING_SET), USER_START + PAGE_SIZE)
        spin = program(b"\xeb\xfe", USER_START + 2 * PAGE_SIZE)
        for i in range(WORKING_SET):
            space.map(WSET + i * PAGE_SIZE, vm.frames.alloc(FrameOwner.USER), writable=False,
                      executable=False)
        cpu, other = vm.cpus
        spinning = threading.Thread(target=lambda: other.enter(spin))
        spinning.start()
        drops: list[float] = []
        after: list[float] = []

        def enter(ctx: UserContext, rip: int) -> None:
            cpu.load(ctx)
            cpu.regs.rip = rip
            cpu.mark_regs_dirty()
            ex = cpu.enter(ctx)
            assert isinstance(ex, SyscallExit), ex

        for _ in range(rounds):
            frames = [vm.frames.alloc(FrameOwner.USER) for _ in range(victims)]
            for i, pa in enumerate(frames):
                space.map(VICTIMS + i * PAGE_SIZE, pa, writable=False, executable=False)
            enter(touch_wset, USER_START + PAGE_SIZE)
            enter(touch_victims, USER_START)
            cleared: list[int] = []
            for i in range(victims):
                space.unmap(VICTIMS + i * PAGE_SIZE, cleared)
            start = time.perf_counter()
            if way == "zap":
                assert cpu.zap(cleared)
            else:
                vm.invalidate_mappings()
            drops.append(time.perf_counter() - start)
            vm.frames.free_many(frames)
            start = time.perf_counter()
            enter(touch_wset, USER_START + PAGE_SIZE)
            after.append((time.perf_counter() - start) / WORKING_SET)
        vm.gate.kick([other], preempt=True)
        spinning.join()
        return statistics.median(drops), statistics.median(after)
    finally:
        vm.close()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    floor = 1 / statistics.median(floors(2000)[0] for _ in range(3))
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {DEFAULT_MEMORY >> 20} MiB, 2 CPUs (CPU 1 in a CPL3 "
          f"loop), median of {rounds} rounds, wall time; working set {WORKING_SET} pages")
    print(f"{'what':<46} {'drop us':>9} {'ratio':>6} {'re-touch us/page':>17}")
    print(f"{'floor: bare KVM_RUN, CPL3 out':<46} {floor * 1e6:9.1f} {1.0:6.2f}")
    for victims in (1, 16, 64):
        for way in ("stop-the-world", "zap"):
            drop, after = measure(way, victims, rounds)
            print(f"{f'{way}, {victims} page(s)':<46} {drop * 1e6:9.1f} {drop / floor:6.2f} "
                  f"{after * 1e6:17.2f}")


if __name__ == "__main__":
    main()
