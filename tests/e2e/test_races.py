"""End to end: races on shared handles between threads of two processes on two vCPUs.

`race-storm` runs 2 processes x 4 threads that WRITE, READ and WAIT_MANY on a table of
event handles while one thread per process CLOSEs them and makes new ones: every
answer must be one the ABI documents for that race, no kernel error, and nothing
(objects, frames, handles) may be left. The suite runs 2 x 4 x 1500 operations; the
same program with "4 25000" (2 x 10^5 operations) is the long run (docs/performance.md).
"""

from __future__ import annotations

from typing import Any

from test_programs import assert_no_leak

CONF = b"4 1500\n"


def test_threads_of_two_processes_racing_on_handles_get_only_documented_answers(
        boot2: Any) -> None:
    run = boot2("race-storm", {"/bin/race-storm": "race-storm", "/race.conf": CONF,
                               "/kid/role": CONF}, timeout=120.0)
    workers = run.task_lines("race-storm")
    assert [line for line in workers + run.task_lines("init") if "FAIL" in line] == []
    assert workers.count("race-storm: worker 6000 ops, 0 unexpected") == 2
    assert run.result.status == 0, "\n".join(run.lines[-20:])
    assert run.kernel.counters["internal_errors"] == 0
    assert_no_leak(run)
