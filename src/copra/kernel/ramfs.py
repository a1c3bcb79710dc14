"""The RAM file system: a tree of directories and page-backed files.

Semantics follow upstream's ramfs (``kernel/src/fs/ramfs.rs``, ``filesystem.rs``);
copra's deviations, each with upstream's behaviour beside it, are in docs/ramfs.md.

- Paths follow :mod:`copra.kernel.paths`: split on ``/``, empty components dropped,
  ``.`` and ``..`` ordinary names, every path relative to a root directory the caller
  chooses (a task's root; the fs root by default).
- A directory keeps its entries in insertion order; removing one swap-removes it
  (the last entry takes its place), as upstream's ``Vec::swap_remove``.
- A file is a list of 4 KiB pages plus a byte size. Pages come from the fs's
  :class:`PageStore`: :class:`HostPageStore` (host ``bytearray`` pages, the default, what
  unit tests use) or :class:`FramePageStore`, whose pages are guest frames of the SVSM
  (``FrameOwner.FILE``) so that a read-only file mapping can map them directly, as
  upstream shares a file's ``PageRef`` values. :meth:`File.frame` names a page's frame;
  :meth:`File.share_frame` also takes the mapping's reference on it. Unlinking a file
  only removes its name; whoever still holds the ``File`` (an open handle) keeps
  using it.

Invariants:
- ``len(file pages) == ceil(size / PAGE_SIZE)``; every byte at or past ``size`` in the
  last page is zero (pages are zero-filled when allocated, truncate zeroes the tail),
  so extending a file or mapping its last page never reveals stale data.
- A name appears at most once in a directory; every component is a valid name.
- A removed directory is empty, detached from the tree and refuses new entries.
- ``pages_in_use`` equals the pages held by every live ``File`` of this fs, linked or
  not: a file's pages are released to the store when it is truncated or when the last
  reference to an unlinked file goes away. ``max_pages``, if set, bounds it (ENOMEM
  beyond); so does the frame pool of a frame-backed fs.
- A page the fs releases is no longer the fs's: a frame-backed page drops the fs's
  reference to its frame (``FrameAllocator.free``), and the frame goes back to the
  pool only when no mapping still references it, so a mapping never sees its frame
  reused for something else. It keeps the contents the page had when it was dropped.
- A write or populate that fails (ENOMEM) changes nothing: every page it needs is
  taken, all or none, before anything is modified.

Locking: one ``threading.Lock`` per RamFs guards the whole tree and the contents of
every file in it; every public method takes it for its whole duration, so each
operation is atomic with respect to the others. ``File``'s own methods take the same
lock. The page counter has a leaf lock of its own (it is also updated from a
finaliser when an unlinked file dies, which may happen while the fs lock is held).
The store is called with the fs lock held, or from that finaliser; a frame store takes
the frame allocator's lock, which is a leaf: the order is fs lock, then frame
allocator lock. Callers may hold their own locks (an open handle's) while calling in,
never the reverse: nothing here calls out of the kernel's memory layer while holding
the fs lock.

Not supported: growing a file by truncate (upstream cannot either); huge pages.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeAlias

from copra.abi.spec import PAGE_SIZE, Errno, FileType
from copra.kernel.errors import SyscallError
from copra.kernel.frames import FrameAllocator, FrameOwner, OutOfMemory
from copra.kernel.packit import decode
from copra.kernel.paths import split_file_path, split_path


def _display(components: tuple[str, ...]) -> str:
    return "/" + "/".join(components)


# -- page stores ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Page:
    """One file page: ``PAGE_SIZE`` writable bytes, and where they live."""

    view: memoryview
    frame: int | None  #: guest-physical address of the page's frame; None in host memory


class PageStore(Protocol):
    """Where a RamFs's file pages come from and go back to."""

    def alloc(self) -> Page:
        """A zero-filled page; ``SyscallError(ENOMEM)`` when the store is exhausted."""
        ...

    def release(self, page: Page) -> None:
        """Give back a page the fs no longer holds. Called once per allocated page."""
        ...


class HostPageStore:
    """Pages in host memory (``bytearray``): no frame, reclaimed by the garbage collector."""

    def alloc(self) -> Page:
        return Page(memoryview(bytearray(PAGE_SIZE)), None)

    def release(self, page: Page) -> None:
        if page.frame is not None:
            raise ValueError(f"release of frame {page.frame:#x} to the host page store")


class FramePageStore:
    """Pages in guest frames of ``frames`` (``FrameOwner.FILE``).

    ``release`` drops the fs's reference with ``frames.free``; a frame a mapping has
    ``share``d stays allocated, with the contents it had, until the mapping's ``free``.
    """

    def __init__(self, frames: FrameAllocator) -> None:
        self.frames = frames

    def alloc(self) -> Page:
        try:
            pa = self.frames.alloc(FrameOwner.FILE)
        except OutOfMemory as e:
            raise SyscallError(Errno.ENOMEM, f"RAM fs page: {e}") from e
        memory = self.frames.memory
        offset = pa - memory.base
        return Page(memory.view[offset : offset + PAGE_SIZE], pa)

    def release(self, page: Page) -> None:
        if page.frame is None:
            raise ValueError("release of a host page to a frame page store")
        self.frames.free(page.frame)


