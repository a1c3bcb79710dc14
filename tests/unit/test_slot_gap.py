"""An access reported as MMIO inside guest memory (the slot briefly missing) is completed,
not blamed on the process (Cpu._complete_slot_gap, without KVM)."""

from __future__ import annotations

from types import SimpleNamespace

from copra.abi.spec import PAGE_SIZE
from copra.hw.kvm import KvmRun
from copra.kernel.cpu import Cpu
from copra.kernel.frames import PhysicalMemory


def fake_cpu(pages: int = 4) -> SimpleNamespace:
    memory = PhysicalMemory(memoryview(bytearray(pages * PAGE_SIZE)))
    return SimpleNamespace(run_page=KvmRun(), vm=SimpleNamespace(memory=memory), slot_gaps=0)


def test_write_in_guest_memory_is_done_and_counted() -> None:
    cpu = fake_cpu()
    mmio = cpu.run_page.exit.mmio
    mmio.phys_addr, mmio.len, mmio.is_write = 0x1234, 4, 1
    mmio.data[:4] = [1, 2, 3, 4]
    assert Cpu._complete_slot_gap(cpu)  # type: ignore[arg-type]
    assert cpu.vm.memory.read(0x1234, 4) == b"\x01\x02\x03\x04" and cpu.slot_gaps == 1


def test_read_in_guest_memory_fills_the_run_page() -> None:
    cpu = fake_cpu()
    cpu.vm.memory.write(0x2000, b"\xaa\xbb")
    mmio = cpu.run_page.exit.mmio
    mmio.phys_addr, mmio.len, mmio.is_write = 0x2000, 2, 0
    assert Cpu._complete_slot_gap(cpu)  # type: ignore[arg-type]
    assert bytes(mmio.data[:2]) == b"\xaa\xbb"


def test_access_beyond_guest_memory_stays_an_mmio_exit() -> None:
    cpu = fake_cpu(pages=1)
    mmio = cpu.run_page.exit.mmio
    mmio.phys_addr, mmio.len, mmio.is_write = PAGE_SIZE - 2, 4, 0
    assert not Cpu._complete_slot_gap(cpu)  # type: ignore[arg-type]
    assert cpu.slot_gaps == 0
