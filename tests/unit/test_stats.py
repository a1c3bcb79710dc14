"""Run statistics and the trace (kernel/stats.py, kernel/trace.py) without KVM: the
probes' counting and merging, the table, and the trace-event JSON with its bound."""

from __future__ import annotations

import io
import json
import threading
from types import SimpleNamespace
from typing import Any

from copra.abi.spec import Errno, Sys
from copra.hw.kvm import ExitReason
from copra.hw.x86 import Vector
from copra.kernel.stats import (
    SYSCALL_DOORBELL,
    CpuProbe,
    CpuRow,
    ProcessRow,
    RunStats,
    StatsReport,
    SyscallRow,
    format_report,
)
from copra.kernel.trace import VCPU_PID, VCPU_TID_BASE, Trace

_U64 = (1 << 64) - 1


def _thread(pid: int, name: str, tid: int) -> Any:
    return SimpleNamespace(tid=tid, process=SimpleNamespace(pid=pid, name=name))


def _run_one_call(probe: CpuProbe, thread: Any, number: int, result: int | None) -> None:
    probe.on_cpu(thread)
    probe.run_start()
    probe.run_end(ExitReason.IO)
    probe.exit(SYSCALL_DOORBELL)
    probe.syscall(number, 1.0, 1.5, result, blocked=False)
    probe.off_cpu()


def test_report_merges_the_probes_of_every_cpu() -> None:
    run = RunStats()
    p0, p1 = run.make_probes(2, invalidations=3, invalidation_seconds=0.25)
    _run_one_call(p0, _thread(2, "init", 1), Sys.WRITE, 5)
    _run_one_call(p1, _thread(3, "hello", 2), Sys.WRITE, int(Errno.EFAULT) & _U64)
    p1.syscall(Sys.FUTEX_WAIT, 2.0, 2.25, None, blocked=True)
    p1.fault(Vector.PF, 0x1000)

    report = run.report(invalidations=5, invalidation_seconds=0.75)

    write = next(r for r in report.syscalls if r.name == "WRITE")
    assert (write.count, write.errors, write.blocked, write.seconds) == (2, 1, 0, 1.0)
    futex = next(r for r in report.syscalls if r.name == "FUTEX_WAIT")
    assert (futex.count, futex.blocked) == (0, 1)
    assert report.kvm_exits == {"IO": 2}
    assert report.exits[SYSCALL_DOORBELL] == 2
    assert report.faults == {"#PF": 1}
    assert (report.invalidations, report.invalidation_seconds) == (2, 0.5)
    assert [(p.pid, p.name) for p in report.processes] == [(2, "init"), (3, "hello")]
    assert [c.exits for c in report.cpus] == [1, 1]
    assert report.switches == 2


def test_probe_counts_a_switch_only_when_the_thread_changes() -> None:
    probe = RunStats().make_probes(1, 0, 0.0)[0]
    a, b = _thread(2, "a", 1), _thread(2, "a", 2)
    for thread in (a, a, b, a):
        probe.on_cpu(thread)
        probe.off_cpu()
    assert probe.switches == 3


def test_guest_and_kernel_time_split_a_process_time_on_the_cpu() -> None:
    probe = RunStats().make_probes(1, 0, 0.0)[0]
    probe.on_cpu(_thread(2, "init", 1))
    probe.run_start()
    probe.run_end(ExitReason.IO)
    probe.off_cpu()
    assert 0 <= probe.guest_seconds <= probe.busy_seconds
    assert probe.proc_guest[2] == probe.guest_seconds


def _report() -> StatsReport:
    return StatsReport(
        seconds=1.5, kvm_exits={"IO": 30, "INTR": 10}, exits={SYSCALL_DOORBELL: 30},
        syscalls=(SyscallRow(int(Sys.WRITE), 20, 1, 0, 0.002),
                  SyscallRow(int(Sys.WAIT), 0, 0, 3, 0.0003)),
        faults={}, switches=4, preemptions=2, blocks=3, invalidations=2,
        invalidation_seconds=0.003,
        processes=(ProcessRow(2, "init", 0.5, 0.25),),
        cpus=(CpuRow(0, 0.5, 0.25, 0.75, 40),))


def test_table_lists_each_syscall_with_count_total_and_mean() -> None:
    text = format_report(_report())
    row = next(line for line in text.splitlines() if line.split()[:1] == ["WRITE"])
    assert row.split() == ["WRITE", "1:0x02", "20", "1", "0", "2.000", "100.0"]
    wait = next(line for line in text.splitlines() if line.split()[:1] == ["WAIT"])
    assert wait.split()[-1] == "-"  # never completed: no mean


