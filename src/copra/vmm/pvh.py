"""PVH boot: load an ELF kernel through its XEN_ELFNOTE_PHYS32_ENTRY note, as QEMU,
Firecracker and Cloud Hypervisor do, and describe the state it starts in.

The ABI is Xen's "x86/HVM direct boot ABI" (xen docs/misc/pvh.pandoc): a kernel that
carries an ELF note of type XEN_ELFNOTE_PHYS32_ENTRY (18, owner "Xen") is entered at the
32-bit physical address in that note, in 32-bit protected mode with paging off:

- ebx: the guest-physical address of the start-of-day structure, ``hvm_start_info``
  (xen/include/public/arch-x86/hvm/start_info.h), magic 0x336ec578, version 1, with
  the command line and the memory map (E820 types);
- cr0: PE only (every other writable bit clear); cr4: 0;
- cs: 32-bit execute/read, base 0, limit 0xFFFFFFFF; ds, es (and here fs, gs, ss too):
  32-bit read/write, base 0, limit 0xFFFFFFFF; tr: a 32-bit busy TSS, base 0, limit 0x67;
- eflags: VM, IF and TF clear (here: 0x2); every other register is unspecified (here: 0).

The guest sets up its own stack, GDT and IDT. copra also writes the GDT its entry state
comes from and points GDTR at it (as Firecracker does), so a guest that reloads a
segment register before loading its own GDT finds the same flat segments. IDTR is
empty (base 0, limit 0): an exception before the guest loads an IDT is a triple fault.

Guest-physical layout (copra's choice; docs/guests.md):

    0x0500  boot GDT: null, code 0x08, data 0x10, TSS 0x18       (32 bytes)
    0x6000  hvm_start_info                                        (56 bytes)
    0x6040  memory map: hvm_memmap_table_entry[]                  (24 bytes each)
    0x7000  command line, NUL-terminated                          (<= 4 KiB)
    1 MiB-  the kernel's PT_LOAD segments, each at its p_paddr

and the memory map, for RAM of ``size`` bytes (one KVM memory slot at 0):
RAM [0, 640 KiB), reserved [640 KiB, 1 MiB) (the PC's legacy hole: nothing lives
there, but PC software expects it), RAM [1 MiB, size). The boot structures live in
low RAM that belongs to the guest once it has read them, as with Firecracker.

The ELF parser is strict and small on purpose (docs/dependencies.md says why it is not
pyelftools): ELF32/EM_386 or ELF64/EM_X86_64, little-endian, ET_EXEC, program headers
inside the file, PT_LOAD segments inside the file with filesz <= memsz, not overlapping
one another in physical memory, loaded at p_paddr (what QEMU uses: a Linux vmlinux has
virtual addresses in the kernel half and physical ones in p_paddr), the entry inside a
loaded segment's file bytes, exactly one entry value among the notes, no PT_DYNAMIC or
PT_INTERP. Notes are read from PT_NOTE segments only (QEMU does the same), padded to 4
bytes, or to 8 in a PT_NOTE aligned to 8 (the rule binutils' readelf applies). Anything
else raises ``PvhError`` with one line saying what is wrong; the parser raises nothing
else on any input (hypothesis: tests/unit/test_pvh.py).

Pure functions over bytes: no KVM, no locks, no state.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from copra.vmm.descriptors import FLAT_CODE32, FLAT_DATA32, TYPE_TSS32_BUSY, Descriptor

XEN_ELFNOTE_PHYS32_ENTRY: Final = 18
XEN_NOTE_NAME: Final = b"Xen\x00"
START_INFO_MAGIC: Final = 0x336EC578
START_INFO_VERSION: Final = 1

# Guest-physical layout (see the module docstring).
BOOT_GDT_PA: Final = 0x0500
START_INFO_PA: Final = 0x6000
MEMMAP_PA: Final = 0x6040
MEMMAP_MAX: Final = (0x7000 - MEMMAP_PA) // 24
CMDLINE_PA: Final = 0x7000
CMDLINE_MAX: Final = 4095  #: bytes before the terminating NUL
KERNEL_MIN_PA: Final = 0x10_0000  #: segments load at or above 1 MiB
LOW_RAM_END: Final = 0xA_0000  #: 640 KiB
MIN_MEMORY: Final = 2 << 20
#: Guest RAM stays below 3 GiB: the 32-bit entry reaches it all and the x86 MMIO
#: window below 4 GiB (local APIC, I/O APIC) stays free.
MAX_MEMORY: Final = 3 << 30

SEL_CODE: Final = 0x08
SEL_DATA: Final = 0x10
SEL_TSS: Final = 0x18
BOOT_GDT: Final = (
    Descriptor(base=0, limit=0, type=0, s=0, dpl=0, present=0),
    FLAT_CODE32,
    FLAT_DATA32,
    Descriptor(base=0, limit=0x67, type=TYPE_TSS32_BUSY, s=0, dpl=0, present=1),
)
CR0_PE: Final = 1 << 0
EFLAGS_FIXED: Final = 1 << 1  #: bit 1 always reads 1

_START_INFO = struct.Struct("<IIIIQQQQII")  # 56 bytes, version 1
_MEMMAP_ENTRY = struct.Struct("<QQII")  # 24 bytes
assert _START_INFO.size == 56 and _MEMMAP_ENTRY.size == 24

# ELF (System V gABI, "ELF Header" and "Program Header").
_ELFCLASS32, _ELFCLASS64 = 1, 2
_ELFDATA2LSB = 1
_EV_CURRENT = 1
_ET_EXEC = 2
_EM_386, _EM_X86_64 = 3, 62
_PT_LOAD, _PT_DYNAMIC, _PT_INTERP, _PT_NOTE = 1, 2, 3, 4
_MAX_PHDRS: Final = 256
_EHDR = {_ELFCLASS32: struct.Struct("<HHIIIIIHHHHHH"), _ELFCLASS64: struct.Struct("<HHIQQQIHHHHHH")}
_PHDR32 = struct.Struct("<IIIIIIII")  # type offset vaddr paddr filesz memsz flags align
_PHDR64 = struct.Struct("<IIQQQQQQ")  # type flags offset vaddr paddr filesz memsz align
_NHDR = struct.Struct("<III")  # namesz descsz type


class PvhError(Exception):
    """The kernel image cannot be booted through the PVH entry (the message says why)."""


class MemoryType(IntEnum):
    """XEN_HVM_MEMMAP_TYPE_* (the ACPI address range types)."""

    RAM = 1
    RESERVED = 2
    ACPI = 3
    NVS = 4
    UNUSABLE = 5
    DISABLED = 6
    PMEM = 7


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD: ``data`` (its file bytes) at ``paddr``, then zeros up to ``memsz``."""

    paddr: int
    data: bytes
    memsz: int

    @property
    def end(self) -> int:
        return self.paddr + self.memsz


