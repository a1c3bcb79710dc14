"""End to end: preemption never lands a process's context in the ring-0 entry stubs.

On PVM hosts every `int 0x80` and every CPU exception from user mode runs a ring-0
stub that KVM emulates instruction by instruction, so a preemption tick often arrives
while the vCPU is at CPL0. The kernel must finish the entry and never switch there.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from test_programs import assert_no_leak

from copra.abi.spec import EXIT_STATUS_SHIFT, KILLED_BY_EXCEPTION
from copra.hw.x86 import Vector
from copra.kernel.cpu import KICK_SIGNAL

#: Far below the default slice: thousands of ticks during the run.
SHORT_SLICE = 0.0002


def test_int80_and_faulting_children_under_short_slice_each_end_as_their_role(
        boot: Any) -> None:
    run = boot("preempt-storm", {"/bin/preempt-storm": "preempt-storm",
                                 "/etc/storm.n": b"2000\n"},
               timeout=120, time_slice=SHORT_SLICE)
    lines = run.task_lines("init")
    assert run.result.status == 0, "\n".join(run.lines)
    assert sum("as expected" in line for line in lines) == 6
    kills = sorted(line.split("killed: ")[1].split(" ")[0] for line in run.lines
                   if "killed:" in line)
    assert kills == ["#BP", "#PF", "#UD"]
    if Path("/sys/module/kvm_pvm").exists():
        # Ring 0 is emulated here: with this slice, ticks land in the stubs every run.
        assert run.kernel.vm.ring0_preemptions > 0, "no tick landed in a stub"
    # Nothing of the processes is left; the RAM fs keeps the six one-page role files.
    assert run.stats["file_frames"] == run.baseline["file_frames"] + 6
    run.stats["free_frames"] += 6
    run.stats["file_frames"] -= 6
    assert_no_leak(run)


def test_preempt_storm_child_statuses_are_distinct() -> None:
    # The roles' statuses must differ from each other, or a swap would go unseen.
    statuses = {(10 + r) << EXIT_STATUS_SHIFT for r in range(3)}
    statuses |= {(int(v) << 8) | KILLED_BY_EXCEPTION for v in (Vector.UD, Vector.PF, Vector.BP)}
    assert len(statuses) == 6


def test_run_started_off_the_main_thread_without_kick_signal_says_so_and_completes(
        boot: Any) -> None:
    # Only the main thread can install the kick signal's handler: take it away, then
    # run from another thread, where kicks fall back to immediate_exit alone.
    old = signal.signal(KICK_SIGNAL, signal.SIG_DFL)
    runs: list[Any] = []
    try:
        worker = threading.Thread(
            target=lambda: runs.append(boot("init", {"/bin/hello": "hello",
                                                     "/etc/init.services": b"/bin/hello\n"})))
        worker.start()
        worker.join(timeout=60)
    finally:
        signal.signal(KICK_SIGNAL, old)
    (run,) = runs
    assert run.result.status == 0
    assert sum("no kick signal" in line for line in run.lines) == 1
    assert run.kernel.counters["runs_without_kick_signal"] == 1
    assert_no_leak(run)
