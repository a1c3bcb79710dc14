"""Guest VMs on KVM: the project's PVH test kernels booted, run and ended every way they can.

The kernels (user/guests) are built in the session by tests/kvm/guest_kernels.py.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from copra.cli import EXIT_GUEST_HALTED, EXIT_GUEST_TRIPLE_FAULT, EXIT_TIMEOUT, main
from copra.vmm.guest import Guest, GuestConfig, GuestError, GuestResult, Outcome

MEMORY = 32 << 20
HELLO_LINES = [
    "hello from a PVH guest",
    "start info: version 1",
    "command line: console=ttyS0 quiet",
    "memory: 32 MiB",
    "uart scratch: 5a",
    "uart divisor: 0001",
    "uart: iir=c1 lcr=03 mcr=0b lsr=60 msr=b0",
    "uart loopback: lsr=61 rbr=5a lsr=60 msr=f0",
    "bye",
]


def boot(kernel: bytes, cmdline: str = "", name: str = "g", timeout: float | None = 20,
         interrupts: tuple[int, ...] = ()) -> tuple[GuestResult, list[str]]:
    lines: list[str] = []
    with Guest(GuestConfig(name, kernel, MEMORY, cmdline.encode()), lines.append) as guest:
        for vector in interrupts:
            guest.interrupt(vector)
        return guest.run(timeout), lines


def text(lines: list[str], name: str = "g") -> list[str]:
    prefix = f"[{name}] "
    assert all(line.startswith(prefix) for line in lines)
    return [line[len(prefix):] for line in lines]


def test_hello_guest_boots_through_pvh_prints_and_exits_with_status_85(
        guest_kernels: dict[str, bytes]) -> None:
    result, lines = boot(guest_kernels["hello"], "console=ttyS0 quiet", name="hello")
    assert text(lines, "hello") == HELLO_LINES
    assert (result.outcome, result.exit_value, result.status) == (Outcome.EXITED, 42, 85)
    assert result.counters["console_bytes"] == sum(len(line) + 1 for line in HELLO_LINES)


def test_unclaimed_port_reads_all_ones(guest_kernels: dict[str, bytes]) -> None:
    result, lines = boot(guest_kernels["probe"], "port")
    assert text(lines)[1] == "inb ff inw ffff inl ffffffff"
    assert result.status == 3 and result.counters["unclaimed_port_reads"] == 3


def test_unknown_msr_raises_gp_in_the_guest(guest_kernels: dict[str, bytes]) -> None:
    result, lines = boot(guest_kernels["probe"], "gp")
    assert text(lines)[1] == "#GP error code 0000"
    assert result.status == 5 and result.counters["msr"] == 1


def test_memory_beyond_ram_reads_all_ones(guest_kernels: dict[str, bytes]) -> None:
    result, lines = boot(guest_kernels["probe"], "mmio")
    assert text(lines)[1] == "mmio read ffffffff"
    assert result.status == 7 and result.counters["mmio"] == 2


def test_triple_fault_ends_the_guest_as_such(guest_kernels: dict[str, bytes]) -> None:
    result, _ = boot(guest_kernels["probe"], "triple")
    assert result.outcome is Outcome.TRIPLE_FAULT and result.status is None


def test_hlt_with_interrupts_disabled_ends_the_guest_as_halted(
        guest_kernels: dict[str, bytes]) -> None:
    result, _ = boot(guest_kernels["probe"], "halt")
    assert result.outcome is Outcome.HALTED and result.counters["hlt"] == 1


def test_a_guest_spinning_at_cpl0_is_stopped_by_the_timeout(
        guest_kernels: dict[str, bytes]) -> None:
    result, _ = boot(guest_kernels["probe"], "spin", timeout=0.2)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.counters["kicks"] == 1


def test_injected_interrupts_run_a_handler_that_returns_with_iret(
        guest_kernels: dict[str, bytes]) -> None:
    result, lines = boot(guest_kernels["irq"], interrupts=(0x30, 0x30, 0x30))
    assert text(lines) == ["irq: waiting for 3 interrupts", "tick 1", "tick 2", "tick 3",
                           "irq: done"]
    assert result.status == 7
    assert result.counters["injected"] == 3
    assert result.counters["completed"] == 3  # each IRET, done by copra on PVM hosts


def test_iret_to_the_same_level_is_completed(guest_kernels: dict[str, bytes]) -> None:
    result, lines = boot(guest_kernels["probe"], "iret")
    assert text(lines)[1] == "iret: back at the same level"
    assert result.status == 9 and result.counters["completed"] == 1


def test_iret_into_the_guests_own_cpl3_is_completed_and_cpl3_runs(
        guest_kernels: dict[str, bytes]) -> None:
    result, lines = boot(guest_kernels["probe"], "user")
    assert text(lines)[1] == "user: running at CPL 3"
    assert result.status == 11 and result.counters["completed"] == 1


def test_an_instruction_the_emulator_lacks_ends_the_guest_with_its_bytes(
        guest_kernels: dict[str, bytes]) -> None:
    result, lines = boot(guest_kernels["probe"], "popcnt")
    if result.outcome is Outcome.EXITED:  # ring 0 runs natively (VMX/SVM): POPCNT works
        assert (text(lines)[1], result.status) == ("popcnt 8", 13)
    else:
        assert result.outcome is Outcome.EMULATION_FAILURE
        assert "bytes f3 0f b8 c0" in result.detail and "only IRET" in result.detail


def test_interrupts_from_another_thread_wake_a_halted_guest(
        guest_kernels: dict[str, bytes]) -> None:
    waiting = threading.Event()
    lines: list[str] = []

    def console(line: str) -> None:
        lines.append(line)
        if line.endswith("waiting for 3 interrupts"):
            waiting.set()

    results: list[GuestResult] = []
    with Guest(GuestConfig("g", guest_kernels["irq"], MEMORY), console) as guest:
        worker = threading.Thread(target=lambda: results.append(guest.run(20)))
        worker.start()
        try:
            assert waiting.wait(20)
            for _ in range(3):
                guest.interrupt(0x30)
        finally:
            worker.join(30)
    assert results[0].status == 7
    assert text(lines)[-1] == "irq: done"


def test_stop_from_another_thread_ends_a_spinning_guest(guest_kernels: dict[str, bytes]) -> None:
    started = threading.Event()
    results: list[GuestResult] = []
    config = GuestConfig("g", guest_kernels["probe"], MEMORY, b"spin")
    with Guest(config, lambda _line: started.set()) as guest:
        worker = threading.Thread(target=lambda: results.append(guest.run(20)))
        worker.start()
        try:
            assert started.wait(20)
            guest.stop()
        finally:
            worker.join(30)
    assert results[0].outcome is Outcome.STOPPED


def test_a_file_that_is_not_a_pvh_kernel_is_refused_before_kvm() -> None:
    with pytest.raises(GuestError, match="not an ELF file"):
        Guest(GuestConfig("g", b"MZ" + bytes(200), MEMORY), print)


def test_a_kernel_larger_than_guest_ram_is_refused(guest_kernels: dict[str, bytes]) -> None:
    with pytest.raises(GuestError, match="guest memory"):
        Guest(GuestConfig("g", guest_kernels["hello"], 1 << 20), print)


def test_interrupt_vectors_below_32_are_refused(guest_kernels: dict[str, bytes]) -> None:
    with Guest(GuestConfig("g", guest_kernels["hello"], MEMORY), print) as guest, \
            pytest.raises(ValueError, match="32-255"):
        guest.interrupt(13)


def pvh_kernel(code: bytes, entry: int = 0x100000) -> bytes:
    """A minimal ELF32 PVH kernel: ``code`` loaded at ``entry``, 64 KiB of memory."""
    note = struct.pack("<III4sI", 4, 4, 18, b"Xen\x00", entry)
    phoff, phnum = 52, 2
    code_at = phoff + 32 * phnum
    note_at = code_at + len(code)
    header = (b"\x7fELF\x01\x01\x01" + bytes(9)
              + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, entry, phoff, 0, 0, 52, 32, phnum, 40,
                            0, 0))
    phdrs = (struct.pack("<8I", 1, code_at, entry, entry, len(code), 0x10000, 7, 0x1000)
             + struct.pack("<8I", 4, note_at, 0, 0, len(note), len(note), 4, 4))
    return header + phdrs + code + note


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=64))
def test_random_guest_code_ends_in_a_result_never_an_exception(code: bytes) -> None:
    with Guest(GuestConfig("fuzz", pvh_kernel(code), 2 << 20), lambda _line: None) as guest:
        result = guest.run(0.05)
    assert isinstance(result.outcome, Outcome)


# --- copra guest ----------------------------------------------------------------------

def write_kernel(tmp_path: Path, image: bytes) -> str:
    path = tmp_path / "k.elf"
    path.write_bytes(image)
    return str(path)


def test_copra_guest_prints_the_console_and_exits_with_the_guest_status(
        guest_kernels: dict[str, bytes], tmp_path: Path) -> None:
    kernel = write_kernel(tmp_path, guest_kernels["hello"])
    result = CliRunner().invoke(main, ["guest", kernel, "--memory", "32", "--name", "hello",
                                       "--cmdline", "console=ttyS0 quiet"])
    assert result.exit_code == 85
    assert result.stdout.splitlines() == [f"[hello] {line}" for line in HELLO_LINES]


@pytest.mark.parametrize(("cmdline", "status", "message"), [
    ("triple", EXIT_GUEST_TRIPLE_FAULT, "triple fault"),
    ("halt", EXIT_GUEST_HALTED, "halted with interrupts disabled"),
])
def test_copra_guest_reports_how_a_guest_ended(guest_kernels: dict[str, bytes], tmp_path: Path,
                                               cmdline: str, status: int, message: str) -> None:
    kernel = write_kernel(tmp_path, guest_kernels["probe"])
    result = CliRunner().invoke(main, ["guest", kernel, "--cmdline", cmdline])
    assert result.exit_code == status
    assert f"copra: guest k: {message}" in result.stderr


def test_copra_guest_stops_at_the_timeout(guest_kernels: dict[str, bytes], tmp_path: Path) -> None:
    kernel = write_kernel(tmp_path, guest_kernels["probe"])
    result = CliRunner().invoke(main, ["guest", kernel, "--cmdline", "spin", "--timeout", "0.2"])
    assert result.exit_code == EXIT_TIMEOUT
    assert "timed out" in result.stderr


def test_a_guest_runs_once(guest_kernels: dict[str, bytes]) -> None:
    with Guest(GuestConfig("g", guest_kernels["probe"], MEMORY, b"halt"), print) as guest:
        assert guest.run(20).outcome is Outcome.HALTED
        with pytest.raises(GuestError, match="already run"):
            guest.run(20)
