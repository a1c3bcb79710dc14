"""ELF64 validator: accepted images agree with pyelftools; every defect is an ElfError."""

from __future__ import annotations

import contextlib
import io
import struct
from dataclasses import dataclass
from importlib import resources

import pytest
from elftools.common.exceptions import ELFError as PyElfError
from elftools.elf.elffile import ELFFile
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.abi.spec import PAGE_SIZE, USER_MAP_END, USER_START
from copra.kernel.elf import (
    EHDR,
    MAX_PHNUM,
    MAX_TLS_ALIGN,
    MAX_TLS_SIZE,
    PHDR,
    ElfError,
    ElfImage,
    SegmentFlag,
    parse_elf,
)

PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE, PT_TLS, PT_GNU_STACK = 1, 2, 3, 4, 7, 0x6474E551
R, W, X = 4, 2, 1
TEXT = 0x400000


@dataclass
class Seg:
    """A program header for :func:`build_elf`; None fields are derived from data."""

    vaddr: int
    data: bytes = b"\x90" * 16
    flags: int = R | X
    memsz: int | None = None
    ptype: int = PT_LOAD
    offset: int | None = None
    filesz: int | None = None
    align: int = PAGE_SIZE


def build_elf(
    segments: list[Seg],
    *,
    entry: int | None = None,
    e_type: int = 2,
    machine: int = 62,
    ei_class: int = 2,
    ei_data: int = 1,
    ei_version: int = 1,
    osabi: int = 0,
    e_version: int = 1,
    ehsize: int = 64,
    phentsize: int = 56,
    phoff: int = 64,
    phnum: int | None = None,
) -> bytes:
    """A minimal ELF64 file: header, program headers, each segment's data after them.

    Each segment's data goes at the first offset past what precedes it that agrees
    with its vaddr modulo the page size, as a linker lays it out.
    """
    blob = bytearray(max(phoff, 64) + PHDR.size * len(segments))
    headers = []
    for seg in segments:
        if seg.offset is None:
            offset = len(blob) + (seg.vaddr - len(blob)) % PAGE_SIZE
        else:
            offset = seg.offset
        if offset + len(seg.data) > len(blob):
            blob += bytes(offset + len(seg.data) - len(blob))
        blob[offset : offset + len(seg.data)] = seg.data
        filesz = len(seg.data) if seg.filesz is None else seg.filesz
        memsz = filesz if seg.memsz is None else seg.memsz
        headers.append(
            PHDR.pack(seg.ptype, seg.flags, offset, seg.vaddr, seg.vaddr, filesz, memsz, seg.align)
        )
    for index, header in enumerate(headers):
        at = phoff + index * PHDR.size
        if at + PHDR.size <= len(blob):
            blob[at : at + PHDR.size] = header
    if entry is None:
        entry = next((s.vaddr for s in segments if s.flags & X), TEXT)
    ident = b"\x7fELF" + bytes([ei_class, ei_data, ei_version, osabi]) + bytes(8)
    count = len(segments) if phnum is None else phnum
    blob[:64] = EHDR.pack(
        ident, e_type, machine, e_version, entry, phoff, 0, 0, ehsize, phentsize, count, 64, 0, 0
    )
    return bytes(blob)


def typical_program() -> list[Seg]:
    """The shape of copra's user programs: text, rodata, data+bss on pages of their own."""
    return [
        Seg(TEXT + 0xE8, b"\xcc" * 0x1860, R | X),
        Seg(TEXT + 0x2000 + 0x1948 % PAGE_SIZE, b"rodata" * 50, R),
        Seg(TEXT + 0x3000 + 0x1A78 % PAGE_SIZE, b"\x01" * 0x10, R | W, memsz=0x2000),
    ]


def assert_matches_pyelftools(blob: bytes, image: ElfImage) -> None:
    elf = ELFFile(io.BytesIO(blob))
    assert image.entry == elf.header.e_entry
    loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD" and s["p_memsz"]]
    assert len(loads) == len(image.segments)
    for ours, theirs in zip(image.segments, loads, strict=True):
        assert ours.vaddr == theirs["p_vaddr"]
        assert ours.memsz == theirs["p_memsz"]
        assert ours.filesz == theirs["p_filesz"]
        assert ours.offset == theirs["p_offset"]
        assert int(ours.flags) == theirs["p_flags"] & 7
        assert bytes(ours.data) == theirs.data()


