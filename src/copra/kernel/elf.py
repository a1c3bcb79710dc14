"""ELF64 parser and validator for the program loader.

Accepts what upstream's loader accepts (``kernel/src/task/exec.rs``, ``elf/``): ELF64,
little-endian, EV_CURRENT, x86-64, ET_EXEC, OS ABI NONE or GNU, statically linked.
Everything the loader relies on is checked here, once, so it can map segments
without further checks (System V gABI and the x86-64 psABI define the fields):

- the header and the program header table lie inside the file, ``e_ehsize`` is 64
  and ``e_phentsize`` is 56; at most :data:`MAX_PHNUM` program headers;
- no PT_INTERP or PT_DYNAMIC (copra has no dynamic linker), at least one non-empty
  PT_LOAD;
- per PT_LOAD: ``filesz <= memsz``; ``[offset, offset + filesz)`` inside the file;
  ``vaddr % 4096 == offset % 4096`` (the file page maps at the virtual page);
  ``vaddr + memsz`` does not wrap; the whole page range lies in
  ``[USER_START, USER_MAP_END)``, so it never meets page 0, the kernel half, the
  stack or the stack's guard page (upstream accepts any address below 2^47; this is
  all of it that copra does not keep for itself, see docs/abi.md);
- no two PT_LOAD segments touch the same page (each page gets one set of
  permissions);
- ``e_entry`` lies inside an executable PT_LOAD segment;
- at most one PT_TLS (the thread-local storage template): ``filesz <= memsz <=``
  :data:`MAX_TLS_SIZE`, ``p_align`` 0 or a power of two up to :data:`MAX_TLS_ALIGN`,
  ``[offset, offset + filesz)`` inside the file.

Layouts that load, as upstream's loader takes them: any base (upstream's old linker
script put text at 0x10000, rust-lld's default is 0x200000, GNU ld's 0x400000); the
ELF headers inside a read-only PT_LOAD (lld, GNU ld's ``-z separate-code``); file
offsets that are not page-aligned but congruent to their addresses (lld).

Decisions: a PT_LOAD with ``memsz == 0`` is validated and then dropped (it maps
nothing). PT_TLS is kept as :attr:`ElfImage.tls`; the loader gives the first thread
its TLS block from it (kernel/loader.py, docs/abi.md). Other program header types
(PT_NOTE, PT_GNU_STACK, PT_GNU_PROPERTY, ...) are ignored, as upstream does. Flag bits
other than R/W/X are ignored. A segment that is both writable and executable is
accepted, as upstream accepts it, so existing static binaries load unchanged;
:attr:`ElfImage.has_wx` lets the kernel log and count such images (it does:
``Kernel.counters["wx_images"]``). Section headers are never read.

Every defect raises :class:`ElfError` with a message naming the field; no other
exception escapes for any input (a hypothesis test holds it to that).

Invariants of the result: segments are in program header order, non-empty, pairwise
page-disjoint, inside the user range; ``data`` is a read-only view of exactly
``filesz`` bytes of the input (so the input must not be mutated while it is in use).

Locking: a pure function over an immutable input; no state, no locking.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from enum import IntFlag

from copra.abi.spec import PAGE_SIZE, USER_MAP_END, USER_START

ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ELFOSABI_NONE = 0
ELFOSABI_GNU = 3
ET_EXEC = 2
ET_DYN = 3
EM_X86_64 = 62
PT_LOAD = 1
PT_DYNAMIC = 2
PT_INTERP = 3
PT_TLS = 7
PN_XNUM = 0xFFFF

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr, 64 bytes
PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr, 56 bytes

#: The most program headers an image may have; real static programs have under ten.
MAX_PHNUM = 64
#: Lowest address a segment may use and the first address it may not reach.
LOAD_START = USER_START
LOAD_END = USER_MAP_END  # the stack and its guard page lie above
#: The largest TLS template (``p_memsz`` of PT_TLS) and alignment the loader accepts.
MAX_TLS_SIZE = 1 << 20
MAX_TLS_ALIGN = PAGE_SIZE

_U64_LIMIT = 1 << 64
_TYPE_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}


class ElfError(Exception):
    """The image cannot be loaded; the message says which check failed."""


class SegmentFlag(IntFlag):
    """``p_flags`` permission bits (gABI)."""

    X = 1
    W = 2
    R = 4


_RWX = SegmentFlag.R | SegmentFlag.W | SegmentFlag.X


@dataclass(frozen=True, eq=False)
class LoadSegment:
    """One PT_LOAD segment: map ``data`` at ``vaddr`` and zero up to ``vaddr + memsz``."""

    vaddr: int
    memsz: int
    filesz: int
    offset: int
    flags: SegmentFlag
    data: memoryview

    @property
    def end(self) -> int:
        return self.vaddr + self.memsz

    @property
    def page_start(self) -> int:
        return self.vaddr - self.vaddr % PAGE_SIZE

    @property
    def page_end(self) -> int:
        return -(-self.end // PAGE_SIZE) * PAGE_SIZE

    @property
    def readable(self) -> bool:
        return SegmentFlag.R in self.flags

    @property
    def writable(self) -> bool:
        return SegmentFlag.W in self.flags

    @property
    def executable(self) -> bool:
        return SegmentFlag.X in self.flags


@dataclass(frozen=True, eq=False)
class TlsTemplate:
    """The PT_TLS segment: ``data`` (``filesz`` bytes, the .tdata initial values)
    followed by ``memsz - filesz`` zero bytes (.tbss), aligned to ``align``."""

    vaddr: int
    memsz: int
    align: int
    data: memoryview


@dataclass(frozen=True, eq=False)
class ElfImage:
    """A validated static executable: its entry point, the segments to map and its
    thread-local storage template (None without PT_TLS)."""

    entry: int
    segments: tuple[LoadSegment, ...]
    tls: TlsTemplate | None = None

    @property
    def has_wx(self) -> bool:
        """True if a segment is both writable and executable (accepted; see module doc)."""
        return any(s.writable and s.executable for s in self.segments)

    @property
    def end(self) -> int:
        """First page-aligned address above every segment (where a heap could start)."""
        return max(s.page_end for s in self.segments)


def parse_elf(image: bytes | bytearray | memoryview) -> ElfImage:
    """Validate ``image`` as a loadable copra program; raises :class:`ElfError`."""
    data = memoryview(image).cast("B").toreadonly()
    size = len(data)
    if bytes(data[:4]) != ELF_MAGIC[:size]:
        raise ElfError("bad magic: not an ELF file")
    if size < EHDR.size:
        raise ElfError(f"truncated file: {size} bytes, the ELF64 header needs {EHDR.size}")
    (
        ident,
        e_type,
        e_machine,
        e_version,
        e_entry,
        e_phoff,
        _e_shoff,
        _e_flags,
        e_ehsize,
        e_phentsize,
        e_phnum,
        _e_shentsize,
        _e_shnum,
        _e_shstrndx,
    ) = EHDR.unpack_from(data, 0)
    _check_ident(ident)
    if e_type == ET_DYN:
        raise ElfError("position-independent executables are not supported; link with -no-pie")
    if e_type != ET_EXEC:
        name = _TYPE_NAMES.get(e_type, f"type {e_type:#x}")
        raise ElfError(f"not an executable: e_type is {name}, need ET_EXEC")
    if e_machine != EM_X86_64:
        raise ElfError(f"wrong machine {e_machine}: need x86-64 (EM_X86_64 = {EM_X86_64})")
    if e_version != EV_CURRENT:
        raise ElfError(f"unsupported e_version {e_version}, need {EV_CURRENT}")
    if e_ehsize != EHDR.size:
        raise ElfError(f"e_ehsize is {e_ehsize}, an ELF64 header is {EHDR.size}")
    if e_phnum == 0:
        raise ElfError("no program headers: nothing to load (no PT_LOAD segment)")
    if e_phnum == PN_XNUM or e_phnum > MAX_PHNUM:
        raise ElfError(f"too many program headers: {e_phnum}, limit {MAX_PHNUM}")
    if e_phentsize != PHDR.size:
        raise ElfError(f"e_phentsize is {e_phentsize}, an ELF64 program header is {PHDR.size}")
    table_end = e_phoff + e_phnum * PHDR.size
    if e_phoff < EHDR.size:
        raise ElfError(f"program header table at {e_phoff:#x} overlaps the ELF header")
    if table_end > size:
        raise ElfError(
            f"program header table [{e_phoff:#x}, {table_end:#x}) is beyond the end of "
            f"the file ({size:#x} bytes)"
        )

    segments: list[LoadSegment] = []
    tls: TlsTemplate | None = None
    for index in range(e_phnum):
        fields = PHDR.unpack_from(data, e_phoff + index * PHDR.size)
        p_type = fields[0]
        if p_type == PT_INTERP:
            raise ElfError(f"program header {index} is PT_INTERP: dynamically linked")
        if p_type == PT_DYNAMIC:
            raise ElfError(f"program header {index} is PT_DYNAMIC: dynamically linked")
        if p_type == PT_LOAD:
            segment = _load_segment(data, index, fields)
            if segment is not None:
                segments.append(segment)
        elif p_type == PT_TLS:
            if tls is not None:
                raise ElfError(f"program header {index} is a second PT_TLS")
            tls = _tls_template(data, index, fields)
    if not segments:
        raise ElfError("no PT_LOAD segment with a non-zero memsz")
    _check_disjoint(segments)
    if not any(s.executable and s.vaddr <= e_entry < s.end for s in segments):
        raise ElfError(f"entry point {e_entry:#x} is not inside an executable PT_LOAD segment")
    return ElfImage(e_entry, tuple(segments), tls)


def _check_ident(ident: bytes) -> None:
    ei_class, ei_data, ei_version, ei_osabi = ident[4], ident[5], ident[6], ident[7]
    if ei_class != ELFCLASS64:
        raise ElfError(f"not ELF64: EI_CLASS is {ei_class}, need {ELFCLASS64}")
    if ei_data != ELFDATA2LSB:
        raise ElfError(f"not little-endian: EI_DATA is {ei_data}, need {ELFDATA2LSB}")
    if ei_version != EV_CURRENT:
        raise ElfError(f"unsupported EI_VERSION {ei_version}, need {EV_CURRENT}")
    if ei_osabi not in (ELFOSABI_NONE, ELFOSABI_GNU):
        raise ElfError(f"unsupported OS ABI {ei_osabi}: need NONE (0) or GNU (3)")


def _load_segment(
    data: memoryview, index: int, fields: tuple[int, ...]
) -> LoadSegment | None:
    _, p_flags, p_offset, p_vaddr, _p_paddr, p_filesz, p_memsz, _p_align = fields
    where = f"PT_LOAD {index} at {p_vaddr:#x}"
    if p_filesz > p_memsz:
        raise ElfError(f"{where}: filesz {p_filesz:#x} exceeds memsz {p_memsz:#x}")
    if p_offset + p_filesz > len(data):
        raise ElfError(
            f"{where}: file range [{p_offset:#x}, {p_offset + p_filesz:#x}) is beyond the "
            f"end of the file ({len(data):#x} bytes)"
        )
    if p_vaddr % PAGE_SIZE != p_offset % PAGE_SIZE:
        raise ElfError(
            f"{where}: vaddr and file offset {p_offset:#x} differ modulo the page size "
            f"({p_vaddr % PAGE_SIZE:#x} != {p_offset % PAGE_SIZE:#x})"
        )
    end = p_vaddr + p_memsz
    if end > _U64_LIMIT:
        raise ElfError(f"{where}: vaddr + memsz {end:#x} wraps around the address space")
    if p_memsz == 0:
        return None
    page_end = -(-end // PAGE_SIZE) * PAGE_SIZE
    if p_vaddr < LOAD_START or page_end > LOAD_END:
        raise ElfError(
            f"{where}: range [{p_vaddr:#x}, {end:#x}) is outside the user load range "
            f"[{LOAD_START:#x}, {LOAD_END:#x}) (above page 0, below the stack)"
        )
    return LoadSegment(
        vaddr=p_vaddr,
        memsz=p_memsz,
        filesz=p_filesz,
        offset=p_offset,
        flags=SegmentFlag(p_flags & _RWX),
        data=data[p_offset : p_offset + p_filesz],
    )


def _tls_template(data: memoryview, index: int, fields: tuple[int, ...]) -> TlsTemplate:
    _, _p_flags, p_offset, p_vaddr, _p_paddr, p_filesz, p_memsz, p_align = fields
    where = f"PT_TLS {index}"
    if p_filesz > p_memsz:
        raise ElfError(f"{where}: filesz {p_filesz:#x} exceeds memsz {p_memsz:#x}")
    if p_memsz > MAX_TLS_SIZE:
        raise ElfError(f"{where}: memsz {p_memsz:#x} exceeds the limit {MAX_TLS_SIZE:#x}")
    if p_align & (p_align - 1) or p_align > MAX_TLS_ALIGN:
        raise ElfError(
            f"{where}: p_align {p_align:#x} is not a power of two up to {MAX_TLS_ALIGN:#x}"
        )
    if p_offset + p_filesz > len(data):
        raise ElfError(
            f"{where}: file range [{p_offset:#x}, {p_offset + p_filesz:#x}) is beyond the "
            f"end of the file ({len(data):#x} bytes)"
        )
    return TlsTemplate(vaddr=p_vaddr, memsz=p_memsz, align=max(p_align, 1),
                       data=data[p_offset : p_offset + p_filesz])


def _check_disjoint(segments: list[LoadSegment]) -> None:
    ordered = sorted(segments, key=lambda s: s.page_start)
    for before, after in itertools.pairwise(ordered):
        if after.page_start < before.page_end:
            raise ElfError(
                f"PT_LOAD segments at {before.vaddr:#x} and {after.vaddr:#x} share the page "
                f"range [{after.page_start:#x}, {min(before.page_end, after.page_end):#x})"
            )
