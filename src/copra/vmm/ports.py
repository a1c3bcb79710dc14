"""A guest's I/O port space: devices claim port ranges; every other port is open bus.

An access that falls wholly inside one device's range goes to it with its size (1, 2 or
4 bytes), so a device may treat a wide access as one (QEMU's isa-debug-exit takes the
whole value of an ``outl``). An access that straddles a range boundary is split into
single bytes, each going where its port belongs (what an ISA bus does to a wide access
to 8-bit devices). A port nobody claims reads all ones and ignores writes, as on a PC
and in QEMU; such accesses are counted (one per access), never raised.

Devices here: ``ByteDevice`` adapts a byte-register device (the UART) and
``DebugExit`` is QEMU's isa-debug-exit.

Locking: a bus belongs to one guest and is used by the thread running its vCPU.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Final, Protocol

DEBUG_EXIT_PORT: Final = 0xF4
DEBUG_EXIT_SIZE: Final = 4  #: QEMU's -device isa-debug-exit,iobase=0xf4,iosize=4
COM1_PORT: Final = 0x3F8
COM1_SIZE: Final = 8


class PortDevice(Protocol):
    def port_read(self, offset: int, size: int) -> int: ...
    def port_write(self, offset: int, size: int, value: int) -> None: ...


class ByteRegisters(Protocol):
    def read(self, offset: int) -> int: ...
    def write(self, offset: int, value: int) -> None: ...


class ByteDevice:
    """A device of byte-wide registers: a wide access is one byte per register."""

    def __init__(self, registers: ByteRegisters) -> None:
        self.registers = registers

    def port_read(self, offset: int, size: int) -> int:
        value = 0
        for i in range(size):
            value |= (self.registers.read(offset + i) & 0xFF) << (8 * i)
        return value

    def port_write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            self.registers.write(offset + i, (value >> (8 * i)) & 0xFF)


class DebugExit:
    """QEMU's isa-debug-exit: a write of value v ends the guest with status (v << 1) | 1.

    The value is the whole access (an ``outl`` of 0x100 is 0x100, whose status QEMU's
    exit() truncates to 8 bits: 1). Reads answer all ones, as an unclaimed port.
    """

    def __init__(self) -> None:
        self.value: int | None = None

    def port_read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def port_write(self, offset: int, size: int, value: int) -> None:
        if self.value is None:
            self.value = value


@dataclass(frozen=True)
class _Range:
    base: int
    size: int
    device: PortDevice


class PortBus:
    def __init__(self) -> None:
        self._ranges: list[_Range] = []
        self._bases: list[int] = []
        self._owner: dict[int, _Range | None] = {}  #: port -> its range, filled on use
        self.unclaimed_reads = 0
        self.unclaimed_writes = 0

    def add(self, base: int, size: int, device: PortDevice) -> None:
        if size < 1 or base < 0 or base + size > 0x10000:
            raise ValueError(f"port range {base:#x}+{size} is outside the 64 KiB port space")
        if any(base < r.base + r.size and r.base < base + size for r in self._ranges):
            raise ValueError(f"port range {base:#x}+{size} overlaps another device's")
        self._ranges.append(_Range(base, size, device))
        self._ranges.sort(key=lambda r: r.base)
        self._bases = [r.base for r in self._ranges]
        self._owner.clear()

    def _find(self, port: int) -> _Range | None:
        try:
            return self._owner[port]
        except KeyError:
            pass
        found = None
        i = bisect_right(self._bases, port) - 1
        if i >= 0:
            r = self._ranges[i]
            if port < r.base + r.size:
                found = r
        self._owner[port] = found
        return found

    def _unclaimed(self, port: int, size: int) -> bool:
        if size == 1:
            return self._find(port) is None
        return all(self._find((port + i) & 0xFFFF) is None for i in range(size))

    def read(self, port: int, size: int) -> int:
        """An IN of ``size`` (1, 2 or 4) bytes at ``port``."""
        mask = (1 << (8 * size)) - 1
        r = self._find(port)
        if r is not None and port + size <= r.base + r.size:
            return r.device.port_read(port - r.base, size) & mask
        if self._unclaimed(port, size):
            self.unclaimed_reads += 1
            return mask
        value = 0
        for i in range(size):
            value |= self.read((port + i) & 0xFFFF, 1) << (8 * i)
        return value

    def write(self, port: int, size: int, value: int) -> None:
        """An OUT of ``size`` (1, 2 or 4) bytes at ``port``."""
        r = self._find(port)
        if r is not None and port + size <= r.base + r.size:
            r.device.port_write(port - r.base, size, value & ((1 << (8 * size)) - 1))
        elif self._unclaimed(port, size):
            self.unclaimed_writes += 1
        else:
            for i in range(size):
                self.write((port + i) & 0xFFFF, 1, (value >> (8 * i)) & 0xFF)
