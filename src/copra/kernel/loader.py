"""Loading an ELF image into a new process's address space.

The file is parsed and validated by kernel/elf.py first (ET_EXEC only, segments in
the user range, no overlap); here each PT_LOAD segment becomes one region of private
frames with the segment's permissions (W and X from p_flags; every segment is
readable), its file bytes copied in and the rest (bss, the page tails) left zero, as
every frame comes zeroed from the allocator. Upstream shares read-only pages with the
RAM fs; copra copies them (sharing comes with file mappings).

Thread-local storage (:func:`map_tls`): the first thread gets a TLS block and thread
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
(it starts at the image's page-aligned end).

Locking: runs before the process is visible to anyone; no locking needed.
"""

from __future__ import annotations

import struct

from copra.abi.spec import PAGE_SIZE, TLS_TCB_MAGIC, TLS_TCB_SIZE
from copra.kernel.elf import LOAD_END, ElfError, ElfImage, parse_elf
from copra.kernel.process import Process, RegionKind


def load_elf(proc: Process, image: bytes) -> ElfImage:
    """Map every segment of image into proc; returns the validated image.

    Raises ElfError for a file that is not a loadable image and OutOfMemory when
    frames run out; the caller releases the process on failure.
    """
    elf = parse_elf(image)
    for seg in elf.segments:
        start, end = seg.page_start, seg.page_end
        region = proc.map_anonymous(start, (end - start) // PAGE_SIZE, writable=seg.writable,
                                    executable=seg.executable, kind=RegionKind.IMAGE)
        _write(proc, region.frames, seg.vaddr - start, seg.data)
    return elf


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


def map_tls(proc: Process, elf: ElfImage) -> int:
    """Map the first thread's TLS block and TCB above the image; returns its FS base.

    Raises ElfError when the region would not fit below the stack and OutOfMemory
    when frames run out; the caller releases the process on failure.
    """
    start = elf.end
    tp, block, pages = tls_layout(elf, start)
    if start + pages * PAGE_SIZE > LOAD_END:
        raise ElfError(f"no room for the TLS block above the image (ends at {start:#x})")
    region = proc.map_anonymous(start, pages, writable=True, executable=False,
                                kind=RegionKind.TLS)
    if elf.tls is not None:
        _write(proc, region.frames, tp - block - start, elf.tls.data)
    _write(proc, region.frames, tp - start, memoryview(struct.pack("<QQ", tp, TLS_TCB_MAGIC)))
    return tp


def _write(proc: Process, frames: list[int], offset: int, data: memoryview) -> None:
    """Copy ``data`` to ``offset`` bytes into the region backed by ``frames``."""
    mem = proc.frames.memory
    done = 0
    while done < len(data):
        page, in_page = divmod(offset + done, PAGE_SIZE)
        n = min(len(data) - done, PAGE_SIZE - in_page)
        mem.write(frames[page] + in_page, data[done : done + n])
        done += n
