"""An open file: one handle's window on a RAM fs file, with its own position and access.

Semantics are upstream's (``kernel/src/fs/filesystem.rs`` ``FileHandle``,
``kernel/src/syscall/class1.rs``); docs/ramfs.md lists where copra differs.

- OPEN opens the file with the requested READ/WRITE access; with CREATE it creates
  a missing file instead, and a created handle is always read+write whatever was
  asked (upstream). TRUNC then empties the file (ERDONLY without write access);
  APPEND moves the position to EOF once, at open (not O_APPEND). Access 0 is allowed
  and yields a handle that can neither read nor write.
- READ and WRITE start at the handle's position and advance it; a read at or past
  EOF returns nothing; a write past EOF (possible after another handle truncated
  the file) leaves a zero-filled gap.
- SEEK never moves past EOF: ABSOLUTE ``min(off, size)``; RELATIVE
  ``clamp(pos + (i64)off, 0, size)``; END ``max(size - off, 0)``, so a positive
  offset moves back from EOF. The offset is the raw 64-bit register value.
- TRUNCATE can only shrink (EINVAL to grow) and pulls this handle's position back to
  the new size if it was beyond it.

Invariants: ``access`` holds only READ and WRITE and never changes; the position is
only moved by this handle's own operations (so it may exceed the size after another
handle truncated the file).

Rights: READ access guards ``read`` (EWRONLY without it); WRITE access guards
``write`` and ``truncate`` (ERDONLY without it). ``seek`` and ``size`` need none.

Locking: one lock per open file serialises its operations (threads of a process share
the handle). Order: this lock, then the fs lock inside ``File``. ``read``'s
``copy_out`` callback runs with this lock held and the fs lock released; it must not
use this handle.
"""

from __future__ import annotations

from collections.abc import Callable

from copra.abi.spec import Errno, FileFlag, FileMode, SeekMode
from copra.kernel import lockdep
from copra.kernel.errors import SyscallError
from copra.kernel.objects import KernelObject, ObjectKind
from copra.kernel.ramfs import Directory, File, RamFs

_U64 = (1 << 64) - 1
_ACCESS = FileMode.READ | FileMode.WRITE
_ALL_MODES = FileMode.READ | FileMode.WRITE | FileMode.APPEND | FileMode.TRUNC
_NO_FLAGS = FileFlag(0)


def decode_file_mode(raw: int) -> FileMode:
    """OPEN's mode argument: EINVAL for bits outside READ|WRITE|APPEND|TRUNC."""
    if raw < 0 or raw & ~int(_ALL_MODES):
        raise SyscallError(Errno.EINVAL, f"unknown file mode bits in {raw:#x}")
    return FileMode(raw)


def decode_file_flags(raw: int) -> FileFlag:
    """OPEN's flags argument: EINVAL for bits other than CREATE."""
    if raw < 0 or raw & ~int(FileFlag.CREATE):
        raise SyscallError(Errno.EINVAL, f"unknown open flag bits in {raw:#x}")
    return FileFlag(raw)


def decode_seek_mode(raw: int) -> SeekMode:
    """SEEK's mode argument: EINVAL for anything but ABSOLUTE, RELATIVE, END."""
    try:
        return SeekMode(raw)
    except ValueError:
        raise SyscallError(Errno.EINVAL, f"unknown seek mode {raw}") from None


class OpenFile(KernelObject):
    """A handle's open file: position, access and the shared ``File``."""

    kind = ObjectKind.FILE

    def __init__(self, file: File, access: FileMode) -> None:
        super().__init__()
        self.file = file
        self.access = FileMode(access & _ACCESS)
        self._lock = lockdep.lock("file")
        self._position = 0

    @classmethod
    def open(
        cls,
        fs: RamFs,
        path: str,
        mode: FileMode,
        flags: FileFlag = _NO_FLAGS,
        *,
        root: Directory | None = None,
    ) -> OpenFile:
        """OPEN: look up (or create) ``path`` and apply TRUNC and APPEND."""
        mode = decode_file_mode(int(mode))
        flags = decode_file_flags(int(flags))
        if FileFlag.CREATE in flags:
            file, created = fs.open_or_create(path, root=root)
        else:
            file, created = fs.open(path, root=root), False
        access = _ACCESS if created else mode & _ACCESS
        if FileMode.TRUNC in mode:
            if FileMode.WRITE not in access:
                raise SyscallError(Errno.ERDONLY, f"open {path}: TRUNC needs WRITE access")
            file.truncate(0)
        handle = cls(file, FileMode(access))
        if FileMode.APPEND in mode:
            handle._position = file.size
        return handle

    @property
    def readable(self) -> bool:
        return FileMode.READ in self.access

    @property
    def writable(self) -> bool:
        return FileMode.WRITE in self.access

    @property
    def position(self) -> int:
        with self._lock:
            return self._position

    @property
    def size(self) -> int:
        return self.file.size

    def read(self, length: int, copy_out: Callable[[bytes], None] | None = None) -> bytes:
        """READ: up to ``length`` bytes from the position.

        ``copy_out`` (the user copy) runs before the position moves: if it raises
        (EFAULT), the position is unchanged and the error propagates.
        """
        if not self.readable:
            raise SyscallError(Errno.EWRONLY, "read on a handle opened without READ")
        with self._lock:
            data = self.file.read(self._position, length)
            if copy_out is not None:
                copy_out(data)
            self._position += len(data)
            return data

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """WRITE: ``data`` at the position; returns the byte count written."""
        if not self.writable:
            raise SyscallError(Errno.ERDONLY, "write on a handle opened without WRITE")
        with self._lock:
            written = self.file.write(self._position, data)
            self._position += written
            return written

    def seek(self, offset: int, whence: SeekMode) -> int:
        """SEEK: returns the new position (see the module docstring for the rules)."""
        raw = offset & _U64
        with self._lock:
            size = self.file.size
            if whence == SeekMode.ABSOLUTE:
                position = min(raw, size)
            elif whence == SeekMode.RELATIVE:
                signed = raw - (1 << 64) if raw >> 63 else raw
                position = min(max(self._position + signed, 0), size)
            elif whence == SeekMode.END:
                position = max(size - raw, 0)
            else:  # pragma: no cover - SeekMode is closed
                raise SyscallError(Errno.EINVAL, f"unknown seek mode {whence!r}")
            self._position = position
            return position

    def truncate(self, length: int) -> int:
        """TRUNCATE: shrink the file to ``length``; returns the new size."""
        if not self.writable:
            raise SyscallError(Errno.ERDONLY, "truncate on a handle opened without WRITE")
        with self._lock:
            size = self.file.truncate(length)
            self._position = min(self._position, size)
            return size
