"""Benchmark: what a process switch adds to a trip through the kernel.

Two CPL3 contexts in two address spaces each run ``out DOORBELL_PORT, al; jmp $-2``.
On one CPU, three loops run in interleaved batches:

- the floor: bare ``KVM_RUN`` ioctls on the loaded context (as in
  bench/syscall_roundtrip.py: the cheapest way for CPL3 code to leave the VM);
- ``Cpu.enter`` of the same context again and again (no switch: the cost of an
  exit as a syscall sees it);
- ``Cpu.enter`` alternating between the two contexts (a switch before every
  entry: the outgoing context's registers and XSAVE state are saved, the incoming
  one's loaded). Its difference to the previous row is the switch.

Then, also interleaved, the state ioctls of a switch on their own: the XSAVE pair the
CPU uses (KVM_GET_XSAVE2 into the outgoing context's buffer, KVM_SET_XSAVE of the
incoming one's) and the KVM_GET_FPU/KVM_SET_FPU pair, which carries only the x87 and
SSE state (what a switch used before the XSAVE state was kept per process).

Times are the CPU time of this thread (``time.thread_time``: the vCPU's guest time
included, time spent waiting for a core on a busy shared machine left out), per call,
as the median over batches of 100; ratios are to the floor.

Usage: python bench/context_switch.py [N]   (prints a table; timings are never tests)
"""

from __future__ import annotations

import fcntl
import platform
import statistics
import sys
import time
from collections.abc import Callable

from copra.abi.spec import DOORBELL_PORT
from copra.hw import kvm
from copra.hw.kvm import KvmFpu
from copra.kernel.cpu import UserContext
from copra.kernel.svsm_vm import SvsmVm

_LOOP = bytes([0xE6, DOORBELL_PORT, 0xEB, 0xFC])  # out DOORBELL_PORT, al; jmp -4
BATCH = 100


def _context(vm: SvsmVm) -> UserContext:
    return vm.bare_program(_LOOP).context


def _interleaved(n: int, *ops: Callable[[], None]) -> list[float]:
    """Median CPU seconds per call of each op, the ops run in alternating batches."""
    times: list[list[float]] = [[] for _ in ops]
    for _ in range(max(1, n // BATCH)):
        for op, out in zip(ops, times, strict=True):
            start = time.thread_time()
            for _ in range(BATCH):
                op()
            out.append((time.thread_time() - start) / BATCH)
    return [statistics.median(t) for t in times]


def enter_costs(n: int) -> list[float]:
    """Seconds per bare KVM_RUN, per ``enter`` without a switch and with one each time."""
    vm = SvsmVm(16 << 20)
    try:
        a, b = _context(vm), _context(vm)
        enter = vm.cpus[0].enter
        fd, request, ioctl = vm.cpus[0].vcpu.fd, kvm.KVM_RUN, fcntl.ioctl
        toggle = [b, a]

        def bare() -> None:
            ioctl(fd, request, 0)

        def same() -> None:
            enter(a)

        def switching() -> None:
            toggle.reverse()
            enter(toggle[1])  # b, a, b, a ...; a batch of BATCH (even) ends on a

        enter(a)
        return _interleaved(n, bare, same, switching)
    finally:
        vm.close()


def state_ioctls(n: int) -> tuple[float, float]:
    """Seconds per GET+SET pair: XSAVE (what a switch does) and FPU (x87/SSE only)."""
    vm = SvsmVm(16 << 20)
    try:
        vm.cpus[0].enter(_context(vm))
        vcpu = vm.cpus[0].vcpu
        area, fpu = vcpu.new_xsave(), KvmFpu()

        def xsave_pair() -> None:
            vcpu.get_xsave(area)
            vcpu.set_xsave(area)

        def fpu_pair() -> None:
            vcpu.get_fpu(fpu)
            vcpu.set_fpu(fpu)

        xsave, fpu_only = _interleaved(n, xsave_pair, fpu_pair)
        return xsave, fpu_only
    finally:
        vm.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    f, same, switching = enter_costs(n)
    xs, fp = state_ioctls(n)
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {n} per case in batches of {BATCH}, "
          "medians of the batches")
    rows = [
        ("floor: bare KVM_RUN, CPL3 out", f),
        ("enter, same context (no switch)", same),
        ("enter, alternating contexts (switch each)", switching),
        ("the switch itself (difference)", switching - same),
        ("KVM_GET_XSAVE2 + KVM_SET_XSAVE (a switch)", xs),
        ("KVM_GET_FPU + KVM_SET_FPU (x87/SSE only)", fp),
    ]
    print(f"{'what':<44} {'us':>9} {'ratio':>7}")
    for what, seconds in rows:
        print(f"{what:<44} {seconds * 1e6:9.1f} {seconds / f:7.2f}")


if __name__ == "__main__":
    main()
