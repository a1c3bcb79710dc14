"""A 16550A UART (COM1 of a PC), enough of it for a guest console and its drivers' probes.

Registers by offset from the base port (National PC16550D datasheet, "Register
Summary"; QEMU's hw/char/serial.c is the reference this model is compared with, see
tests/kvm/test_guest_qemu.py):

    0  RBR (read) / THR (write); DLL with LCR.DLAB
    1  IER (bits 0-3);            DLM with LCR.DLAB
    2  IIR (read) / FCR (write)
    3  LCR    4  MCR (bits 0-4)    5  LSR    6  MSR    7  SCR

Behaviour:
- Transmission is instantaneous: a byte written to THR goes to ``sink`` at once, so LSR
  always says THRE and TEMT (0x60), and the THR-empty interrupt condition is raised again
  by every write (as QEMU).
- Receive: ``receive`` queues host bytes into the receive FIFO (16 bytes with FCR.0 set,
  else 1); a byte that does not fit sets the overrun bit (LSR.1, cleared by reading
  LSR) and is dropped. Reading RBR with nothing received answers 0 (as QEMU).
- Loopback (MCR.4): THR feeds the receive FIFO instead of ``sink``, and MSR's top four
  bits mirror MCR (DTR -> DSR, RTS -> CTS, OUT1 -> RI, OUT2 -> DCD) with no delta bits,
  as QEMU reports them. Otherwise MSR is DCD | DSR | CTS (0xB0): a line always ready.
- IIR reports the highest-priority pending condition among those IER enables (line
  status 0x6, received data 0x4, THR empty 0x2; modem status is never pending) or 0x1,
  with bits 6-7 set while the FIFOs are on. Reading IIR while it reports THR empty
  clears that condition, as the datasheet says. ``interrupt_pending`` is the IRQ line
  (gated by MCR.OUT2, as on a PC); nothing is wired to it yet (no interrupt controller:
  docs/guests.md).
- Writes to LSR and MSR are ignored (factory test registers).

The divisor latch starts at 12 (9600 baud), as QEMU's. Every value is masked to a byte
and every offset to 0-7: no input makes a method raise.

Locking: a UART belongs to one guest and is touched only by the thread running that
guest's vCPU (``receive`` included, until host input arrives on another thread).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

RBR_THR_DLL: Final = 0
IER_DLM: Final = 1
IIR_FCR: Final = 2
LCR: Final = 3
MCR: Final = 4
LSR: Final = 5
MSR: Final = 6
SCR: Final = 7

LCR_DLAB: Final = 0x80
IER_RDI: Final = 0x01  #: received data available
IER_THRI: Final = 0x02  #: transmitter holding register empty
IER_RLSI: Final = 0x04  #: receiver line status
MCR_OUT2: Final = 0x08
MCR_LOOP: Final = 0x10
LSR_DR: Final = 0x01
LSR_OE: Final = 0x02
LSR_THRE: Final = 0x20
LSR_TEMT: Final = 0x40
MSR_CTS: Final = 0x10
MSR_DSR: Final = 0x20
MSR_RI: Final = 0x40
MSR_DCD: Final = 0x80
IIR_NONE: Final = 0x01
IIR_THRE: Final = 0x02
IIR_RDA: Final = 0x04
IIR_RLS: Final = 0x06
IIR_FIFO: Final = 0xC0
FCR_ENABLE: Final = 0x01
FCR_CLEAR_RX: Final = 0x02
FIFO_SIZE: Final = 16
RESET_DIVISOR: Final = 12


class Uart16550:
    def __init__(self, sink: Callable[[int], None]) -> None:
        self._sink = sink
        self._rx: deque[int] = deque()
        self.ier = 0
        self.lcr = 0
        self.mcr = 0
        self.scr = 0
        self.divisor = RESET_DIVISOR
        self.fifo_enabled = False
        self._overrun = False
        self._thr_empty_pending = False

    # --- the host side -------------------------------------------------------------

    def receive(self, data: bytes) -> int:
        """Queue bytes for the guest to read; returns how many fit (the rest overran)."""
        taken = 0
        for byte in data:
            if len(self._rx) >= (FIFO_SIZE if self.fifo_enabled else 1):
                self._overrun = True
                continue
            self._rx.append(byte)
            taken += 1
        return taken

    @property
    def interrupt_pending(self) -> bool:
        return bool(self.mcr & MCR_OUT2) and self._iir_source() != IIR_NONE

    # --- the guest side --------------------------------------------------------------

    def read(self, offset: int) -> int:
        offset &= 7
        if offset == RBR_THR_DLL:
            if self.lcr & LCR_DLAB:
                return self.divisor & 0xFF
            return self._rx.popleft() if self._rx else 0
        if offset == IER_DLM:
            return (self.divisor >> 8) & 0xFF if self.lcr & LCR_DLAB else self.ier
        if offset == IIR_FCR:
            source = self._iir_source()
            if source == IIR_THRE:
                self._thr_empty_pending = False
            return source | (IIR_FIFO if self.fifo_enabled else 0)
        if offset == LCR:
            return self.lcr
        if offset == MCR:
            return self.mcr
        if offset == LSR:
            lsr = self._lsr()
            self._overrun = False
            return lsr
        if offset == MSR:
            return self._msr()
        return self.scr

    def write(self, offset: int, value: int) -> None:
        offset &= 7
        value &= 0xFF
        if offset == RBR_THR_DLL:
            if self.lcr & LCR_DLAB:
                self.divisor = (self.divisor & 0xFF00) | value
            else:
                self._transmit(value)
        elif offset == IER_DLM:
            if self.lcr & LCR_DLAB:
                self.divisor = (self.divisor & 0x00FF) | value << 8
            else:
                if value & IER_THRI and not self.ier & IER_THRI:
                    self._thr_empty_pending = True  # THR is empty: the condition holds
                self.ier = value & 0x0F
        elif offset == IIR_FCR:
            enable = bool(value & FCR_ENABLE)
            if enable != self.fifo_enabled or value & FCR_CLEAR_RX:
                self._rx.clear()
            self.fifo_enabled = enable
        elif offset == LCR:
            self.lcr = value
        elif offset == MCR:
            self.mcr = value & 0x1F
        elif offset == SCR:
            self.scr = value
        # LSR and MSR: writes ignored

    def _transmit(self, byte: int) -> None:
        if self.mcr & MCR_LOOP:
            self.receive(bytes((byte,)))
        else:
            self._sink(byte)
        self._thr_empty_pending = True

    def _lsr(self) -> int:
        return (LSR_THRE | LSR_TEMT | (LSR_DR if self._rx else 0)
                | (LSR_OE if self._overrun else 0))

    def _msr(self) -> int:
        if self.mcr & MCR_LOOP:
            mcr = self.mcr
            return ((MSR_DSR if mcr & 0x01 else 0) | (MSR_CTS if mcr & 0x02 else 0)
                    | (MSR_RI if mcr & 0x04 else 0) | (MSR_DCD if mcr & 0x08 else 0))
        return MSR_DCD | MSR_DSR | MSR_CTS

    def _iir_source(self) -> int:
        if self.ier & IER_RLSI and self._overrun:
            return IIR_RLS
        if self.ier & IER_RDI and self._rx:
            return IIR_RDA
        if self.ier & IER_THRI and self._thr_empty_pending:
            return IIR_THRE
        return IIR_NONE


class LineConsole:
    """Bytes a guest sends to its UART, as console lines ``[name] text``.

    A line ends at LF; a CR before it is dropped. A line longer than ``LINE_MAX`` bytes
    is cut there (so a guest that never sends LF cannot grow copra's memory). Bytes are
    shown as UTF-8 with replacement characters, never rejected. ``flush`` emits a
    partial last line (the guest stopped in mid-line).
    """

    LINE_MAX: Final = 1024

    def __init__(self, name: str, sink: Callable[[str], None]) -> None:
        self.prefix = f"[{name}] "
        self._sink = sink
        self._line = bytearray()
        self.bytes = 0

    def put(self, byte: int) -> None:
        self.bytes += 1
        if byte == 0x0A:
            self._emit()
            return
        self._line.append(byte)
        if len(self._line) >= self.LINE_MAX:
            self._emit()

    def flush(self) -> None:
        if self._line:
            self._emit()

    def _emit(self) -> None:
        line = bytes(self._line)
        self._line.clear()
        if line.endswith(b"\r"):
            line = line[:-1]
        self._sink(self.prefix + line.decode("utf-8", errors="replace"))
