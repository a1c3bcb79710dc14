"""Benchmark: trivial syscalls from two processes on two vCPUs against the parallel floor.

Measured in one run, by the same Python:

- the floor: one host thread in a bare ``KVM_RUN`` loop around a CPL3 ``out`` to the
  doorbell (as bench/syscall_roundtrip.py), exits per second;
- the parallel floor: two host threads of this process, each in that loop on its own
  vCPU of one VM at the same time; the aggregate exits per second, and its ratio to
  the floor (the platform's own scaling: every exit takes the GIL);
- the kernel: init starting two ``syscall-bench`` services (N doorbell calls of
  CAPABILITIES(0) each, then N through ``int 0x80``) under ``Kernel.serve`` with one
  CPU and with two. Every dispatch is timestamped with its pid; the throughput is
  the number of doorbell calls both processes made while both were in their doorbell
  phase, divided by the length of that window.

The target (issue 8): two-CPU syscall throughput >= 0.8x the parallel floor.

Usage: python bench/smp_throughput.py [N]   (prints a table; timings are never tests)
"""

from __future__ import annotations

import fcntl
import platform
import statistics
import sys
import threading
import time
from collections import defaultdict

from copra.abi.spec import DOORBELL_PORT
from copra.hw import kvm
from copra.kernel import packit
from copra.kernel.cpu import Cpu
from copra.kernel.image import packaged_program
from copra.kernel.svsm_vm import SvsmVm
from copra.kernel.wakeq import IdleWait
from harness import serve_observed

_LOOP = bytes([0xE6, DOORBELL_PORT, 0xEB, 0xFC])  # out DOORBELL_PORT, al; jmp -4
#: Calls syscall-bench makes before its doorbell phase: open, read, close, reference.
_PROLOGUE = 4


def _loaded(vm: SvsmVm, cpu: Cpu) -> None:
    cpu.enter(vm.bare_program(_LOOP).context)


def floors(n: int) -> tuple[float, float]:
    """Exits per second: one bare loop alone, and two in parallel (aggregate)."""
    vm = SvsmVm(16 << 20, cpus=2)
    try:
        for cpu in vm.cpus:
            _loaded(vm, cpu)
        ioctl, request = fcntl.ioctl, kvm.KVM_RUN

        def loop(fd: int, go: threading.Barrier | None) -> None:
            if go is not None:
                go.wait()
            for _ in range(n):
                ioctl(fd, request, 0)

        start = time.perf_counter()
        loop(vm.cpus[0].vcpu.fd, None)
        one = n / (time.perf_counter() - start)
        go = threading.Barrier(3)
        threads = [threading.Thread(target=loop, args=(cpu.vcpu.fd, go)) for cpu in vm.cpus]
        for t in threads:
            t.start()
        go.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        two = 2 * n / (time.perf_counter() - start)
        return one, two
    finally:
        vm.close()


def handoff_floor(n: int) -> float:
    """Seconds per cross-vCPU hand-off with nothing of copra's in it: two host threads,
    each driving its own bare vCPU (the loop above), pass a token back and forth with
    the primitive the scheduler wakes an idle CPU with (kernel/wakeq.py's ``IdleWait``):
    wait for the token, one ``KVM_RUN`` exit, post the other. Each hand-off is one exit
    plus the host's wake-up of a sleeping thread; what a cross-vCPU wake-up in copra
    cannot go below."""
    vm = SvsmVm(16 << 20, cpus=2)
    try:
        for cpu in vm.cpus:
            _loaded(vm, cpu)
        ioctl, request = fcntl.ioctl, kvm.KVM_RUN
        idle = [IdleWait(), IdleWait()]

        def loop(me: int) -> None:
            fd, mine, other = vm.cpus[me].vcpu.fd, idle[me], idle[1 - me]
            for _ in range(n):
                mine.wait()
                ioctl(fd, request, 0)
                other.post()

        threads = [threading.Thread(target=loop, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        start = time.perf_counter()
        idle[0].post()
        for t in threads:
            t.join()
        return (time.perf_counter() - start) / (2 * n)
    finally:
        vm.close()


def kernel_throughput(cpus: int, n: int) -> float:
    """Doorbell syscalls per second while two syscall-bench processes both call."""
    stamps: dict[int, list[float]] = defaultdict(list)
    clock = time.perf_counter
    archive = packit.encode([
        packit.PackItEntry("/init", packaged_program("init")),
        packit.PackItEntry("/bin/syscall-bench", packaged_program("syscall-bench")),
        packit.PackItEntry("/etc/bench.n", str(n).encode()),
        packit.PackItEntry("/etc/init.services", b"/bin/syscall-bench\n" * 2),
    ])
    serve_observed(archive, lambda cpu, thread: stamps[thread.process.pid].append(clock()),
                   "init", cpus=cpus)
    benches = [s for pid, s in stamps.items() if pid != 2]  # init is task 2
    phases = [s[_PROLOGUE:_PROLOGUE + n] for s in benches]
    lo = max(p[0] for p in phases)
    hi = min(p[-1] for p in phases)
    if hi <= lo:
        raise SystemExit("the two processes' doorbell phases did not overlap")
    calls = sum(sum(1 for t in p if lo <= t <= hi) for p in phases)
    return calls / (hi - lo)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rounds = 3
    rows: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        one, two = floors(n)
        rows["floor"].append(one)
        rows["parallel"].append(two)
        rows["kernel1"].append(kernel_throughput(1, n))
        rows["kernel2"].append(kernel_throughput(2, n))
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {n} calls per loop, median of {rounds} rounds, "
          "wall time")
    print(f"{'what':<58} {'k/s':>8} {'ratio':>7}")
    print(f"{'floor: one bare KVM_RUN loop (CPL3 out)':<58} {med['floor'] / 1e3:8.2f} "
          f"{1.0:7.2f}")
    print(f"{'parallel floor: two loops, two vCPUs, two threads':<58} "
          f"{med['parallel'] / 1e3:8.2f} {med['parallel'] / med['floor']:7.2f}")
    for key, what in (("kernel1", "kernel, 2 processes, 1 CPU: doorbell syscalls"),
                      ("kernel2", "kernel, 2 processes, 2 CPUs: doorbell syscalls")):
        print(f"{what:<58} {med[key] / 1e3:8.2f} {med[key] / med['floor']:7.2f}")
    print(f"two-CPU kernel against the parallel floor: {med['kernel2'] / med['parallel']:.2f}x")


if __name__ == "__main__":
    main()
