"""Events (kernel/objects/event.py): a counter with READABLE/WRITABLE signals."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from copra.abi.spec import EVENT_MAX, Errno, EventFlag, Signal
from copra.kernel.cpu import UserContext
from copra.kernel.errors import SyscallError
from copra.kernel.objects.event import Event, decode_event_flags
from copra.kernel.thread import Thread


def taken(event: Event) -> int | None:
    out: list[bytes] = []
    value = event.take(out.append)
    assert out == ([] if value is None else [value.to_bytes(8, "little")])
    return value


def test_new_event_is_zero_writable_and_not_readable() -> None:
    event = Event(EventFlag(0))
    assert event.value == 0 and event.queue.signals == Signal.WRITABLE
    assert taken(event) is None


def test_writes_add_and_a_take_resets() -> None:
    event = Event(EventFlag(0))
    event.write(3)
    event.write(4)
    assert event.queue.signals == Signal.READABLE | Signal.WRITABLE
    assert taken(event) == 7 and event.value == 0
    assert event.queue.signals == Signal.WRITABLE


def test_write_past_the_maximum_is_eoverflow_and_changes_nothing() -> None:
    event = Event(EventFlag(0))
    event.write(EVENT_MAX)
    assert not event.queue.signals & Signal.WRITABLE
    with pytest.raises(SyscallError) as err:
        event.write(1)
    assert err.value.errno is Errno.EOVERFLOW and event.value == EVENT_MAX
    assert taken(event) == EVENT_MAX and event.queue.signals & Signal.WRITABLE


def test_write_of_all_ones_is_einval() -> None:
    with pytest.raises(SyscallError) as err:
        Event(EventFlag(0)).write((1 << 64) - 1)
    assert err.value.errno is Errno.EINVAL


def test_failed_copy_out_keeps_the_value() -> None:
    event = Event(EventFlag(0))
    event.write(5)

    def fault(_data: bytes) -> None:
        raise SyscallError(Errno.EFAULT)

    with pytest.raises(SyscallError):
        event.take(fault)
    assert event.value == 5 and event.queue.signals & Signal.READABLE


def test_unknown_event_flags_are_einval() -> None:
    assert decode_event_flags(1) == EventFlag.NONBLOCK
    with pytest.raises(SyscallError):
        decode_event_flags(2)


def test_write_completes_a_blocked_readers_offer() -> None:
    event = Event(EventFlag(0))
    t = Thread(1, SimpleNamespace(ending=False), UserContext(0))  # type: ignore[arg-type]
    got: list[bytes] = []
    woken: list[Thread] = []
    withdraw = event.offer(t, got.append, woken.append)
    event.write(5)
    assert (got, woken, t.result, event.value) == ([(5).to_bytes(8, "little")], [t], 8, 0)
    assert not event.queue.signals & Signal.READABLE
    assert withdraw() == 8
    event.write(2)  # the offer is gone: the value waits for a READ
    assert got == [(5).to_bytes(8, "little")] and taken(event) == 2


def test_offer_whose_buffer_fails_answers_efault_and_keeps_the_value() -> None:
    event = Event(EventFlag(0))
    t = Thread(1, SimpleNamespace(ending=False), UserContext(0))  # type: ignore[arg-type]

    def gone(data: bytes) -> None:
        raise SyscallError(Errno.EFAULT, "unmapped")

    event.offer(t, gone, lambda thread: None)
    event.write(3)
    assert t.result == int(Errno.EFAULT) and event.value == 3
    assert event.queue.signals & Signal.READABLE
