"""What the kernel benchmarks share: boot an archive on a fresh VM and serve its /init,
with every syscall dispatch shown to an observer just before it runs (the observer
takes its timestamps there; nothing else on the exit path changes)."""

from __future__ import annotations

from collections.abc import Callable

from copra.kernel.boot import make_kernel
from copra.kernel.cpu import Cpu, Next
from copra.kernel.kernel import Kernel
from copra.kernel.stats import RunStats
from copra.kernel.svsm_vm import SvsmVm
from copra.kernel.thread import Thread


def serve_observed(archive: bytes, observe: Callable[[Cpu, Thread], None], what: str, *,
                   memory: int = 64 << 20, cpus: int = 1,
                   stats: RunStats | None = None,
                   prepare: Callable[[Kernel], Callable[[], None]] | None = None) -> None:
    """Run /init of ``archive`` to its end; SystemExit naming ``what`` unless it exits 0.
    With ``stats`` the run keeps statistics (and its trace, if it has one) as
    ``copra run --stats`` does. ``prepare(kernel)``, if given, runs before /init starts
    (guest VMs are made there) and returns what to call after the run."""
    vm = SvsmVm(memory, cpus=cpus)
    try:
        kernel, _ = make_kernel(vm, archive, lambda line: None)
        cleanup = prepare(kernel) if prepare is not None else None
        dispatch = kernel.dispatch

        def observed(cpu: Cpu, thread: Thread) -> Next:
            observe(cpu, thread)
            return dispatch(cpu, thread)

        kernel.dispatch = observed  # type: ignore[method-assign]
        init = kernel.spawn("/init")
        if stats is not None:
            kernel.attach_stats(stats)
        result = kernel.serve(init)
        if cleanup is not None:
            cleanup()
        if result.status != 0:
            raise SystemExit(f"{what} failed: status {result.status:#x}")
    finally:
        vm.close()
