"""End to end: shipped native programs under the real kernel, hostile ones included.

Every test also checks that the kernel's frame and handle counts return to their
baseline when the programs are gone: a fault or a bad pointer loses nothing.
"""

from __future__ import annotations

from typing import Any

from copra.abi.spec import EXIT_STATUS_SHIFT, KILLED_BY_EXCEPTION
from copra.hw.x86 import Vector

SERVICES = "/etc/init.services"


def killed_by(vector: int) -> int:
    return (vector << 8) | KILLED_BY_EXCEPTION


def assert_no_leak(run: Any) -> None:
    assert run.stats["user_frames"] == run.baseline["user_frames"] == 0
    assert run.stats["page_table_frames"] == run.baseline["page_table_frames"]
    assert run.stats["free_frames"] == run.baseline["free_frames"]
    assert run.stats["processes"] == 0
    assert run.stats["objects"] == run.baseline["objects"]
    assert run.kernel.counters["internal_errors"] == 0


def test_init_starts_hello_and_exits_zero(boot: Any) -> None:
    run = boot("init", {"/bin/hello": "hello", SERVICES: b"/bin/hello\n"})
    assert run.result.status == 0
    assert "Hello from a copra service" in run.task_lines("hello")
    assert any("started as task" in line for line in run.task_lines("init"))
    assert_no_leak(run)


def test_wild_pointers_passed_to_write_return_efault(boot: Any) -> None:
    run = boot("fault-wild-write")
    lines = run.task_lines("init")
    assert run.result.status == 0
    assert sum(line.endswith("EFAULT") for line in lines) == 5
    assert_no_leak(run)


def test_write_to_kernel_address_kills_only_the_writer(boot: Any) -> None:
    run = boot("fault-kernel-write")
    assert run.result.status == killed_by(Vector.PF)
    kills = [line for line in run.lines if "killed: #PF" in line]
    assert len(kills) == 1
    assert "address 0xffff800000001000" in kills[0]
    assert_no_leak(run)


def test_invalid_opcode_kills_with_ud_and_rip(boot: Any) -> None:
    run = boot("fault-ud")
    assert run.result.status == killed_by(Vector.UD)
    assert any("killed: #UD (vector 6) at rip 0x" in line for line in run.lines)
    assert_no_leak(run)


def test_privileged_instruction_kills_with_gp(boot: Any) -> None:
    run = boot("fault-gp")
    assert run.result.status == killed_by(Vector.GP)
    assert_no_leak(run)


def test_division_by_zero_kills_with_de(boot: Any) -> None:
    run = boot("fault-de")
    assert run.result.status == killed_by(Vector.DE)
    assert_no_leak(run)


def test_unknown_syscalls_return_enosys_on_both_entries(boot: Any) -> None:
    run = boot("badsys")
    lines = run.task_lines("init")
    assert run.result.status == 0
    assert len(lines) == 6
    assert all(line.endswith("ENOSYS") for line in lines)
    assert {line.split(" via ")[1].split(":")[0] for line in lines} == {"DOORBELL", "INT80"}


def test_endless_loop_is_stopped_by_timeout(boot: Any) -> None:
    run = boot("fault-loop", timeout=0.5)
    assert run.result.timed_out
    assert run.result.status is None
    assert run.result.still_running == ("init (pid 2)",)
    assert_no_leak(run)


def test_init_survives_faulting_services_and_reports_each(boot: Any) -> None:
    services = ["/bin/ud", "/bin/kwrite", "/bin/wild", "/bin/missing", "/bin/hello"]
    run = boot("init", {
        "/bin/ud": "fault-ud", "/bin/kwrite": "fault-kernel-write",
        "/bin/wild": "fault-wild-write", "/bin/hello": "hello",
        SERVICES: "\n".join(services).encode() + b"\n",
    })
    init = "\n".join(run.task_lines("init"))
    assert run.result.status == 1 << EXIT_STATUS_SHIFT  # not every service succeeded
    assert "/bin/missing" in init and "ENOTFOUND" in init
    assert "Hello from a copra service" in run.task_lines("hello")
    assert sum("killed" in line for line in run.lines if line.startswith("[kernel]")) == 2
    assert_no_leak(run)


def test_exec_of_non_elf_file_reports_enoexec_to_init(boot: Any) -> None:
    run = boot("init", {"/bin/junk": b"\x7fELF not really", SERVICES: b"/bin/junk\n"})
    assert "ENOEXEC" in "\n".join(run.task_lines("init"))
    assert run.result.status == 1 << EXIT_STATUS_SHIFT
    assert_no_leak(run)


def test_syscall_bench_completes_on_both_entries(boot: Any) -> None:
    run = boot("syscall-bench", {"/etc/bench.n": b"200"})
    assert run.result.status == 0
    assert run.kernel.vm.exits >= 400
    assert_no_leak(run)


def test_panic_prints_message_and_exits_0xffff(boot: Any) -> None:
    run = boot("fault-panic")
    lines = run.task_lines("init")
    assert run.result.status == 0xFFFF << EXIT_STATUS_SHIFT
    assert lines[0] == "fault-panic: about to panic"
    assert any("index out of bounds" in line and "fault-panic.rs" in line for line in lines)
    assert_no_leak(run)