@dataclass(frozen=True)
class PvhKernel:
    entry: int  #: the PHYS32 entry: a guest-physical address below 4 GiB
    segments: tuple[Segment, ...]  #: sorted by address, disjoint
    elf_class: int  #: 32 or 64


@dataclass(frozen=True)
class MemmapEntry:
    addr: int
    size: int
    type: MemoryType


@dataclass(frozen=True)
class StartInfo:
    """The decoded hvm_start_info (what a guest reads at ebx)."""

    magic: int
    version: int
    flags: int
    nr_modules: int
    modlist_paddr: int
    cmdline_paddr: int
    rsdp_paddr: int
    memmap_paddr: int
    memmap_entries: int

    @classmethod
    def decode(cls, raw: bytes) -> StartInfo:
        fields = _START_INFO.unpack_from(raw)
        return cls(*fields[:9])


@dataclass(frozen=True)
class Chunk:
    """Guest memory to fill: ``data`` at ``addr``, then zeros up to ``size`` bytes."""

    addr: int
    data: bytes
    size: int


@dataclass(frozen=True)
class BootImage:
    """Everything a VMM writes before the first KVM_RUN of a PVH guest."""

    chunks: tuple[Chunk, ...]
    memmap: tuple[MemmapEntry, ...]
    entry: int  #: eip
    start_info: int  #: ebx
    gdt_base: int
    gdt: tuple[Descriptor, ...]


