"""The kernel image layout (kernel/layout.py): per-CPU areas that never overlap."""

from __future__ import annotations

import itertools

import pytest

from copra.abi.spec import PAGE_SIZE
from copra.hw import x86
from copra.kernel import layout


def areas() -> list[tuple[str, int, int]]:
    """(name, start, end) of every structure of the image."""
    out = [("gdt", layout.GDT_PA, layout.GDT_PA + layout.GDT_SLOTS * 8),
           ("idt", layout.IDT_PA, layout.IDT_PA + 256 * 16),
           ("stubs", layout.STUB_PA,
            layout.STUB_PA + len(layout.stub_vectors()) * layout.STUB_SIZE),
           ("tables", layout.KERNEL_PDPT_PA, layout.KERNEL_REGION)]
    for cpu in range(layout.MAX_CPUS):
        out.append((f"tss{cpu}", layout.tss_pa(cpu), layout.tss_pa(cpu) + layout.TSS_LIMIT + 1))
        out.append((f"stack{cpu}", layout.kstack_pa(cpu), layout.kstack_top_pa(cpu)))
    return out


def test_kernel_image_areas_are_disjoint_and_below_the_frame_pool() -> None:
    spans = sorted((start, end, name) for name, start, end in areas())
    for (_, end, name), (start, _, after) in itertools.pairwise(spans):
        assert end <= start, f"{name} overlaps {after}"
    assert spans[0][0] >= PAGE_SIZE and spans[-1][1] <= layout.KERNEL_REGION


def test_each_cpu_has_its_own_tss_selector_after_the_segments() -> None:
    selectors = [layout.tss_selector(cpu) for cpu in range(layout.MAX_CPUS)]
    assert selectors[0] == x86.SEL_TSS
    assert len(set(selectors)) == layout.MAX_CPUS
    assert max(selectors) + 16 == layout.GDT_SLOTS * 8


def test_cpu_index_beyond_the_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        layout.percpu_pa(layout.MAX_CPUS)
