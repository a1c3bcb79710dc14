"""End to end: guests whose interrupts come from the kernel's x2APIC (issue 11), run by
the vmm service as `copra run --guest` runs them: self IPIs, the APIC timer in its
three modes, HLT sleeping in the kernel, IRETs the kernel completes, and bad APIC
accesses that answer #GP or set ESR bits (docs/apic.md)."""

from __future__ import annotations

import importlib.util
import re
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


#: A wall clock for the RTC model fixed at 2099-12-31 23:59:30 UTC (one number: it holds
#: at the model's start; docs/vmm.md, "The RTC"), so the guest's date line is known.
FIXED_CLOCK = {"/etc/clock": b"4102444770000000000\n"}


def test_demo_guest_prints_on_uart_interrupts_and_exchanges_ipis_with_its_second_vcpu(
        boot: Any, guest_kernels: dict[str, bytes]) -> None:
    run = boot("vmm", MODELS | FIXED_CLOCK,
               guests=[GuestSpec("demo", guest_kernels["demo"], 4 << 20, 2)])
    assert run_exit_status(run.result.status) == 0x2B, "\n".join(run.lines)  # (0x15 << 1) | 1
    lines = run.task_lines("uart")
    # the RTC's date and time, read in BCD by the guest within its first seconds
    assert re.fullmatch(r"vm0: rtc: 2099-12-31 23:59:[3-5]\d", lines[5]), "\n".join(run.lines)
    assert lines[:5] + lines[6:] == [
        "vm0: polled output ends here",
        "vm0: console on TX-empty interrupts",
        "vm0: 5 timer ticks",
        "vm0: receive interrupt: Z",  # a loopback byte, taken on IIR's receive source
        'vm0: block: sector 1 reads "copra disk, sector 1", sector 2 written and read '
        'back: "written by the guest"',
        "vm0: rtc: 4 periodic interrupts at 8 Hz",  # each acknowledged by reading C
        "vm0: vCPU 1 is up",
        "vm0: 3 IPIs each way with vCPU 1",
        "vm0: bye",
    ]
    # each device model is a process of its own, its lines under its own task name
    assert run.task_lines("blk") == ["vm0: 3 requests served (2 sectors read, 1 written)"]
    rtc = run.task_lines("rtc")
    assert rtc[0] == "vm0: 2099-12-31 23:59:30 UTC", "\n".join(run.lines)
    served = re.fullmatch(r"vm0: (\d+) accesses served, (\d+) interrupts raised "
                          r"\(\d+ ms from the first to the last\)", rtc[1])
    assert served is not None and int(served[2]) >= 4, "\n".join(run.lines)
    started = [line for line in run.task_lines("init") if " is task " in line]
    assert [line.split(" is task ")[0] for line in started] == [
        "vmm: vm0: COM1", "vmm: vm0: the block device", "vmm: vm0: the RTC"], "\n".join(run.lines)
    assert started[0].endswith("(/bin/uart)") and started[1].endswith("(/bin/blk)")
    assert started[2].endswith("(/bin/rtc)")
    bsp, ap = run.vmm.guests[0].cpus
    text = sum(len(line) - len("vm0: ") + 1 for line in lines[1:])
    assert run.vmm.guests[0].devices.io == ()  # every model's event went with its process
    # Every byte after the first line went out from the COM1 handler: one interrupt each
    # (and one more to stop the transmitter per burst); the device model took the
    # accesses (IIR, THR, IER) through its device event.
    # bytes, ticks, pongs, the receive interrupt, the block device's completion, the RTC's
    assert bsp.irq.counters["injected"] >= text + 5 + 4 + 1 + 1 + 4
    assert bsp.counters["device_exits"] >= 2 * text
    assert ap.irq.counters["sipis"] == 1 and ap.irq.counters["injected"] == 3  # the pings
    assert bsp.counters["completed"] + ap.counters["completed"] >= text + 16  # IRETs
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
    # Kicked out of KVM_RUN (a quiet exit), they went in through the synced events.
    assert cpu.irq.counters["synced"] > 0 or not cpu.vcpu.sync_events
    assert cpu.counters["completed"] == 21  # the IRET into CPL3, then one per interrupt
    assert_no_leak(run)


def test_a_periodic_timer_faster_than_its_handler_leaves_the_guests_own_code_running(
        boot2: Any, guest_kernels: dict[str, bytes]) -> None:
    # A 20 us periodic timer is pending again whenever its emulated handler returns: the
    # interrupt taken right after a completed IRET chains no further one (docs/apic.md),
    # so the guest's loop still sees its 1000 ticks and stops the timer.
    run = boot2("irq-test", {"/etc/irq-test.conf": b"bench timer 0 20000"},
                guests=[GuestSpec("irqtest", guest_kernels["irqtest"], 4 << 20, 1)])
    assert run.result.status == 0, "\n".join(run.lines)
    assert "irq-bench: done" in run.task_lines("init")
    assert run.vmm.guests[0].cpus[0].irq.counters["injected"] >= 1000
    assert_no_leak(run)


