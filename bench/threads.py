"""Benchmark: threads on two vCPUs against the floors of the same run.

Runs the shipped ``thread-bench`` program under ``Kernel.serve`` on a VM with two CPUs
(and, for comparison, one) and timestamps every syscall dispatch with its thread and
number; the program separates its phases with CLOCK calls:

1. two threads of one process each make N trivial syscalls (CAPABILITIES(0), doorbell):
   the aggregate rate while both call, against the parallel floor (two host threads
   each in a bare KVM_RUN loop on its own vCPU, bench/smp_throughput.py) — the target
   is >= 0.8x;
2. event ping-pong between two threads: a WRITE wakes the other thread blocked in
   READ; one wake-up is half a round trip, against the floor (one bare exit) — the
   target is <= 2x — and against the hand-off floor (two host threads, each driving a
   bare vCPU, passing a token with the primitive copra wakes an idle CPU with: one
   exit plus the host's thread wake-up, ``smp_throughput.handoff_floor``);
3. THREAD_CREATE of a thread that returns at once, then JOIN: per pair, against the
   floor.

Usage: python bench/threads.py [N] [--no-defer]   (--no-defer: idle CPUs are woken at
once, not when the waker gives up the GIL, kernel/wakeq.py; prints a table; timings
are never tests)
"""

from __future__ import annotations

import itertools
import platform
import statistics
import sys
import time
from collections import defaultdict

from copra.abi.spec import Sys
from copra.kernel import packit
from copra.kernel.image import packaged_program
from copra.kernel.scheduler import Scheduler
from harness import serve_observed
from smp_throughput import floors, handoff_floor


def run(cpus: int, calls: int, rounds: int, spawns: int
        ) -> tuple[float, float, float, float]:
    """(syscalls/s of two threads together, seconds per wake-up (mean, median), seconds
    per create + join) on a VM with ``cpus`` CPUs."""
    stamps: list[tuple[float, int, int]] = []  # time, tid, syscall number
    clock = time.perf_counter
    archive = packit.encode([
        packit.PackItEntry("/init", packaged_program("thread-bench")),
        packit.PackItEntry("/etc/bench.conf", f"{calls} {rounds} {spawns}".encode()),
    ])
    serve_observed(archive,
                   lambda cpu, thread: stamps.append((clock(), thread.tid, cpu.regs.rax)),
                   "thread-bench", cpus=cpus)
    marks = [t for t, _, nr in stamps if nr == Sys.CLOCK]
    if len(marks) != 6:
        raise SystemExit(f"expected 6 CLOCK marks, saw {len(marks)}")
    per_tid: dict[int, list[float]] = defaultdict(list)
    for t, tid, nr in stamps:
        if nr == Sys.CAPABILITIES and marks[0] < t < marks[1]:
            per_tid[tid].append(t)
    phases = list(per_tid.values())
    lo, hi = max(p[0] for p in phases), min(p[-1] for p in phases)
    both = sum(1 for p in phases for t in p if lo <= t <= hi)
    rate = both / (hi - lo)
    wakeup = (marks[3] - marks[2]) / (2 * rounds)
    # The same from medians: consecutive WRITEs alternate between the two threads, so
    # each gap is one wake-up; the median leaves out gaps a busy host stretched.
    writes = [t for t, _, nr in stamps if nr == Sys.WRITE and marks[2] < t < marks[3]]
    wakeup_median = statistics.median(b - a for a, b in itertools.pairwise(writes))
    spawn = (marks[5] - marks[4]) / spawns
    return rate, wakeup, wakeup_median, spawn


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--no-defer"]
    if "--no-defer" in sys.argv:
        Scheduler.defer_wakeups = False
    n = int(args[0]) if args else 4000
    rounds_count = 3
    rows: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds_count):
        one, two = floors(n)
        rows["floor"].append(one)
        rows["parallel"].append(two)
        rows["handoff"].append(handoff_floor(n // 4))
        for cpus in (1, 2):
            rate, wakeup, wakeup_median, spawn = run(cpus, n, n // 4, n // 40)
            rows[f"rate{cpus}"].append(rate)
            rows[f"wakeup{cpus}"].append(wakeup)
            rows[f"wakeup_median{cpus}"].append(wakeup_median)
            rows[f"spawn{cpus}"].append(spawn)
    m = {k: statistics.median(v) for k, v in rows.items()}
    exit_s = 1 / m["floor"]
    handoff = m["handoff"]
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {n} calls per thread, median of {rounds_count} "
          "rounds, wall time")
    print(f"{'what':<62} {'value':>12} {'ratio':>7} {'to hand-off':>11}")
    print(f"{'floor: one bare KVM_RUN loop':<62} {m['floor'] / 1e3:9.2f} k/s {1.0:7.2f}")
    print(f"{'hand-off floor: an exit + a host thread wake-up, two vCPUs':<62} "
          f"{handoff * 1e6:9.1f} us {handoff / exit_s:7.2f} {1.0:11.2f}")
    print(f"{'parallel floor: two loops, two vCPUs':<62} {m['parallel'] / 1e3:9.2f} k/s "
          f"{m['parallel'] / m['floor']:7.2f}")
    for cpus in (1, 2):
        print(f"{f'two threads syscalls, {cpus} CPU(s), together':<62} "
              f"{m[f'rate{cpus}'] / 1e3:9.2f} k/s {m[f'rate{cpus}'] / m['floor']:7.2f}")
    print(f"two threads on two CPUs against the parallel floor: "
          f"{m['rate2'] / m['parallel']:.2f}x")
    for cpus in (1, 2):
        print(f"{f'event wake-up, WRITE to the reader running, {cpus} CPU(s)':<62} "
              f"{m[f'wakeup{cpus}'] * 1e6:9.1f} us {m[f'wakeup{cpus}'] / exit_s:7.2f} "
              f"{m[f'wakeup{cpus}'] / handoff:11.2f}")
    for cpus in (1, 2):
        print(f"{f'event wake-up, median of the wake-ups, {cpus} CPU(s)':<62} "
              f"{m[f'wakeup_median{cpus}'] * 1e6:9.1f} us "
              f"{m[f'wakeup_median{cpus}'] / exit_s:7.2f} "
              f"{m[f'wakeup_median{cpus}'] / handoff:11.2f}")
    for cpus in (1, 2):
        print(f"{f'THREAD_CREATE + JOIN, {cpus} CPU(s)':<62} "
              f"{m[f'spawn{cpus}'] * 1e6:9.1f} us {m[f'spawn{cpus}'] / exit_s:7.2f}")


if __name__ == "__main__":
    main()
