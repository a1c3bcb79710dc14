"""End to end: processes flooding the kernel with RAM-fs names and OPENDIR snapshots.

``user/testprogs/src/bin/metadata-flood.rs``: three children each make directories
until ENOMEM (the cap, 100,000 each, is far beyond the budget), free half, then
OPENDIR a changing directory until EMFILE or ENOMEM, and exit holding every handle;
the parent waits for them and removes what they left. Before the metadata budget the
same attack grew the host process by 765 MiB with a cap of 5,000 (3 GB with 20,000
on a 256 MiB machine): 416 bytes a directory, 96 an entry for every OPENDIR.

The host memory the run allocates is traced (tracemalloc) and must stay within the
budget plus a small allowance for the processes themselves; the attack must have
reached the budget (so without it, the memory would have gone on growing: 100,000
directories a child are ~125 MB); every child must end with status 0, the kernel must
log no internal error and no host MemoryError, and every count must return to its
baseline, the budget's included.
"""

from __future__ import annotations

import re
from typing import Any

LIMIT = 1 << 20
#: What the run may allocate beyond the budget: four processes, their logs, the
#: kernel's bookkeeping. Measured: about 0.14 MiB.
ALLOWANCE = 1 << 20
CHILDREN = 3
CAP = 100_000


def test_flood_of_names_and_snapshots_stops_at_the_budget_and_leaks_nothing(
        boot: Any) -> None:
    run = boot("metadata-flood", {"/bin/flood": "metadata-flood",
                                  "/etc/flood.conf": f"{CHILDREN} {CAP}\n".encode()},
               timeout=60.0, metadata_limit=LIMIT, trace_memory=True)
    lines = run.task_lines("init")
    reports = run.task_lines("flood")
    assert [line for line in lines + reports if line.startswith("FAIL")] == []
    assert run.result.status == 0, "\n".join(lines + reports)
    assert [f"child {i}: exited with status 0" for i in range(CHILDREN)] == \
        [line for line in lines if line.startswith("child ")]
    pattern = r"child: dirs \d+ \(ENOMEM\), freed \d+, opendirs [1-9]\d* \((ENOMEM|EMFILE)\)" \
              r", churn refused \d+"
    assert len(reports) == CHILDREN and all(re.fullmatch(pattern, r) for r in reports), reports
    assert any(re.fullmatch(r"FLOOD DONE [1-9]\d* names removed", line) for line in lines)

    assert run.fs.metadata.peak >= 0.9 * LIMIT  # the attack reached the budget
    assert run.traced_peak is not None and run.traced_peak <= LIMIT + ALLOWANCE, \
        f"host memory grew by {run.traced_peak} bytes"
    assert run.kernel.counters["internal_errors"] == 0
    assert run.kernel.counters["host_memory_errors"] == 0
    changed = {k: (run.baseline.get(k), v) for k, v in run.stats.items()
               if run.baseline.get(k) != v}
    assert changed == {}, "stat: (baseline, after)"
