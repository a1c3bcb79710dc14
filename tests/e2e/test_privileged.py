"""End to end: instructions that would reveal or reach around the kernel, from user mode.

Each runs in its own child (`priv-probe`); the kernel must end it with the documented
fault and a line that says what happened, or answer as docs/abi.md says.
"""

from __future__ import annotations

import re
from typing import Any

from test_programs import assert_no_leak

PROBES = ("sgdt", "sidt", "sldt", "str", "smsw", "syscall", "vmmcall", "vmcall", "sysenter")


def probe_results(boot: Any) -> tuple[Any, dict[str, str]]:
    run = boot("priv-probe", {"/bin/priv-probe": "priv-probe"})
    assert run.result.status == 0, "\n".join(run.lines)
    results = {}
    for line in run.task_lines("init"):
        match = re.fullmatch(r"probe (\w+): (.*)", line)
        if match:
            results[match.group(1)] = match.group(2)
    assert set(results) == set(PROBES)
    # The RAM fs keeps /probe/<i>/role: one page each. Processes leave nothing.
    run.stats["free_frames"] += len(PROBES)
    run.stats["file_frames"] -= len(PROBES)
    assert_no_leak(run)
    return run, results


def test_descriptor_table_instructions_fault_under_umip(boot: Any) -> None:
    run, results = probe_results(boot)
    if not run.kernel.vm.umip:
        return  # documented: without UMIP these read the values (no kernel address)
    for name in ("sgdt", "sidt", "sldt", "str", "smsw"):
        assert results[name] == "Killed { vector: 13 }", name


def test_syscall_instruction_is_reported_as_ud_at_its_address(boot: Any) -> None:
    run, results = probe_results(boot)
    assert results["syscall"] == "Killed { vector: 6 }"
    assert any("SYSCALL is not an entry to copra" in line for line in run.lines)
    assert not any("at rip 0xffffff8000000000" in line for line in run.lines)


def test_vmmcall_and_vmcall_answer_as_documented(boot: Any) -> None:
    run, results = probe_results(boot)
    # Intel hosts: VMMCALL is foreign (a #UD for the process), VMCALL is KVM's
    # hypercall, which answers -1 (KVM_EPERM) to CPL3. AMD hosts: the other way round.
    intel = results["vmcall"] == "Exited(64)"
    if intel:
        assert results["vmmcall"] == "Killed { vector: 6 }"
    else:
        assert results["vmmcall"] == "Exited(64)"
        assert results["vmcall"] == "Killed { vector: 6 }"
    assert run.kernel.counters["internal_errors"] == 0


def test_sysenter_faults(boot: Any) -> None:
    _, results = probe_results(boot)
    assert results["sysenter"] in ("Killed { vector: 6 }", "Killed { vector: 13 }")
