"""The 16550 model (PC16550D register behaviour; QEMU's values where the datasheet leaves
room) and the console lines it feeds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from copra.vmm.uart import (
    IER_DLM,
    IIR_FCR,
    LCR,
    LSR,
    MCR,
    MSR,
    RBR_THR_DLL,
    SCR,
    LineConsole,
    Uart16550,
)


def uart() -> tuple[Uart16550, list[int]]:
    sent: list[int] = []
    return Uart16550(sent.append), sent


def test_thr_write_is_transmitted_at_once_and_lsr_says_empty() -> None:
    u, sent = uart()
    u.write(RBR_THR_DLL, ord("A"))
    assert sent == [ord("A")]
    assert u.read(LSR) == 0x60


def test_reset_state_matches_qemu() -> None:
    u, _ = uart()
    assert [u.read(r) for r in (IER_DLM, IIR_FCR, LCR, MCR, LSR, MSR, SCR)] == [
        0, 0x01, 0, 0, 0x60, 0xB0, 0]


def test_divisor_latch_is_reached_with_dlab_and_starts_at_12() -> None:
    u, sent = uart()
    u.write(LCR, 0x83)
    assert (u.read(RBR_THR_DLL), u.read(IER_DLM)) == (12, 0)
    u.write(RBR_THR_DLL, 0x01)
    u.write(IER_DLM, 0x02)
    assert (u.read(RBR_THR_DLL), u.read(IER_DLM)) == (0x01, 0x02)
    u.write(LCR, 0x03)
    assert u.read(IER_DLM) == 0 and sent == []
    assert u.divisor == 0x0201


def test_scratch_register_keeps_its_value() -> None:
    u, _ = uart()
    u.write(SCR, 0x5A)
    assert u.read(SCR) == 0x5A


def test_iir_shows_fifo_bits_while_fifos_are_on() -> None:
    u, _ = uart()
    u.write(IIR_FCR, 0xC7)
    assert u.read(IIR_FCR) == 0xC1
    u.write(IIR_FCR, 0x00)
    assert u.read(IIR_FCR) == 0x01


def test_thr_empty_interrupt_is_raised_by_ier_and_cleared_by_reading_iir() -> None:
    u, _ = uart()
    u.write(MCR, 0x08)
    u.write(IER_DLM, 0x02)
    assert u.interrupt_pending
    assert u.read(IIR_FCR) == 0x02
    assert u.read(IIR_FCR) == 0x01 and not u.interrupt_pending
    u.write(RBR_THR_DLL, 0x20)  # the holding register empties again at once
    assert u.read(IIR_FCR) == 0x02


def test_interrupt_line_is_gated_by_out2() -> None:
    u, _ = uart()
    u.write(IER_DLM, 0x02)
    assert not u.interrupt_pending
    u.write(MCR, 0x08)
    assert u.interrupt_pending


def test_received_data_sets_dr_and_has_priority_over_thr_empty() -> None:
    u, _ = uart()
    u.write(IER_DLM, 0x03)
    assert u.receive(b"xy") == 1  # FIFOs off: one byte of room
    assert u.read(LSR) & 0x03 == 0x03  # DR and overrun
    assert u.read(LSR) & 0x02 == 0  # overrun clears on read
    assert u.read(IIR_FCR) == 0x04
    assert u.read(RBR_THR_DLL) == ord("x")
    assert u.read(LSR) & 0x01 == 0 and u.read(RBR_THR_DLL) == 0


def test_fifo_holds_16_bytes() -> None:
    u, _ = uart()
    u.write(IIR_FCR, 0x01)
    assert u.receive(bytes(range(20))) == 16
    assert [u.read(RBR_THR_DLL) for _ in range(16)] == list(range(16))


def test_fcr_clears_the_receive_fifo() -> None:
    u, _ = uart()
    u.write(IIR_FCR, 0x01)
    u.receive(b"abc")
    u.write(IIR_FCR, 0x03)
    assert u.read(LSR) & 0x01 == 0


def test_line_status_interrupt_reports_overrun() -> None:
    u, _ = uart()
    u.write(IER_DLM, 0x04)
    u.receive(b"ab")
    assert u.read(IIR_FCR) == 0x06


def test_loopback_returns_sent_bytes_and_mirrors_mcr_in_msr() -> None:
    u, sent = uart()
    u.write(IIR_FCR, 0xC7)
    u.write(MCR, 0x1F)
    u.write(RBR_THR_DLL, ord("Z"))
    assert sent == []
    assert u.read(LSR) == 0x61
    assert u.read(RBR_THR_DLL) == ord("Z")
    assert u.read(LSR) == 0x60
    assert u.read(MSR) == 0xF0
    u.write(MCR, 0x13)  # loopback with DTR and RTS only
    assert u.read(MSR) == 0x30
    u.write(MCR, 0x0B)
    assert u.read(MSR) == 0xB0


def test_writes_to_lsr_and_msr_are_ignored() -> None:
    u, _ = uart()
    u.write(LSR, 0)
    u.write(MSR, 0)
    assert (u.read(LSR), u.read(MSR)) == (0x60, 0xB0)


@given(st.lists(st.tuples(st.booleans(), st.integers(-1000, 1000), st.integers(-1, 1 << 40))))
def test_any_register_access_answers_a_byte(ops: list[tuple[bool, int, int]]) -> None:
    u, sent = uart()
    for is_write, offset, value in ops:
        if is_write:
            u.write(offset, value)
        else:
            assert 0 <= u.read(offset) <= 0xFF
    assert all(0 <= b <= 0xFF for b in sent)


# --- console lines ----------------------------------------------------------------------

def console() -> tuple[LineConsole, list[str]]:
    lines: list[str] = []
    return LineConsole("g", lines.append), lines


def feed(c: LineConsole, data: bytes) -> None:
    for b in data:
        c.put(b)


def test_console_prefixes_lines_with_the_guest_name_and_drops_cr() -> None:
    c, lines = console()
    feed(c, b"one\r\ntwo\n\nthree")
    assert lines == ["[g] one", "[g] two", "[g] "]
    c.flush()
    assert lines[-1] == "[g] three"
    assert c.bytes == 15


def test_console_cuts_a_line_without_newline_at_line_max() -> None:
    c, lines = console()
    feed(c, b"x" * (LineConsole.LINE_MAX + 5))
    assert lines == ["[g] " + "x" * LineConsole.LINE_MAX]


def test_console_shows_invalid_utf8_as_replacement_characters() -> None:
    c, lines = console()
    feed(c, b"\xff\xfeok\n")
    assert lines == ["[g] \ufffd\ufffdok"]
