"""The PVH loader: the ELF note parser, its refusals, the start info and the memory map."""

from __future__ import annotations

import contextlib
import io
import itertools
import struct

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import given
from hypothesis import strategies as st

from copra.vmm import pvh
from copra.vmm.pvh import MemoryType, PvhError, StartInfo, boot_image, parse_kernel

ENTRY = 0x100000
CODE = b"\xb0\x2a\xe6\xf4\xf4"  # mov al, 42; out 0xf4, al; hlt


def note(name: bytes, n_type: int, desc: bytes, align: int = 4) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + bytes(-len(b) % align)

    return struct.pack("<III", len(name), len(desc), n_type) + pad(name) + pad(desc)


def pvh_note(entry: int = ENTRY, size: int = 4, align: int = 4) -> bytes:
    return note(b"Xen\x00", 18, entry.to_bytes(size, "little"), align)


def elf(bits: int = 32, loads: list[tuple[int, bytes, int]] | None = None,
        notes: list[tuple[bytes, int]] | None = None, e_type: int = 2,
        machine: int | None = None, extra_phdrs: list[tuple[int, int, int]] | None = None) -> bytes:
    """An ELF image: PT_LOADs (paddr, bytes, memsz), PT_NOTEs (bytes, p_align) and extra
    program headers (p_type, offset, size)."""
    loads = [(ENTRY, CODE, len(CODE))] if loads is None else loads
    notes = [(pvh_note(), 4)] if notes is None else notes
    extra_phdrs = extra_phdrs or []
    ehsize, phentsize = (52, 32) if bits == 32 else (64, 56)
    phnum = len(loads) + len(notes) + len(extra_phdrs)
    offset = ehsize + phnum * phentsize
    body = b""
    phdrs: list[tuple[int, int, int, int, int, int]] = []  # type offset paddr filesz memsz align
    for paddr, data, memsz in loads:
        phdrs.append((1, offset + len(body), paddr, len(data), memsz, 0x1000))
        body += data
    for data, align in notes:
        body += bytes(-(offset + len(body)) % 8)
        phdrs.append((4, offset + len(body), 0, len(data), len(data), align))
        body += data
    for p_type, p_offset, size in extra_phdrs:
        phdrs.append((p_type, p_offset, 0, size, size, 1))
    if machine is None:
        machine = 3 if bits == 32 else 62
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1, 1]) + bytes(9)
    if bits == 32:
        header = ident + struct.pack("<HHIIIIIHHHHHH", e_type, machine, 1, ENTRY, ehsize, 0, 0,
                                     ehsize, phentsize, phnum, 40, 0, 0)
        table = b"".join(struct.pack("<IIIIIIII", t, o, p, p, f, m, 5, a)
                         for t, o, p, f, m, a in phdrs)
    else:
        header = ident + struct.pack("<HHIQQQIHHHHHH", e_type, machine, 1, ENTRY, ehsize, 0, 0,
                                     ehsize, phentsize, phnum, 64, 0, 0)
        table = b"".join(struct.pack("<IIQQQQQQ", t, 5, o, p, p, f, m, a)
                         for t, o, p, f, m, a in phdrs)
    return header + table + body


# --- what parses ----------------------------------------------------------------------

@pytest.mark.parametrize("bits", [32, 64])
def test_parse_kernel_takes_entry_from_the_note_and_segments_at_paddr(bits: int) -> None:
    kernel = parse_kernel(elf(bits, loads=[(ENTRY, CODE, 0x2000)]))
    assert kernel.entry == ENTRY
    assert kernel.elf_class == bits
    assert [(s.paddr, s.data, s.memsz) for s in kernel.segments] == [(ENTRY, CODE, 0x2000)]


def test_parse_kernel_agrees_with_pyelftools_on_notes_and_segments() -> None:
    image = elf(64, loads=[(ENTRY, CODE, 0x100), (0x200000, b"data", 0x3000)],
                notes=[(note(b"GNU\x00", 3, b"abcd") + pvh_note(), 4)])
    reference = ELFFile(io.BytesIO(image))
    notes = [n for seg in reference.iter_segments() if seg["p_type"] == "PT_NOTE"
             for n in seg.iter_notes()]
    xen = [n for n in notes if n["n_name"] == "Xen" and n["n_type"] == 18]
    assert len(xen) == 1
    expected_entry = int.from_bytes(xen[0]["n_descdata"], "little")
    loads = [(s["p_paddr"], s.data(), s["p_memsz"]) for s in reference.iter_segments()
             if s["p_type"] == "PT_LOAD"]
    kernel = parse_kernel(image)
    assert kernel.entry == expected_entry
    assert [(s.paddr, s.data, s.memsz) for s in kernel.segments] == loads


def test_parse_kernel_reads_a_64_bit_note_value() -> None:
    assert parse_kernel(elf(notes=[(pvh_note(size=8), 4)])).entry == ENTRY


