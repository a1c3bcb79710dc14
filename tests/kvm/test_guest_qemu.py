"""The same guest kernels under QEMU and under copra: the same console, the same status.

QEMU is the reference VMM (Debian's qemu-system-x86; .ci/run installs it where it can).
It boots an ELF kernel through the same PVH entry (``-kernel``, its PVH option ROM fills
the hvm_start_info from SeaBIOS's E820 map), with its 16550 as COM1 and isa-debug-exit at
0xF4. Each case boots one test kernel under both and compares every console line and the
exit status; where QEMU is missing the tests skip, saying so.

What is compared where: ``hello`` (start info, command line, memory size, the UART's
registers, scratch, divisor latch, loopback) and ``probe port`` (an unclaimed port) under
both loaders; ``probe gp`` (#GP for an unknown MSR) under KVM only: QEMU's TCG in 7.2
answers unknown MSRs with 0 instead; ``probe iret`` and ``probe user`` (IRET to the same
level, and into the guest's own CPL3) under TCG only: under KVM on PVM hosts QEMU stops at
the IRET with an emulation failure, which copra completes. Memory outside RAM is not
compared: QEMU answers 0 there, copra all ones (docs/guests.md).

Each case also runs as ``copra run --guest`` does: the guest VM made at boot and run by
the user-mode ``vmm`` service through VCPU_RUN and the run page (docs/vmm.md), its
console lines being the service's ``guest: ...`` lines (the guest's name).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from copra.kernel import packit
from copra.kernel.boot import BootConfig, boot
from copra.kernel.image import VMM_MODELS, GuestImage, packaged_program
from copra.vmm.guest import Guest, GuestConfig
from copra.vmm.service import boot_stages

MEMORY_MIB = 32
#: (kernel, command line, QEMU machine, accelerator). Two PVH loaders of QEMU's are the
#: reference: the pc machine's (SeaBIOS and its PVH option ROM; under KVM here SeaBIOS
#: runs in KVM's instruction emulator and takes over a second, so it runs under TCG) and
#: the microvm machine's (qboot), under KVM.
CASES = [
    ("hello", "console=ttyS0 quiet", "pc", "tcg"),
    ("hello", "console=ttyS0 quiet", "microvm", "kvm"),
    ("probe", "port", "pc", "tcg"),
    ("probe", "port", "microvm", "kvm"),
    ("probe", "gp", "microvm", "kvm"),
    ("probe", "iret", "pc", "tcg"),
    ("probe", "user", "pc", "tcg"),
]
#: Cases for the vmm service only: its device-model processes serve what `copra guest`'s
#: VMM does not (rtcjunk: the CMOS RTC, compared with QEMU's mc146818rtc).
VMM_CASES = [*CASES, ("rtcjunk", "", "pc", "tcg")]


def qemu_binary() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        pytest.skip("qemu-system-x86_64 is not installed (Debian: apt-get install "
                    "qemu-system-x86): nothing to compare copra's guests with")
    return path


@pytest.fixture(scope="module")
def qemu_runs(guest_kernels: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory
              ) -> dict[tuple[str, str, str, str], tuple[list[str], int, str]]:
    """Every case under QEMU, all started at once: case -> (console lines, exit status,
    stderr)."""
    qemu = qemu_binary()
    directory = tmp_path_factory.mktemp("qemu")
    for name, image in guest_kernels.items():
        (directory / f"{name}.elf").write_bytes(image)
    running = {}
    for case in VMM_CASES:
        name, cmdline, machine, accel = case
        cmd = [qemu, "-machine", machine, "-accel", accel, "-m", str(MEMORY_MIB), "-kernel",
               str(directory / f"{name}.elf"), "-append", cmdline,
               "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
               "-serial", "stdio", "-display", "none", "-no-reboot", "-nodefaults"]
        running[case] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
    results = {}
    for case, process in running.items():
        out, err = process.communicate(timeout=120)
        results[case] = (out.splitlines(), process.returncode, err)
    return results


def under_copra(kernel: bytes, cmdline: str) -> tuple[list[str], int | None]:
    lines: list[str] = []
    with Guest(GuestConfig("g", kernel, MEMORY_MIB << 20, cmdline.encode()),
               lines.append) as guest:
        result = guest.run(60)
    return [line.removeprefix("[g] ") for line in lines], result.status


@pytest.mark.parametrize(("name", "cmdline", "machine", "accel"), CASES)
def test_guest_console_and_status_match_qemu(
        guest_kernels: dict[str, bytes],
        qemu_runs: dict[tuple[str, str, str, str], tuple[list[str], int, str]],
        name: str, cmdline: str, machine: str, accel: str) -> None:
    qemu_lines, qemu_status, qemu_stderr = qemu_runs[(name, cmdline, machine, accel)]
    if not qemu_lines:
        pytest.skip(f"QEMU ({machine}, {accel}) did not run: {qemu_stderr.strip()[:200]}")
    copra_lines, copra_status = under_copra(guest_kernels[name], cmdline)
    assert copra_lines == qemu_lines
    assert copra_status == qemu_status


def under_copra_vmm(kernel: bytes, cmdline: str, tmp_path: Path) -> tuple[list[str], int | None]:
    """The guest under the whole SVSM: `copra run --guest` with the vmm service as /init."""
    path = tmp_path / "guest.elf"
    path.write_bytes(kernel)
    archive = packit.encode([packit.PackItEntry("/init", packaged_program("vmm")),
                             *(packit.PackItEntry(at, packaged_program(name))
                               for at, name in VMM_MODELS)])
    create, close = boot_stages((GuestImage(path, MEMORY_MIB, 1, cmdline),))
    lines: list[str] = []
    result = boot(BootConfig(archive, 64 << 20, 60, before_init=(create,), after_run=(close,),
                             cpus=1), lines.append)
    status = None if result.status is None else (result.status >> 16) & 0xFF
    prefix = "[uart] guest: "  # the COM1 model's process; the guest's name: its file's stem
    return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)], status


@pytest.mark.parametrize(("name", "cmdline", "machine", "accel"), VMM_CASES)
def test_guest_under_the_vmm_service_matches_qemu(
        guest_kernels: dict[str, bytes],
        qemu_runs: dict[tuple[str, str, str, str], tuple[list[str], int, str]],
        name: str, cmdline: str, machine: str, accel: str, tmp_path: Path) -> None:
    qemu_lines, qemu_status, qemu_stderr = qemu_runs[(name, cmdline, machine, accel)]
    if not qemu_lines:
        pytest.skip(f"QEMU ({machine}, {accel}) did not run: {qemu_stderr.strip()[:200]}")
    copra_lines, copra_status = under_copra_vmm(guest_kernels[name], cmdline, tmp_path)
    assert copra_lines == qemu_lines
    assert copra_status == qemu_status
