"""Benchmark: channel messages between two processes against the floor of the same run.

Runs the shipped ``chan-bench`` program under ``Kernel.serve`` on a VM with one CPU and
on one with two, timestamping every syscall dispatch (bench/harness.py). The program
separates its phases with CLOCK calls:

1. ping-pong: init SENDs 8 bytes to its child and RECVs the reply, both blocking; the
   child RECVs and SENDs back. One round trip is four syscalls and two wake-ups;
   against the floor (one bare KVM_RUN exit, bench/smp_throughput.py) - the issue's
   target is <= 2.5x on two vCPUs; also against the hand-off floor (two host threads
   each driving a bare vCPU pass a token with the primitive copra wakes an idle CPU
   with: one exit plus the host's thread wake-up, ``smp_throughput.handoff_floor``; a
   round trip on two vCPUs holds two such hand-offs);
2. one-way throughput: init SENDs small messages (8 bytes) as fast as the queue takes
   them, the child RECVs them: messages per second;
3. ping-pong with CHANNEL_CALL on both sides (init calls; the child answers each
   request with a call that also takes the next one): two syscalls per round trip.

Usage: python bench/channels.py [ROUNDS] [--no-sync] [--no-defer]   (no sync wake-ups; idle
CPUs woken at once, not when the waker gives up the GIL; a table, never a test)
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
from copra.kernel.cpu import Cpu
from copra.kernel.image import packaged_program
from copra.kernel.scheduler import Scheduler
from copra.kernel.thread import Thread
from harness import serve_observed
from smp_throughput import floors, handoff_floor

INIT_PID = 2
#: Per-run medians of single round trips, by row.
MEDIANS: dict[str, list[float]] = {}


def run(cpus: int, rounds: int, messages: int) -> tuple[float, float, float]:
    """(seconds per ping-pong round trip, messages per second one way, seconds per
    CHANNEL_CALL round trip) with ``cpus``."""
    marks: list[float] = []
    sends: list[float] = []  # init's SEND dispatches (phase 1: one per round trip)
    calls: list[float] = []  # init's CHANNEL_CALL dispatches (phase 3: one per round trip)
    clock = time.perf_counter
    archive = packit.encode([
        packit.PackItEntry("/init", packaged_program("chan-bench")),
        packit.PackItEntry("/etc/bench.conf", f"{rounds} {messages}".encode()),
    ])

    def observe(cpu: Cpu, thread: Thread) -> None:
        number = cpu.regs.rax
        if number == Sys.CLOCK:
            marks.append(clock())
        elif thread.process.pid == INIT_PID and number in (Sys.SEND, Sys.CHANNEL_CALL):
            (sends if number == Sys.SEND else calls).append(clock())

    serve_observed(archive, observe, "chan-bench", cpus=cpus)
    if len(marks) != 6:
        raise SystemExit(f"expected 6 CLOCK marks, saw {len(marks)}")
    # The median gap between consecutive round trips: what one costs when no other
    # work on this shared host preempted it (the means above include those).
    trips = [t for t in sends if marks[0] < t < marks[1]]
    MEDIANS.setdefault(f"trip{cpus}", []).append(
        statistics.median(b - a for a, b in itertools.pairwise(trips)))
    MEDIANS.setdefault(f"call{cpus}", []).append(
        statistics.median(b - a for a, b in itertools.pairwise(calls)))
    return ((marks[1] - marks[0]) / rounds, messages / (marks[3] - marks[2]),
            (marks[5] - marks[4]) / rounds)


def main() -> None:
    args = [a for a in sys.argv[1:] if a not in ("--no-sync", "--no-defer")]
    if "--no-sync" in sys.argv:
        Scheduler.sync_wakeups = False  # every wake-up an ordinary one
    if "--no-defer" in sys.argv:
        Scheduler.defer_wakeups = False  # idle CPUs woken at once
    rounds = int(args[0]) if args else 2000
    messages = 2 * rounds
    repeats = 3
    rows: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        one, _two = floors(4 * rounds)
        rows["floor"].append(one)
        rows["handoff"].append(handoff_floor(rounds))
        for cpus in (1, 2):
            trip, rate, call = run(cpus, rounds, messages)
            rows[f"trip{cpus}"].append(trip)
            rows[f"rate{cpus}"].append(rate)
            rows[f"call{cpus}"].append(call)
    m = {k: statistics.median(v) for k, v in rows.items()}
    exit_s = 1 / m["floor"]
    trip_floor = 2 * m["handoff"]  # a round trip on two vCPUs: two hand-offs
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {rounds} round trips and {messages} messages, "
          f"median of {repeats} runs, wall time")
    print(f"{'what':<56} {'value':>12} {'ratio':>7} {'to 2 hand-offs':>14}")
    print(f"{'floor: one bare KVM_RUN exit':<56} {exit_s * 1e6:9.1f} us {1.0:7.2f}")
    print(f"{'hand-off floor: an exit + a host thread wake-up':<56} "
          f"{m['handoff'] * 1e6:9.1f} us {m['handoff'] / exit_s:7.2f}")
    for cpus in (1, 2):
        print(f"{f'ping-pong round trip, two processes, {cpus} vCPU(s)':<56} "
              f"{m[f'trip{cpus}'] * 1e6:9.1f} us {m[f'trip{cpus}'] / exit_s:7.2f} "
              f"{m[f'trip{cpus}'] / trip_floor:14.2f}")
    for cpus in (1, 2):
        print(f"{f'CHANNEL_CALL round trip, two processes, {cpus} vCPU(s)':<56} "
              f"{m[f'call{cpus}'] * 1e6:9.1f} us {m[f'call{cpus}'] / exit_s:7.2f} "
              f"{m[f'call{cpus}'] / trip_floor:14.2f}")
    for key, what in (("trip", "SEND + RECV"), ("call", "CHANNEL_CALL")):
        for cpus in (1, 2):
            one = statistics.median(MEDIANS[f"{key}{cpus}"])
            print(f"{f'{what}, median round trip, {cpus} vCPU(s)':<56} "
                  f"{one * 1e6:9.1f} us {one / exit_s:7.2f} {one / trip_floor:14.2f}")
    for cpus in (1, 2):
        rate = m[f"rate{cpus}"]
        print(f"{f'8-byte messages one way, {cpus} vCPU(s)':<56} {rate / 1e3:9.2f} k/s "
              f"{(1 / rate) / exit_s:7.2f}")


if __name__ == "__main__":
    main()
