"""The console input: the host's standard input, as a stream object one process reads.

``copra run`` makes one when its standard input is a terminal or a pipe and the boot
has guests (docs/vmm.md); a host thread of the CLI reads stdin and ``feed``s the bytes
in, then calls ``end`` at end of input. The boot installs the only handle in /init
(id 1, rights READ | WAIT | TRANSFER: it can be moved on, never duplicated, so there
is one reader); the vmm moves it to VM 0's uart model (docs/abi.md).

READ of n > 0 bytes takes up to n of the bytes waiting, oldest first, and answers how
many; while none wait it blocks (no nonblocking mode: WAIT_MANY's READABLE says when a
READ will not block); once the input ended and every byte was taken it answers 0 (end
of input), at once and from then on. A READ of 0 bytes is EINVAL (0 means the end).

Invariants: ``0 <= len(buffer) <= BUFFER``: a producer that finds the buffer full
waits on the host (``feed`` blocks its thread until a READ makes room or the object is
closed), so the kernel never holds more than ``BUFFER`` bytes of input however fast
the host writes; READABLE is raised exactly while bytes wait or the input ended.
After the last handle goes (``on_close``) ``feed`` drops its bytes and answers False.

Locking: one lock per object (class "console.input") guards the buffer and the ended
and closed flags; READ copies out under it (so a failed copy loses nothing), taking
the reader's ``mem_lock`` after it; the wait queue's lock comes after both. The
producer's wait for room is a ``threading.Event`` waited on with no lock held.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from copra.abi.spec import Errno, Signal
from copra.kernel import lockdep
from copra.kernel.errors import SyscallError, WouldBlock
from copra.kernel.objects import ObjectKind, StreamObject
from copra.kernel.usermem import check_buffer, copy_out
from copra.kernel.waitqueue import WaitQueue

if TYPE_CHECKING:
    from copra.kernel.syscalls.table import Call
    from copra.kernel.usermem import UserPtr

#: The bytes of input the kernel holds at most (a 4 KiB page's worth: a pasted line or
#: a few, while the guest's 16-byte FIFO drains them).
BUFFER = 4096


class ConsoleInput(StreamObject):
    kind = ObjectKind.CONSOLE_INPUT

    def __init__(self, bound: int = BUFFER) -> None:
        super().__init__()
        if bound <= 0:
            raise ValueError(f"a console input buffer of {bound} bytes")
        self.bound = bound
        self._lock = lockdep.lock("console.input")
        self._buffer = bytearray()
        self._ended = False
        self._closed = False
        self._room = threading.Event()
        self._room.set()
        self.queue = WaitQueue()

    def wait_queue(self) -> WaitQueue:
        return self.queue

    @property
    def waiting(self) -> int:
        return len(self._buffer)

    # --- the host side ------------------------------------------------------------------

    def feed(self, data: bytes) -> bool:
        """Append ``data``, waiting (on this host thread) while the buffer is full; False
        (the rest dropped) once the object is closed: the producer should stop."""
        view = memoryview(data)
        while view:
            self._room.wait()
            with self._lock:
                if self._closed:
                    return False
                room = self.bound - len(self._buffer)
                if room <= 0:
                    self._room.clear()
                    continue
                was_empty = not self._buffer
                self._buffer += view[:room]
                view = view[room:]
                if len(self._buffer) >= self.bound:
                    self._room.clear()
                if was_empty:
                    self.queue.raise_signals(Signal.READABLE)
        return not self._closed

    def end(self) -> None:
        """The input ended: READ answers 0 once the bytes waiting are taken."""
        with self._lock:
            self._ended = True
            self.queue.raise_signals(Signal.READABLE)

    def on_close(self) -> None:
        with self._lock:
            self._closed = True
            self._buffer.clear()
        self._room.set()  # a producer waiting for room stops

    # --- READ -----------------------------------------------------------------------------

    def take(self, length: int, copy: Callable[[bytes], None]) -> int | None:
        """Up to ``length`` bytes through ``copy`` (if it raises, nothing is taken); 0 at
        end of input; None when none wait yet (the caller blocks)."""
        with self._lock:
            if not self._buffer:
                return 0 if self._ended else None
            data = bytes(self._buffer[:length])
            copy(data)
            del self._buffer[:len(data)]
            if not self._buffer and not self._ended:
                self.queue.clear_signals(Signal.READABLE)
            self._room.set()
            return len(data)

    def read_stream(self, c: Call, buf: UserPtr, length: int) -> int:
        if length == 0:
            raise SyscallError(Errno.EINVAL, "a READ of the console input takes at least "
                                             "1 byte (0 answers the end of input)")
        length = min(length, self.bound)
        p = c.process
        with p.mem_lock:
            check_buffer(p.space, buf, length, write=True, usable=length)

        def out(data: bytes) -> None:
            with p.mem_lock:
                copy_out(p.space, buf, data)

        while (taken := self.take(length, out)) is None:
            if not c.kernel.wait_for(c.thread, self.queue, Signal.READABLE):
                raise WouldBlock
        return taken

    def write_stream(self, c: Call, buf: UserPtr, length: int) -> int:
        raise SyscallError(Errno.EPERM, "the console input is read-only")
