"""Loading an ELF image into a new process's address space.

The file is parsed and validated by kernel/elf.py first (ET_EXEC only, segments in
the user range, no overlap); here each PT_LOAD segment becomes one region of private
frames with the segment's permissions (W and X from p_flags; every segment is
readable), its file bytes copied in and the rest (bss, the page tails) left zero, as
every frame comes zeroed from the allocator. Upstream shares read-only pages with the
RAM fs; copra copies them (sharing comes with file mappings).

Everything EXEC derives from the file is computed once (:func:`prepare`) into a
:class:`PreparedImage`: the entry point, the FS base, and one :class:`RegionPlan` per
region of the new address space (each segment, the TLS region, the stack), with the
full contents of every page that is not all zero. :func:`load` then maps them with
one frame allocation and one page-table walk per page table
(``Process.map_image``). :class:`ImageCache` keeps prepared images by RAM-fs file, so
a program started again is neither read, parsed nor laid out again; an entry is used
only while the file's ``version`` (bumped by every write and truncate) is the one it
was prepared from.

Thread-local storage (:func:`tls_layout`): the first thread gets a TLS block and thread
control block in a region of their own (RegionKind.TLS, read-write) on the pages
directly above the image's last segment, laid out as the x86-64 psABI's variant II:

    [block_start, tp)          the PT_TLS template: .tdata copied, .tbss zero
    [tp, tp + TLS_TCB_SIZE)    the TCB: word 0 = tp (%fs:0), word 1 = TLS_TCB_MAGIC

with ``tp - block_start = align_up(memsz, align)`` (where the linker's local-exec
offsets put the variables) and ``tp`` aligned to ``max(align, 16)``. An image without
PT_TLS gets the TCB alone, so every first thread starts with a valid FS base. Further
threads get theirs from the user library (THREAD_CREATE's FS base), which reads the
template from its own program headers: the kernel reports nothing else.

Invariants: the TLS region lies in [USER_START, USER_MAP_END) and meets no segment
(it starts at the image's page-aligned end); a prepared image's plans are pairwise
disjoint, in address order, and its page contents are immutable bytes copied out of
the file (a later write to the file cannot reach a prepared image, and a prepared
image holds no guest frame: every process gets private frames, as before).

Locking: :func:`prepare` and :func:`load` run before the process is visible to anyone
and need no locking beyond ``Process.map_image``'s. :class:`ImageCache` is used under
``Kernel.tasks_lock`` (EXEC's spawn), which serialises it.
"""

from __future__ import annotations

import struct
import weakref
from dataclasses import dataclass

from copra.abi.spec import (
    PAGE_SIZE,
    TLS_TCB_MAGIC,
    TLS_TCB_SIZE,
    USER_STACK_SIZE,
    USER_STACK_TOP,
)
from copra.kernel.elf import LOAD_END, ElfError, ElfImage, parse_elf
from copra.kernel.process import Process, RegionKind, RegionPlan
from copra.kernel.ramfs import File

_ZERO_PAGE = bytes(PAGE_SIZE)


@dataclass(frozen=True, eq=False)
class PreparedImage:
    """What EXEC maps for one image file: ``plans`` (segments, TLS region, stack, in
    address order), the first thread's ``entry`` and ``fs_base``; ``has_wx`` as
    :attr:`ElfImage.has_wx`; ``nbytes`` the page contents it holds."""

    entry: int
    fs_base: int
    plans: tuple[RegionPlan, ...]
    has_wx: bool
    nbytes: int


