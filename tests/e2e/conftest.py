"""End-to-end helpers: boot the real kernel on KVM with shipped programs, in process.

As ``copra run`` does, the RAM fs keeps its files in the VM's frames. The VM
outlives each run, so the garbage of earlier runs (a RamFs and its file frames) is
collected before a run takes its baseline: frame counts then move only with the run
(and with the log file, which ``settled`` takes out).
``metadata_limit`` overrides the RAM fs's metadata budget (default: an eighth of the
machine's 64 MiB); ``trace_memory`` records, with tracemalloc, the most host memory
the run had allocated beyond its start (``Run.traced_peak``, bytes). ``watch(kernel,
line)`` is called with every console line as it is written (inside the WRITE that
prints it), so a test can look at the kernel at a moment a program names.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from copra.kernel import packit
from copra.kernel.boot import make_kernel
from copra.kernel.image import packaged_program
from copra.kernel.kernel import TIME_SLICE, Kernel, RunResult
from copra.kernel.limits import DEFAULT_LIMITS, Limits
from copra.kernel.ramfs import RamFs
from copra.kernel.svsm_vm import SvsmVm


@dataclass
class Run:
    lines: list[str]
    result: RunResult
    stats: dict[str, int]
    baseline: dict[str, int]
    kernel: Kernel
    fs: RamFs
    traced_peak: int | None = None
    vmm: Any = None  #: the boot's copra.vmm.service.Vmm, when it had guests (closed)

    def task_lines(self, name: str) -> list[str]:
        prefix = f"[{name}] "
        return [line[len(prefix):] for line in self.lines if line.startswith(prefix)]


def settled(stats: dict[str, int], baseline: dict[str, int]) -> dict[str, int]:
    """``stats`` as if the log file had not grown: every line a run prints is appended
    to it (kernel/logfile.py), and those frames are the log's, not a leak. A test that
    compares frame counts with the baseline then sees what the programs left behind."""
    grown = stats["log_file_frames"] - baseline["log_file_frames"]
    return stats | {
        "log_file_frames": stats["log_file_frames"] - grown,
        "file_frames": stats["file_frames"] - grown,
        "free_frames": stats["free_frames"] + grown,
    }


@pytest.fixture(scope="session")
def vm() -> Iterator[SvsmVm]:
    m = SvsmVm(64 << 20)
    yield m
    m.close()


@pytest.fixture(scope="session")
def vm2() -> Iterator[SvsmVm]:
    """A VM with two CPUs: its runs put two host threads in KVM_RUN at once."""
    m = SvsmVm(64 << 20, cpus=2)
    yield m
    m.close()


@pytest.fixture
def boot(vm: SvsmVm):  # type: ignore[no-untyped-def]
    """boot(init_program, files={path: bytes | program-name}, timeout=..., time_slice=...,
    limits=...) -> Run. ``init`` is a shipped program's name or an image's bytes."""
    return booter(vm)


@pytest.fixture
def boot2(vm2: SvsmVm):  # type: ignore[no-untyped-def]
    """``boot`` on the two-CPU VM."""
    return booter(vm2)


def booter(vm: SvsmVm):  # type: ignore[no-untyped-def]
    def run(init: str | bytes, files: dict[str, bytes | str] | None = None,
            timeout: float | None = 20.0, time_slice: float = TIME_SLICE,
            metadata_limit: int | None = None, trace_memory: bool = False,
            limits: Limits = DEFAULT_LIMITS,
            watch: Callable[[Kernel, str], None] | None = None,
            guests: Sequence[Any] = ()) -> Run:
        image = packaged_program(init) if isinstance(init, str) else init
        entries = [packit.PackItEntry("/init", image)]
        for path, data in (files or {}).items():
            if isinstance(data, str):
                data = packaged_program(data)
            entries.append(packit.PackItEntry(path, data))
        gc.collect()
        lines: list[str] = []
        made: list[Kernel] = []

        def console(line: str) -> None:
            lines.append(line)
            if watch is not None and made:
                watch(made[0], line)

        kernel, _ = make_kernel(vm, packit.encode(entries), console, limits,
                                metadata_limit=metadata_limit)
        made.append(kernel)
        vmm = None
        if guests:  # copra.vmm.service.GuestSpec values: the VMM's class is registered
            from copra.vmm.service import Vmm
            vmm = Vmm(kernel, list(guests))
        fs = kernel.fs
        baseline = kernel.stats()
        traced_peak = None
        if trace_memory:
            tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            proc = kernel.spawn("/init")
            result = kernel.serve(proc, timeout, time_slice)
            if trace_memory:
                traced_peak = tracemalloc.get_traced_memory()[1] - start
        finally:
            if trace_memory:
                tracemalloc.stop()
        for p in list(kernel.processes.values()):
            if p.status is None:  # stopped by the timeout: end it like a shutdown would
                kernel.exit_process(p, 0)
        vm.flush_quarantine()
        stats = settled(kernel.stats(), baseline)
        if vmm is not None:
            vmm.close()
        return Run(lines, result, stats, baseline, kernel, fs, traced_peak, vmm)

    return run
