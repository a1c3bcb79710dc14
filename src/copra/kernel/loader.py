"""Loading an ELF image into a new process's address space.

The file is parsed and validated by kernel/elf.py first (ET_EXEC only, segments in
the user range, no overlap); here each PT_LOAD segment becomes one region of private
frames with the segment's permissions (W and X from p_flags; every segment is
readable), its file bytes copied in and the rest (bss, the page tails) left zero, as
every frame comes zeroed from the allocator. Upstream shares read-only pages with the
RAM fs; copra copies them (sharing comes with file mappings).

Locking: runs before the process is visible to anyone; no locking needed.
"""

from __future__ import annotations

from copra.abi.spec import PAGE_SIZE
from copra.kernel.elf import ElfImage, parse_elf
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
        data = seg.data
        offset = seg.vaddr - start
        mem = proc.frames.memory
        done = 0
        while done < len(data):
            page, in_page = divmod(offset + done, PAGE_SIZE)
            n = min(len(data) - done, PAGE_SIZE - in_page)
            mem.write(region.frames[page] + in_page, data[done : done + n])
            done += n
    return elf