def _pages_of(offset: int, data: memoryview) -> tuple[tuple[int, bytes], ...]:
    """(index, contents) of each page, counted from the region's start, that is not
    all zero once ``data`` lies at byte ``offset`` (only the pages ``data`` touches:
    the host copy never exceeds the file's bytes by more than two pages)."""
    first = offset // PAGE_SIZE
    end = -(-(offset + len(data)) // PAGE_SIZE)
    buffer = bytearray((end - first) * PAGE_SIZE)
    at = offset - first * PAGE_SIZE
    buffer[at : at + len(data)] = data
    pages = []
    for index in range(end - first):
        page = bytes(buffer[index * PAGE_SIZE : (index + 1) * PAGE_SIZE])
        if page != _ZERO_PAGE:
            pages.append((first + index, page))
    return tuple(pages)


def prepare(image: bytes | bytearray | memoryview) -> PreparedImage:
    """Parse, validate and lay out ``image``; raises ElfError as :func:`parse_elf` does,
    and when the TLS region would not fit below the stack."""
    elf = parse_elf(image)
    plans = []
    for seg in elf.segments:
        start, end = seg.page_start, seg.page_end
        pages = (end - start) // PAGE_SIZE
        plans.append(RegionPlan(start, pages, seg.writable, seg.executable, RegionKind.IMAGE,
                                _pages_of(seg.vaddr - start, seg.data)))
    start = elf.end
    tp, block, pages = tls_layout(elf, start)
    if start + pages * PAGE_SIZE > LOAD_END:
        raise ElfError(f"no room for the TLS block above the image (ends at {start:#x})")
    tls = bytearray(pages * PAGE_SIZE)
    if elf.tls is not None:
        at = tp - block - start
        tls[at : at + len(elf.tls.data)] = elf.tls.data
    struct.pack_into("<QQ", tls, tp - start, tp, TLS_TCB_MAGIC)
    plans.append(RegionPlan(start, pages, True, False, RegionKind.TLS,
                            _pages_of(0, memoryview(tls))))
    plans.sort(key=lambda plan: plan.start)
    plans.append(RegionPlan(USER_STACK_TOP - USER_STACK_SIZE, USER_STACK_SIZE // PAGE_SIZE,
                            True, False, RegionKind.STACK, ()))
    nbytes = sum(len(page) for plan in plans for _, page in plan.contents)
    return PreparedImage(elf.entry, tp, tuple(plans), elf.has_wx, nbytes)


def load(proc: Process, prepared: PreparedImage) -> None:
    """Map a prepared image into ``proc``, a new process with nothing mapped.

    Raises OutOfMemory when frames run out and SyscallError(ENOMEM) beyond the limit
    of mappings; the caller releases the process on failure."""
    proc.map_image(prepared.plans)


class ImageCache:
    """Prepared images by RAM-fs file, each valid for one version of its file.

    An entry goes with its file (weakly keyed: an unlinked file is not kept alive),
    when the file changes (the next lookup prepares the new version) and, oldest first,
    beyond ``max_entries``. Images holding more than ``max_image_bytes`` of page
    contents are prepared every time and never kept. Failures (ElfError) are not kept
    either: a bad file is parsed again each time and gives the same error."""

    def __init__(self, max_entries: int = 16, max_image_bytes: int = 1 << 20) -> None:
        self.max_entries = max_entries
        self.max_image_bytes = max_image_bytes
        self._entries: weakref.WeakKeyDictionary[File, tuple[int, PreparedImage]] = (
            weakref.WeakKeyDictionary())
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, file: File) -> PreparedImage:
        """The prepared image of ``file``'s current contents (ElfError if unloadable)."""
        version = file.version
        entry = self._entries.get(file)
        if entry is not None and entry[0] == version:
            self.hits += 1
            return entry[1]
        self.misses += 1
        version, data = file.read_all()
        prepared = prepare(data)
        self._entries.pop(file, None)
        if prepared.nbytes <= self.max_image_bytes and self.max_entries > 0:
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[file] = (version, prepared)
        return prepared


def _align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def tls_layout(elf: ElfImage, start: int) -> tuple[int, int, int]:
    """(thread pointer, block bytes below it, pages) of the first thread's TLS region
    at page ``start``."""
    if elf.tls is None:
        block, align = 0, 16
    else:
        block, align = _align_up(elf.tls.memsz, elf.tls.align), max(elf.tls.align, 16)
    tp = start + _align_up(block, align)
    return tp, block, _align_up(tp + TLS_TCB_SIZE - start, PAGE_SIZE) // PAGE_SIZE