def parse_error(blob: bytes) -> str:
    with pytest.raises(ElfError) as info:
        parse_elf(blob)
    return str(info.value)


# -- accepted images ------------------------------------------------------------------


def test_typical_program_parses_like_pyelftools() -> None:
    blob = build_elf(typical_program())
    image = parse_elf(blob)
    assert_matches_pyelftools(blob, image)
    assert [s.flags for s in image.segments] == [
        SegmentFlag.R | SegmentFlag.X,
        SegmentFlag.R,
        SegmentFlag.R | SegmentFlag.W,
    ]
    assert image.end == TEXT + 0x6000 and not image.has_wx


def test_segment_data_is_a_read_only_view_of_filesz_bytes() -> None:
    image = parse_elf(build_elf(typical_program()))
    data = image.segments[2].data
    assert data.readonly and bytes(data) == b"\x01" * 0x10


def test_bss_only_segment_has_no_file_data() -> None:
    segs = [Seg(TEXT), Seg(TEXT + 0x1000, b"", R | W, memsz=0x3000)]
    blob = build_elf(segs)
    image = parse_elf(blob)
    assert image.segments[1].filesz == 0 and image.segments[1].memsz == 0x3000
    assert_matches_pyelftools(blob, image)


def test_osabi_gnu_is_accepted() -> None:
    assert parse_elf(build_elf([Seg(TEXT)], osabi=3)).entry == TEXT


def test_writable_executable_segment_is_accepted_and_flagged() -> None:
    image = parse_elf(build_elf([Seg(TEXT, flags=R | W | X)]))
    assert image.has_wx and image.segments[0].writable and image.segments[0].executable


def test_non_load_headers_are_ignored() -> None:
    segs = [Seg(0, b"note", 0, ptype=PT_NOTE), Seg(TEXT), Seg(0, b"", R | W, ptype=PT_GNU_STACK)]
    blob = build_elf(segs)
    image = parse_elf(blob)
    assert [s.vaddr for s in image.segments] == [TEXT]
    assert_matches_pyelftools(blob, image)


def tls_program(tls: Seg) -> list[Seg]:
    return [*typical_program(), tls]


def test_tls_template_is_kept_with_its_data_size_and_alignment() -> None:
    data_vaddr = typical_program()[2].vaddr
    image = parse_elf(build_elf(tls_program(
        Seg(data_vaddr, b"\x2a\x00\x00\x00", R, memsz=0x30, ptype=PT_TLS, align=16))))
    assert image.tls is not None
    assert (image.tls.vaddr, image.tls.memsz, image.tls.align) == (data_vaddr, 0x30, 16)
    assert bytes(image.tls.data) == b"\x2a\x00\x00\x00"


def test_image_without_pt_tls_has_no_template() -> None:
    assert parse_elf(build_elf(typical_program())).tls is None


def test_tls_alignment_zero_means_one() -> None:
    tls = Seg(TEXT, b"", R, memsz=8, ptype=PT_TLS, align=0)
    image = parse_elf(build_elf(tls_program(tls)))
    assert image.tls is not None and image.tls.align == 1


def test_second_pt_tls_is_rejected() -> None:
    tls = Seg(TEXT, b"", R, memsz=8, ptype=PT_TLS, align=8)
    assert "second PT_TLS" in parse_error(build_elf([*tls_program(tls), tls]))


def test_tls_filesz_above_memsz_is_rejected() -> None:
    tls = Seg(TEXT, b"abcd", R, memsz=2, ptype=PT_TLS, align=8)
    assert "PT_TLS 3: filesz" in parse_error(build_elf(tls_program(tls)))


def test_tls_larger_than_the_limit_is_rejected() -> None:
    tls = Seg(TEXT, b"", R, memsz=MAX_TLS_SIZE + 1, ptype=PT_TLS, align=8)
    assert "exceeds the limit" in parse_error(build_elf(tls_program(tls)))


@pytest.mark.parametrize("align", [3, 24, MAX_TLS_ALIGN * 2])
def test_tls_alignment_not_a_small_power_of_two_is_rejected(align: int) -> None:
    tls = Seg(TEXT, b"", R, memsz=8, ptype=PT_TLS, align=align)
    assert "p_align" in parse_error(build_elf(tls_program(tls)))


