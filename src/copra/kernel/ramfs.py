"""The RAM file system: a tree of directories and page-backed files in host memory.

Semantics follow upstream's ramfs (``kernel/src/fs/ramfs.rs``, ``filesystem.rs``);
copra's deviations, each with upstream's behaviour beside it, are in docs/ramfs.md.

- Paths follow :mod:`copra.kernel.paths`: split on ``/``, empty components dropped,
  ``.`` and ``..`` ordinary names, every path relative to a root directory the caller
  chooses (a task's root; the fs root by default).
- A directory keeps its entries in insertion order; removing one swap-removes it
  (the last entry takes its place), as upstream's ``Vec::swap_remove``.
- A file is a list of 4 KiB pages (``bytearray``) plus a byte size. Read-only file
  mappings can share these pages: :meth:`RamFs.page` hands one out as a read-only
  view. Unlinking a file only removes its name; whoever still holds the ``File``
  (an open handle, a mapping) keeps using it.

Invariants:
- ``len(file pages) == ceil(size / PAGE_SIZE)``; every byte at or past ``size`` in the
  last page is zero (truncate zeroes the tail), so extending a file or mapping its
  last page never reveals stale data.
- A name appears at most once in a directory; every component is a valid name.
- A removed directory is empty, detached from the tree and refuses new entries.
- ``pages_in_use`` equals the pages held by every live ``File`` of this fs, linked or
  not: a file's pages are returned when it is truncated or when the last reference to
  an unlinked file goes away. ``max_pages``, if set, bounds it (ENOMEM beyond).

Locking: one ``threading.Lock`` per RamFs guards the whole tree and the contents of
every file in it; every public method takes it for its whole duration, so each
operation is atomic with respect to the others. ``File``'s own methods take the same
lock. The page counter has a leaf lock of its own (it is also updated from a
finaliser when an unlinked file dies, which may happen while the fs lock is held).
Callers may hold their own locks (an open handle's) while calling in, never the
reverse: nothing here calls out while holding the fs lock.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from copra.abi.spec import PAGE_SIZE, Errno, FileType
from copra.kernel.errors import SyscallError
from copra.kernel.packit import decode
from copra.kernel.paths import split_file_path, split_path


def _display(components: tuple[str, ...]) -> str:
    return "/" + "/".join(components)


class _PageCounter:
    """Pages held by one fs's files. Its lock is a leaf: nothing is called under it."""

    def __init__(self, limit: int | None) -> None:
        self._lock = threading.Lock()
        self._in_use = 0
        self.limit = limit

    @property
    def in_use(self) -> int:
        return self._in_use

    def available(self) -> int | None:
        with self._lock:
            return None if self.limit is None else self.limit - self._in_use

    def allocate(self, count: int) -> None:
        with self._lock:
            if self.limit is not None and self._in_use + count > self.limit:
                raise SyscallError(
                    Errno.ENOMEM,
                    f"RAM fs page limit: {self._in_use} of {self.limit} pages in use, "
                    f"{count} more requested",
                )
            self._in_use += count

    def release(self, count: int) -> None:
        with self._lock:
            self._in_use -= count


def _release_pages(counter: _PageCounter, pages: list[bytearray]) -> None:
    counter.release(len(pages))


