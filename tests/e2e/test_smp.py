"""End to end on two vCPUs: two host threads in KVM_RUN at once, one kernel.

Processes run in parallel here; each test checks what the single-CPU tests check
(statuses, output, nothing leaked) and that both CPUs did run user code.
"""

from __future__ import annotations

from typing import Any

from test_preemption import SHORT_SLICE
from test_programs import assert_no_leak
from test_syscall_fuzz import PROCS_LIMITS

SERVICES = "/etc/init.services"


def exits(run: Any) -> list[int]:
    return [cpu.exits for cpu in run.kernel.vm.cpus]


def test_init_and_eight_services_end_cleanly_on_two_cpus(boot2: Any, vm2: Any) -> None:
    before = [cpu.exits for cpu in vm2.cpus]
    run = boot2("init", {"/bin/hello": "hello", SERVICES: b"/bin/hello\n" * 8})
    assert run.result.status == 0, "\n".join(run.lines)
    assert run.task_lines("hello").count("Hello from a copra service") == 8
    # Which CPU ran what is the host's choice: on a loaded host one CPU's host thread
    # may not get a core before the other has run every service, so only the total
    # is certain (bench/smp_throughput.py measures the parallel case).
    assert sum(exits(run)) > sum(before)
    assert_no_leak(run)


def test_int80_and_faulting_children_under_short_slice_on_two_cpus(boot2: Any) -> None:
    run = boot2("preempt-storm", {"/bin/preempt-storm": "preempt-storm",
                                  "/etc/storm.n": b"1000\n"},
                timeout=120, time_slice=SHORT_SLICE)
    assert run.result.status == 0, "\n".join(run.lines)
    assert sum("as expected" in line for line in run.task_lines("init")) == 6
    kills = sorted(line.split("killed: ")[1].split(" ")[0] for line in run.lines
                   if "killed:" in line)
    assert kills == ["#BP", "#PF", "#UD"]
    run.stats["free_frames"] += 6  # the RAM fs keeps the six one-page role files
    run.stats["file_frames"] -= 6
    assert_no_leak(run)


def test_fuzzers_spawning_fuzzers_with_unmaps_on_two_cpus_leak_nothing(boot2: Any) -> None:
    # MMAP and MUNMAP from processes on both CPUs: every MUNMAP zaps its entries from
    # ring 0 while the other CPU runs on; ended processes' frames wait for the
    # stop-the-world invalidation (at the latest, the run's end).
    run = boot2("syscall-fuzz", {
        "/etc/fuzz.conf": b"0xC0FFEE 4000\n",
        "/etc/fuzz-procs.conf": b"3 2 1000\n",
        "/bin/syscall-fuzz": "syscall-fuzz",
    }, timeout=120.0, limits=PROCS_LIMITS)
    lines = run.task_lines("init") + run.task_lines("syscall-fuzz")
    assert [line for line in lines if line.startswith("FAIL")] == []
    assert run.result.status == 0, "\n".join(run.task_lines("init")[-40:])
    assert run.kernel.counters["internal_errors"] == 0
    assert sum(cpu.zaps for cpu in run.kernel.vm.cpus) > 0
    assert run.kernel.vm.zap_fallbacks == 0
    assert run.kernel.vm.gate.closings > 0
    assert sum(cpu.slot_gaps for cpu in run.kernel.vm.cpus) == 0
    changed = {k: (run.baseline.get(k), v) for k, v in run.stats.items()
               if run.baseline.get(k) != v}
    assert changed == {}, "stat: (baseline, after)"
