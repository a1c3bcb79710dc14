"""Benchmark: 16 trivial calls in one BATCH against the same 16 calls made one by one.

Reports, as ratios to the floor measured in the same run (``syscall_roundtrip.floor``:
a bare ``KVM_RUN`` loop around a CPL3 doorbell ``out``), the cost per call of a
single CAPABILITIES(0) through the doorbell and of one CAPABILITIES(0) record of a
16-record BATCH. The target (issue 9) is a batched per-call cost of at most 0.15x the
floor: one exit shared by 16 calls leaves about 1/16 of an exit per call, plus the
kernel's work per record.

The shipped ``batch-bench`` program makes N rounds of 16 single calls, then N
BATCHes of 16 records. The harness timestamps every syscall dispatch (a BATCH is one
dispatch); a path's cost per call is the time between its first and last dispatch
divided by the calls made in between.

Usage: python bench/batch.py [N] [--cpu]   (prints a table; timings are never tests).
``--cpu`` times with the CPU thread's CPU time instead of wall time.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time

import syscall_roundtrip
from copra.kernel import packit
from copra.kernel.image import packaged_program
from harness import serve_observed

CALLS = 16  #: calls per round (batch-bench's CALLS)


def paths(n: int) -> tuple[float, float]:
    """Seconds per call made singly, and per call inside a 16-record BATCH."""
    clock = syscall_roundtrip.clock
    archive = packit.encode([packit.PackItEntry("/init", packaged_program("batch-bench")),
                             packit.PackItEntry("/etc/bench.n", str(n).encode())])
    stamps: list[float] = []
    serve_observed(archive, lambda cpu, thread: stamps.append(clock()), "batch-bench",
                   memory=32 << 20)
    # Dispatches: open/read/close of /etc/bench.n, 16N single calls, N BATCHes, exit.
    single = stamps[-n - CALLS * n - 1 : -n - 1]
    batched = stamps[-n - 1 : -1]
    return ((single[-1] - single[0]) / (len(single) - 1),
            (batched[-1] - batched[0]) / ((len(batched) - 1) * CALLS))


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--cpu"]
    if "--cpu" in sys.argv[1:]:
        syscall_roundtrip.clock = time.thread_time
    n = int(args[0]) if args else 500
    rounds = 3
    floors, singles, batched = [], [], []
    for _ in range(rounds):
        floors.append(syscall_roundtrip.floor(CALLS * n))
        s, b = paths(n)
        singles.append(s)
        batched.append(b)
    f, s, b = statistics.median(floors), statistics.median(singles), statistics.median(batched)
    cpu_time = syscall_roundtrip.clock is time.thread_time
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {n} rounds of {CALLS} calls per path, median of "
          f"{rounds} runs, {'thread CPU' if cpu_time else 'wall'} time")
    print(f"{'path':<44} {'us/call':>9} {'ratio':>7}")
    print(f"{'floor: bare KVM_RUN, CPL3 out':<44} {f * 1e6:9.1f} {1.0:7.2f}")
    print(f"{'single CAPABILITIES via doorbell':<44} {s * 1e6:9.1f} {s / f:7.2f}")
    print(f"{'CAPABILITIES in a 16-record BATCH, per call':<44} {b * 1e6:9.1f} {b / f:7.2f}")
    print(f"batched / single: {b / s:.3f}")


if __name__ == "__main__":
    main()
