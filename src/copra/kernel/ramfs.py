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
- ``metadata.in_use`` is the sum of the charges of the fs's live names
  (``DirListEntry``), directories, files and snapshots (and of the open directories
  charged to it): each is charged, in estimated host bytes (the ``*_BYTES`` constants
  below), before it exists, and its death releases the charge. ``metadata.limit``, if
  set, bounds it: a create, mkdir, OPENDIR or populate that would pass it is ENOMEM
  and changes nothing. A removed name still listed by a snapshot, or a file still
  open, stays charged until its last holder goes.

Locking: one lock (class "ramfs") per RamFs guards the whole tree and the contents of
every file in it; every public method takes it for its whole duration, so each
operation is atomic with respect to the others. ``File``'s own methods take the same
lock. The page counter has a leaf lock of its own (it is also updated from a
finaliser when an unlinked file dies, which may happen while the fs lock is held).
The store is called with the fs lock held, or from that finaliser; a frame store takes
the frame allocator's lock, which is a leaf: the order is fs lock, then frame
allocator lock. The metadata budget's lock is another leaf (re-entrant, since the
finalisers that release charges, ``__del__`` of files, directories, entries and
snapshots, may run inside any allocation). Callers may hold their own locks (an open
handle's) while calling in, never the reverse: nothing here calls out of the kernel's
memory layer while holding the fs lock.

Not supported: growing a file by truncate (upstream cannot either); huge pages.
"""

from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeAlias

from copra.abi.spec import PAGE_SIZE, Errno, FileType
from copra.kernel import lockdep
from copra.kernel.budget import MetadataBudget
from copra.kernel.errors import SyscallError
from copra.kernel.frames import FrameAllocator, FrameOwner, OutOfMemory
from copra.kernel.packit import decode
from copra.kernel.paths import split_file_path, split_path


def _display(components: tuple[str, ...]) -> str:
    return "/" + "/".join(components)


# -- metadata charges -------------------------------------------------------------------
# Estimated host bytes of each kind of fs object, charged to the fs's MetadataBudget
# when the object is created and released when it dies. Measured with tracemalloc on
# CPython 3.11 (docs/ramfs.md, "Metadata budget"; tests/unit/test_metadata_budget.py
# holds each within a band of the measurement).

#: A name's entry (``DirListEntry``, 56 bytes) and its share of the parent's list and
#: index (a list slot, a dict entry, the index int: about 66 bytes amortised),
#: without the name string, whose ``sys.getsizeof`` is added. Measured: 122.
ENTRY_BYTES = 128
#: A ``Directory`` node with its empty list and index (entries are charged apiece).
#: Measured: 209.
DIRECTORY_BYTES = 208
#: A ``File`` node and its empty page list (pages are guest frames, not charged here).
#: Measured: 129.
FILE_BYTES = 128
#: A ``Snapshot``: the object, its tuple's header and the directory's weak reference
#: to it. Measured: 113.
SNAPSHOT_BYTES = 120
#: Each entry of a snapshot: one tuple slot (the entry objects are shared). Measured: 8.6.
SNAPSHOT_ENTRY_BYTES = 8
#: A directory's index is rebuilt when its names fall below half the most it held
#: since the last rebuild (and that was at least this many), so that the host memory
#: of removed names' index slots (about 27 bytes each) goes back too.
COMPACT_FROM = 64


def entry_bytes(name: str) -> int:
    """The charge for one name in a directory."""
    return ENTRY_BYTES + sys.getsizeof(name)


def snapshot_bytes(entries: int) -> int:
    """The charge for a snapshot of ``entries`` entries."""
    return SNAPSHOT_BYTES + SNAPSHOT_ENTRY_BYTES * entries


class _Prepaid:
    """Bytes charged in one step for objects about to be created; each object takes its
    part as it is constructed (from then on its death releases it), and whatever no
    object took goes back when the block ends, so an exception halfway (a host
    ``MemoryError``) leaves the budget exact."""

    def __init__(self, budget: MetadataBudget, nbytes: int, what: str) -> None:
        budget.charge(nbytes, what)
        self._budget = budget
        self.left = nbytes

    def take(self, nbytes: int) -> None:
        self.left -= nbytes

    def __enter__(self) -> _Prepaid:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.left:
            self._budget.release(self.left)
            self.left = 0


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
        self._lock = lockdep.lock("ramfs.pages")
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

    __slots__ = ("__weakref__", "_budget", "_lock", "_pages", "_pool", "_size", "_version")

    def __init__(self, lock: lockdep.KernelLock, pool: _PagePool, budget: MetadataBudget) -> None:
        """The caller has charged ``FILE_BYTES`` to ``budget``; the file's death releases
        them and gives its pages back (``__del__``)."""
        self._lock = lock
        self._pool = pool
        self._pages: list[Page] = []
        self._size = 0
        self._version = 0  # bumped by every change of the contents
        self._budget = budget  # last: only a fully built file releases anything

    def __del__(self) -> None:
        budget = getattr(self, "_budget", None)
        if budget is not None:
            try:
                self._pool.give(self._pages)
            finally:
                budget.release(FILE_BYTES)

    @property
    def size(self) -> int:
        with self._lock:
            return self._size

    @property
    def page_count(self) -> int:
        with self._lock:
            return len(self._pages)

    @property
    def version(self) -> int:
        """Changes whenever the contents do (a write or truncate): what was derived from
        the contents at one version (a prepared program, kernel/loader.py) holds while
        the version is the same."""
        with self._lock:
            return self._version

    def read_all(self) -> tuple[int, bytes]:
        """(``version``, the whole contents), taken together."""
        with self._lock:
            return self._version, self._read_locked(0, self._size)

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
        self._version += 1
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
        self._version += 1
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
    """A directory node: entries in insertion order. Mutated only under the fs lock.

    Charged ``DIRECTORY_BYTES`` by whoever creates it; its death releases them. It
    remembers the last snapshot taken of it (weakly) until it changes, so OPENDIRs of
    an unchanged directory share one.
    """

    __slots__ = ("_budget", "_entries", "_high", "_index", "_lock", "_removed", "_shared")
    file_type: ClassVar[FileType] = FileType.DIRECTORY

    def __init__(self, lock: lockdep.KernelLock, budget: MetadataBudget) -> None:
        self._lock = lock
        self._entries: list[DirListEntry] = []
        self._index: dict[str, int] = {}
        self._high = 0  # the most entries since the index was last rebuilt
        self._removed = False
        self._shared: weakref.ref[Snapshot] | None = None
        self._budget = budget  # last: only a fully built directory releases a charge

    def __del__(self) -> None:
        budget = getattr(self, "_budget", None)
        if budget is not None:
            budget.release(DIRECTORY_BYTES)

    @property
    def removed(self) -> bool:
        """True once rmdir detached it (a task may still have it as its root)."""
        return self._removed

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, name: str) -> Node | None:
        index = self._index.get(name)
        return None if index is None else self._entries[index].node

    def _add(self, entry: DirListEntry) -> None:
        self._entries.append(entry)
        try:
            self._index[entry.name] = len(self._entries) - 1
        except BaseException:  # a host MemoryError: leave the directory as it was
            self._entries.pop()
            raise
        self._high = max(self._high, len(self._entries))
        self._shared = None

    def _remove(self, name: str) -> None:
        index = self._index.pop(name)
        last = self._entries.pop()
        if index != len(self._entries):
            self._entries[index] = last
            self._index[last.name] = index
        self._shared = None
        if self._high >= COMPACT_FROM and 2 * len(self._entries) < self._high:
            # A dict never shrinks on deletion; a copy is sized for what is left.
            self._index = dict(self._index)
            self._high = len(self._entries)

    def _share(self, what: str) -> Snapshot:
        """The snapshot of the directory as it is now: the last one if nothing changed
        since and it is still alive, else a new one (charged; ENOMEM when it does not fit)."""
        shared = None if self._shared is None else self._shared()
        if shared is not None:
            return shared
        count = len(self._entries)
        with _Prepaid(self._budget, snapshot_bytes(count), what) as prepaid:
            snapshot = Snapshot(tuple(self._entries), self._budget)
            prepaid.take(snapshot_bytes(count))
        self._shared = weakref.ref(snapshot)
        return snapshot


Node: TypeAlias = File | Directory


class DirListEntry:
    """One name of a directory and the node it names; never changed after creation.

    Charged ``entry_bytes(name)`` by whoever creates it; its death releases them: when
    its name is removed and no snapshot holds it any more.
    """

    __slots__ = ("_budget", "name", "node")
    name: str
    node: Node

    def __init__(self, name: str, node: Node, budget: MetadataBudget) -> None:
        self.name = name
        self.node = node
        self._budget = budget

    def __del__(self) -> None:
        self._budget.release(entry_bytes(self.name))  # slot stores cannot fail halfway

    def __repr__(self) -> str:
        return f"DirListEntry({self.name!r}, {type(self.node).__name__})"


class Snapshot:
    """The entries of a directory at one moment (OPENDIR's snapshot), never changed.

    Charged ``snapshot_bytes(len(entries))`` when taken; its death releases them. The
    entries are the directory's own objects, shared, so a removed name a snapshot still
    lists stays charged (and alive) until the last snapshot holding it dies.
    """

    __slots__ = ("__weakref__", "_budget", "entries")

    def __init__(self, entries: tuple[DirListEntry, ...], budget: MetadataBudget) -> None:
        self.entries = entries
        self._budget = budget

    def __del__(self) -> None:
        self._budget.release(snapshot_bytes(len(self.entries)))  # as for DirListEntry

    def __len__(self) -> int:
        return len(self.entries)


class RamFs:
    """One RAM file system. All methods are atomic (one lock per fs).

    ``store`` supplies the file pages: host memory by default, guest frames with a
    :class:`FramePageStore` (what the booted kernel uses). ``metadata_limit`` bounds
    the host bytes of its names, nodes and snapshots (:attr:`metadata`; None: no
    bound); the root directory is charged too, so the limit must leave room for it.
    """

    def __init__(self, *, max_pages: int | None = None, store: PageStore | None = None,
                 metadata_limit: int | None = None) -> None:
        if max_pages is not None and max_pages < 0:
            raise ValueError(f"max_pages must be >= 0, not {max_pages}")
        if metadata_limit is not None and metadata_limit < DIRECTORY_BYTES:
            raise ValueError(f"metadata_limit {metadata_limit} leaves no room for the root "
                             f"directory ({DIRECTORY_BYTES} bytes)")
        self._lock = lockdep.lock("ramfs")
        self._pool = _PagePool(HostPageStore() if store is None else store, max_pages)
        self._budget = MetadataBudget(metadata_limit)
        with _Prepaid(self._budget, DIRECTORY_BYTES, "the root directory") as prepaid:
            self._root = Directory(self._lock, self._budget)
            prepaid.take(DIRECTORY_BYTES)

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
    def metadata(self) -> MetadataBudget:
        """The budget its names, nodes and snapshots are charged to."""
        return self._budget

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
        """The directory's entries, in its current order ("/" is the root), for the
        kernel's own short walks (sealing /persist): not charged, so not for OPENDIR."""
        components = split_path(path)
        with self._lock:
            return tuple(self._walk(self._start(root), components)._entries)

    def snapshot(self, path: str, *, root: Directory | None = None) -> Snapshot:
        """OPENDIR's snapshot of a directory ("/" is the root): charged to
        :attr:`metadata` (ENOMEM when it does not fit), shared with earlier snapshots
        of the directory if it has not changed since."""
        components = split_path(path)
        with self._lock:
            directory = self._walk(self._start(root), components)
            return directory._share(f"OPENDIR {_display(components)}")

    # -- mutations -------------------------------------------------------------

    def mkdir(self, path: str, *, root: Directory | None = None) -> Directory:
        """A new directory: EEXIST if the name exists, ENOTFOUND if the parent does not."""
        components = split_file_path(path)
        with self._lock:
            parent = self._walk(self._start(root), components[:-1])
            self._check_creatable(parent, components)
            name = components[-1]
            what = f"mkdir {_display(components)}"
            with _Prepaid(self._budget, DIRECTORY_BYTES + entry_bytes(name), what) as prepaid:
                return self._new_directory(parent, name, prepaid)

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
            metadata = self._populate_charge(start, [components for components, _ in entries])
            what = f"populate ({len(entries)} files)"
            with _Prepaid(self._budget, metadata, what) as prepaid:
                # All or none, and the last checks that can fail.
                pages = self._pool.take(sum(counts))
                taken = 0
                for (components, data), count in zip(entries, counts, strict=True):
                    parent = start
                    for depth, name in enumerate(components[:-1], start=1):
                        node = parent._get(name)
                        if node is None:
                            node = self._new_directory(parent, name, prepaid)
                        assert isinstance(node, Directory), _display(components[:depth])
                        parent = node
                    created = self._new_file(parent, components[-1], prepaid)
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
        name = components[-1]
        what = f"create {_display(components)}"
        with _Prepaid(self._budget, FILE_BYTES + entry_bytes(name), what) as prepaid:
            return self._new_file(parent, name, prepaid)

    def _new_directory(self, parent: Directory, name: str, prepaid: _Prepaid) -> Directory:
        """A new directory named ``name`` in ``parent``, paid from ``prepaid``."""
        directory = Directory(self._lock, self._budget)
        prepaid.take(DIRECTORY_BYTES)
        self._link(parent, name, directory, prepaid)
        return directory

    def _new_file(self, parent: Directory, name: str, prepaid: _Prepaid) -> File:
        """A new empty file named ``name`` in ``parent``, paid from ``prepaid``."""
        file = File(self._lock, self._pool, self._budget)
        prepaid.take(FILE_BYTES)
        self._link(parent, name, file, prepaid)
        return file

    def _link(self, parent: Directory, name: str, node: Node, prepaid: _Prepaid) -> None:
        entry = DirListEntry(name, node, self._budget)
        prepaid.take(entry_bytes(name))
        parent._add(entry)

    def _populate_charge(self, start: Directory, paths: list[tuple[str, ...]]) -> int:
        """The metadata charge of populating ``paths`` under ``start``: each file, and
        each directory on the way that does not exist yet (once). The paths have passed
        ``_check_populatable``."""
        new_dirs: set[tuple[str, ...]] = set()
        total = 0
        for components in paths:
            current: Directory | None = start
            for depth in range(1, len(components)):
                name = components[depth - 1]
                node = None if current is None else current._get(name)
                if isinstance(node, Directory):
                    current = node
                    continue
                current = None  # created by this populate, from here down
                if components[:depth] not in new_dirs:
                    new_dirs.add(components[:depth])
                    total += DIRECTORY_BYTES + entry_bytes(name)
            total += FILE_BYTES + entry_bytes(components[-1])
        return total

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
