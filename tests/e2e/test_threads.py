"""End to end: threads of one process (THREAD_CREATE/EXIT/JOIN, futexes), on one and
on two vCPUs; a fault in one thread ends them all; nothing is left behind."""

from __future__ import annotations

from typing import Any

import pytest
from test_programs import assert_no_leak, killed_by

from copra.hw.x86 import Vector


@pytest.mark.parametrize("cpus", [1, 2])
def test_threads_share_a_futex_mutex_and_keep_their_own_fs_base(
        boot: Any, boot2: Any, cpus: int) -> None:
    run = (boot if cpus == 1 else boot2)("threads", {"/etc/threads.conf": b"4 3000\n"})
    lines = run.task_lines("init")
    assert run.result.status == 0, "\n".join(run.lines)
    assert "threads: ok, 4 workers, counter 12000" in lines
    assert run.kernel.counters["internal_errors"] == 0
    assert_no_leak(run)


@pytest.mark.parametrize("cpus", [1, 2])
def test_fault_in_one_thread_ends_every_thread_of_the_process(
        boot: Any, boot2: Any, cpus: int) -> None:
    run = (boot if cpus == 1 else boot2)("thread-fault", timeout=60.0)
    assert "thread-fault: the others run; faulting now" in run.task_lines("init")
    assert run.result.status == killed_by(Vector.UD), "\n".join(run.lines)
    assert not run.result.timed_out and run.result.still_running == ()
    assert_no_leak(run)


@pytest.mark.parametrize("cpus", [1, 2])
def test_munmap_makes_the_page_fault_at_once_in_a_thread_reading_it(
        boot: Any, boot2: Any, cpus: int) -> None:
    # The reader thread never enters the kernel: only the zap of the unmapped entry
    # (on the unmapping thread's CPU) can stop its reads, from the TLB and KVM's
    # shadow tables of whatever vCPU it runs on.
    run = (boot if cpus == 1 else boot2)("unmap-reach", timeout=60.0)
    lines = run.task_lines("init")
    (said,) = [line for line in lines if line.startswith("unmap-reach: the reader reads")]
    page = said.split()[4].rstrip(";")
    assert run.result.status == killed_by(Vector.PF), "\n".join(run.lines)
    (kill,) = [line for line in run.lines if "killed:" in line]
    assert f"address {page}," in kill
    assert sum(cpu.zaps for cpu in run.kernel.vm.cpus) >= 1
    assert_no_leak(run)