def demo_with_dying_models(boot: Any, guest_kernels: dict[str, bytes], conf: bytes) -> Any:
    """The demo guest run by the vmm, whose device models die (#UD) at the accesses
    /etc/vmm.conf names; it ends with its usual status all the same."""
    run = boot("vmm", MODELS | {"/etc/vmm.conf": conf},
               guests=[GuestSpec("demo", guest_kernels["demo"], 4 << 20, 2)])
    assert run_exit_status(run.result.status) == 0x2B, "\n".join(run.lines)
    assert "vm0: bye" in run.task_lines("uart")
    return run


def assert_models_died(run: Any, ports: tuple[int, ...], programs: tuple[str, ...]) -> None:
    """The vmm reported each dead model's ports and its end; nothing of the VM is left."""
    vmm = run.task_lines("init")
    for port in ports:
        assert f"vmm: vm0: the device model of port {port:#x} is gone; the guest reads " \
               "all ones" in vmm, "\n".join(run.lines)
    for program in programs:
        assert any(line.startswith(f"vmm: vm0: device model {program} (task ") and
                   line.endswith(") killed by #UD (vector 6); its ports read all ones")
                   for line in vmm), "\n".join(run.lines)
    assert all(KernelObject.live[k] == 0 for k in (
        ObjectKind.VM, ObjectKind.VCPU, ObjectKind.IO_EVENT, ObjectKind.IRQ))
    assert_no_leak(run)


def test_demo_guest_whose_block_and_rtc_model_processes_die_at_once_reads_all_ones_and_runs_on(
        boot: Any, guest_kernels: dict[str, bytes]) -> None:
    # /etc/vmm.conf makes the blk model die (#UD) at its first access, the guest's
    # CAPACITY read, unanswered: the kernel answers all ones, the vmm reports the
    # DEVICE_GONE exit and the process's end, and the guest skips its block requests.
    # The rtc model dies at its first access too (the guest's index write for D), so
    # register D reads all ones and the guest skips the RTC.
    run = demo_with_dying_models(boot, guest_kernels, b"crash blk 1\ncrash rtc 1\n")
    assert "vm0: block: no device (its ports read all ones)" in run.task_lines("uart")
    assert "vm0: rtc: no device (its ports read all ones)" in run.task_lines("uart")
    assert_models_died(run, (0x6FC, 0x70), ("/bin/blk", "/bin/rtc"))


def test_demo_guest_whose_rtc_model_dies_mid_run_reads_all_ones_and_runs_on(
        boot: Any, guest_kernels: dict[str, bytes]) -> None:
    # The guest's RTC accesses before its periodic interrupts are 26 (or 28, when its
    # first read of A lands in an update); each interrupt's handler reads C in two.
    # The model dies at access 30, inside the second (or first) handler: that read
    # gets all ones, no interrupt follows (the IRQ object went with the process), and
    # the guest gives up waiting after 1000 APIC timer ticks.
    run = demo_with_dying_models(boot, guest_kernels, b"crash rtc 30\n")
    assert any(re.fullmatch(r"vm0: rtc: [12] periodic interrupts, then none; register C "
                            r"reads 0xff", line) for line in run.task_lines("uart")), \
        "\n".join(run.lines)
    assert_models_died(run, (0x71,), ("/bin/rtc",))


def test_guest_writing_garbage_to_every_rtc_register_gets_the_defined_answers(
        boot: Any, guest_kernels: dict[str, bytes]) -> None:
    # rtcjunk (user/guests/rtcjunk.S) writes LCG bytes to all 128 registers through the
    # index port (random NMI-mask bits), then reads what rtc.rs defines.
    run = boot("vmm", MODELS, guests=[GuestSpec("rtcjunk", guest_kernels["rtcjunk"], 4 << 20, 1)])
    assert run_exit_status(run.result.status) == 0x23, "\n".join(run.lines)  # (0x11 << 1) | 1
    assert run.task_lines("uart")[0] == (
        "vm0: rtcjunk: RAM mismatches 0, D 80, C low nibble 0, index port ff, 16-bit 5aff, "
        "year BCD"), "\n".join(run.lines)
    # the model lived through it and served every access
    served = re.fullmatch(r"vm0: (\d+) accesses served, \d+ interrupts? raised .*",
                          run.task_lines("rtc")[-1])
    assert served is not None and int(served[1]) >= 2 * 128 + 2 * 113, "\n".join(run.lines)
    assert not any("device model" in line for line in run.task_lines("init"))
    assert_no_leak(run)
