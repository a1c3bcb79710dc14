"""End to end: native programs drive each resource limit to its edge (docs/abi.md, Limits).

``limit-probe`` (user/testprogs) maps until MMAP fails, hogs frames and then starts a
sibling, spawns children it never reaps, spawns children that stay alive, and runs a
fork bomb; its lines say how far it got and which error stopped it. Every run must
end with the kernel's counts back at their baseline: processes, tasks, handles,
objects and frames of every kind.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from copra.kernel.image import ImageConfig
from copra.kernel.limits import DEFAULT_LIMITS, Limits

PROBE = "/bin/limit-probe"


def probe(boot: Any, mode: str, limits: Limits = DEFAULT_LIMITS, timeout: float = 60.0,
          **roots: str) -> Any:
    """Boot limit-probe as init in ``mode``; each keyword gives a child root's mode."""
    files: dict[str, bytes | str] = {PROBE: "limit-probe", "/etc/probe.conf": mode.encode()}
    for root, child_mode in roots.items():
        files[f"/{root}/etc/probe.conf"] = child_mode.encode()
    return boot("limit-probe", files, timeout=timeout, limits=limits)


def assert_back_at_baseline(run: Any) -> None:
    changed = {k: (run.baseline.get(k), v) for k, v in run.stats.items()
               if run.baseline.get(k) != v}
    assert changed == {}, "stat: (baseline, after)"
    assert run.stats["tasks"] == 0
    assert run.kernel.counters["internal_errors"] == 0


def lines_of(run: Any) -> list[str]:
    """The lines of the probe that runs as init; no task may have printed a FAIL."""
    fails = [line for line in run.task_lines("init") + run.lines[-20:]
             if line.startswith("FAIL")]
    assert fails == []
    return run.task_lines("init")  # type: ignore[no-any-return]


def test_one_page_mappings_stop_at_the_default_mapping_limit_with_enomem(boot: Any) -> None:
    run = probe(boot, "mappings 100000")
    assert run.result.status == 0
    # The image's segments and the stack are mappings too.
    regions = Limits().mappings
    (mapped,) = [line for line in lines_of(run) if line.startswith("mapped")]
    count = int(re.fullmatch(r"mapped (\d+) then ENOMEM", mapped).group(1))  # type: ignore[union-attr]
    assert regions - 8 < count < regions
    assert "remap ok" in lines_of(run)
    assert_back_at_baseline(run)


def test_65000_one_page_mappings_complete_with_a_raised_limit_from_the_image_config(
        boot: Any) -> None:
    config = ImageConfig.from_json(json.dumps({"limits": {"mappings": 65536}}), Path("."))
    run = probe(boot, "file-mappings 65000", config.limits, timeout=120.0)
    assert run.result.status == 0, run.lines[-20:]
    assert lines_of(run) == ["mapped 65000", "remap ok"]
    assert_back_at_baseline(run)


def test_frame_hog_stops_at_its_limit_and_its_sibling_still_gets_memory(boot: Any) -> None:
    run = probe(boot, "hog", sibling="sibling 2048")
    assert run.result.status == 0, run.lines[-20:]
    (hog,) = lines_of(run)
    (sibling,) = run.task_lines("limit-probe")
    held = int(re.fullmatch(r"hog holds (\d+) pages then ENOMEM", hog).group(1))  # type: ignore[union-attr]
    limit = Limits().frame_limit(run.kernel.vm.frames.total)
    # Below the limit by the image, the stack and the page tables only.
    assert limit - 64 < held < limit
    assert run.kernel.vm.frames.free_count > 2048  # the pool itself was never empty
    assert sibling == "sibling got 2048 pages"
    assert_back_at_baseline(run)


def test_spawner_of_unreaped_children_gets_eagain_at_the_limit(boot: Any) -> None:
    limits = Limits(unreaped=12, children=1000)
    run = probe(boot, "unreaped", limits, quick="exit")
    assert run.result.status == 0, run.lines[-20:]
    started, reaped, again = lines_of(run)
    count = int(re.fullmatch(r"started (\d+) then EAGAIN", started).group(1))  # type: ignore[union-attr]
    assert count >= 12
    assert reaped == f"reaped {count}"
    assert again == "again ok"  # then it starts children until refused and ends
    assert run.kernel.counters["task_limit_refusals"] == 2
    assert_back_at_baseline(run)


def test_spawner_of_live_children_gets_eagain_at_exactly_the_limit(boot: Any) -> None:
    run = probe(boot, "children", Limits(children=5), spin="spin")
    assert run.result.status == 0, run.lines[-20:]
    assert lines_of(run) == ["started 5 then EAGAIN", "all 5 ended well"]
    # The probe leaves the empty file that released its children; its name and node
    # are the RAM fs's metadata, not the processes'.
    run.fs.unlink("/spin/release")
    run.stats["metadata_bytes"] = run.kernel.stats()["metadata_bytes"]
    assert_back_at_baseline(run)


def test_fork_bomb_is_stopped_by_the_task_limit_and_every_task_ends(boot: Any) -> None:
    run = probe(boot, "bomb-top", Limits(tasks=24), b="bomb")
    assert run.result.status == 0, run.lines[-20:]
    (summary,) = lines_of(run)
    assert re.fullmatch(r"bomb: \d+ children, then EAGAIN; every descendant ended well",
                        summary)
    assert run.kernel.counters["task_limit_refusals"] >= 24
    assert_back_at_baseline(run)
