"""End to end: a native user-mode VMM (`vmm-test`) drives a guest VM through the VMM
interface: VM_OPEN, VCPU_OPEN, the run page, VCPU_RUN, VM_SET_MSR_FILTER, VM_MEMORY,
and the hostile cases of issue 10 (garbage in the run page, a second runner, CLOSE
while running, a triple fault, a timeout, a VMM killed while its guest runs)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_programs import assert_no_leak

from copra.kernel.image import packaged_program
from copra.kernel.objects import KernelObject, ObjectKind
from copra.vmm.vm import GuestSpec

_BUILDER = Path(__file__).resolve().parents[1] / "kvm" / "guest_kernels.py"


@pytest.fixture(scope="module")
def guest_kernels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    spec = importlib.util.spec_from_file_location("guest_kernels_e2e", _BUILDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kernels: dict[str, bytes] = module.build(tmp_path_factory.mktemp("guests"))
    return kernels


@pytest.fixture(scope="module")
def vmmtest(guest_kernels: dict[str, bytes]) -> bytes:
    return guest_kernels["vmmtest"]


def _guest(kernel: bytes, name: str = "vmmtest", cpus: int = 1) -> GuestSpec:
    return GuestSpec(name, kernel, 4 << 20, cpus)


def _vmm_objects_gone() -> bool:
    live = KernelObject.live
    return all(live[k] == 0 for k in (ObjectKind.VM, ObjectKind.VCPU, ObjectKind.GUEST_MEMORY))


def test_vmm_tour_answers_every_exit_and_refuses_garbage(boot: Any, vmmtest: bytes) -> None:
    run = boot("vmm-test", {"/etc/vmm-test.conf": b"tour"}, guests=[_guest(vmmtest, cpus=2)])
    lines = run.task_lines("init")
    assert run.result.status == 0, "\n".join(run.lines)
    assert "vmm-test: tour ok" in lines
    assert "guest: tour done" in lines
    guest = run.vmm.guests[0]
    counters = guest.cpus[0].counters
    assert counters["kernel_exits"] >= 4  # APIC_BASE read and write, the x2APIC ID, the #GP
    assert _vmm_objects_gone()
    assert_no_leak(run)


def test_vmm_timeout_triple_fault_exit_flood_second_runner_and_close_while_running(
        boot2: Any, vmmtest: bytes) -> None:
    run = boot2("vmm-test", {"/etc/vmm-test.conf": b"hostile"},
                guests=[_guest(vmmtest, "spin"), _guest(vmmtest, "triple"),
                        _guest(vmmtest, "flood")])
    assert run.result.status == 0, "\n".join(run.lines)
    assert "vmm-test: hostile ok" in run.task_lines("init")
    assert run.vmm.guests[1].cpus[0].shutdown
    assert run.vmm.guests[2].cpus[0].counters["kernel_exits"] > 100  # all inside VCPU_RUN
    assert _vmm_objects_gone()
    assert_no_leak(run)


def test_vmm_killed_while_its_guest_runs_releases_everything(boot: Any, vmmtest: bytes) -> None:
    run = boot("vmm-test", {"/etc/vmm-test.conf": b"abandon"}, guests=[_guest(vmmtest)])
    assert run.result.status == 0, "\n".join(run.lines)
    assert "vmm-test: abandoning the guest" in run.task_lines("init")
    guest = run.vmm.guests[0]
    assert guest.cpus[0].dead and guest.vm is None  # stopped when its handle went
    assert _vmm_objects_gone()
    assert_no_leak(run)


def _copra(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "copra", *args], capture_output=True,
                          stdin=subprocess.DEVNULL,
                          text=True, timeout=120, check=False)


def test_copra_run_guest_creates_the_vm_a_vmm_program_then_runs(tmp_path: Path,
                                                                vmmtest: bytes) -> None:
    kernel, conf, init = tmp_path / "vmmtest.elf", tmp_path / "conf", tmp_path / "vmm.elf"
    kernel.write_bytes(vmmtest)
    conf.write_text("tour")
    init.write_bytes(packaged_program("vmm-test"))
    out = _copra("run", "--init", str(init), "--file", f"{conf}=/etc/vmm-test.conf",
                 "--guest", str(kernel), "--guest-memory", "4", "--guest-cpus", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[kernel] guest VM 0 (vmmtest): 4 MiB, 2 vCPUs" in out.stdout
    assert "[init] vmm-test: tour ok" in out.stdout


def test_copra_run_guest_that_is_not_a_pvh_kernel_fails_the_boot_in_one_line(
        tmp_path: Path) -> None:
    kernel = tmp_path / "not-pvh.elf"
    kernel.write_bytes(packaged_program("hello"))  # an ELF64 program, no PVH note
    out = _copra("run", "--guest", str(kernel))
    assert out.returncode == 125
    assert "PHYS32_ENTRY" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_copra_run_guest_alone_runs_it_under_the_vmm_service_with_its_status(
        tmp_path: Path, guest_kernels: dict[str, bytes]) -> None:
    kernel = tmp_path / "hello.elf"
    kernel.write_bytes(guest_kernels["hello"])
    out = _copra("run", "--guest", str(kernel), "--guest-memory", "32",
                 "--guest-cmdline", "console=ttyS0 quiet")
    assert out.returncode == 85, out.stdout + out.stderr  # QEMU's (42 << 1) | 1
    # console lines start with the guest's name (/etc/guests, written at boot)
    assert "[uart] hello: hello from a PVH guest" in out.stdout.splitlines()
    assert "[uart] hello: command line: console=ttyS0 quiet" in out.stdout.splitlines()


def test_vmm_device_events_serve_ports_and_mmio_and_a_vanished_model_reads_all_ones(
        boot2: Any, vmmtest: bytes) -> None:
    run = boot2("vmm-test", {"/etc/vmm-test.conf": b"devices"}, guests=[_guest(vmmtest)])
    assert run.result.status == 0, "\n".join(run.lines)
    assert "vmm-test: devices ok" in run.task_lines("init")
    counters = run.vmm.guests[0].cpus[0].counters
    assert counters["device_exits"] == 4  # IN, MMIO read, MMIO write, the abandoned IN
    assert run.vmm.guests[0].devices.io == run.vmm.guests[0].devices.mmio == ()
    assert _vmm_objects_gone()
    assert KernelObject.live[ObjectKind.IO_EVENT] == KernelObject.live[ObjectKind.MMIO_EVENT] == 0
    assert_no_leak(run)


def test_vm_and_vcpu_move_through_a_channel_and_into_a_child_never_duplicated(
        boot2: Any, vmmtest: bytes) -> None:
    run = boot2("vmm-test", {"/etc/vmm-test.conf": b"moves", "/bin/vmm-test": "vmm-test"},
                guests=[_guest(vmmtest, "moved")])
    assert run.result.status == 0, "\n".join(run.lines)
    assert "vmm-test: moves ok" in run.task_lines("init")
    assert "vmm-test: moved child ok" in run.task_lines("vmm-test")
    guest = run.vmm.guests[0]
    assert guest.cpus[0].dead and guest.vm is None  # released with the child's handle
    assert _vmm_objects_gone()
    assert_no_leak(run)


def test_device_model_that_never_answers_leaves_the_vmm_in_control(
        boot2: Any, vmmtest: bytes) -> None:
    run = boot2("vmm-test", {"/etc/vmm-test.conf": b"stuck"}, guests=[_guest(vmmtest, "stuck")])
    assert run.result.status == 0, "\n".join(run.lines)
    assert "vmm-test: stuck ok" in run.task_lines("init")
    assert _vmm_objects_gone()
    assert_no_leak(run)
