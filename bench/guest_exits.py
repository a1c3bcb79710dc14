"""Benchmark: a guest's exit round trip through copra's VMM loop, and its console's speed.

Guest kernels (user/guests/bench.S, built here with scripts/build-guest-kernels) run at
CPL0, which KVM emulates on PVM hosts. Rows:

- the floor: bare ``KVM_RUN`` ioctls on a guest looping ``out 0x80, al; jmp`` (KVM
  completes each OUT on re-entry; nothing is decoded): the cheapest guest exit;
- the VMM loop: ``Guest.run`` of a guest making 20,000 such writes: each exit decoded
  into an ``IoExit`` and answered by the port bus (port 0x80 is unclaimed);
- the console: 16,000 bytes through COM1, once polled as drivers do (LSR before every
  byte: two exits per byte) and once written straight to THR (one exit per byte), as
  bytes per second into console lines.

Times are wall-clock (``time.perf_counter``) and CPU time of this thread
(``time.thread_time``, the vCPU's guest time included); each row is the median of three
rounds. Ratios are to the floor of the same run. Timings are never tests.

Usage: python bench/guest_exits.py [N]   (N bare KVM_RUNs for the floor; default 20000)
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from copra.vmm.guest import Guest, GuestConfig

REPO = Path(__file__).resolve().parent.parent
MEMORY = 16 << 20
ROUNDS = 3


def kernels(directory: Path) -> dict[str, bytes]:
    loader = importlib.machinery.SourceFileLoader(
        "build_guest_kernels", str(REPO / "scripts" / "build-guest-kernels"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    builder = importlib.util.module_from_spec(spec)
    loader.exec_module(builder)
    tool = builder.missing_tool()
    if tool is not None:
        raise SystemExit(f"{tool} is not installed: cannot build the guest kernels")
    return {name: path.read_bytes() for name, path in builder.build(directory).items()}


def floor(kernel: bytes, n: int) -> tuple[float, float]:
    """Wall and CPU seconds per bare KVM_RUN of an exiting guest."""
    with Guest(GuestConfig("bench", kernel, MEMORY, b"forever"), lambda _line: None) as guest:
        run = guest.vcpu.run
        for _ in range(100):  # past the console set-up to the loop
            run()
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(n):
            run()
        return (time.perf_counter() - wall) / n, (time.thread_time() - cpu) / n


def guest_run(kernel: bytes, cmdline: bytes) -> tuple[float, float, dict[str, int]]:
    """Wall and CPU seconds of Guest.run, and its counters."""
    with Guest(GuestConfig("bench", kernel, MEMORY, cmdline), lambda _line: None) as guest:
        wall, cpu = time.perf_counter(), time.thread_time()
        result = guest.run(600)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    if result.status != 1:
        raise SystemExit(f"bench guest {cmdline!r} ended: {result.describe()}")
    return wall, cpu, result.counters


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    with tempfile.TemporaryDirectory() as tmp:
        bench = kernels(Path(tmp))["bench"]
    floors, loops, polled, unpolled = [], [], [], []
    for _ in range(ROUNDS):
        floors.append(floor(bench, n))
        wall, cpu, c = guest_run(bench, b"out")
        loops.append((wall / c["exits"], cpu / c["exits"]))
        for rows, cmdline in ((polled, b"uart"), (unpolled, b"thr")):
            wall, cpu, c = guest_run(bench, cmdline)
            rows.append((c["console_bytes"] / wall, c["console_bytes"] / cpu,
                         c["exits"] / c["console_bytes"]))
    f_wall, f_cpu = median([w for w, _ in floors]), median([c for _, c in floors])
    l_wall, l_cpu = median([w for w, _ in loops]), median([c for _, c in loops])
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}; floor over {n} exits, medians of {ROUNDS} rounds")
    print(f"{'guest exit round trip':<44} {'us wall':>8} {'us cpu':>8} {'ratio':>6}")
    print(f"{'floor: bare KVM_RUN, CPL0 out':<44} {f_wall * 1e6:8.1f} {f_cpu * 1e6:8.1f} "
          f"{1.0:6.2f}")
    print(f"{'Guest.run: decoded, port bus (unclaimed)':<44} {l_wall * 1e6:8.1f} "
          f"{l_cpu * 1e6:8.1f} {l_cpu / f_cpu:6.2f}")
    print(f"{'console':<44} {'B/s wall':>8} {'B/s cpu':>8} {'exit/B':>6}")
    for what, rows in (("COM1, polled (LSR before each byte)", polled),
                       ("COM1, THR only", unpolled)):
        print(f"{what:<44} {median([r[0] for r in rows]):8.0f} "
              f"{median([r[1] for r in rows]):8.0f} {median([r[2] for r in rows]):6.2f}")


if __name__ == "__main__":
    main()
