"""Compatibility tier: the conformance suite's class 0/1/3 cases from an upstream-style program.

``conformance.c`` repeats cases of the native suite (user/testprogs/src/bin/
conformance.rs) in C, built the way upstream builds its user programs: no libcopra,
``int 0x80`` only, linked by rust-lld with its defaults (first segment at 0x200000,
lld's layout). It runs once per session as /init, with its own image as the helper
it EXECs; every case becomes a test here, and the run as a whole must exit 0, enter
the kernel only through ``int 0x80``, and hand back every frame, handle and object.

What it covers: the cases of the native suite whose names it bears (the test below
holds it to that), i.e. class 0 (EXIT, EXEC, WAIT, CLOSE and handles, MMAP, MUNMAP,
MRESIZE), class 1 (every file and directory call with its documented errors, the log
handle and the log file) and class 3 (CAPABILITIES), plus unknown numbers and the
registers a syscall may change. Left to the native suite: cases about the doorbell
or that compare the two entries, and the rarer MMAP/MRESIZE shapes.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile
from upstream_build import Layout, build

from copra.kernel.kernel import ENTRY_COUNTERS, Entry

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "conformance.c"
NATIVE = HERE.parents[2] / "user/testprogs/src/bin/conformance.rs"
MIN_CASES = 150


def c_cases() -> list[str]:
    table = re.search(r"^#define CASES\(X\)(.*?)\n\n", SOURCE.read_text(encoding="utf-8"),
                      re.MULTILINE | re.DOTALL)
    assert table is not None, f"no CASES table in {SOURCE}"
    return re.findall(r"X\((\w+)\)", table.group(1))


def native_cases() -> set[str]:
    table = re.search(r"^cases! \{\n(.*?)^\}", NATIVE.read_text(encoding="utf-8"),
                      re.MULTILINE | re.DOTALL)
    assert table is not None
    return set(re.findall(r"\b([a-z][a-z0-9_]*)\b", re.sub(r"//[^\n]*", "", table.group(1))))


CASES = c_cases()
_runs: dict[int, tuple[Any, dict[str, str | None], bytes]] = {}


@pytest.fixture
def suite(boot: Any, vm: Any, tmp_path_factory: pytest.TempPathFactory,
          ) -> tuple[Any, dict[str, str | None], bytes]:
    """(run, case -> None or why it failed, image): built and run once per session."""
    key = id(vm)
    if key not in _runs:
        image = build("conformance.c", tmp_path_factory.mktemp("cconf"), Layout.LLD)
        run = boot(image, {"/bin/cconf": image})
        verdicts: dict[str, str | None] = {}
        for line in run.task_lines("init"):
            if line.startswith(("PASS ", "FAIL ")):
                name, _, why = line[5:].partition(": ")
                verdicts[name] = None if line.startswith("PASS ") else why
        _runs[key] = (run, verdicts, image)
    return _runs[key]


def test_every_case_repeats_a_native_case_once() -> None:
    assert len(CASES) >= MIN_CASES
    assert len(set(CASES)) == len(CASES)
    assert set(CASES) - native_cases() == set()


def test_program_is_linked_as_upstream_links(suite: tuple[Any, Any, bytes]) -> None:
    loads = [s for s in ELFFile(io.BytesIO(suite[2])).iter_segments() if s["p_type"] == "PT_LOAD"]
    assert loads[0]["p_vaddr"] == 0x200000 and loads[0]["p_offset"] == 0


def test_suite_exits_zero_through_int80_alone(suite: tuple[Any, Any, bytes]) -> None:
    run, verdicts, _ = suite
    failures = [f"{name}: {why}" for name, why in verdicts.items() if why is not None]
    assert failures == []
    assert run.result.status == 0, run.lines[-5:]
    assert f"SUMMARY {len(CASES)}/{len(CASES)}" in run.task_lines("init")
    assert run.kernel.counters[ENTRY_COUNTERS[Entry.DOORBELL]] == 0
    assert run.kernel.counters[ENTRY_COUNTERS[Entry.INT80]] > 1000


def test_suite_returns_every_frame_handle_and_object(suite: tuple[Any, Any, bytes]) -> None:
    run = suite[0]
    changed = {k: (run.baseline.get(k), v) for k, v in run.stats.items()
               if run.baseline.get(k) != v}
    assert changed == {}, "stat: (baseline, after)"
    assert run.kernel.counters["internal_errors"] == 0


@pytest.mark.parametrize("case", CASES)
def test_case(suite: tuple[Any, dict[str, str | None], bytes], case: str) -> None:
    verdicts = suite[1]
    assert case in verdicts, "the suite never reported this case (did it die?)"
    assert verdicts[case] is None, verdicts[case]
