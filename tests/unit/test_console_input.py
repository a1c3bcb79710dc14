"""The console-input object (kernel/objects/console.py) without KVM: the bound on its
buffer, READ's semantics (take what waits, 0 at end of input, nothing lost when the
copy fails), READABLE, and a producer stopped by the last handle's close."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from copra.abi.spec import Errno, Signal
from copra.kernel.errors import SyscallError
from copra.kernel.objects.console import BUFFER, ConsoleInput


def _take(obj: ConsoleInput, length: int) -> bytes | int | None:
    got: list[bytes] = []
    n = obj.take(length, got.append)
    if n is None or n == 0:
        return n
    assert n == len(got[0])
    return got[0]


def test_console_input_take_returns_waiting_bytes_up_to_length_oldest_first() -> None:
    obj = ConsoleInput()
    assert obj.feed(b"hello\n")
    assert _take(obj, 3) == b"hel"
    assert _take(obj, 100) == b"lo\n"
    assert _take(obj, 100) is None  # none waits, input not ended: the READ blocks


def test_console_input_end_answers_zero_once_every_byte_is_taken() -> None:
    obj = ConsoleInput()
    obj.feed(b"ab")
    obj.end()
    assert _take(obj, 1) == b"a"
    assert _take(obj, 8) == b"b"
    assert _take(obj, 8) == 0
    assert _take(obj, 8) == 0


def test_console_input_readable_exactly_while_bytes_wait_or_input_ended() -> None:
    obj = ConsoleInput()
    assert not obj.queue.signals & Signal.READABLE
    obj.feed(b"x")
    assert obj.queue.signals & Signal.READABLE
    _take(obj, 8)
    assert not obj.queue.signals & Signal.READABLE
    obj.end()
    assert obj.queue.signals & Signal.READABLE


def test_console_input_failed_copy_loses_nothing() -> None:
    obj = ConsoleInput()
    obj.feed(b"keep")

    def fail(_data: bytes) -> None:
        raise SyscallError(Errno.EFAULT, "bad buffer")

    with pytest.raises(SyscallError):
        obj.take(4, fail)
    assert _take(obj, 4) == b"keep"


def _until(condition: Callable[[], bool], producer: threading.Thread) -> None:
    """Wait for ``condition`` while ``producer`` runs; a producer stuck short of it
    fails the test after 30 s instead of hanging the suite."""
    give_up = time.monotonic() + 30.0
    while not condition():
        assert producer.is_alive()
        assert time.monotonic() < give_up, "the producer never got there"


def test_console_input_producer_waits_while_full_and_never_passes_the_bound() -> None:
    bound = 4
    obj = ConsoleInput(bound)
    data = bytes(range(10))
    done: list[bool] = []
    producer = threading.Thread(target=lambda: done.append(obj.feed(data)))
    producer.start()
    _until(lambda: obj.waiting >= bound, producer)  # it fills the buffer, then must wait
    assert obj.waiting == bound and producer.is_alive() and not done
    got = b""
    while len(got) < len(data):
        assert obj.waiting <= bound
        chunk = _take(obj, 3)
        if isinstance(chunk, bytes):
            got += chunk
    producer.join()
    assert got == data and done == [True]


def test_console_input_closing_the_last_handle_stops_a_waiting_producer() -> None:
    obj = ConsoleInput(2)
    obj.acquire()
    done: list[bool] = []
    producer = threading.Thread(target=lambda: done.append(obj.feed(b"abcdef")))
    producer.start()
    _until(lambda: obj.waiting >= 2, producer)
    obj.release()  # the last handle goes: on_close
    producer.join()
    assert done == [False] and obj.waiting == 0
    assert not obj.feed(b"more")


def test_console_input_default_bound_is_the_documented_buffer() -> None:
    assert ConsoleInput().bound == BUFFER == 4096
    with pytest.raises(ValueError):
        ConsoleInput(0)