def test_parse_kernel_pads_notes_to_8_in_an_8_aligned_pt_note() -> None:
    odd = note(b"GNU\x00\x00", 1, b"x", align=8)  # a 5-byte name: padding differs
    assert parse_kernel(elf(notes=[(odd + pvh_note(align=8), 8)])).entry == ENTRY


def test_parse_kernel_ignores_other_owners_type_18_notes() -> None:
    image = elf(notes=[(note(b"GNU\x00", 18, b"\x00\x00\x20\x00") + pvh_note(), 4)])
    assert parse_kernel(image).entry == ENTRY


def test_parse_kernel_accepts_repeated_identical_notes() -> None:
    assert parse_kernel(elf(notes=[(pvh_note(), 4), (pvh_note(), 4)])).entry == ENTRY


def test_parse_kernel_skips_empty_segments() -> None:
    kernel = parse_kernel(elf(loads=[(ENTRY, CODE, len(CODE)), (0x300000, b"", 0)]))
    assert len(kernel.segments) == 1


# --- what is refused ------------------------------------------------------------------

def refusal(image: bytes) -> str:
    with pytest.raises(PvhError) as e:
        parse_kernel(image)
    return str(e.value)


def test_parse_kernel_refuses_a_file_that_is_not_elf() -> None:
    assert "not an ELF file" in refusal(b"MZ" + bytes(100))


def test_parse_kernel_refuses_an_unknown_class() -> None:
    image = bytearray(elf())
    image[4] = 3
    assert "class 3" in refusal(bytes(image))


def test_parse_kernel_refuses_big_endian() -> None:
    image = bytearray(elf())
    image[5] = 2
    assert "little-endian" in refusal(bytes(image))


def test_parse_kernel_refuses_a_truncated_header() -> None:
    assert "truncated" in refusal(elf()[:40])


def test_parse_kernel_refuses_a_shared_object() -> None:
    assert "ET_EXEC" in refusal(elf(e_type=3))


@pytest.mark.parametrize(("bits", "machine"), [(32, 62), (64, 3), (32, 40)])
def test_parse_kernel_refuses_a_class_machine_mismatch(bits: int, machine: int) -> None:
    assert "machine" in refusal(elf(bits, machine=machine))


def test_parse_kernel_refuses_program_headers_past_the_end() -> None:
    image = elf()
    assert "program headers extend" in refusal(image[:60])


def test_parse_kernel_refuses_a_segment_past_the_end() -> None:
    image = elf(loads=[(ENTRY, CODE * 4, 0x100)])
    assert "past the end" in refusal(image[:-3])


def test_parse_kernel_refuses_filesz_above_memsz() -> None:
    assert "exceeds memory size" in refusal(elf(loads=[(ENTRY, CODE, 2)]))


def test_parse_kernel_refuses_overlapping_segments() -> None:
    image = elf(loads=[(ENTRY, CODE, 0x1000), (ENTRY + 0x800, b"x", 0x10)])
    assert "overlap" in refusal(image)


def test_parse_kernel_refuses_a_segment_above_4_gib() -> None:
    assert "4 GiB" in refusal(elf(64, loads=[(0xFFFF_F000, CODE, 0x2000)]))


def test_parse_kernel_refuses_a_kernel_without_the_pvh_note() -> None:
    assert "not a PVH kernel" in refusal(elf(notes=[(note(b"GNU\x00", 3, b"abcd"), 4)]))


def test_parse_kernel_refuses_disagreeing_notes() -> None:
    image = elf(notes=[(pvh_note() + pvh_note(ENTRY + 1), 4)])
    assert "disagree" in refusal(image)


def test_parse_kernel_refuses_a_64_bit_entry_above_4_gib() -> None:
    assert "32-bit" in refusal(elf(notes=[(pvh_note(1 << 32, size=8), 4)]))


def test_parse_kernel_refuses_a_note_of_odd_size() -> None:
    assert "4 or 8" in refusal(elf(notes=[(note(b"Xen\x00", 18, b"\x00\x00\x10"), 4)]))


def test_parse_kernel_refuses_a_truncated_note() -> None:
    assert "truncated" in refusal(elf(notes=[(pvh_note() + b"\x01\x00", 4)]))
    assert "past its segment" in refusal(elf(notes=[(pvh_note()[:-2], 4)]))


def test_parse_kernel_refuses_an_entry_outside_the_loaded_code() -> None:
    assert "not inside" in refusal(elf(notes=[(pvh_note(ENTRY + 0x800), 4)],
                                       loads=[(ENTRY, CODE, 0x1000)]))


def test_parse_kernel_refuses_a_kernel_without_loadable_segments() -> None:
    assert "no loadable segment" in refusal(elf(loads=[]))


def test_parse_kernel_refuses_a_dynamically_linked_file() -> None:
    assert "dynamically linked" in refusal(elf(extra_phdrs=[(3, 0, 0)]))