def test_tls_data_beyond_the_file_is_rejected() -> None:
    tls = Seg(TEXT, b"x", R, ptype=PT_TLS, align=8, offset=1 << 20, filesz=16)
    assert "PT_TLS 3: file range" in parse_error(build_elf(tls_program(tls)))


def test_empty_load_segment_is_dropped() -> None:
    image = parse_elf(build_elf([Seg(TEXT), Seg(TEXT + 0x5000, b"", R, memsz=0)]))
    assert len(image.segments) == 1


def test_extra_flag_bits_are_ignored() -> None:
    image = parse_elf(build_elf([Seg(TEXT, flags=0xF0000000 | R | X)]))
    assert image.segments[0].flags == SegmentFlag.R | SegmentFlag.X


def test_segment_ending_just_below_the_stack_guard_page_is_accepted() -> None:
    top = USER_MAP_END
    image = parse_elf(build_elf([Seg(top - PAGE_SIZE, memsz=PAGE_SIZE)]))
    assert image.segments[0].end == top


def test_segment_at_user_start_is_accepted() -> None:
    assert parse_elf(build_elf([Seg(USER_START)])).entry == USER_START


@pytest.mark.parametrize("base", [0x10000, 0x200000, 0x400000])
def test_program_at_each_upstream_base_is_accepted(base: int) -> None:
    # upstream's old linker script, rust-lld's default and GNU ld's default.
    text = base + 0x1000
    image = parse_elf(build_elf([Seg(text), Seg(text + PAGE_SIZE, b"d", R | W)]))
    assert image.entry == text


def test_lld_layout_with_headers_in_a_read_only_segment_is_accepted() -> None:
    # rust-lld's defaults: a R segment from file offset 0 (the ELF and program headers
    # and .rodata), then R X and R W at the next pages with congruent, unaligned offsets.
    base = 0x200000
    segs = [
        Seg(base, b"", R, offset=0, filesz=0x1D2),
        Seg(base + 0x11E0, b"\xcc" * 0x74, R | X, offset=0x1E0),
        Seg(base + 0x2260, b"\x01" * 0x10, R | W, offset=0x260, memsz=0xDA0),
        Seg(base + 0x3270, b"\x02" * 0x20, R | W, offset=0x270, memsz=0x5DF0),
    ]
    blob = build_elf(segs, entry=base + 0x11E0)
    image = parse_elf(blob)
    assert [s.vaddr for s in image.segments] == [s.vaddr for s in segs]
    assert bytes(image.segments[0].data[:4]) == b"\x7fELF"
    assert_matches_pyelftools(blob, image)


def test_segment_reaching_down_into_page_0_is_rejected() -> None:
    blob = build_elf([Seg(USER_START - 0x10, memsz=0x20)])
    assert "outside the user load range" in parse_error(blob)


def test_segments_on_adjacent_pages_are_accepted() -> None:
    segs = [Seg(TEXT, memsz=PAGE_SIZE), Seg(TEXT + PAGE_SIZE, b"d", R | W)]
    assert len(parse_elf(build_elf(segs)).segments) == 2


def test_entry_at_last_byte_of_text_is_accepted() -> None:
    assert parse_elf(build_elf([Seg(TEXT)], entry=TEXT + 15)).entry == TEXT + 15


def test_segments_keep_program_header_order() -> None:
    segs = [Seg(TEXT + 0x2000, b"d", R | W), Seg(TEXT)]
    assert [s.vaddr for s in parse_elf(build_elf(segs, entry=TEXT)).segments] == [
        TEXT + 0x2000,
        TEXT,
    ]


# -- header defects -------------------------------------------------------------------


def test_bad_magic_is_rejected() -> None:
    assert "bad magic" in parse_error(b"\x7fELG" + build_elf([Seg(TEXT)])[4:])


def test_empty_file_is_rejected_as_truncated() -> None:
    assert "truncated" in parse_error(b"")


def test_short_header_is_rejected_as_truncated() -> None:
    assert "truncated file: 40 bytes" in parse_error(build_elf([Seg(TEXT)])[:40])


def test_elf32_class_is_rejected() -> None:
    assert "not ELF64" in parse_error(build_elf([Seg(TEXT)], ei_class=1))


def test_big_endian_is_rejected() -> None:
    assert "not little-endian" in parse_error(build_elf([Seg(TEXT)], ei_data=2))


