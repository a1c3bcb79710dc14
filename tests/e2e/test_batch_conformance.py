"""End to end: BATCH's conformance cases in a native program (testprogs' ``batch``).

Each case prints ``PASS <case>`` or ``FAIL <case>: <why>``; the program ends with
``SUMMARY <passed>/<total>`` and exits 0 iff all passed. The case names are read from
the program's ``cases!`` list, so a case that never reported fails here too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parents[2] / "user/testprogs/src/bin/batch.rs"


def declared_cases() -> list[str]:
    text = SOURCE.read_text(encoding="utf-8")
    table = re.search(r"^cases! \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL)
    assert table is not None
    return re.findall(r"\b([a-z][a-z0-9_]*)\b", table.group(1))


def test_batch_conformance_cases_all_pass_and_leave_nothing_behind(boot: Any) -> None:
    run = boot("batch")
    lines = run.task_lines("init")
    verdicts = {line[5:].partition(": ")[0]: line for line in lines
                if line.startswith(("PASS ", "FAIL "))}
    cases = declared_cases()
    assert len(cases) >= 10
    failures = [verdicts.get(name, f"{name}: never reported") for name in cases
                if not verdicts.get(name, "").startswith("PASS ")]
    assert failures == []
    assert f"SUMMARY {len(cases)}/{len(cases)}" in lines
    assert "batch: written from a batch" in lines  # a WRITE run inside a BATCH
    assert run.result.status == 0
    assert run.kernel.counters["internal_errors"] == 0
    assert run.stats["handles"] == 0 and run.stats["processes"] == 0