def parse_kernel(image: bytes) -> PvhKernel:
    """Validate a PVH ELF kernel and take out its entry and segments (PvhError if bad)."""
    if len(image) < 16 or image[:4] != b"\x7fELF":
        raise PvhError("not an ELF file")
    elf_class, data, version = image[4], image[5], image[6]
    if elf_class not in _EHDR:
        raise PvhError(f"ELF class {elf_class} is neither ELF32 nor ELF64")
    if data != _ELFDATA2LSB:
        raise PvhError("not a little-endian ELF file")
    if version != _EV_CURRENT:
        raise PvhError(f"ELF identification version {version}, expected 1")
    ehdr = _EHDR[elf_class]
    if len(image) < 16 + ehdr.size:
        raise PvhError("ELF header truncated")
    (e_type, e_machine, e_version, _e_entry, e_phoff, _e_shoff, _e_flags, e_ehsize,
     e_phentsize, e_phnum, _e_shentsize, _e_shnum, _e_shstrndx) = ehdr.unpack_from(image, 16)
    bits = 32 if elf_class == _ELFCLASS32 else 64
    phdr = _PHDR32 if bits == 32 else _PHDR64
    expected_machine = _EM_386 if bits == 32 else _EM_X86_64
    if e_type != _ET_EXEC:
        raise PvhError(f"ELF type {e_type} is not an executable (ET_EXEC)")
    if e_machine != expected_machine:
        raise PvhError(f"ELF{bits} machine {e_machine} is not "
                       f"{'EM_386' if bits == 32 else 'EM_X86_64'}")
    if e_version != _EV_CURRENT:
        raise PvhError(f"ELF version {e_version}, expected 1")
    if e_ehsize != 16 + ehdr.size:
        raise PvhError(f"ELF header size {e_ehsize}, expected {16 + ehdr.size}")
    if e_phentsize != phdr.size:
        raise PvhError(f"program header size {e_phentsize}, expected {phdr.size}")
    if not 1 <= e_phnum <= _MAX_PHDRS:
        raise PvhError(f"{e_phnum} program headers (1 to {_MAX_PHDRS} allowed)")
    if e_phoff + e_phnum * phdr.size > len(image):
        raise PvhError("program headers extend past the end of the file")

    segments: list[Segment] = []
    entries: set[int] = set()
    for i in range(e_phnum):
        fields = phdr.unpack_from(image, e_phoff + i * phdr.size)
        if bits == 32:
            p_type, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _flags, p_align = fields
        else:
            p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, p_align = fields
        if p_type in (_PT_DYNAMIC, _PT_INTERP):
            raise PvhError("a dynamically linked ELF file cannot be a kernel")
        if p_type not in (_PT_LOAD, _PT_NOTE):
            continue
        if p_offset + p_filesz > len(image):
            raise PvhError(f"program header {i}: its bytes extend past the end of the file")
        if p_type == _PT_NOTE:
            entries |= _phys32_entries(image[p_offset:p_offset + p_filesz], p_align, i)
            continue
        if p_filesz > p_memsz:
            raise PvhError(f"segment {i}: file size {p_filesz:#x} exceeds memory size "
                           f"{p_memsz:#x}")
        if p_memsz == 0:
            continue
        if p_paddr + p_memsz > 1 << 32:
            raise PvhError(f"segment {i} at {p_paddr:#x} (+{p_memsz:#x}) is not below 4 GiB")
        segments.append(Segment(p_paddr, bytes(image[p_offset:p_offset + p_filesz]), p_memsz))

    if not entries:
        raise PvhError("no XEN_ELFNOTE_PHYS32_ENTRY note: not a PVH kernel")
    if len(entries) > 1:
        listed = ", ".join(f"{e:#x}" for e in sorted(entries))
        raise PvhError(f"PHYS32_ENTRY notes disagree: {listed}")
    if not segments:
        raise PvhError("no loadable segment")
    segments.sort(key=lambda s: s.paddr)
    for a, b in itertools.pairwise(segments):
        if b.paddr < a.end:
            raise PvhError(f"segments at {a.paddr:#x} and {b.paddr:#x} overlap")
    entry = entries.pop()
    if not any(s.paddr <= entry < s.paddr + len(s.data) for s in segments):
        raise PvhError(f"PVH entry {entry:#x} is not inside a loaded segment's code")
    return PvhKernel(entry, tuple(segments), bits)


