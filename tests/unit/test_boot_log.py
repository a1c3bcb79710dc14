"""The boot log's lines stay bounded whatever a run leaves behind."""

from __future__ import annotations

from copra.kernel.boot import SHOWN_TASKS, summarize_tasks


def test_timeout_line_lists_few_tasks_and_counts_the_rest() -> None:
    tasks = tuple(f"t{i} (pid {i})" for i in range(2, 20_002))
    line = summarize_tasks(tasks)
    assert line.startswith("t2 (pid 2), t3 (pid 3)")
    assert line.count("(pid") == SHOWN_TASKS
    assert line.endswith(f" and {20_000 - SHOWN_TASKS} more")
    assert len(line) < 200


def test_timeout_line_lists_every_task_when_few() -> None:
    assert summarize_tasks(("a (pid 2)", "b (pid 3)")) == "a (pid 2), b (pid 3)"
