"""An event: a 64-bit counter that threads signal and wait on (Linux's eventfd).

EVENT_CREATE makes one; WRITE of 8 bytes adds the little-endian u64 they hold to the
counter, READ of 8 bytes takes the counter's value and resets it to 0. A READ of a
zero counter blocks until a WRITE (the syscall is dispatched again then), or answers
EAGAIN when the event was made with ``EventFlag.NONBLOCK``. It is the base the IRQ
objects will stand on: a device model signals, a VCPU's waiter takes.

Invariants: ``0 <= value <= spec.EVENT_MAX``; a WRITE that would pass EVENT_MAX, or of
the value 2^64 - 1, changes nothing and answers EOVERFLOW / EINVAL (eventfd blocks or
answers EAGAIN instead: copra never blocks a writer); the queue's READABLE bit is
raised exactly while ``value > 0`` and WRITABLE exactly while ``value < EVENT_MAX``.

Rights: READ guards READ, WRITE guards WRITE, WAIT guards WAIT_MANY (the creator gets
all three).

A READ that blocks leaves an offer (``readers``): the WRITE that makes the counter
non-zero takes the oldest offer whose process is not ending and copies the value into
that reader's buffer itself, exactly as the reader's own dispatch would (the counter
goes back to 0; a buffer gone meanwhile makes EFAULT the reader's answer and leaves
the value), sets its result and wakes it: the reader's CPU then only returns to user
mode (kernel/thread.py, ``withdraw``).

Locking: one lock per event (class "event") serialises its operations; READ copies
the value out under it (so a failed copy loses nothing), which takes the reader's
``mem_lock`` after it; the queue's lock comes after both. A WRITE that hands the value
over takes the reader's ``mem_lock`` under the event lock, then the scheduler's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from copra.abi.spec import EVENT_MAX, Errno, EventFlag, Signal
from copra.kernel import lockdep
from copra.kernel.errors import SyscallError
from copra.kernel.objects import KernelObject, ObjectKind, handoff
from copra.kernel.objects.handoff import HandOff
from copra.kernel.waitqueue import WaitQueue

if TYPE_CHECKING:
    from copra.kernel.thread import Thread

#: The bytes a READ or WRITE of an event moves.
EVENT_IO = 8


def decode_event_flags(raw: int) -> EventFlag:
    if raw & ~int(EventFlag.NONBLOCK):
        raise SyscallError(Errno.EINVAL, f"unknown EVENT_CREATE flag bits {raw:#x}")
    return EventFlag(raw)


class Event(KernelObject):
    kind = ObjectKind.EVENT

    def __init__(self, flags: EventFlag) -> None:
        super().__init__()
        self.nonblocking = EventFlag.NONBLOCK in flags
        self._lock = lockdep.lock("event")
        self._value = 0
        self.queue = WaitQueue(Signal.WRITABLE)
        #: Blocked READs a WRITE completes directly, oldest first.
        self.readers: deque[HandOff[bytes]] = deque()

    def wait_queue(self) -> WaitQueue:
        return self.queue

    @property
    def value(self) -> int:
        return self._value

    def write(self, amount: int) -> None:
        """Add ``amount`` (EINVAL for 2^64 - 1, EOVERFLOW past EVENT_MAX)."""
        if amount > EVENT_MAX:
            raise SyscallError(Errno.EINVAL, "an event cannot be written 2^64 - 1")
        with self._lock:
            if self._value + amount > EVENT_MAX:
                raise SyscallError(Errno.EOVERFLOW, f"the counter holds {self._value}; "
                                                    f"adding {amount} passes EVENT_MAX")
            if not amount:
                return
            was = self._value
            self._value += amount
            if not was:
                if self.readers and self._hand_over():
                    return
                self.queue.raise_signals(Signal.READABLE)
            if self._value == EVENT_MAX:
                self.queue.clear_signals(Signal.WRITABLE)

    def _hand_over(self) -> bool:
        """Give the value to the oldest blocked reader (lock held); True if taken."""
        while self.readers:
            reader = self.readers.popleft()
            reader.taken = True
            thread = reader.thread
            if thread.process.ending:
                continue
            try:
                reader.deliver(self._value.to_bytes(EVENT_IO, "little"))
            except SyscallError as e:
                thread.result = int(e.errno)
                reader.wake(thread)
                return False
            except Exception:  # its own dispatch will meet it again
                reader.wake(thread)
                return False
            self._value = 0
            thread.result = EVENT_IO
            reader.wake(thread)
            return True
        return False

    def offer(self, thread: Thread, deliver: Callable[[bytes], None],
              wake: Callable[[Thread], None]) -> Callable[[], int | None]:
        """``thread`` blocks in READ: a WRITE may complete it. Returns its ``withdraw``."""
        return handoff.offer(self.readers, self._lock, thread, deliver, wake)

    def take(self, copy_out: Callable[[bytes], None]) -> int | None:
        """The value, reset to 0 after ``copy_out`` took its 8 bytes (if it raises,
        nothing changes); None when the value is 0 (the caller blocks or says EAGAIN)."""
        with self._lock:
            value = self._value
            if not value:
                return None
            copy_out(value.to_bytes(EVENT_IO, "little"))
            self._value = 0
            self.queue.clear_signals(Signal.READABLE)
            if value == EVENT_MAX:
                self.queue.raise_signals(Signal.WRITABLE)
            return value