def _phys32_entries(notes: bytes, p_align: int, index: int) -> set[int]:
    """Every PHYS32_ENTRY value among the notes of one PT_NOTE segment."""
    align = 8 if p_align == 8 else 4
    found: set[int] = set()
    pos = 0
    while pos < len(notes):
        if pos + _NHDR.size > len(notes):
            raise PvhError(f"program header {index}: a note header is truncated")
        namesz, descsz, n_type = _NHDR.unpack_from(notes, pos)
        name_at = pos + _NHDR.size
        desc_at = name_at + _round_up(namesz, align)
        if desc_at + descsz > len(notes):
            raise PvhError(f"program header {index}: a note extends past its segment")
        if n_type == XEN_ELFNOTE_PHYS32_ENTRY and notes[name_at:name_at + namesz] == XEN_NOTE_NAME:
            if descsz == 4:
                (value,) = struct.unpack_from("<I", notes, desc_at)
            elif descsz == 8:
                (value,) = struct.unpack_from("<Q", notes, desc_at)
                if value >> 32:
                    raise PvhError(f"PHYS32_ENTRY {value:#x} is not a 32-bit address")
            else:
                raise PvhError(f"PHYS32_ENTRY note of {descsz} bytes (4 or 8 expected)")
            found.add(value)
        pos = desc_at + _round_up(descsz, align)
    return found


def _round_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


def memory_map(memory_size: int) -> tuple[MemmapEntry, ...]:
    """The E820 map of a guest with ``memory_size`` bytes of RAM at 0."""
    return (
        MemmapEntry(0, LOW_RAM_END, MemoryType.RAM),
        MemmapEntry(LOW_RAM_END, KERNEL_MIN_PA - LOW_RAM_END, MemoryType.RESERVED),
        MemmapEntry(KERNEL_MIN_PA, memory_size - KERNEL_MIN_PA, MemoryType.RAM),
    )


def boot_image(kernel: PvhKernel, memory_size: int, cmdline: bytes = b"") -> BootImage:
    """Lay the kernel and its boot structures out in ``memory_size`` bytes of RAM."""
    if memory_size % 4096 or not MIN_MEMORY <= memory_size <= MAX_MEMORY:
        raise PvhError(f"guest memory of {memory_size} bytes: whole pages from "
                       f"{MIN_MEMORY >> 20} MiB to {MAX_MEMORY >> 20} MiB")
    if len(cmdline) > CMDLINE_MAX or b"\x00" in cmdline:
        raise PvhError(f"the command line must be at most {CMDLINE_MAX} bytes without NUL")
    for s in kernel.segments:
        if s.paddr < KERNEL_MIN_PA or s.end > memory_size:
            raise PvhError(f"segment at {s.paddr:#x}-{s.end:#x} is outside guest RAM "
                           f"[{KERNEL_MIN_PA:#x}, {memory_size:#x})")
    memmap = memory_map(memory_size)
    start_info = _START_INFO.pack(
        START_INFO_MAGIC, START_INFO_VERSION, 0, 0, 0, CMDLINE_PA, 0, MEMMAP_PA,
        len(memmap), 0)
    table = b"".join(_MEMMAP_ENTRY.pack(e.addr, e.size, e.type, 0) for e in memmap)
    gdt = b"".join(d.encode().to_bytes(8, "little") for d in BOOT_GDT)
    chunks = [Chunk(s.paddr, s.data, s.memsz) for s in kernel.segments]
    chunks += [
        Chunk(BOOT_GDT_PA, gdt, len(gdt)),
        Chunk(START_INFO_PA, start_info, len(start_info)),
        Chunk(MEMMAP_PA, table, len(table)),
        Chunk(CMDLINE_PA, cmdline + b"\x00", len(cmdline) + 1),
    ]
    return BootImage(tuple(chunks), memmap, kernel.entry, START_INFO_PA, BOOT_GDT_PA, BOOT_GDT)