@given(st.binary(max_size=512))
def test_parse_kernel_raises_only_pvh_error_on_random_bytes(data: bytes) -> None:
    with contextlib.suppress(PvhError):
        parse_kernel(data)


@given(st.data())
def test_parse_kernel_raises_only_pvh_error_on_corrupted_kernels(data: st.DataObject) -> None:
    image = bytearray(data.draw(st.sampled_from([
        elf(32), elf(64), elf(notes=[(pvh_note(align=8), 8)]),
        elf(64, loads=[(ENTRY, CODE, 0x100), (0x200000, b"data", 0x3000)]),
    ])))
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(image) - 1))
        image[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(image)))
    try:
        kernel = parse_kernel(bytes(image[:cut]))
    except PvhError:
        return
    assert any(s.paddr <= kernel.entry < s.paddr + len(s.data) for s in kernel.segments)


# --- the boot image ---------------------------------------------------------------------

def chunk_at(image: pvh.BootImage, addr: int) -> bytes:
    return next(c.data for c in image.chunks if c.addr == addr)


def test_boot_image_start_info_has_magic_version_1_memmap_and_cmdline() -> None:
    image = boot_image(parse_kernel(elf()), 64 << 20, b"console=ttyS0")
    info = StartInfo.decode(chunk_at(image, image.start_info))
    assert (info.magic, info.version, info.flags, info.nr_modules) == (0x336EC578, 1, 0, 0)
    assert (info.modlist_paddr, info.rsdp_paddr) == (0, 0)
    assert info.cmdline_paddr == pvh.CMDLINE_PA
    assert chunk_at(image, info.cmdline_paddr) == b"console=ttyS0\x00"
    assert info.memmap_paddr == pvh.MEMMAP_PA and info.memmap_entries == 3
    table = chunk_at(image, info.memmap_paddr)
    entries = [struct.unpack_from("<QQII", table, 24 * i) for i in range(3)]
    assert entries == [(0, 0xA0000, 1, 0), (0xA0000, 0x60000, 2, 0),
                       (0x100000, (64 << 20) - 0x100000, 1, 0)]


def test_boot_image_entry_state_points_ebx_at_start_info() -> None:
    image = boot_image(parse_kernel(elf()), 2 << 20)
    assert (image.entry, image.start_info) == (ENTRY, 0x6000)


def test_boot_image_gdt_holds_the_flat_32_bit_segments() -> None:
    image = boot_image(parse_kernel(elf()), 2 << 20)
    gdt = chunk_at(image, image.gdt_base)
    assert struct.unpack("<4Q", gdt) == (0, 0x00CF9B000000FFFF, 0x00CF93000000FFFF,
                                         0x0000_8B00_0000_0067)


def test_boot_image_memory_map_covers_ram_below_and_above_1_mib() -> None:
    ram = [e for e in pvh.memory_map(128 << 20) if e.type is MemoryType.RAM]
    assert sum(e.size for e in ram) == (128 << 20) - 0x60000


def test_boot_image_zero_fills_bss_through_the_chunk_size() -> None:
    image = boot_image(parse_kernel(elf(loads=[(ENTRY, CODE, 0x5000)])), 2 << 20)
    kernel = next(c for c in image.chunks if c.addr == ENTRY)
    assert (kernel.data, kernel.size) == (CODE, 0x5000)


def test_boot_image_refuses_a_segment_beyond_ram() -> None:
    kernel = parse_kernel(elf(loads=[(0x1F0000, CODE, 0x20000)],
                              notes=[(pvh_note(0x1F0000), 4)]))
    with pytest.raises(PvhError, match="outside guest RAM"):
        boot_image(kernel, 2 << 20)


def test_boot_image_refuses_a_segment_below_1_mib() -> None:
    kernel = parse_kernel(elf(loads=[(0x8000, CODE, 5)], notes=[(pvh_note(0x8000), 4)]))
    with pytest.raises(PvhError, match="outside guest RAM"):
        boot_image(kernel, 2 << 20)


@pytest.mark.parametrize("size", [1 << 20, (2 << 20) + 1, (3 << 30) + 4096])
def test_boot_image_refuses_memory_sizes_out_of_range(size: int) -> None:
    with pytest.raises(PvhError, match="guest memory"):
        boot_image(parse_kernel(elf()), size)


@pytest.mark.parametrize("cmdline", [b"a" * 4096, b"a\x00b"])
def test_boot_image_refuses_a_bad_command_line(cmdline: bytes) -> None:
    with pytest.raises(PvhError, match="command line"):
        boot_image(parse_kernel(elf()), 2 << 20, cmdline)


def test_boot_image_structures_fit_below_the_kernel() -> None:
    image = boot_image(parse_kernel(elf()), 2 << 20, b"x" * pvh.CMDLINE_MAX)
    low = sorted((c.addr, c.addr + c.size) for c in image.chunks if c.addr < pvh.KERNEL_MIN_PA)
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(low))
    assert low[-1][1] <= pvh.LOW_RAM_END
