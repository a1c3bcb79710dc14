"""Compatibility: static programs linked the way upstream and common linkers lay them out run.

Each image is built in the suite (upstream_build.py) from ``layout.c``: a program that
checks its data, relro and bss segments and prints where its text was loaded. It must
run unchanged at upstream's old base 0x10000, at rust-lld's default 0x200000 (with
lld's layout: the headers in a read-only segment, congruent unaligned offsets) and at
GNU ld's 0x400000; page 0 stays unmapped.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile
from upstream_build import Layout, build

from copra.abi.spec import EXIT_STATUS_SHIFT, KILLED_BY_EXCEPTION, PAGE_SIZE
from copra.hw.x86 import Vector

PASSED = 42 << EXIT_STATUS_SHIFT

#: (linker, requested base or None for its default, where the first segment lands)
LAYOUTS = [
    (Layout.LLD, None, 0x200000),
    (Layout.LLD, 0x10000, 0x10000),
    (Layout.GNU_LD, None, 0x400000),
    (Layout.GNU_LD, 0x10000, 0x10000),
]


def loads(image: bytes) -> list[Any]:
    return [s for s in ELFFile(io.BytesIO(image)).iter_segments() if s["p_type"] == "PT_LOAD"]


def assert_no_leak(run: Any) -> None:
    assert run.stats["user_frames"] == run.baseline["user_frames"] == 0
    assert run.stats["processes"] == 0
    assert run.kernel.counters["internal_errors"] == 0


@pytest.mark.parametrize(("layout", "base", "first"), LAYOUTS,
                         ids=[f"{lay.name.lower()}-{first:#x}" for lay, _, first in LAYOUTS])
def test_static_program_runs_at_its_linked_base(boot: Any, tmp_path: Path, layout: Layout,
                                                base: int | None, first: int) -> None:
    image = build("layout.c", tmp_path, layout, base)
    segments = loads(image)
    assert segments[0]["p_vaddr"] == first
    run = boot(image)
    assert run.result.status == PASSED, run.lines
    (line,) = run.task_lines("init")
    start = int(line.removeprefix("loaded at "), 16)
    assert first < start < first + 0x10000
    assert_no_leak(run)


def test_lld_layout_has_headers_in_a_read_only_segment_and_unaligned_offsets(
        tmp_path: Path) -> None:
    # The shape the previous test loaded: what upstream's own images look like.
    segments = loads(build("layout.c", tmp_path, Layout.LLD))
    headers = segments[0]
    assert headers["p_offset"] == 0 and headers["p_flags"] == 4  # R only, from byte 0
    assert any(s["p_offset"] % PAGE_SIZE for s in segments[1:])
    assert all(s["p_offset"] % PAGE_SIZE == s["p_vaddr"] % PAGE_SIZE for s in segments)
    assert len({s["p_flags"] for s in segments}) == 3  # R, R X, R W


def test_page_0_stays_unmapped_under_an_upstream_built_program(boot: Any,
                                                                tmp_path: Path) -> None:
    run = boot(build("layout.c", tmp_path, Layout.LLD, defines=("TOUCH_NULL",)))
    assert run.result.status == (int(Vector.PF) << 8) | KILLED_BY_EXCEPTION
    assert any("killed: #PF" in line and "address 0x0," in line for line in run.lines)
    assert_no_leak(run)
