"""End to end: libcopra's owned types and collections under the real kernel.

``lib-check`` (testprogs) checks fs::File with Read/Write/Seek, the whole-file
helpers, read_dir, process::Child, memory::Mapping (unmapped on drop), HashMap and
HashSet with per-map random keys, alloc's collections, and error names; one verdict
line per check.
"""

from __future__ import annotations

from typing import Any

from test_programs import assert_no_leak


def test_owned_types_and_collections_pass_every_check(boot: Any) -> None:
    run = boot("lib-check", {"/bin/hello": "hello"})
    lines = run.task_lines("init")
    assert run.result.status == 0, lines
    verdicts = [line for line in lines if line.startswith(("PASS ", "FAIL "))]
    assert len(verdicts) == 8 and all(v.startswith("PASS ") for v in verdicts), verdicts
    assert "lib-check: 8/8" in lines
    assert "Hello from a copra service" in run.task_lines("hello")
    assert_no_leak(run)
