"""End to end: events, WAIT_MANY, process handles, CLOCK and SLEEP (the `events`
program), on one and two vCPUs."""

from __future__ import annotations

from typing import Any

import pytest
from test_programs import assert_no_leak


@pytest.mark.parametrize("cpus", [1, 2])
def test_events_wait_many_process_handles_and_time_behave_as_documented(
        boot: Any, boot2: Any, cpus: int) -> None:
    run = (boot if cpus == 1 else boot2)("events", {"/bin/hello": "hello"})
    assert run.result.status == 0, "\n".join(run.lines)
    assert "events: ok" in run.task_lines("init")
    assert run.kernel.counters["internal_errors"] == 0
    assert_no_leak(run)
