"""Benchmark: libcopra's heap on copra against glibc's malloc on Linux, same workloads.

One C source, ``user/c/heap-bench.c``, is the workload: ``small`` (1,000 live objects
of 16-256 B, each operation frees one at random and allocates its replacement),
``mixed`` (the same over sizes from 16 B to 1 MiB, 80 % of them small) and
``prodcons`` (a producer thread allocates 16-256 B objects and passes them through a
ring to a consumer thread, which frees them: every free crosses threads). It runs

- on copra as the shipped image ``c-heap-bench`` (built against libcopra.a, so its
  malloc is libcopra's heap), timed from the program's ``begin`` line to its ``end``
  line by this process (the console callback runs inside the WRITE that prints
  them), and
- on Linux, compiled here with gcc against glibc, timed by the program itself
  (clock_gettime around the same loop),

in one run, each ``ROUNDS`` times in alternation; the table shows medians. Throughput
ratio = copra's operations per second / glibc's (above 1: copra's heap is faster).
Peak memory ratio = the heap's peak mapped bytes on copra (every mapped page is
backed: copra maps eagerly) / the growth of glibc's peak resident set over the run
(VmHWM), next to the peak of the bytes the workload asked for. ``syscalls`` counts the
heap's MMAP, MUNMAP and MRESIZE on copra; ``all`` every syscall of the copra run (for
prodcons mostly FUTEX_WAIT and FUTEX_WAKE of the ring, median).

Usage: python bench/heap.py [--cpu] [--small-ops N] [--mixed-ops N] [--prodcons-ops N]
(prints a table; timings are never tests). ``--cpu`` times with CPU time on both sides
(``time.thread_time`` of the thread that runs the vCPU, guest time included, and
CLOCK_PROCESS_CPUTIME_ID): steadier on a busy machine. ``prodcons`` runs on a VM with
two vCPUs (the two threads spin a while before they sleep, so they must run in
parallel) and is always timed by wall clock: its work is on two host threads.
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from copra.kernel import packit
from copra.kernel.boot import make_kernel
from copra.kernel.image import packaged_program
from copra.kernel.svsm_vm import SvsmVm

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "user" / "c" / "heap-bench.c"
ROUNDS = 3
SEED = 1
MEMORY = 512 << 20
_END = re.compile(r"heap-bench: (\w+) end (.*)$")


@dataclass
class Result:
    seconds: float
    peak_memory: int  #: copra: peak mapped; glibc: peak RSS growth
    peak_live: int
    checksum: int
    extra: dict[str, int]


def _fields(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (f.split("=") for f in text.split())}


def build_native(out: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise SystemExit("bench/heap.py: gcc is needed to build the glibc side")
    exe = out / "heap-bench-glibc"
    subprocess.run([gcc, "-std=c11", "-O2", "-pthread", "-DHEAP_BENCH_HOST", str(SOURCE),
                    "-o", str(exe)], check=True)
    return exe


def run_glibc(exe: Path, workload: str, ops: int, cpu: bool) -> Result:
    out = subprocess.run([str(exe), workload, str(ops), str(SEED)], check=True,
                         capture_output=True, text=True).stdout
    match = next(m for m in map(_END.search, out.splitlines()) if m)
    f = _fields(match.group(2))
    seconds = (f["cpu_ns"] if cpu and workload != "prodcons" else f["wall_ns"]) / 1e9
    return Result(seconds, f["peak_rss_growth"], f["peak_live"], f["checksum"], {})


def run_copra(workload: str, ops: int, cpu: bool) -> Result:
    threads = workload == "prodcons"
    clock = time.thread_time if cpu and not threads else time.perf_counter
    conf = f"{workload} {ops} {SEED}".encode()
    archive = packit.encode([packit.PackItEntry("/init", packaged_program("c-heap-bench")),
                             packit.PackItEntry("/etc/heap-bench.conf", conf)])
    stamps: dict[str, float] = {}
    ended: list[str] = []

    def console(line: str) -> None:
        if line.endswith(" begin"):
            stamps["begin"] = clock()
        elif " end " in line:
            stamps["end"] = clock()
            ended.append(line)

    vm = SvsmVm(MEMORY, cpus=2 if threads else 1)
    try:
        kernel, _ = make_kernel(vm, archive, console)
        result = kernel.serve(kernel.spawn("/init"), None)
        if result.status != 0 or not ended:
            raise SystemExit(f"c-heap-bench {workload} failed: status {result.status}")
        all_syscalls = (kernel.counters["syscalls_via_doorbell"]
                        + kernel.counters["syscalls_via_int80"])
    finally:
        vm.close()
    match = _END.search(ended[0])
    assert match is not None
    f = _fields(match.group(2))
    extra = {k: f[k] for k in ("maps", "unmaps", "resizes")}
    extra["all"] = all_syscalls  # every syscall of the run (FUTEX_WAIT/WAKE for prodcons)
    return Result(stamps["end"] - stamps["begin"], f["peak_mapped"], f["peak_live"],
                  f["checksum"], extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="time with CPU time")
    parser.add_argument("--small-ops", type=int, default=10_000_000)
    parser.add_argument("--mixed-ops", type=int, default=1_000_000)
    parser.add_argument("--prodcons-ops", type=int, default=2_000_000)
    args = parser.parse_args()
    workloads = {"small": args.small_ops, "mixed": args.mixed_ops,
                 "prodcons": args.prodcons_ops}
    with tempfile.TemporaryDirectory() as tmp:
        native = build_native(Path(tmp))
        rows = []
        for workload, ops in workloads.items():
            copra, glibc = [], []
            for _ in range(ROUNDS):
                copra.append(run_copra(workload, ops, args.cpu))
                glibc.append(run_glibc(native, workload, ops, args.cpu))
            if {r.checksum for r in copra + glibc} != {copra[0].checksum}:
                raise SystemExit(f"{workload}: the two sides did not run the same workload")
            rows.append((workload, ops, copra, glibc))
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, median of {ROUNDS} rounds, "
          f"{'CPU' if args.cpu else 'wall'} time")
    print(f"{'workload':<8} {'ops':>10} {'glibc Mop/s':>12} {'copra Mop/s':>12} {'ratio':>6} "
          f"{'live MiB':>9} {'glibc MiB':>10} {'copra MiB':>10} {'ratio':>6} {'syscalls':>9} "
          f"{'all':>7}")
    for workload, ops, copra, glibc in rows:
        c = statistics.median(r.seconds for r in copra)
        g = statistics.median(r.seconds for r in glibc)
        cm = statistics.median(r.peak_memory for r in copra)
        gm = statistics.median(r.peak_memory for r in glibc)
        calls = sum(v for k, v in copra[0].extra.items() if k != "all")
        every = statistics.median(r.extra["all"] for r in copra)
        mib = 1 << 20
        print(f"{workload:<8} {ops:>10} {ops / g / 1e6:>12.2f} {ops / c / 1e6:>12.2f} "
              f"{g / c:>6.2f} {copra[0].peak_live / mib:>9.1f} {gm / mib:>10.1f} "
              f"{cm / mib:>10.1f} {cm / gm if gm else float('inf'):>6.2f} {calls:>9} "
              f"{every:>7.0f}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    main()
