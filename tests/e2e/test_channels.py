"""End to end: channels, handle moves and EXEC_HANDLES (the `channels` program).

``user/testprogs/src/bin/channels.rs`` runs one case per line of its ``cases!`` table
through the ABI alone - every call of docs/abi.md's channel section and each of its
errors, the all-or-nothing rule under EMFILE in the receiver, a helper process that
gets its endpoint with EXEC_HANDLES and echoes handles back, and a helper killed
while messages carrying handles are still queued towards it - and prints ``PASS`` or
``FAIL`` per case. The run must pass every case, and every object, handle and frame
must be back at its baseline: what the killed helper held and what was queued
towards it are released.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from test_programs import assert_no_leak

SOURCE = Path(__file__).resolve().parents[2] / "user/testprogs/src/bin/channels.rs"


def declared_cases() -> list[str]:
    text = SOURCE.read_text(encoding="utf-8")
    table = re.search(r"^cases! \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL)
    assert table is not None
    return re.findall(r"\b([a-z][a-z0-9_]*)\b", re.sub(r"//[^\n]*", "", table.group(1)))


CASES = declared_cases()
_runs: dict[int, Any] = {}


@pytest.fixture
def run(boot2: Any, vm2: Any) -> Any:
    """The program's run on two vCPUs, once per session."""
    if id(vm2) not in _runs:
        _runs[id(vm2)] = boot2("channels", {"/bin/channels": "channels"}, timeout=60.0)
    return _runs[id(vm2)]


def verdicts(run: Any) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for line in run.task_lines("init"):
        if line.startswith(("PASS ", "FAIL ")):
            name, _, why = line[5:].partition(": ")
            out[name] = None if line.startswith("PASS ") else why
    return out


def test_channel_suite_passes_every_case_and_returns_every_object_and_frame(run: Any) -> None:
    got = verdicts(run)
    assert list(got) == CASES, "\n".join(run.lines[-30:])
    assert {name: why for name, why in got.items() if why is not None} == {}
    assert f"SUMMARY {len(CASES)}/{len(CASES)}" in run.task_lines("init")
    assert run.result.status == 0
    assert_no_leak(run)
    assert run.stats["metadata_bytes"] == run.baseline["metadata_bytes"]


@pytest.mark.parametrize("case", CASES)
def test_case(run: Any, case: str) -> None:
    why = verdicts(run).get(case, "never reported")
    assert why is None, why


# --- the storm --------------------------------------------------------------------------

#: Messages each way in the quick storm; the full one below sends 50000 each way (10^5
#: messages in all, docs/performance.md).
STORM = b"500\n"


def test_two_processes_of_four_threads_pass_handles_without_loss_or_duplicate(
        boot2: Any) -> None:
    run = boot2("chan-storm", {"/bin/chan-storm": "chan-storm", "/storm.conf": STORM},
                timeout=120.0)
    lines = run.task_lines("init") + run.task_lines("chan-storm")
    assert [line for line in lines if "FAIL" in line] == []
    assert "chan-storm: ok, 500 messages each way" in run.task_lines("init")
    assert run.result.status == 0, "\n".join(run.lines[-20:])
    assert_no_leak(run)
    assert run.stats["metadata_bytes"] == run.baseline["metadata_bytes"]


def test_the_full_storm_passes_ten_to_the_fifth_messages_carrying_handles(boot2: Any) -> None:
    """Issue 9's stress test at its full size: 2 processes x 4 threads, 10^5 messages
    in all, each carrying an event handle; nothing lost, duplicated or left over."""
    run = boot2("chan-storm", {"/bin/chan-storm": "chan-storm", "/storm.conf": b"50000\n"},
                timeout=900.0)
    lines = run.task_lines("init") + run.task_lines("chan-storm")
    assert [line for line in lines if "FAIL" in line] == []
    assert "chan-storm: ok, 50000 messages each way" in run.task_lines("init")
    assert run.result.status == 0, "\n".join(run.lines[-20:])
    assert_no_leak(run)
    assert run.stats["metadata_bytes"] == run.baseline["metadata_bytes"]


def test_the_user_library_two_process_example_runs(boot: Any) -> None:
    run = boot("chan-demo", {"/bin/chan-demo": "chan-demo"})
    assert "the child signalled 42" in run.task_lines("init")
    assert run.result.status == 0, "\n".join(run.lines[-20:])
    assert_no_leak(run)


def test_init_connects_two_services_with_a_channel(boot: Any) -> None:
    run = boot("init", {"/bin/chan-peer": "chan-peer",
                        "/etc/init.services": b"channel /bin/chan-peer /bin/chan-peer\n"})
    assert run.task_lines("chan-peer") == ["chan-peer got: hello through the channel"] * 2
    assert sum("with a channel" in line for line in run.task_lines("init")) == 2
    assert run.result.status == 0, "\n".join(run.lines[-20:])
    assert_no_leak(run)


def test_handles_used_closed_duplicated_and_sent_at_once_get_documented_answers(
        boot2: Any) -> None:
    run = boot2("chan-race", {"/bin/chan-race": "chan-race", "/race.conf": b"600\n"},
                timeout=120.0)
    lines = run.task_lines("init") + run.task_lines("chan-race")
    assert [line for line in lines if "FAIL" in line] == []
    assert any(line.startswith("chan-race: ok, ") for line in run.task_lines("init"))
    assert run.result.status == 0, "\n".join(run.lines[-20:])
    assert_no_leak(run)
