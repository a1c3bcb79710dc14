"""Unit: device events' routing and the fate of their accesses (vmm/device.py), no KVM."""

from __future__ import annotations

import pytest

from copra.abi.spec import Errno, Signal
from copra.kernel.errors import SyscallError
from copra.vmm.device import DeviceRouter, IoEvent, MmioEvent

RAM = 4 << 20


def test_port_and_mmio_ranges_route_only_accesses_wholly_inside_them() -> None:
    router = DeviceRouter(RAM)
    io = router.create(False, 0x3F8, 8)
    mmio = router.create(True, 0xC000_0000, 0x1000)
    assert isinstance(io, IoEvent) and isinstance(mmio, MmioEvent)
    assert router.route(False, 0, 0x3FF, 1, False, 0) is not None
    assert router.route(False, 0, 0x3FF, 2, True, 0) is None  # straddles the end
    assert router.route(True, 0, 0xC000_0FFC, 4, False, 0) is not None
    assert router.route(True, 0, 0xC000_1000, 1, False, 0) is None
    assert io.queue.signals & Signal.READABLE and io.accesses == 1


@pytest.mark.parametrize("is_mmio, base, size, errno", [
    (False, 0x3FC, 8, Errno.EEXIST),  # overlaps 0x3F8-0x3FF
    (False, 0xFFFF, 2, Errno.EINVAL),  # past port 0xFFFF
    (False, 0x80, 0, Errno.EINVAL),  # empty
    (True, 0x1000, 0x1000, Errno.EINVAL),  # inside guest RAM
    (True, 0xC000_0800, 0x1000, Errno.EEXIST),  # overlaps the MMIO range
])
def test_bad_or_overlapping_ranges_are_refused(is_mmio: bool, base: int, size: int,
                                               errno: Errno) -> None:
    router = DeviceRouter(RAM)
    router.create(False, 0x3F8, 8)
    router.create(True, 0xC000_0000, 0x1000)
    with pytest.raises(SyscallError) as info:
        router.create(is_mmio, base, size)
    assert info.value.errno is errno


def test_closing_an_event_unroutes_it_and_answers_its_accesses_with_all_ones() -> None:
    router = DeviceRouter(RAM)
    event = router.create(False, 0x81, 1)
    access = router.route(False, 0, 0x81, 1, False, 0)
    assert access is not None and not access.done
    event.on_close()
    assert access.done and access.abandoned and access.data == 0xFF
    assert access.queue.signals & Signal.READABLE
    assert router.io == () and router.route(False, 0, 0x81, 1, False, 0) is None


def test_a_released_vm_leaves_no_route_and_wakes_its_events() -> None:
    router = DeviceRouter(RAM)
    event = router.create(True, 0xC000_0000, 0x1000)
    router.release()
    assert router.mmio == () and event.vm_gone
    assert event.queue.signals & Signal.READABLE
    assert router.route(True, 0, 0xC000_0000, 4, False, 0) is None


def test_an_access_is_answered_once() -> None:
    router = DeviceRouter(RAM)
    router.create(False, 0x81, 1)
    access = router.route(False, 0, 0x81, 1, False, 0)
    assert access is not None
    access.answer(0x1234)
    access.answer(0x99, abandoned=True)
    assert access.data == 0x34 and not access.abandoned  # cut to its size; the first wins
