"""Benchmark: MMAP with many mappings — does one more cost the same at 65,000 as at 4,096?

``limit-probe`` makes N one-page read-only mappings of a one-page file (they share
the file's frame, so memory does not bound N), with the mapping limit raised through
``Limits``; the time of its whole run (its start-up and exit are small beside N
MMAPs) divided by N is the cost of one MMAP at that many mappings: the exit, the
handler, the first-fit search in the region map, the page-table update. Reported
as a ratio to the same floor as the syscall benchmark (a bare KVM_RUN round trip,
measured in this run). Before the region map, the search scanned every mapping:
the cost grew with N.

Usage: python bench/many_mappings.py [N]   (default 65000; also runs N / 16)
"""

from __future__ import annotations

import platform
import sys
import time

from copra.kernel import packit
from copra.kernel.boot import make_kernel
from copra.kernel.image import packaged_program
from copra.kernel.limits import Limits
from copra.kernel.svsm_vm import SvsmVm
from syscall_roundtrip import floor


def mappings(n: int) -> float:
    """Seconds for n one-page file MMAPs in one process (plus one MUNMAP and MMAP)."""
    vm = SvsmVm(64 << 20)
    try:
        kernel, _ = make_kernel(vm, packit.encode([
            packit.PackItEntry("/init", packaged_program("limit-probe")),
            packit.PackItEntry("/etc/probe.conf", f"file-mappings {n}".encode()),
        ]), lambda line: None, Limits(mappings=n + 16))
        init = kernel.spawn("/init")
        start = time.perf_counter()
        result = kernel.serve(init)
        elapsed = time.perf_counter() - start
        if result.status != 0:
            raise SystemExit(f"limit-probe failed: status {result.status:#x}")
        return elapsed
    finally:
        vm.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 65_000
    f = floor(2000)
    small, large = n // 16, n
    t_small, t_large = mappings(small), mappings(large)
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}")
    print(f"{'what':<44} {'us':>10} {'ratio':>8}")
    print(f"{'floor: bare KVM_RUN, CPL3 out':<44} {f * 1e6:10.1f} {1.0:8.2f}")
    for count, total in ((small, t_small), (large, t_large)):
        per = total / count
        print(f"{f'one MMAP, {count} one-page mappings':<44} {per * 1e6:10.1f} {per / f:8.2f}")
    print(f"{large} one-page mappings: {t_large:.1f} s in all (boot, exit and unmap included)")


if __name__ == "__main__":
    main()
