"""End-to-end helpers: boot the real kernel on KVM with shipped programs, in process.

As ``copra run`` does, the RAM fs keeps its files in the machine's frames. The machine
outlives each run, so the garbage of earlier runs (a RamFs and its file frames) is
collected before a run takes its baseline: frame counts then move only with the run.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from copra.kernel import packit
from copra.kernel.boot import make_kernel
from copra.kernel.image import packaged_program
from copra.kernel.kernel import Kernel, RunResult
from copra.kernel.limits import DEFAULT_LIMITS, Limits
from copra.kernel.machine import Machine
from copra.kernel.ramfs import RamFs


@dataclass
class Run:
    lines: list[str]
    result: RunResult
    stats: dict[str, int]
    baseline: dict[str, int]
    kernel: Kernel
    fs: RamFs

    def task_lines(self, name: str) -> list[str]:
        prefix = f"[{name}] "
        return [line[len(prefix):] for line in self.lines if line.startswith(prefix)]


@pytest.fixture(scope="session")
def machine() -> Iterator[Machine]:
    m = Machine(64 << 20)
    yield m
    m.close()


@pytest.fixture
def boot(machine: Machine):  # type: ignore[no-untyped-def]
    """boot(init_program, files={path: bytes | program-name}, timeout=..., limits=...) -> Run."""

    def run(init: str, files: dict[str, bytes | str] | None = None,
            timeout: float | None = 20.0, limits: Limits = DEFAULT_LIMITS) -> Run:
        entries = [packit.PackItEntry("/init", packaged_program(init))]
        for path, data in (files or {}).items():
            if isinstance(data, str):
                data = packaged_program(data)
            entries.append(packit.PackItEntry(path, data))
        gc.collect()
        lines: list[str] = []
        kernel, _ = make_kernel(machine, packit.encode(entries), lines.append, limits)
        fs = kernel.fs
        baseline = kernel.stats()
        proc = kernel.spawn("/init")
        result = kernel.run(proc, timeout)
        for p in list(kernel.processes.values()):
            if p.status is None:  # stopped by the timeout: end it like a shutdown would
                kernel.exit_process(p, 0)
        return Run(lines, result, kernel.stats(), baseline, kernel, fs)

    return run
