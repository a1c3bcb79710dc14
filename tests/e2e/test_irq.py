"""End to end: guests whose interrupts come from the kernel's x2APIC (issue 11), run by
the vmm service as `copra run --guest` runs them: self IPIs, the APIC timer in its
three modes, HLT sleeping in the kernel, IRETs the kernel completes, and bad APIC
accesses that answer #GP or set ESR bits (docs/apic.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from test_programs import assert_no_leak

from copra.cli import run_exit_status
from copra.kernel.image import VMM_MODELS
from copra.kernel.objects import KernelObject, ObjectKind
from copra.vmm.vm import GuestSpec

_BUILDER = Path(__file__).resolve().parents[1] / "kvm" / "guest_kernels.py"
#: The vmm service's device-model programs, where it starts them from.
MODELS: dict[str, bytes | str] = dict(VMM_MODELS)


@pytest.fixture(scope="module")
def guest_kernels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    spec = importlib.util.spec_from_file_location("guest_kernels_irq", _BUILDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kernels: dict[str, bytes] = module.build(tmp_path_factory.mktemp("guests"))
    return kernels


def test_apic_guest_takes_ipi_and_timer_interrupts_sleeping_in_hlt(
        boot: Any, guest_kernels: dict[str, bytes]) -> None:
    run = boot("vmm", MODELS, guests=[GuestSpec("apic", guest_kernels["apic"], 4 << 20, 1)])
    lines = run.task_lines("uart")
    assert run_exit_status(run.result.status) == 0x23, "\n".join(run.lines)  # (0x11 << 1) | 1
    assert lines == [
        "vm0: apic: x2APIC id 0",
        "vm0: apic: self IPI taken",
        "vm0: apic: one-shot timer fired",
        "vm0: apic: periodic timer ticked 10 times",
        "vm0: apic: TSC-deadline timer fired",
        "vm0: apic: 2 NMIs taken",  # the second only if IRET ended NMI blocking
        # SDM 11.5.3: send and receive illegal vector; two #GPs (11.12.1.2, 11.12.9)
        "vm0: apic: ESR 60, #GP 2, error interrupts 1",
        "vm0: apic: done",
    ]
    cpu = run.vmm.guests[0].cpus[0]
    assert cpu.irq.counters["injected"] >= 14  # 1 self, 12 timer, at least 1 error
    # Its HLTs (IF set) never reached the vmm service, which would have ended with 118;
    # how many it made depends on timing. Every handler ended with an IRET completed:
    # 1 self IPI + 12 timer + 2 NMI + 2 #GP + at least 1 error interrupt.
    assert cpu.counters["completed"] >= 18
    assert cpu.irq.counters["nmis"] == 2
    assert all(KernelObject.live[k] == 0 for k in (ObjectKind.VM, ObjectKind.VCPU))
    assert_no_leak(run)


def test_demo_guest_prints_on_uart_interrupts_and_exchanges_ipis_with_its_second_vcpu(
        boot: Any, guest_kernels: dict[str, bytes]) -> None:
    run = boot("vmm", MODELS, guests=[GuestSpec("demo", guest_kernels["demo"], 4 << 20, 2)])
    assert run_exit_status(run.result.status) == 0x2B, "\n".join(run.lines)  # (0x15 << 1) | 1
    assert run.task_lines("uart") == [
        "vm0: polled output ends here",
        "vm0: console on TX-empty interrupts",
        "vm0: 5 timer ticks",
        "vm0: receive interrupt: Z",  # a loopback byte, taken on IIR's receive source
        'vm0: block: sector 1 reads "copra disk, sector 1", sector 2 written and read '
        'back: "written by the guest"',
        "vm0: vCPU 1 is up",
        "vm0: 3 IPIs each way with vCPU 1",
        "vm0: bye",
    ]
    # each device model is a process of its own, its lines under its own task name
    assert run.task_lines("blk") == ["vm0: 3 requests served (2 sectors read, 1 written)"]
    started = [line for line in run.task_lines("init") if " is task " in line]
    assert [line.split(" is task ")[0] for line in started] == [
        "vmm: vm0: COM1", "vmm: vm0: the block device"], "\n".join(run.lines)
    assert started[0].endswith("(/bin/uart)") and started[1].endswith("(/bin/blk)")
    bsp, ap = run.vmm.guests[0].cpus
    text = sum(len(line) - len("vm0: ") + 1 for line in run.task_lines("uart")[1:])
    assert run.vmm.guests[0].devices.io == ()  # COM1's and the block device's events went
    # Every byte after the first line went out from the COM1 handler: one interrupt each
    # (and one more to stop the transmitter per burst); the device model took the
    # accesses (IIR, THR, IER) through its device event.
    # bytes, ticks, pongs, the receive interrupt, the block device's completion
    assert bsp.irq.counters["injected"] >= text + 5 + 4 + 1 + 1
    assert bsp.counters["device_exits"] >= 2 * text
    assert ap.irq.counters["sipis"] == 1 and ap.irq.counters["injected"] == 3  # the pings
    assert bsp.counters["completed"] + ap.counters["completed"] >= text + 12  # IRETs
    assert_no_leak(run)


def test_irq_objects_refuse_bad_arguments_resample_level_lines_and_outlive_their_vm(
        boot: Any, guest_kernels: dict[str, bytes]) -> None:
    run = boot("irq-test", {"/etc/irq-test.conf": b"api"},
               guests=[GuestSpec("irqtest", guest_kernels["irqtest"], 4 << 20, 1)])
    assert run.result.status == 0, "\n".join(run.lines)
    assert "irq-test: api ok" in run.task_lines("init")
    assert KernelObject.live[ObjectKind.IRQ] == 0
    assert_no_leak(run)


def test_irq_storm_from_a_device_model_coalesces_and_the_guest_and_svsm_go_on(
        boot2: Any, guest_kernels: dict[str, bytes]) -> None:
    run = boot2("irq-test", {"/etc/irq-test.conf": b"storm"},
                guests=[GuestSpec("irqtest", guest_kernels["irqtest"], 4 << 20, 1)])
    assert run.result.status == 0, "\n".join(run.lines)
    lines = [line for line in run.task_lines("init") if line.startswith("irq-test: storm ok")]
    assert lines, "\n".join(run.lines)
    signals = int(lines[0].split(", ")[1].split()[0])
    apic = run.vmm.guests[0].cpus[0].apic
    taken = run.vmm.guests[0].cpus[0].irq.counters["injected"]
    # every signal either became an interrupt the guest took or merged with a pending one
    assert taken >= 200 and signals >= taken
    assert apic.counters.coalesced >= signals - taken - 1
    assert_no_leak(run)


def test_interrupts_reach_a_guest_running_at_its_cpl3_and_return_there(
        boot2: Any, guest_kernels: dict[str, bytes]) -> None:
    # The guest enters its CPL3 with IRET and spins there; each interrupt switches to
    # its ring 0 handler through the TSS, whose IRET back to CPL3 the kernel completes.
    run = boot2("irq-test", {"/etc/irq-test.conf": b"bench user 20"},
                guests=[GuestSpec("irqtest", guest_kernels["irqtest"], 4 << 20, 1)])
    assert run.result.status == 0, "\n".join(run.lines)
    assert "irq-bench: done" in run.task_lines("init")
    cpu = run.vmm.guests[0].cpus[0]
    assert cpu.irq.counters["injected"] == 20
    assert cpu.counters["completed"] == 21  # the IRET into CPL3, then one per interrupt
    assert_no_leak(run)


def test_demo_guest_whose_block_model_process_dies_reads_all_ones_and_runs_on(
        boot: Any, guest_kernels: dict[str, bytes]) -> None:
    # /etc/vmm.conf makes the blk model die (#UD) at its first access, the guest's
    # CAPACITY read, unanswered: the kernel answers all ones, the vmm reports the
    # DEVICE_GONE exit and the process's end, and the guest skips its block requests.
    run = boot("vmm", MODELS | {"/etc/vmm.conf": b"crash blk 1\n"},
               guests=[GuestSpec("demo", guest_kernels["demo"], 4 << 20, 2)])
    assert run_exit_status(run.result.status) == 0x2B, "\n".join(run.lines)
    assert "vm0: block: no device (its ports read all ones)" in run.task_lines("uart")
    assert "vm0: bye" in run.task_lines("uart")
    vmm = run.task_lines("init")
    assert "vmm: vm0: the device model of port 0x6fc is gone; the guest reads all ones" in vmm
    assert any(line.startswith("vmm: vm0: device model /bin/blk (task ") and
               line.endswith(") killed by #UD (vector 6); its ports read all ones")
               for line in vmm), "\n".join(run.lines)
    assert all(KernelObject.live[k] == 0 for k in (
        ObjectKind.VM, ObjectKind.VCPU, ObjectKind.IO_EVENT, ObjectKind.IRQ))
    assert_no_leak(run)
