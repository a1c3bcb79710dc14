"""The first thread's TLS region (kernel/loader.py): where the thread pointer goes
for each PT_TLS shape, as the linker's local-exec offsets expect it (variant II)."""

from __future__ import annotations

import pytest

from copra.abi.spec import PAGE_SIZE, TLS_TCB_SIZE
from copra.kernel.elf import ElfImage, LoadSegment, SegmentFlag, TlsTemplate
from copra.kernel.loader import tls_layout

START = 0x408000


def image(tls: TlsTemplate | None) -> ElfImage:
    text = LoadSegment(0x400000, 16, 16, 0, SegmentFlag.R | SegmentFlag.X, memoryview(bytes(16)))
    return ElfImage(0x400000, (text,), tls)


def template(memsz: int, align: int) -> TlsTemplate:
    return TlsTemplate(vaddr=0x407000, memsz=memsz, align=align, data=memoryview(b""))


def test_image_without_pt_tls_gets_a_tcb_alone_on_one_page() -> None:
    assert tls_layout(image(None), START) == (START, 0, 1)


@pytest.mark.parametrize(("memsz", "align", "block", "tp_offset"), [
    (0x150, 8, 0x150, 0x150),     # Rust: the thread pointer right above the block
    (0x118, 0x40, 0x140, 0x140),  # gcc's aligned __thread: memsz rounded up to p_align
    (0x3, 1, 0x3, 0x10),          # the TCB stays 16-byte aligned; the block still ends at tp
])
def test_block_ends_at_the_thread_pointer_at_the_linkers_offset(
        memsz: int, align: int, block: int, tp_offset: int) -> None:
    tp, below, pages = tls_layout(image(template(memsz, align)), START)
    assert (tp - START, below) == (tp_offset, block)
    assert tp % max(align, 16) == 0 and tp - below >= START
    assert pages == 1


def test_block_larger_than_a_page_spans_the_pages_it_needs_and_the_tcb() -> None:
    tp, below, pages = tls_layout(image(template(2 * PAGE_SIZE, 16)), START)
    assert (tp, below) == (START + 2 * PAGE_SIZE, 2 * PAGE_SIZE)
    assert START + pages * PAGE_SIZE >= tp + TLS_TCB_SIZE and pages == 3
