"""Benchmark: one child's life (EXEC + run + EXIT + WAIT) from medians, for busy machines.

bench/process_lifecycle.py takes the difference of two whole runs, which a busy host
(other processes taking the cores for milliseconds) spoils. This one runs init with K
``hello`` services on one CPU once and times every syscall dispatch (start and end).
With one CPU, init EXECs every child, blocks in WAIT, and the children then run one
after another, so the time between two consecutive child EXITs is one child's whole
run (its load, its exits, its syscalls). One child then costs

    median(EXIT to EXIT) + median(init's EXEC dispatch) + median(init's WAIT dispatch)
    + 2 floors (the exits of init's EXEC and WAIT themselves)

against the cost of its own exits, 11 floors; the floor is the median of several
batches of bare KVM_RUN round trips (CPL3 ``out``) taken in the same run. Medians
leave out the iterations a preempted host thread stretched.

Each of R rounds (default 7) runs K children between two series of floor batches, so
that a round the host slowed down is set against a floor it slowed down too; the last
line gives the median and range of the rounds' ratios.

Two ratios per round. "Against its own exits" counts the 11 exits at the floor, a bare
round trip in an address space KVM already knows. "At the platform's price" counts the
first of them at what the host charges for the first exit of a new address space: on
PVM hosts (no nested paging) KVM's shadow MMU takes a page fault for each region the
new process touches before it leaves (its code, its stack: the child's page faults, as
KVM counts them, are printed too), measured in the same round with no kernel code by
``platform_floors.first_entry_extra``.

Usage: python bench/lifecycle_medians.py [K] [R]   (prints a line per round; timings
are never tests)
"""

from __future__ import annotations

import itertools
import platform
import statistics
import sys
import time

from copra.abi.spec import Sys
from copra.kernel import packit
from copra.kernel.boot import make_kernel
from copra.kernel.cpu import Cpu, Next
from copra.kernel.image import packaged_program
from copra.kernel.svsm_vm import SvsmVm
from copra.kernel.thread import Thread
from platform_floors import first_entry_extra
from syscall_roundtrip import floor


def child_costs(k: int) -> tuple[float, float, float, int, float]:
    """(median EXIT-to-EXIT, median EXEC dispatch, median WAIT dispatch, exits per child,
    KVM's page faults per child)."""
    vm = SvsmVm(64 << 20)
    try:
        kernel, _ = make_kernel(vm, packit.encode([
            packit.PackItEntry("/init", packaged_program("init")),
            packit.PackItEntry("/bin/hello", packaged_program("hello")),
            packit.PackItEntry("/etc/init.services", b"/bin/hello\n" * k),
        ]), lambda line: None)
        init = kernel.spawn("/init")
        spans: list[tuple[int, int, float, float]] = []  # syscall, pid, start, end
        dispatch, clock = kernel.dispatch, time.perf_counter

        def timed(cpu: Cpu, thread: Thread) -> Next:
            number, start = cpu.regs.rax, clock()
            try:
                return dispatch(cpu, thread)
            finally:
                spans.append((number, thread.process.pid, start, clock()))

        kernel.dispatch = timed  # type: ignore[method-assign]
        before, faults = vm.exits, vm.cpus[0].vcpu.stats()["pf_taken"]
        if kernel.serve(init).status != 0:
            raise SystemExit("init failed")
        exits = (vm.exits - before) / k
        faults = vm.cpus[0].vcpu.stats()["pf_taken"] - faults
        exit_starts = [s for nr, pid, s, _ in spans if nr == Sys.EXIT and pid != init.pid]
        gaps = [b - a for a, b in itertools.pairwise(exit_starts)]
        execs = [e - s for nr, pid, s, e in spans if nr == Sys.EXEC and pid == init.pid]
        waits = [e - s for nr, pid, s, e in spans if nr == Sys.WAIT and pid == init.pid]
        return (statistics.median(gaps), statistics.median(execs), statistics.median(waits),
                round(exits), faults / k)
    finally:
        vm.close()


def main() -> None:
    k = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    ratios: list[float] = []
    priced: list[float] = []
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {k} children per round, medians, wall time")
    for _ in range(rounds):
        # The floors are taken right before and after each round's children, so a
        # round the host slowed down is compared with floors it slowed down too.
        floors = [floor(500) for _ in range(5)]
        firsts = [first_entry_extra(20)[0]]
        run, exec_, wait, exits, faults = child_costs(k)
        floors += [floor(500) for _ in range(5)]
        firsts.append(first_entry_extra(20)[0])
        f, first = statistics.median(floors), statistics.median(firsts)
        child = run + exec_ + wait + 2 * f
        ratios.append(child / (exits * f))
        priced.append(child / (exits * f + first))
        print(f"floor {f * 1e6:.1f} us; child run (EXIT to EXIT) {run * 1e6:.1f} us, EXEC "
              f"{exec_ * 1e6:.1f} us, WAIT {wait * 1e6:.1f} us; one child {child * 1e6:.1f} "
              f"us = {child / f:.1f} floors; {exits} exits and {faults:.1f} page faults per "
              f"child; against its own exits: {ratios[-1]:.2f}x; a new space's first "
              f"entry +{first * 1e6:.1f} us; at the platform's price: {priced[-1]:.2f}x")
    for what, values in (("against its own exits", ratios),
                         ("at the platform's price", priced)):
        print(f"{what}, {rounds} rounds: median {statistics.median(values):.2f}x, "
              f"range {min(values):.2f}-{max(values):.2f}x")

if __name__ == "__main__":
    main()
