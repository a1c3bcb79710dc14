"""End to end: a C program built against libcopra.a runs under copra.

``c-hello`` (user/c/hello.c, built by scripts/build-user-images) checks malloc,
calloc, realloc, aligned_alloc and free, the heap's statistics, the file, directory
and mapping wrappers and error names, and prints a verdict per check. ``c-heap-bench``
(the workloads of bench/heap.py) runs a few thousand operations of each workload, the
producer/consumer one in two threads on two vCPUs. ``c-chan`` (user/c/chan.c) uses
the channel wrappers: a message with a moved event, EMSGSIZE, EXEC_HANDLES giving a
child (``c-chan-echo``) an endpoint, CHANNEL_CALL, EPIPE.
"""

from __future__ import annotations

from typing import Any

from test_programs import assert_no_leak


def test_c_program_passes_every_check_of_the_library(boot: Any) -> None:
    run = boot("c-hello")
    lines = run.task_lines("init")
    assert run.result.status == 0, lines
    assert lines[0] == "Hello from C on copra"
    assert not [line for line in lines if line.startswith("FAIL")]
    checks = [line for line in lines if line.startswith("PASS ")]
    assert len(checks) >= 20
    assert f"c-hello: {len(checks)}/{len(checks)} checks passed" in lines
    assert_no_leak(run)


def test_c_program_returns_its_heap_to_nothing(boot: Any) -> None:
    run = boot("c-hello")
    assert "PASS everything_freed_and_trimmed_leaves_nothing_mapped" in run.task_lines("init")
    assert "PASS realloc_of_a_large_block_grows_in_place" in run.task_lines("init")


def test_heap_benchmark_program_runs_every_workload(boot: Any, boot2: Any) -> None:
    for workload in ("small", "mixed", "prodcons"):
        run = (boot2 if workload == "prodcons" else boot)(
            "c-heap-bench", {"/etc/heap-bench.conf": f"{workload} 3000 1".encode()})
        lines = run.task_lines("init")
        assert run.result.status == 0, lines
        assert lines[0] == f"heap-bench: {workload} begin"
        assert lines[1].startswith(f"heap-bench: {workload} end ops=3000 checksum=")
        assert_no_leak(run)


def test_c_program_moves_handles_through_channels_and_calls_a_child(boot2: Any) -> None:
    run = boot2("c-chan", {"/bin/c-chan-echo": "c-chan-echo"})
    lines = run.task_lines("init")
    assert run.result.status == 0, run.lines
    assert not [line for line in lines if "FAILED" in line], lines
    assert "c-chan: 12/12 checks passed" in lines
    assert_no_leak(run)
