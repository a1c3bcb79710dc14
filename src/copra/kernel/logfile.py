"""The log file: every console line, also appended to ``spec.LOG_FILE_PATH`` in the RAM fs.

Upstream (``kernel/src/fs/log_buffer.rs``, ``svsm.rs``) creates ``Log/logfile`` at
boot, before the archive is unpacked, and appends every flushed stdout line of every
task to it, prefix included, so that user programs can OPEN and READ what was logged.
copra does the same for every line its console gets: each task's (``[name] ...``) and
the kernel's own (``[kernel] ...``), each with its newline.

As upstream's ``log_write``, each line opens the path anew and appends at the end of
whatever file is there at that moment: the file is an ordinary RAM-fs file that
programs may also write, truncate or unlink (upstream has no permissions either).
While nothing is at the path, lines reach the console only.

Where copra differs: the file is kept at most ``spec.LOG_FILE_MAX`` bytes (upstream
lets it grow until the RAM fs is full). A line that would pass the limit, or that
the RAM fs has no page for, is not appended; it still reaches the console, is
counted in ``dropped``, and the first such line of a run of them is followed on the
console by one ``[kernel]`` note. Appending never raises: logging cannot fail a
syscall or the boot.

Invariants: the console sees every line exactly once, in order, whatever happens to
the file; the file only ever grows by whole lines.

Locking: one lock serialises appends (the size is read and the line written under
it, so lines of two vCPU threads never interleave); the fs lock is taken inside the
RamFs and File calls, after it. The console is called outside it.
"""

from __future__ import annotations

from collections.abc import Callable

from copra.abi.spec import LOG_FILE_MAX, LOG_FILE_PATH
from copra.kernel import lockdep
from copra.kernel.errors import SyscallError
from copra.kernel.paths import split_file_path
from copra.kernel.ramfs import RamFs


class LogFile:
    """A console that also appends each line to the RAM fs's log file."""

    def __init__(self, fs: RamFs, console: Callable[[str], None], *,
                 path: str = LOG_FILE_PATH, limit: int = LOG_FILE_MAX) -> None:
        """Create the empty file, and its directory if missing (SyscallError EEXIST
        if the file exists already, ENOTDIR if a file is in the way)."""
        self.fs = fs
        self.path = path
        self.limit = limit
        self.dropped = 0
        self._console = console
        self._lock = lockdep.lock("logfile")
        self._full = False
        parent = "/".join(split_file_path(path)[:-1])
        try:
            fs.lookup_dir(parent)
        except SyscallError:
            fs.mkdir(parent)
        fs.create(path)

    def __call__(self, line: str) -> None:
        self._console(line)
        data = line.encode("utf-8", errors="replace") + b"\n"
        with self._lock:
            appended = self._append(data)
            note = not appended and not self._full
            self._full = not appended
        if note:
            self._console(f"[kernel] {self.path} takes no more lines (limit {self.limit} "
                          "bytes, or the RAM fs is full); later lines reach the console only")

    def _append(self, data: bytes) -> bool:
        try:
            file = self.fs.open(self.path)
        except SyscallError:
            return True  # nothing (or a directory) at the path: console only, as upstream
        size = file.size
        if size + len(data) > self.limit:
            self.dropped += 1
            return False
        try:
            file.write(size, data)
        except SyscallError:  # ENOMEM: the RAM fs has no page left
            self.dropped += 1
            return False
        return True
