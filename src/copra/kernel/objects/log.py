"""The task log: handle 0 of every process, its stdout.

Writes are line-buffered, as upstream: each complete line is emitted with the prefix
``[taskname] ``; a line longer than LINE_MAX (223 bytes, upstream's: its 224-byte
buffer holds the newline too) is cut into LINE_MAX-byte lines. Invalid UTF-8 is shown
with replacement characters, never rejected. A partial last line is flushed when the
task ends (upstream loses it). The log is write-only: READ on it answers EWRONLY,
like a file opened without READ (upstream's log file object is write-only too), and
SEEK answers 0 (syscalls/fs.py), the size upstream's log reports.

Locking: one lock per log serialises writers, so lines of two threads never interleave.
"""

from __future__ import annotations

from collections.abc import Callable

from copra.kernel import lockdep
from copra.kernel.objects import KernelObject, ObjectKind

LINE_MAX = 223


class Log(KernelObject):
    kind = ObjectKind.LOG

    def __init__(self, task_name: str, sink: Callable[[str], None]) -> None:
        super().__init__()
        self.prefix = f"[{task_name}] "
        self._sink = sink
        self._lock = lockdep.lock("log")
        self._pending = bytearray()

    def write(self, data: bytes) -> int:
        with self._lock:
            self._pending += data
            while True:
                nl = self._pending.find(b"\n")
                # A full LINE_MAX-byte line waits for its newline: cutting it here would
                # turn the newline of a later write into an extra empty line.
                if nl < 0 and len(self._pending) <= LINE_MAX:
                    break
                cut = nl if 0 <= nl < LINE_MAX else LINE_MAX
                line = bytes(self._pending[:cut])
                del self._pending[: cut + 1 if cut == nl else cut]
                self._emit(line)
        return len(data)

    def _emit(self, line: bytes) -> None:
        self._sink(self.prefix + line.decode("utf-8", errors="replace"))

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                line = bytes(self._pending)
                self._pending.clear()
                self._emit(line)

    def on_close(self) -> None:
        self.flush()