class _PagePool:
    """A store plus the fs's page count. The count's lock is a leaf: nothing runs under it."""

    def __init__(self, store: PageStore, limit: int | None) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._in_use = 0
        self.limit = limit

    @property
    def in_use(self) -> int:
        return self._in_use

    def available(self) -> int | None:
        with self._lock:
            return None if self.limit is None else self.limit - self._in_use

    def take(self, count: int) -> list[Page]:
        """``count`` new pages, all or none (ENOMEM from the limit or the store)."""
        with self._lock:
            if self.limit is not None and self._in_use + count > self.limit:
                raise SyscallError(
                    Errno.ENOMEM,
                    f"RAM fs page limit: {self._in_use} of {self.limit} pages in use, "
                    f"{count} more requested",
                )
            self._in_use += count
        pages: list[Page] = []
        try:
            for _ in range(count):
                pages.append(self.store.alloc())
        except BaseException:
            with self._lock:
                self._in_use -= count - len(pages)
            self.give(pages)
            raise
        return pages

    def give(self, pages: list[Page]) -> None:
        """Release ``pages`` to the store; they are no longer counted."""
        try:
            for page in pages:
                self.store.release(page)
        finally:
            with self._lock:
                self._in_use -= len(pages)


class File:
    """A regular file's contents: pages and size. Methods take the owning fs's lock."""

    file_type: ClassVar[FileType] = FileType.FILE

    def __init__(self, lock: threading.Lock, pool: _PagePool) -> None:
        self._lock = lock
        self._pool = pool
        # Mutated in place only: the finaliser below holds this very list.
        self._pages: list[Page] = []
        self._size = 0
        weakref.finalize(self, pool.give, self._pages)

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
        shared read-only mapping. Once truncate or unlink drops the page, a host page
        keeps its old contents for whoever holds the view, but a frame-backed page's
        frame may be reused: hold a reference (:meth:`share_frame`) to keep it.
        """
        with self._lock:
            return memoryview(self._page_locked(index).view).toreadonly()

    def frame(self, index: int) -> int:
        """The guest-physical address of page ``index``'s frame.

        IndexError past the last page; ValueError if the fs keeps its pages in host
        memory (no ``FramePageStore``). The address is the file's page only while the
        file holds it: to map it, use :meth:`share_frame`.
        """
        with self._lock:
            return self._frame_locked(index)

    def share_frame(self, index: int) -> int:
        """:meth:`frame`, with a new reference on the frame (``FrameAllocator.share``).

        Looking the frame up and taking the reference happen under the fs lock, so a
        concurrent truncate or unlink cannot return the frame to the pool in between.
        The caller (a read-only mapping) owns the reference and drops it with
        ``FrameAllocator.free``; until then the frame is never reused.
        """
        with self._lock:
            pa = self._frame_locked(index)
            store = self._pool.store
            if not isinstance(store, FramePageStore):
                raise ValueError(f"page {index} has a frame but the store is {store!r}")
            store.frames.share(pa)
            return pa

    def _page_locked(self, index: int) -> Page:
        if not 0 <= index < len(self._pages):
            raise IndexError(f"page {index} of a file with {len(self._pages)} pages")
        return self._pages[index]

    def _frame_locked(self, index: int) -> int:
        frame = self._page_locked(index).frame
        if frame is None:
            raise ValueError(
                f"page {index} is in host memory, not a guest frame: "
                "the RamFs has no FramePageStore"
            )
        return frame

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
            out += self._pages[index].view[start : start + count]
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
            self._pages.extend(self._pool.take(needed))
        pos = offset
        done = 0
        while done < total:
            index, start = divmod(pos, PAGE_SIZE)
            count = min(total - done, PAGE_SIZE - start)
            self._pages[index].view[start : start + count] = data[done : done + count]
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
        dropped = self._pages[keep:]
        del self._pages[keep:]
        tail = size % PAGE_SIZE
        if tail:
            self._pages[-1].view[tail:] = bytes(PAGE_SIZE - tail)
        self._size = size
        if dropped:
            self._pool.give(dropped)
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
    """One RAM file system. All methods are atomic (one lock per fs).

    ``store`` supplies the file pages: host memory by default, guest frames with a
    :class:`FramePageStore` (what the booted kernel uses).
    """

    def __init__(self, *, max_pages: int | None = None, store: PageStore | None = None) -> None:
        if max_pages is not None and max_pages < 0:
            raise ValueError(f"max_pages must be >= 0, not {max_pages}")
        self._lock = threading.Lock()
        self._pool = _PagePool(HostPageStore() if store is None else store, max_pages)
        self._root = Directory(self._lock)

    @property
    def root(self) -> Directory:
        return self._root

    @property
    def pages_in_use(self) -> int:
        """Pages held by this fs's files, unlinked but still referenced ones included."""
        return self._pool.in_use

    @property
    def max_pages(self) -> int | None:
        return self._pool.limit

    @property
    def store(self) -> PageStore:
        return self._pool.store

    @property
    def frame_backed(self) -> bool:
        """True if file pages are guest frames (:meth:`File.frame` works)."""
        return isinstance(self._pool.store, FramePageStore)

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
            counts = [-(-len(data) // PAGE_SIZE) for _, data in entries]
            available = self._pool.available()
            if available is not None and sum(counts) > available:
                raise SyscallError(
                    Errno.ENOMEM, f"archive needs {sum(counts)} pages, the fs has {available} left"
                )
            pages = self._pool.take(sum(counts))  # all or none: the last check that can fail
            taken = 0
            for (components, data), count in zip(entries, counts, strict=True):
                parent = start
                for depth, name in enumerate(components[:-1], start=1):
                    node = parent._get(name)
                    if node is None:
                        node = Directory(self._lock)
                        parent._add(name, node)
                    assert isinstance(node, Directory), _display(components[:depth])
                    parent = node
                created = self._create_file(parent, components)
                created._pages.extend(pages[taken : taken + count])
                taken += count
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
        file = File(self._lock, self._pool)
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
