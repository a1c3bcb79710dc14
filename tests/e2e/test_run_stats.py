"""End to end: `copra run --stats --trace` on the default image (init starts hello),
and the log-level and timestamp options, through the real command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from copra.kernel.image import demo_config_path
from copra.kernel.trace import VCPU_PID

#: `--init` with the shipped init boots the default image (init starts hello), not the demo.
HELLO_INIT = str(demo_config_path().parent / "init.elf")


def copra(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "copra", *args], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def stats_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    trace = tmp_path_factory.mktemp("trace") / "run.json"
    out = copra("run", "--init", HELLO_INIT, "--memory", "32", "--cpus", "1", "--stats",
                "--trace", str(trace))
    assert out.returncode == 0, out.stderr
    return out, json.loads(trace.read_text(encoding="utf-8"))


def _table_row(stderr: str, first: str) -> list[str]:
    rows = [line.split() for line in stderr.splitlines() if line.split()[:1] == [first]]
    assert len(rows) == 1, f"{first}: {rows}"
    return rows[0]


def _task_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if not line.startswith("[kernel]")]


def test_stats_count_one_write_per_line_the_tasks_printed(stats_run: Any) -> None:
    out, _ = stats_run
    # name, number, count, errors, blocked, total ms, mean us
    assert int(_table_row(out.stderr, "WRITE")[2]) == len(_task_lines(out.stdout))
    assert int(_table_row(out.stderr, "EXEC")[2]) == 1  # init started hello
    assert int(_table_row(out.stderr, "EXIT")[2]) == 2


def test_stats_exits_add_up_to_the_syscalls_of_a_run_without_faults(stats_run: Any) -> None:
    out, _ = stats_run
    syscalls = re.search(r"^syscalls\n(.*?)\n\n", out.stderr, re.MULTILINE | re.DOTALL)
    assert syscalls is not None
    completed = sum(int(row.split()[2]) for row in syscalls.group(1).splitlines()[1:])
    doorbell = int(_table_row(out.stderr, "syscall")[-1])  # "syscall via doorbell  N"
    assert doorbell == completed
    assert _table_row(out.stderr, "none") == ["none", "0"]  # no fault


def test_stats_show_time_for_each_process_and_vcpu(stats_run: Any) -> None:
    out, _ = stats_run
    for name in ("init", "hello"):
        row = _table_row(out.stderr, name)
        assert float(row[2]) > 0 and float(row[3]) > 0  # guest ms, kernel ms
    assert "time per vCPU" in out.stderr


def test_stats_show_kvms_own_count_of_the_exits(stats_run: Any) -> None:
    # KVM counts every exit it took, those it handled itself (its MMU's page faults,
    # host interrupts) as well as the KVM_RUN returns the kernel counted.
    out, _ = stats_run
    returned = int(_table_row(out.stderr, "total")[1])
    section = out.stderr[out.stderr.index("KVM's own counters"):].splitlines()[2:]
    counted = dict(row for row in (line.split() for line in section) if len(row) == 2)
    assert int(counted["exits"]) >= returned > 0


def test_trace_holds_the_same_syscalls_and_a_vcpu_track(stats_run: Any) -> None:
    out, trace = stats_run
    events = trace["traceEvents"]
    writes = [e for e in events if e["ph"] == "X" and e["name"] == "WRITE"]
    assert len(writes) == len(_task_lines(out.stdout))
    processes = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert {processes[e["pid"]].split()[0] for e in writes} == {"init", "hello"}
    running = [e for e in events if e["ph"] == "X" and e["cat"] == "sched"]
    assert {e["args"]["pid"] for e in running} == set(processes) - {VCPU_PID}
    assert trace["otherData"]["dropped_events"] == 0
    assert "copra: trace: " in out.stderr


def test_trace_limit_drops_the_rest_and_says_how_many(tmp_path: Path) -> None:
    trace = tmp_path / "t.json"
    out = copra("run", "--init", HELLO_INIT, "--memory", "32", "--cpus", "1", "-q", "--timestamps",
                "--trace", str(trace), "--trace-limit", "10")
    assert out.returncode == 0, out.stderr
    doc = json.loads(trace.read_text(encoding="utf-8"))
    assert sum(1 for e in doc["traceEvents"] if e["ph"] != "M") == 10
    dropped = doc["otherData"]["dropped_events"]
    assert dropped > 0
    assert f"{dropped} dropped at the limit of 10" in out.stderr
    # -q: no informational kernel line; the tasks' lines stay, each with a timestamp.
    lines = out.stdout.splitlines()
    assert lines and all(re.match(r"\[ *\d+\.\d{6}\] \[", line) for line in lines)
    assert not any("] [kernel]" in line for line in lines)
    assert any(line.endswith("[hello] Hello from a copra service") for line in lines)


def test_verbose_logs_each_process_start_and_end() -> None:
    out = copra("run", "--init", HELLO_INIT, "--memory", "32", "--cpus", "1", "-v")
    assert out.returncode == 0, out.stderr
    assert "[kernel] /bin/hello started as task 3 (parent 2)" in out.stdout
    assert "[kernel] hello (pid 3) exited with 0" in out.stdout
