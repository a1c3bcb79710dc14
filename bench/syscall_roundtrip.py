"""Benchmark: the round trip of a trivial syscall from a native process, per entry path.

Reports each path as a ratio to a floor measured in the same run by the same Python:
a bare ``KVM_RUN`` loop around a CPL3 ``out`` to the doorbell port (the cheapest way
CPL3 code can leave the VM), with copra's VM set up exactly as for the kernel
(sync regs on) but no decoding and no kernel work.

The syscall paths run the shipped ``syscall-bench`` program under the full kernel:
N calls of CAPABILITIES(0) through the doorbell (the user library's default), then N
through ``int 0x80``. The harness timestamps every syscall dispatch; a path's round
trip is the time between its first and last dispatch divided by the calls between
them: user loop, VM exit, decode, table dispatch, handler, re-entry.

Usage: python bench/syscall_roundtrip.py [N] [--cpu] [--stats]   (prints a table;
timings are never tests). ``--cpu`` times with this thread's CPU time
(``time.thread_time``, guest time included) instead of wall time: steadier on a busy
shared machine, where the thread also waits for a core. ``--stats`` adds the doorbell
path measured again with the run's statistics on (``copra run --stats``), and with
statistics and a trace (``--trace``), in the same rounds.
"""

from __future__ import annotations

import fcntl
import platform
import statistics
import sys
import time

from copra.abi.spec import DOORBELL_PORT
from copra.hw import kvm
from copra.kernel import packit
from copra.kernel.image import packaged_program
from copra.kernel.stats import RunStats
from copra.kernel.svsm_vm import SvsmVm
from copra.kernel.trace import Trace
from harness import serve_observed

#: The clock of every timing here; ``--cpu`` makes it the thread's CPU time.
clock = time.perf_counter


def floor(n: int) -> float:
    """Seconds per bare KVM_RUN round trip of a CPL3 doorbell write."""
    vm = SvsmVm(16 << 20)
    try:
        # out; jmp -4, its context loaded once
        vm.cpus[0].enter(vm.bare_program(bytes([0xE6, DOORBELL_PORT, 0xEB, 0xFC])).context)
        fd, request, ioctl = vm.cpus[0].vcpu.fd, kvm.KVM_RUN, fcntl.ioctl
        start = clock()
        for _ in range(n):
            ioctl(fd, request, 0)
        return (clock() - start) / n
    finally:
        vm.close()


def syscall_paths(n: int, stats: RunStats | None = None) -> tuple[float, float]:
    """Seconds per syscall round trip through the doorbell and through int 0x80
    (with ``stats``: while the run keeps statistics)."""
    image = packaged_program("syscall-bench")
    archive = packit.encode([packit.PackItEntry("/init", image),
                             packit.PackItEntry("/etc/bench.n", str(n).encode())])
    stamps: list[float] = []
    serve_observed(archive, lambda cpu, thread: stamps.append(clock()), "syscall-bench",
                   memory=32 << 20, stats=stats)
    # Calls: open/read/close of /etc/bench.n and one reference call, then N + N, then exit.
    doorbell = stamps[-2 * n - 1 : -n - 1]
    int80 = stamps[-n - 1 : -1]
    return ((doorbell[-1] - doorbell[0]) / (n - 1), (int80[-1] - int80[0]) / (n - 1))


def main() -> None:
    global clock
    args = [a for a in sys.argv[1:] if a not in ("--cpu", "--stats")]
    if "--cpu" in sys.argv[1:]:
        clock = time.thread_time
    with_stats = "--stats" in sys.argv[1:]
    n = int(args[0]) if args else 5000
    rounds = 3
    floors, doors, int80s, stat_doors, trace_doors = [], [], [], [], []
    for _ in range(rounds):
        floors.append(floor(n))
        d, i = syscall_paths(n)
        doors.append(d)
        int80s.append(i)
        if with_stats:
            stat_doors.append(syscall_paths(n, RunStats())[0])
            trace_doors.append(syscall_paths(n, RunStats(Trace(4 * n + 100)))[0])
    f, d, i = statistics.median(floors), statistics.median(doors), statistics.median(int80s)
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {n} calls per path, median of {rounds} rounds, "
          f"{'thread CPU' if clock is time.thread_time else 'wall'} time")
    print(f"{'path':<40} {'us/call':>9} {'ratio':>7}")
    print(f"{'floor: bare KVM_RUN, CPL3 out':<40} {f * 1e6:9.1f} {1.0:7.2f}")
    print(f"{'syscall via doorbell (library default)':<40} {d * 1e6:9.1f} {d / f:7.2f}")
    print(f"{'syscall via int 0x80 (#UD trap on PVM)':<40} {i * 1e6:9.1f} {i / f:7.2f}")
    if with_stats:
        s, t = statistics.median(stat_doors), statistics.median(trace_doors)
        print(f"{'doorbell, statistics on (--stats)':<40} {s * 1e6:9.1f} {s / f:7.2f}")
        print(f"{'doorbell, statistics and trace on':<40} {t * 1e6:9.1f} {t / f:7.2f}")


if __name__ == "__main__":
    main()