def test_ident_version_zero_is_rejected() -> None:
    assert "EI_VERSION" in parse_error(build_elf([Seg(TEXT)], ei_version=0))


def test_foreign_osabi_is_rejected() -> None:
    assert "OS ABI 9" in parse_error(build_elf([Seg(TEXT)], osabi=9))


def test_pie_is_rejected_with_link_hint() -> None:
    message = parse_error(build_elf([Seg(TEXT)], e_type=3))
    assert message == "position-independent executables are not supported; link with -no-pie"


def test_relocatable_object_is_rejected() -> None:
    assert "ET_REL" in parse_error(build_elf([Seg(TEXT)], e_type=1))


def test_other_machine_is_rejected() -> None:
    assert "x86-64" in parse_error(build_elf([Seg(TEXT)], machine=183))


def test_header_version_zero_is_rejected() -> None:
    assert "e_version" in parse_error(build_elf([Seg(TEXT)], e_version=0))


def test_wrong_ehsize_is_rejected() -> None:
    assert "e_ehsize" in parse_error(build_elf([Seg(TEXT)], ehsize=52))


def test_wrong_phentsize_is_rejected() -> None:
    assert "e_phentsize" in parse_error(build_elf([Seg(TEXT)], phentsize=32))


def test_no_program_headers_is_rejected() -> None:
    assert "no program headers" in parse_error(build_elf([], entry=TEXT))


def test_too_many_program_headers_is_rejected() -> None:
    segs = [Seg(0, b"", 0, ptype=PT_NOTE)] * MAX_PHNUM + [Seg(TEXT)]
    assert "too many program headers: 65" in parse_error(build_elf(segs))


def test_extended_program_header_count_is_rejected() -> None:
    assert "too many" in parse_error(build_elf([Seg(TEXT)], phnum=0xFFFF))


def test_max_phnum_headers_are_accepted() -> None:
    segs = [Seg(0, b"", 0, ptype=PT_NOTE)] * (MAX_PHNUM - 1) + [Seg(TEXT)]
    assert len(parse_elf(build_elf(segs)).segments) == 1


def test_program_header_table_beyond_file_is_rejected() -> None:
    blob = build_elf([Seg(TEXT + 0x100)], phnum=40)
    assert len(blob) < EHDR.size + 40 * PHDR.size
    assert "beyond the end of the file" in parse_error(blob)


def test_program_header_table_over_header_is_rejected() -> None:
    assert "overlaps the ELF header" in parse_error(build_elf([Seg(TEXT)], phoff=8))


def test_file_truncated_inside_program_headers_is_rejected() -> None:
    assert "program header table" in parse_error(build_elf([Seg(TEXT)])[:100])


# -- segment defects ------------------------------------------------------------------------


def test_dynamic_segment_is_rejected() -> None:
    segs = [Seg(TEXT), Seg(TEXT + 0x1000, b"d", R | W, ptype=PT_DYNAMIC)]
    assert "dynamically linked" in parse_error(build_elf(segs))


def test_interp_segment_is_rejected() -> None:
    segs = [Seg(0, b"/lib/ld.so\0", R, ptype=PT_INTERP), Seg(TEXT)]
    assert "PT_INTERP: dynamically linked" in parse_error(build_elf(segs))


def test_no_load_segment_is_rejected() -> None:
    assert "no PT_LOAD" in parse_error(build_elf([Seg(0, b"n", 0, ptype=PT_NOTE)], entry=TEXT))


def test_only_empty_load_segments_is_rejected() -> None:
    assert "no PT_LOAD" in parse_error(build_elf([Seg(TEXT, b"", memsz=0)]))


def test_segment_file_range_beyond_file_is_rejected() -> None:
    blob = build_elf([Seg(TEXT, filesz=0x10000, memsz=0x10000)])
    assert "beyond the end of the file" in parse_error(blob)


def test_truncated_segment_data_is_rejected() -> None:
    blob = build_elf(typical_program())
    assert "file range" in parse_error(blob[:-1])


def test_filesz_above_memsz_is_rejected() -> None:
    assert "exceeds memsz" in parse_error(build_elf([Seg(TEXT, memsz=8)]))


def test_vaddr_offset_misaligned_is_rejected() -> None:
    blob = build_elf([Seg(TEXT, offset=PAGE_SIZE + 8)])
    assert "differ modulo the page size" in parse_error(blob)


