"""Benchmark: the life of a process — EXEC, run to EXIT, WAIT — per child.

Reported as a ratio to the same floor as the syscall benchmark (a bare KVM_RUN
round trip of a CPL3 doorbell write, measured in this run), and broken down by
where the time goes: the kernel counts the exits and the memory-slot invalidations
(SvsmVm.invalidate_mappings, one per process exit) a run costs.

init starts the ``hello`` service K times and then 2K times from
/etc/init.services; the per-child cost is the difference divided by K, so boot
and init's own start cancel out.

Usage: python bench/process_lifecycle.py [K] [ROUNDS] [--cpu]   (``--cpu``: thread CPU
time instead of wall time, as in bench/syscall_roundtrip.py; the CPUs run on threads
of their own since Kernel.serve, so wall time is the one to use). Each round measures
its own floor; the ratios printed are medians of the rounds' ratios, which holds
better than a ratio of medians on a busy machine.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time

import syscall_roundtrip
from copra.kernel import packit
from copra.kernel.boot import make_kernel
from copra.kernel.image import packaged_program
from copra.kernel.svsm_vm import SvsmVm
from syscall_roundtrip import floor


def run_services(k: int) -> tuple[float, int, int]:
    """Seconds, exits and invalidations for one boot of init starting k children."""
    vm = SvsmVm(64 << 20)
    try:
        kernel, _ = make_kernel(vm, packit.encode([
            packit.PackItEntry("/init", packaged_program("init")),
            packit.PackItEntry("/bin/hello", packaged_program("hello")),
            packit.PackItEntry("/etc/init.services", b"/bin/hello\n" * k),
        ]), lambda line: None)
        init = kernel.spawn("/init")
        start = syscall_roundtrip.clock()
        result = kernel.serve(init)
        elapsed = syscall_roundtrip.clock() - start
        if result.status != 0:
            raise SystemExit(f"init failed: status {result.status:#x}")
        return elapsed, vm.exits, vm.invalidations
    finally:
        vm.close()


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--cpu"]
    if "--cpu" in sys.argv[1:]:
        syscall_roundtrip.clock = time.thread_time
    k = int(args[0]) if args else 20
    rounds = int(args[1]) if len(args) > 1 else 3
    floors, per_child, ratios = [], [], []
    exits = invalidations = 0
    for _ in range(rounds):
        floors.append(floor(2000))
        t1, e1, i1 = run_services(k)
        t2, e2, i2 = run_services(2 * k)
        per_child.append((t2 - t1) / k)
        exits, invalidations = (e2 - e1) // k, (i2 - i1) // k
        ratios.append(per_child[-1] / floors[-1])
    f, c = statistics.median(floors), statistics.median(per_child)
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {k} and {2 * k} children, median of {rounds} rounds, "
          f"{'thread CPU' if syscall_roundtrip.clock is time.thread_time else 'wall'} time")
    print(f"{'what':<44} {'us':>10} {'ratio':>8}")
    print(f"{'floor: bare KVM_RUN, CPL3 out':<44} {f * 1e6:10.1f} {1.0:8.2f}")
    r = statistics.median(ratios)
    print(f"{'one child: EXEC + run + EXIT + WAIT':<44} {c * 1e6:10.1f} {r:8.1f}")
    print(f"per child: {exits} exits to the kernel, {invalidations} memory-slot invalidation(s)")
    if exits:
        print(f"one child against the cost of its own exits ({exits} x floor): "
              f"{r / exits:.2f}x (rounds: {min(ratios) / exits:.2f}-{max(ratios) / exits:.2f})")


if __name__ == "__main__":
    main()