def test_table_gives_exit_shares_and_the_total() -> None:
    lines = format_report(_report()).splitlines()
    assert any(line.split() == ["IO", "30", "75.0"] for line in lines)
    assert any(line.split() == ["total", "40"] for line in lines)


def test_table_says_none_when_no_fault_happened() -> None:
    lines = format_report(_report()).splitlines()
    at = lines.index("faults (CPU exceptions of user code)")
    assert lines[at + 2].split() == ["none", "0"]


def test_table_columns_are_aligned() -> None:
    lines = format_report(_report()).splitlines()
    at = lines.index("time per vCPU")
    header, row = lines[at + 1], lines[at + 2]
    assert len(header) == len(row)


def test_report_keeps_the_kvm_counters_that_moved_during_the_run() -> None:
    run = RunStats()
    run.make_probes(1, 0, 0.0, {"exits": 10, "pf_taken": 3, "halt_exits": 0})
    report = run.report(0, 0.0, {"exits": 25, "pf_taken": 3, "halt_exits": 0,
                                 "vm.mmu_cache_miss": 2})
    assert report.kvm_counters == {"exits": 15, "vm.mmu_cache_miss": 2}
    lines = format_report(report).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("KVM's own counters"))
    assert [line.split() for line in lines[at + 2:]] == [["exits", "15"],
                                                         ["vm.mmu_cache_miss", "2"]]


def test_table_says_when_kvm_keeps_no_counters() -> None:
    run = RunStats()
    run.make_probes(1, 0, 0.0, None)
    text = format_report(run.report(0, 0.0, None))
    assert text.splitlines()[-1].strip().startswith("not kept by this host's KVM")


# --- the trace ----------------------------------------------------------------------------


def _written(trace: Trace) -> dict[str, Any]:
    out = io.StringIO()
    trace.write(out)
    parsed: dict[str, Any] = json.loads(out.getvalue())
    return parsed


def _record_some(trace: Trace) -> None:
    name = trace.name_thread(2, "init", 1)
    t = trace.origin
    trace.guest_run(0, ExitReason.IO, t + 0.001, t + 0.002)
    trace.syscall(2, 1, Sys.WRITE, t + 0.002, t + 0.003, 5, blocked=False)
    trace.syscall(2, 1, Sys.WAIT, t + 0.003, t + 0.004, None, blocked=True)
    trace.fault(2, 1, Vector.PF, 0x401000, t + 0.005)
    trace.on_vcpu(0, name, t, t + 0.006, 2, 1)
    trace.invalidation(t + 0.007, t + 0.008)


def test_trace_is_json_in_the_trace_event_format() -> None:
    trace = Trace()
    _record_some(trace)
    doc = _written(trace)
    events = doc["traceEvents"]
    assert {e["ph"] for e in events} == {"M", "X", "i"}
    for e in events:
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        assert isinstance(e["name"], str)
        if e["ph"] != "M":
            assert isinstance(e["ts"], float | int) and e["ts"] >= 0
            assert isinstance(e["cat"], str)
        if e["ph"] == "X":
            assert e["dur"] >= 0
        if e["ph"] == "i":
            assert e["s"] == "t"
    write = next(e for e in events if e["name"] == "WRITE")
    assert (write["pid"], write["tid"], write["ts"], write["dur"]) == (2, 1, 2000.0, 1000.0)
    assert write["args"]["result"] == 5
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e["name"] == "thread_name"}
    assert names[(VCPU_PID, VCPU_TID_BASE)] == "vCPU 0"


def test_trace_writes_a_negative_result_as_the_error() -> None:
    trace = Trace()
    trace.syscall(2, 1, Sys.OPEN, trace.origin, trace.origin, int(Errno.ENOTFOUND) & _U64,
                  blocked=False)
    (event,) = [e for e in _written(trace)["traceEvents"] if e["ph"] == "X"]
    assert event["args"]["result"] == int(Errno.ENOTFOUND)


def test_trace_keeps_at_most_its_limit_and_counts_the_rest() -> None:
    trace = Trace(limit=4)
    for _ in range(10):
        trace.invalidation(trace.origin, trace.origin)
    doc = _written(trace)
    assert sum(1 for e in doc["traceEvents"] if e["ph"] == "X") == 4
    assert doc["otherData"]["dropped_events"] == 6 == trace.dropped
    assert doc["otherData"]["event_limit"] == 4


def test_trace_bound_holds_with_several_recording_threads() -> None:
    trace = Trace(limit=1000)

    def record() -> None:
        for _ in range(700):
            trace.invalidation(trace.origin, trace.origin)

    threads = [threading.Thread(target=record) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(trace.events) == 1000
    assert trace.dropped == 1100