class File:
    """A regular file's contents: pages and size. Methods take the owning fs's lock."""

    file_type: ClassVar[FileType] = FileType.FILE

    def __init__(self, lock: threading.Lock, counter: _PageCounter) -> None:
        self._lock = lock
        self._counter = counter
        # Mutated in place only: the finaliser below holds this very list.
        self._pages: list[bytearray] = []
        self._size = 0
        weakref.finalize(self, _release_pages, counter, self._pages)

    @property
    def size(self) -> int:
        with self._lock:
            return self._size

    @property
    def page_count(self) -> int:
        with self._lock:
            return len(self._pages)

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``; ``b""`` at or past EOF."""
        with self._lock:
            return self._read_locked(offset, length)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` at ``offset``, growing the file; a gap past EOF reads as zeros."""
        with self._lock:
            return self._write_locked(offset, memoryview(data).cast("B"))

    def truncate(self, size: int) -> int:
        """Shrink to ``size`` bytes (EINVAL if that would grow the file); returns it."""
        with self._lock:
            return self._truncate_locked(size)

    def page(self, index: int) -> memoryview:
        """A read-only view of page ``index`` (IndexError past the last page).

        The view aliases the file: later writes show through it, as they do through a
        shared read-only mapping. A page dropped by truncate keeps its old contents for
        whoever still holds a view of it, but is no longer counted as the fs's.
        """
        with self._lock:
            if not 0 <= index < len(self._pages):
                raise IndexError(f"page {index} of a file with {len(self._pages)} pages")
            return memoryview(self._pages[index]).toreadonly()

    def _read_locked(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset {offset} or length {length}")
        end = min(self._size, offset + length)
        if offset >= end:
            return b""
        out = bytearray()
        pos = offset
        while pos < end:
            index, start = divmod(pos, PAGE_SIZE)
            count = min(end - pos, PAGE_SIZE - start)
            out += self._pages[index][start : start + count]
            pos += count
        return bytes(out)

    def _write_locked(self, offset: int, data: memoryview) -> int:
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        total = len(data)
        if total == 0:
            return 0
        end = offset + total
        needed = -(-end // PAGE_SIZE) - len(self._pages)
        if needed > 0:
            self._counter.allocate(needed)
            self._pages.extend(bytearray(PAGE_SIZE) for _ in range(needed))
        pos = offset
        done = 0
        while done < total:
            index, start = divmod(pos, PAGE_SIZE)
            count = min(total - done, PAGE_SIZE - start)
            self._pages[index][start : start + count] = data[done : done + count]
            pos += count
            done += count
        self._size = max(self._size, end)
        return total

    def _truncate_locked(self, size: int) -> int:
        if size < 0 or size > self._size:
            raise SyscallError(
                Errno.EINVAL,
                f"truncate to {size} bytes: the file has {self._size}; it can only shrink",
            )
        keep = -(-size // PAGE_SIZE)
        dropped = len(self._pages) - keep
        if dropped:
            del self._pages[keep:]
            self._counter.release(dropped)
        tail = size % PAGE_SIZE
        if tail:
            self._pages[-1][tail:] = bytes(PAGE_SIZE - tail)
        self._size = size
        return size


class Directory:
    """A directory node: names in insertion order. Mutated only under the fs lock."""

    file_type: ClassVar[FileType] = FileType.DIRECTORY

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._names: list[str] = []
        self._nodes: list[Node] = []
        self._index: dict[str, int] = {}
        self._removed = False

    @property
    def removed(self) -> bool:
        """True once rmdir detached it (a task may still have it as its root)."""
        return self._removed

    def __len__(self) -> int:
        return len(self._names)

    def _get(self, name: str) -> Node | None:
        index = self._index.get(name)
        return None if index is None else self._nodes[index]

    def _add(self, name: str, node: Node) -> None:
        self._index[name] = len(self._names)
        self._names.append(name)
        self._nodes.append(node)

    def _remove(self, name: str) -> None:
        index = self._index.pop(name)
        last = len(self._names) - 1
        if index != last:
            self._names[index] = self._names[last]
            self._nodes[index] = self._nodes[last]
            self._index[self._names[index]] = index
        self._names.pop()
        self._nodes.pop()

    def _listing(self) -> tuple[DirListEntry, ...]:
        pairs = zip(self._names, self._nodes, strict=True)
        return tuple(DirListEntry(name, node) for name, node in pairs)


Node: TypeAlias = File | Directory


@dataclass(frozen=True)
class DirListEntry:
    """One entry of a directory snapshot taken by :meth:`RamFs.opendir`."""

    name: str
    node: File | Directory


class RamFs:
    """One RAM file system. All methods are atomic (one lock per fs)."""

    def __init__(self, *, max_pages: int | None = None) -> None:
        if max_pages is not None and max_pages < 0:
            raise ValueError(f"max_pages must be >= 0, not {max_pages}")
        self._lock = threading.Lock()
        self._counter = _PageCounter(max_pages)
        self._root = Directory(self._lock)

    @property
    def root(self) -> Directory:
        return self._root

    @property
    def pages_in_use(self) -> int:
        """Pages held by this fs's files, unlinked but still referenced ones included."""
        return self._counter.in_use

    @property
    def max_pages(self) -> int | None:
        return self._counter.limit

    # -- lookups ---------------------------------------------------------------

    def lookup(self, path: str, *, root: Directory | None = None) -> Node:
        """The node ``path`` names; the root itself for "/" or ""."""
        components = split_path(path)
        with self._lock:
            start = self._start(root)
            if not components:
                return start
            parent = self._walk(start, components[:-1])
            return self._child(parent, components)

    def lookup_dir(self, path: str, *, root: Directory | None = None) -> Directory:
        """The directory ``path`` names (ENOTDIR for a file): EXEC's root argument."""
        components = split_path(path)
        with self._lock:
            return self._walk(self._start(root), components)

    def open(self, path: str, *, root: Directory | None = None) -> File:
        """The file ``path`` names: ENOTFOUND if missing, EISDIR for a directory."""
        components = split_file_path(path)
        with self._lock:
            parent = self._walk(self._start(root), components[:-1])
            return self._as_file(self._child(parent, components), components)

    def create(self, path: str, *, root: Directory | None = None) -> File:
        """A new empty file at ``path``: EEXIST if the name exists, ENOTFOUND without parent."""
        components = split_file_path(path)
        with self._lock:
            parent = self._walk(self._start(root), components[:-1])
            return self._create_file(parent, components)

    def open_or_create(self, path: str, *, root: Directory | None = None) -> tuple[File, bool]:
        """Open ``path``, creating it if missing, in one atomic step; ``(file, created)``."""
        components = split_file_path(path)
        with self._lock:
            parent = self._walk(self._start(root), components[:-1])
            node = parent._get(components[-1])
            if node is None:
                return self._create_file(parent, components), True
            return self._as_file(node, components), False

    def opendir(self, path: str, *, root: Directory | None = None) -> tuple[DirListEntry, ...]:
        """A snapshot of the directory's entries, in its current order ("/" is the root)."""
        components = split_path(path)
        with self._lock:
            return self._walk(self._start(root), components)._listing()

    # -- mutations -------------------------------------------------------------

    def mkdir(self, path: str, *, root: Directory | None = None) -> Directory:
        """A new directory: EEXIST if the name exists, ENOTFOUND if the parent does not."""
        components = split_file_path(path)
        with self._lock:
            parent = self._walk(self._start(root), components[:-1])
            self._check_creatable(parent, components)
            directory = Directory(self._lock)
            parent._add(components[-1], directory)
            return directory

    def rmdir(self, path: str, *, root: Directory | None = None) -> None:
        """Remove an empty directory: ENOTDIR for a file, ENOTEMPTY if it has entries."""
        components = split_file_path(path)
        with self._lock:
            parent = self._walk(self._start(root), components[:-1])
            node = self._child(parent, components)
            if isinstance(node, File):
                raise SyscallError(Errno.ENOTDIR, f"rmdir {_display(components)}: it is a file")
            if len(node):
                raise SyscallError(
                    Errno.ENOTEMPTY, f"rmdir {_display(components)}: {len(node)} entries left"
                )
            parent._remove(components[-1])
            node._removed = True

    def unlink(self, path: str, *, root: Directory | None = None) -> None:
        """Remove a file's name (EISDIR for a directory); open handles keep the file."""
        components = split_file_path(path)
        with self._lock:
            parent = self._walk(self._start(root), components[:-1])
            node = self._child(parent, components)
            if isinstance(node, Directory):
                raise SyscallError(
                    Errno.EISDIR, f"unlink {_display(components)}: it is a directory (use rmdir)"
                )
            parent._remove(components[-1])

    def page(self, file: File, index: int) -> memoryview:
        """Read-only view of page ``index`` of ``file``, for sharing with mappings."""
        self._check_owned(file)
        return file.page(index)

    def populate(
        self, archive: bytes | bytearray | memoryview, *, root: Directory | None = None
    ) -> int:
        """Unpack a PackIt archive; returns the number of files created.

        Missing directories are created; a file must not exist yet. The archive is
        decoded (PackItError), then checked against the tree and the page limit
        (SyscallError: ENOTDIR, EEXIST, ENOTFOUND, ENOMEM) before anything changes, so
        a failure leaves the fs as it was.
        """
        entries = [(split_file_path(e.path), e.data) for e in decode(archive)]
        with self._lock:
            start = self._start(root)
            for components, _ in entries:
                self._check_populatable(start, components)
            pages = sum(-(-len(data) // PAGE_SIZE) for _, data in entries)
            available = self._counter.available()
            if available is not None and pages > available:
                raise SyscallError(
                    Errno.ENOMEM, f"archive needs {pages} pages, the fs has {available} left"
                )
            for components, data in entries:
                parent = start
                for depth, name in enumerate(components[:-1], start=1):
                    node = parent._get(name)
                    if node is None:
                        node = Directory(self._lock)
                        parent._add(name, node)
                    assert isinstance(node, Directory), _display(components[:depth])
                    parent = node
                created = self._create_file(parent, components)
                created._write_locked(0, memoryview(data))
            return len(entries)

    # -- internals (fs lock held) ---------------------------------------------

    def _start(self, root: Directory | None) -> Directory:
        if root is None:
            return self._root
        if root._lock is not self._lock:
            raise ValueError("root directory belongs to another RamFs")
        return root

    def _check_owned(self, file: File) -> None:
        if file._lock is not self._lock:
            raise ValueError("file belongs to another RamFs")

    def _walk(self, start: Directory, components: tuple[str, ...]) -> Directory:
        current = start
        for depth in range(1, len(components) + 1):
            node = current._get(components[depth - 1])
            if node is None:
                raise SyscallError(Errno.ENOTFOUND, f"{_display(components[:depth])}: not found")
            if isinstance(node, File):
                raise SyscallError(
                    Errno.ENOTDIR, f"{_display(components[:depth])}: is a file, not a directory"
                )
            current = node
        return current

    @staticmethod
    def _child(parent: Directory, components: tuple[str, ...]) -> Node:
        node = parent._get(components[-1])
        if node is None:
            raise SyscallError(Errno.ENOTFOUND, f"{_display(components)}: not found")
        return node

    @staticmethod
    def _as_file(node: Node, components: tuple[str, ...]) -> File:
        if isinstance(node, Directory):
            raise SyscallError(Errno.EISDIR, f"{_display(components)}: is a directory")
        return node

    @staticmethod
    def _check_creatable(parent: Directory, components: tuple[str, ...]) -> None:
        if parent._removed:
            raise SyscallError(
                Errno.ENOTFOUND, f"{_display(components)}: the parent directory was removed"
            )
        if parent._get(components[-1]) is not None:
            raise SyscallError(Errno.EEXIST, f"{_display(components)}: already exists")

    def _create_file(self, parent: Directory, components: tuple[str, ...]) -> File:
        self._check_creatable(parent, components)
        file = File(self._lock, self._counter)
        parent._add(components[-1], file)
        return file

    def _check_populatable(self, start: Directory, components: tuple[str, ...]) -> None:
        current = start
        for depth in range(1, len(components)):
            node = current._get(components[depth - 1])
            if node is None:
                if current._removed:
                    self._check_creatable(current, components[:depth])
                return  # the rest of the path will be created fresh
            if isinstance(node, File):
                raise SyscallError(
                    Errno.ENOTDIR, f"{_display(components[:depth])}: is a file, not a directory"
                )
            current = node
        self._check_creatable(current, components)
