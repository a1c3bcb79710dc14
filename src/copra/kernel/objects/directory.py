"""An open directory: a snapshot of a RAM fs directory's entries and a read cursor.

OPENDIR takes the snapshot (names and the nodes they named, in the directory's order
at that moment); READDIR hands out up to ``count`` entries from the cursor and moves
it, and returns nothing once the snapshot is exhausted (upstream ``fs/obj.rs``).
Changes to the directory after OPENDIR do not show: removed entries are still
listed, new ones are not. A file's size is read from its node when READDIR runs
(upstream reads it then too); a directory's size is 0.

Host memory: the snapshot is a ``ramfs.Snapshot``, a tuple of the directory's own
entry objects, shared by every OPENDIR of the directory since its last change, and
charged to the fs's metadata budget; the open directory itself is charged
``OPEN_DIRECTORY_BYTES`` (measured with tracemalloc, docs/ramfs.md). OPENDIR answers
ENOMEM when either does not fit. CLOSE (or the process's exit) drops the snapshot,
whose charge goes back when no other open directory shares it; the object's own
charge goes back when it dies.

Each entry is encoded as the 272-byte ``DirEnt`` of :data:`copra.abi.spec.DIRENT`
(upstream's layout): a NUL-terminated UTF-8 name cut at a character boundary to at
most 255 bytes, the ``FileType`` byte, seven zero bytes, the u64 size.

Invariants: the snapshot never changes until CLOSE empties it;
``0 <= position <= len(snapshot)``.

Rights: none; any holder of the handle may read it.

Locking: one lock per open directory serialises READDIR (threads share handles).
Order: this lock, then the fs lock (taken inside ``File.size``). ``readdir``'s
``copy_out`` callback runs with this lock held and the fs lock released.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from copra.abi.spec import DIRENT, FileType, Struct
from copra.kernel import lockdep
from copra.kernel.budget import MetadataBudget
from copra.kernel.errors import SyscallError
from copra.kernel.objects import KernelObject, ObjectKind
from copra.kernel.ramfs import Directory, DirListEntry, File, RamFs, Snapshot

#: Estimated host bytes of one ``OpenDirectory`` (object, attributes, locks), charged
#: at OPENDIR and released when it dies (tracemalloc, CPython 3.11; docs/ramfs.md).
#: Measured: 322 to 369 bytes a handle, depending on how many are made.
OPEN_DIRECTORY_BYTES = 344

_CTYPE = re.compile(r"^(u8|u16|u32|u64|i64)(?:\[(\d+)\])?$")
_CTYPE_SIZES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "i64": 8}


def _field_span(struct_def: Struct, name: str) -> tuple[int, int]:
    """(offset, byte size) of one field of an ABI struct, from its declaration."""
    for field in struct_def.fields:
        if field.name == name:
            match = _CTYPE.match(field.ctype)
            if match is None:
                raise ValueError(f"{struct_def.name}.{name}: unsupported ctype {field.ctype!r}")
            count = int(match.group(2) or 1)
            return field.offset, _CTYPE_SIZES[match.group(1)] * count
    raise KeyError(f"{struct_def.name} has no field {name!r}")


DIRENT_SIZE = DIRENT.size
_NAME_OFFSET, _NAME_SIZE = _field_span(DIRENT, "name")
_TYPE_OFFSET, _TYPE_SIZE = _field_span(DIRENT, "file_type")
_SIZE_OFFSET, _SIZE_SIZE = _field_span(DIRENT, "size")
assert _TYPE_SIZE == 1 and _SIZE_SIZE == 8
_U64 = struct.Struct("<Q")


def _cut_utf8(raw: bytes, limit: int) -> bytes:
    """``raw`` cut to at most ``limit`` bytes without splitting a UTF-8 character."""
    if len(raw) <= limit:
        return raw
    end = limit
    while end > 0 and raw[end] & 0xC0 == 0x80:  # raw[end] would start a continuation
        end -= 1
    return raw[:end]


@dataclass(frozen=True)
class DirEnt:
    """One READDIR entry, as user mode receives it."""

    SIZE: ClassVar[int] = DIRENT_SIZE
    #: Longest name in bytes (the field keeps room for the NUL).
    NAME_MAX: ClassVar[int] = _NAME_SIZE - 1

    name: str
    file_type: FileType
    size: int

    def encode(self) -> bytes:
        out = bytearray(DIRENT_SIZE)
        name = _cut_utf8(self.name.encode("utf-8"), self.NAME_MAX)
        out[_NAME_OFFSET : _NAME_OFFSET + len(name)] = name
        out[_TYPE_OFFSET] = int(self.file_type)
        _U64.pack_into(out, _SIZE_OFFSET, self.size)
        return bytes(out)

    @classmethod
    def decode(cls, raw: bytes | bytearray | memoryview) -> DirEnt:
        """The inverse of :meth:`encode` (for tests and tools); ValueError if malformed."""
        data = bytes(raw)
        if len(data) != DIRENT_SIZE:
            raise ValueError(f"a DirEnt is {DIRENT_SIZE} bytes, not {len(data)}")
        name_field = data[_NAME_OFFSET : _NAME_OFFSET + _NAME_SIZE]
        nul = name_field.find(0)
        if nul < 0:
            raise ValueError("DirEnt name is not NUL-terminated")
        return cls(
            name=name_field[:nul].decode("utf-8"),
            file_type=FileType(data[_TYPE_OFFSET]),
            size=_U64.unpack_from(data, _SIZE_OFFSET)[0],
        )


def _dirent(entry: DirListEntry) -> DirEnt:
    node = entry.node
    size = node.size if isinstance(node, File) else 0
    return DirEnt(entry.name, node.file_type, size)


class OpenDirectory(KernelObject):
    """A handle's open directory: an immutable snapshot and a cursor."""

    kind = ObjectKind.DIRECTORY

    def __init__(self, snapshot: Snapshot, budget: MetadataBudget) -> None:
        """The caller has charged ``OPEN_DIRECTORY_BYTES`` to ``budget``; the object's
        death releases them."""
        super().__init__()
        self._snapshot: Snapshot | None = snapshot
        self._entries: tuple[DirListEntry, ...] = snapshot.entries
        self._lock = lockdep.lock("directory")
        self._position = 0
        self._budget = budget  # last: only a fully built object releases the charge

    def __del__(self) -> None:
        budget = getattr(self, "_budget", None)
        if budget is not None:
            budget.release(OPEN_DIRECTORY_BYTES)

    @classmethod
    def open(cls, fs: RamFs, path: str, *, root: Directory | None = None) -> OpenDirectory:
        """OPENDIR: ENOTFOUND if missing, ENOTDIR for a file, ENOMEM when the metadata
        budget has no room for the snapshot or the handle; "/" opens the root."""
        snapshot = fs.snapshot(path, root=root)
        budget = fs.metadata
        try:
            budget.charge(OPEN_DIRECTORY_BYTES, f"OPENDIR {path!r}")
        except SyscallError:
            del snapshot  # its charge goes back now, not when the traceback is dropped
            raise
        try:
            return cls(snapshot, budget)
        except BaseException:  # a host MemoryError before the object owned the charge
            budget.release(OPEN_DIRECTORY_BYTES)
            raise

    @property
    def position(self) -> int:
        with self._lock:
            return self._position

    def __len__(self) -> int:
        return len(self._entries)

    def on_close(self) -> None:
        """The last handle is gone: drop the snapshot (its charge goes back when no
        other open directory shares it)."""
        with self._lock:
            self._snapshot = None
            self._entries = ()
            self._position = 0

    def readdir(
        self, count: int, copy_out: Callable[[bytes], None] | None = None
    ) -> list[DirEnt]:
        """READDIR: up to ``count`` entries from the cursor; ``[]`` at the end.

        ``copy_out`` receives the encoded entries (``len * DIRENT_SIZE`` bytes) before
        the cursor moves: if it raises (EFAULT), the cursor is unchanged.
        """
        if count < 0:
            raise ValueError(f"negative count {count}")
        with self._lock:
            chosen = self._entries[self._position : self._position + count]
            entries = [_dirent(entry) for entry in chosen]
            if copy_out is not None:
                copy_out(b"".join(entry.encode() for entry in entries))
            self._position += len(entries)
            return entries
