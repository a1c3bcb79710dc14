"""End to end: the native conformance suite, one pytest test per case.

``user/testprogs/src/bin/conformance.rs`` exercises every syscall and each of its
documented errors through the ABI alone and prints ``PASS <case>`` or
``FAIL <case>: <why>`` per case, then ``SUMMARY <passed>/<total>``. It runs once per
session, as /init, with the programs it EXECs in the RAM fs; every case becomes a test
here. The case names are read from the program's ``cases!`` table, so a case that
never reports (the suite died before it) fails as well.

The suite as a whole must exit 0, run at least 80 cases, cause no internal kernel
error, and hand back every frame, handle and object it used: it removes its scratch
tree at the end, so even the RAM fs is back where it started.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "user/testprogs/src/bin/conformance.rs"
HELPERS: dict[str, bytes | str] = {
    "/bin/conformance-child": "conformance-child",
    "/bin/ud": "fault-ud",
}
MIN_CASES = 80


def declared_cases() -> list[str]:
    """The case names of the program's ``cases! { ... }`` table, in order."""
    text = SOURCE.read_text(encoding="utf-8")
    table = re.search(r"^cases! \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL)
    assert table is not None, f"no cases! table in {SOURCE}"
    body = re.sub(r"//[^\n]*", "", table.group(1))
    return re.findall(r"\b([a-z][a-z0-9_]*)\b", body)


CASES = declared_cases()


@dataclass
class Report:
    run: Any  #: conftest's Run
    verdicts: dict[str, str | None]  #: case -> None if it passed, else why it failed
    duplicates: list[str]
    summary: tuple[int, int] | None  #: (passed, total) from the SUMMARY line

    @property
    def failures(self) -> list[str]:
        return [f"{name}: {why}" for name, why in self.verdicts.items() if why is not None]


def parse(run: Any) -> Report:
    verdicts: dict[str, str | None] = {}
    duplicates: list[str] = []
    summary = None
    for line in run.task_lines("init"):
        if line.startswith(("PASS ", "FAIL ")):
            name, _, why = line[5:].partition(": ")
            if name in verdicts:
                duplicates.append(name)
            verdicts[name] = None if line.startswith("PASS ") else why
        elif match := re.fullmatch(r"SUMMARY (\d+)/(\d+)", line):
            summary = (int(match.group(1)), int(match.group(2)))
    return Report(run, verdicts, duplicates, summary)


_reports: dict[int, Report] = {}


@pytest.fixture
def report(boot: Any, vm: Any) -> Report:
    """The suite's report: run on the first request of a session, then reused."""
    key = id(vm)
    if key not in _reports:
        _reports[key] = parse(boot("conformance", HELPERS))
    return _reports[key]


def test_suite_declares_at_least_80_cases() -> None:
    assert len(CASES) >= MIN_CASES
    assert len(set(CASES)) == len(CASES), "a case name appears twice in the table"


def test_suite_exits_zero_with_every_case_passed(report: Report) -> None:
    failures = "\n".join(report.failures)
    assert report.failures == [], f"{len(report.failures)} cases failed:\n{failures}"
    assert report.run.result.status == 0
    assert not report.run.result.timed_out


def test_suite_reports_each_declared_case_once(report: Report) -> None:
    assert report.duplicates == []
    assert list(report.verdicts) == CASES
    passed = sum(why is None for why in report.verdicts.values())
    assert report.summary == (passed, len(CASES))


def test_suite_causes_no_internal_kernel_error(report: Report) -> None:
    assert report.run.kernel.counters["internal_errors"] == 0


def test_suite_returns_every_frame_handle_and_object(report: Report) -> None:
    run = report.run
    changed = {k: (run.baseline.get(k), v) for k, v in run.stats.items()
               if run.baseline.get(k) != v}
    assert changed == {}, "stat: (baseline, after)"
    assert run.stats["processes"] == 0
    assert run.stats["user_frames"] == 0


@pytest.mark.parametrize("case", CASES)
def test_case(report: Report, case: str) -> None:
    assert case in report.verdicts, "the suite never reported this case (did it die?)"
    why = report.verdicts[case]
    assert why is None, why