def test_wrapping_segment_is_rejected() -> None:
    blob = build_elf([Seg(TEXT), Seg((1 << 64) - PAGE_SIZE, b"", R, memsz=2 * PAGE_SIZE)])
    assert "wraps around" in parse_error(blob)


def test_segment_below_user_start_is_rejected() -> None:
    assert "outside the user load range" in parse_error(build_elf([Seg(USER_START - PAGE_SIZE)]))


def test_segment_at_zero_is_rejected() -> None:
    assert "outside the user load range" in parse_error(build_elf([Seg(0x100)]))


def test_segment_reaching_into_the_stack_guard_page_is_rejected() -> None:
    top = USER_MAP_END
    blob = build_elf([Seg(top - PAGE_SIZE, memsz=PAGE_SIZE + 1)])
    assert "outside the user load range" in parse_error(blob)


def test_segment_in_kernel_half_is_rejected() -> None:
    assert "outside the user load range" in parse_error(build_elf([Seg(0xFFFF_8000_0000_0000)]))


def test_segments_sharing_a_page_are_rejected() -> None:
    segs = [Seg(TEXT, memsz=0x100), Seg(TEXT + 0x800, b"d", R | W)]
    assert "share the page range" in parse_error(build_elf(segs))


def test_segment_inside_another_is_rejected() -> None:
    segs = [Seg(TEXT, memsz=0x10000), Seg(TEXT + 0x3000, b"d", R), Seg(TEXT + 0x8000, b"e", R)]
    assert "share the page range" in parse_error(build_elf(segs))


def test_entry_outside_segments_is_rejected() -> None:
    message = parse_error(build_elf([Seg(TEXT)], entry=TEXT + 16))
    assert "entry point 0x400010 is not inside an executable" in message


def test_entry_in_non_executable_segment_is_rejected() -> None:
    segs = [Seg(TEXT), Seg(TEXT + 0x1000, b"d", R)]
    assert "entry point" in parse_error(build_elf(segs, entry=TEXT + 0x1000))


# -- fuzzing --------------------------------------------------------------------------------

_VALID = build_elf(typical_program())
_HEADERS_END = EHDR.size + 3 * PHDR.size


def _parse_agreeing(blob: bytes) -> None:
    """parse_elf raises only ElfError; when it accepts, pyelftools reads the same."""
    try:
        image = parse_elf(blob)
    except ElfError:
        return
    with contextlib.suppress(PyElfError, struct.error, ValueError):
        ELFFile(io.BytesIO(blob))
        assert_matches_pyelftools(blob, image)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, _HEADERS_END - 1), st.integers(0, 255)), max_size=6))
def test_mutated_headers_raise_only_elferror(flips: list[tuple[int, int]]) -> None:
    blob = bytearray(_VALID)
    for index, value in flips:
        blob[index] = value
    _parse_agreeing(bytes(blob))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, _HEADERS_END - 8),
    st.sampled_from([0, 1, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 63, (1 << 64) - 1, 0x400000]),
)
def test_extreme_header_words_raise_only_elferror(at: int, value: int) -> None:
    blob = bytearray(_VALID)
    blob[at : at + 8] = value.to_bytes(8, "little")
    _parse_agreeing(bytes(blob))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(_VALID)))
def test_truncated_valid_image_raises_only_elferror(cut: int) -> None:
    with contextlib.suppress(ElfError):
        parse_elf(_VALID[:cut])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_elferror(blob: bytes) -> None:
    with pytest.raises(ElfError):
        parse_elf(blob)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_random_body_after_valid_ident_raises_only_elferror(body: bytes) -> None:
    _parse_agreeing(_VALID[:16] + body)


# -- shipped programs ---------------------------------------------------------------------


def _shipped_programs() -> list[str | None]:
    images = resources.files("copra") / "images"
    names = sorted(p.name for p in images.iterdir() if p.name.endswith(".elf"))
    assert names, "the package ships no programs in copra/images"
    return names


@pytest.mark.parametrize("name", _shipped_programs())
def test_shipped_program_is_loadable_and_agrees_with_pyelftools(name: str) -> None:
    blob = (resources.files("copra") / "images" / name).read_bytes()
    image = parse_elf(blob)
    assert_matches_pyelftools(blob, image)
    assert not image.has_wx
