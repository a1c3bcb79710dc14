"""Guest exits decoded from a kvm_run page into plain values (no KVM needed)."""

from __future__ import annotations

from copra.hw.kvm import KVM_EXIT_IO_OUT, ExitReason, KvmRun
from copra.vmm import exits


def test_io_exit_carries_port_size_direction_count_and_data_offset() -> None:
    run = KvmRun()
    io = run.exit.io
    io.direction, io.size, io.port, io.count, io.data_offset = KVM_EXIT_IO_OUT, 2, 0x3F8, 3, 4096
    assert exits.decode(run, ExitReason.IO) == exits.IoExit(0x3F8, 2, True, 3, 4096)


def test_mmio_write_carries_its_bytes_and_a_read_zeros() -> None:
    run = KvmRun()
    mmio = run.exit.mmio
    mmio.phys_addr, mmio.len, mmio.is_write = 0xD000_0000, 4, 1
    mmio.data[:4] = [1, 2, 3, 4]
    assert exits.decode(run, ExitReason.MMIO) == exits.MmioExit(0xD000_0000, 4, True,
                                                                bytes([1, 2, 3, 4]))
    mmio.is_write, mmio.len = 0, 100  # a length KVM never reports is clamped
    assert exits.decode(run, ExitReason.MMIO) == exits.MmioExit(0xD000_0000, 8, False, bytes(8))


def test_msr_exits_say_read_or_write() -> None:
    run = KvmRun()
    run.exit.msr.index, run.exit.msr.data, run.exit.msr.reason = 0x4B564D99, 7, 2
    assert exits.decode(run, ExitReason.X86_WRMSR) == exits.MsrExit(0x4B564D99, True, 7, 2)
    assert exits.decode(run, ExitReason.X86_RDMSR) == exits.MsrExit(0x4B564D99, False, 7, 2)


def test_internal_error_keeps_at_most_16_data_words() -> None:
    run = KvmRun()
    run.exit.internal.suberror, run.exit.internal.ndata = 1, 1000
    ex = exits.decode(run, ExitReason.INTERNAL_ERROR)
    assert isinstance(ex, exits.InternalError) and len(ex.data) == 16


def test_simple_exits_and_unknown_reasons() -> None:
    run = KvmRun()
    assert isinstance(exits.decode(run, ExitReason.HLT), exits.HltExit)
    assert isinstance(exits.decode(run, ExitReason.SHUTDOWN), exits.ShutdownExit)
    assert isinstance(exits.decode(run, ExitReason.IRQ_WINDOW_OPEN), exits.IrqWindowExit)
    assert isinstance(exits.decode(run, ExitReason.INTR), exits.InterruptedExit)
    assert exits.decode(run, 999) == exits.UnknownExit(999)


def test_emulation_failure_instruction_bytes_come_from_the_data_words() -> None:
    # As KVM reported an IRET here: flags 1, insn_size 15, then cf 56 be 74 01 10 00 ...
    ex = exits.InternalError(1, (1, 0x00100174BE56CF0F, 0x05B85EFFFFFF34E8, 0x1000))
    assert exits.emulation_insn_bytes(ex)[:7] == bytes.fromhex("cf56be74011000")
    assert len(exits.emulation_insn_bytes(ex)) == 15


def test_emulation_failure_without_the_bytes_flag_has_no_bytes() -> None:
    assert exits.emulation_insn_bytes(exits.InternalError(1, (0, 0x0F, 0))) == b""
    assert exits.emulation_insn_bytes(exits.InternalError(1, (1,))) == b""
    assert exits.emulation_insn_bytes(exits.InternalError(2, (1, 0x0F, 0))) == b""
