"""End to end: the user library's heap under the real kernel.

``heap-stress`` runs a random allocation workload (1 B to 1 MiB, realloc included,
every block pattern-checked before it is freed); the kernel's view of the process —
its mappings and their pages — is read at the two lines the program prints before its
first block and after its last free and trim, and must be the same. The suite runs
10,000 operations (about a second), and 20,000 in four threads on two vCPUs that
pass blocks to each other (so blocks are freed through another thread's cache), and
the issue's full size: 1,000,000 in four threads (about half a minute).

``heap-misuse`` commits one misuse per run, which the heap must catch and name.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_programs import assert_no_leak

from copra.abi.spec import EXIT_STATUS_SHIFT
from copra.kernel.kernel import Kernel

PANIC = 0xFFFF << EXIT_STATUS_SHIFT


def process_memory(kernel: Kernel, name: str) -> tuple[int, int]:
    """(mappings, pages) of the running process called ``name``."""
    (proc,) = [p for p in kernel.processes.values() if p.name == name and p.status is None]
    regions = list(proc.regions)
    return len(regions), sum(len(r.frames) for r in regions)


def test_heap_stress_returns_every_page_to_the_kernel(boot: Any) -> None:
    seen: dict[str, tuple[int, int]] = {}

    def watch(kernel: Kernel, line: str) -> None:
        for mark in ("baseline", "settled"):
            if line.startswith(f"[init] heap-stress: {mark}"):
                seen[mark] = process_memory(kernel, "init")

    run = boot("heap-stress", {"/etc/heap-stress.conf": b"10000 64 7"}, watch=watch)
    lines = run.task_lines("init")
    assert run.result.status == 0, lines
    assert "heap-stress: PASS 10000 operations" in lines
    assert seen["settled"] == seen["baseline"]
    stats = next(line for line in lines if " MMAP, " in line and "in use 0 " in line)
    assert "0 live blocks" in stats and "0 failures" in stats
    assert_no_leak(run)


def test_heap_stress_in_four_threads_passing_blocks_returns_every_page(boot2: Any) -> None:
    seen: dict[str, tuple[int, int]] = {}

    def watch(kernel: Kernel, line: str) -> None:
        for mark in ("baseline", "settled"):
            if line.startswith(f"[init] heap-stress: {mark}"):
                seen[mark] = process_memory(kernel, "init")

    run = boot2("heap-stress", {"/etc/heap-stress.conf": b"20000 16 5 4"}, watch=watch)
    lines = run.task_lines("init")
    assert run.result.status == 0, lines
    assert "heap-stress: PASS 20000 operations in 4 threads" in lines
    per_thread = [line for line in lines if line.startswith("heap-stress: 5000 operations:")]
    assert len(per_thread) == 4
    assert all(not line.endswith(" 0 passed on") for line in per_thread), per_thread
    assert seen["settled"] == seen["baseline"]
    assert_no_leak(run)


def test_heap_stress_uses_the_heap_across_its_size_range(boot: Any) -> None:
    run = boot("heap-stress", {"/etc/heap-stress.conf": b"600 32 3"})
    final = [line for line in run.task_lines("init") if " MRESIZE, " in line][-1]
    # Large blocks were mapped and given back, and some grew or shrank in place.
    assert "mapped 0 (peak" in final
    maps = int(final.split(" MMAP")[0].rsplit(" ", 1)[1])
    resizes = int(final.split(" MRESIZE")[0].rsplit(" ", 1)[1])
    assert maps > 10 and resizes > 0, final
    assert run.result.status == 0


@pytest.mark.parametrize(("action", "message"), [
    ("double-free", "heap: double free of 0x"),
    ("foreign", "is not a heap pointer (free of a foreign pointer)"),
    ("interior", "points inside a block, not at its start"),
    ("write-after-free", "is damaged (write after free?)"),
    ("oom", "memory allocation of 68719476736 bytes failed"),
])
def test_heap_misuse_is_caught_and_named(boot: Any, action: str, message: str) -> None:
    run = boot("heap-misuse", {"/etc/heap-misuse": action.encode()})
    lines = run.task_lines("init")
    assert run.result.status == PANIC, lines
    assert any(message in line for line in lines), lines
    assert "heap-misuse: not caught" not in lines
    assert_no_leak(run)


def test_out_of_memory_is_logged_before_the_panic(boot: Any) -> None:
    run = boot("heap-misuse", {"/etc/heap-misuse": b"oom"})
    lines = run.task_lines("init")
    oom = [i for i, line in enumerate(lines) if line.startswith("heap: out of memory: 68719476736")]
    panic = [i for i, line in enumerate(lines) if "memory allocation of" in line]
    assert oom and panic and oom[0] < panic[0]
    assert "ENOMEM" in lines[oom[0]]


def test_heap_stress_a_million_operations_in_four_threads_returns_every_page(
        boot2: Any) -> None:
    """Issue 12's stress test at its full size: 10^6 operations of 1 B to 1 MiB in four
    threads on two vCPUs, every block pattern-checked before it is freed."""
    seen: dict[str, tuple[int, int]] = {}

    def watch(kernel: Kernel, line: str) -> None:
        for mark in ("baseline", "settled"):
            if line.startswith(f"[init] heap-stress: {mark}"):
                seen[mark] = process_memory(kernel, "init")

    run = boot2("heap-stress", {"/etc/heap-stress.conf": b"1000000 64 11 4"}, watch=watch,
                timeout=600.0)
    lines = run.task_lines("init")
    assert run.result.status == 0, lines[-20:]
    assert "heap-stress: PASS 1000000 operations in 4 threads" in lines
    assert seen["settled"] == seen["baseline"]
    assert_no_leak(run)
