"""End to end: the native syscall fuzzer under the real kernel.

``user/testprogs/src/bin/syscall-fuzz.rs`` makes 100,000 syscalls with numbers and
arguments from a seeded PRNG (seed and count from /etc/fuzz.conf) and checks that
each answer is a result or a documented error code. Each run here uses a fixed seed,
so a failure reproduces; the second seed widens the net. A run must exit 0, print
no FAIL line, cause no internal kernel error, and leave every count of the kernel
(processes, handles, objects, frames of every kind) where it was before: the fuzzer
closes what it opened and removes its /fuzz tree, and the kernel frees the rest.

The OPENDIR/MKDIR-heavy mode (``/etc/fuzz-dirs.conf`` present) runs under a small
kernel metadata budget, so that names and snapshots meet ENOMEM again and again; the
budget, like every other count, must be back at its baseline at the end.

The channels mode (``/etc/fuzz-chan.conf``) draws most calls among CHANNEL_CREATE,
SEND, RECV, DUPLICATE, REPLACE and CLOSE of its own handles, so handles really move
between its endpoints; every queued handle must be released at the end.

The many-process test runs fuzzers that start fuzzers (two levels) under tight
limits; every one must end with 0 and the counts must return to the baseline.

The threads test runs four fuzzing threads of one process on two CPUs with a 1 ms
slice: they close, read, map and unmap each other's handles and mappings; every
answer must still be documented, and the counts must return to the baseline.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from copra.kernel.limits import Limits

CALLS = 100_000


@pytest.mark.parametrize("seed", [0x5EED, 0xC0DA_2026_1127])
def test_fuzzer_sees_only_documented_answers_and_nothing_leaks(boot: Any, seed: int) -> None:
    run = boot("syscall-fuzz", {"/etc/fuzz.conf": f"{seed:#x} {CALLS}\n".encode()},
               timeout=120.0)
    lines = run.task_lines("init")
    fails = [line for line in lines if line.startswith("FAIL")]
    assert fails == []
    assert run.result.status == 0, "\n".join(lines[-40:])
    assert f"SUMMARY {CALLS} calls, 0 unexpected" in lines
    assert any(re.fullmatch(r"result ok: [1-9]\d*", line) for line in lines)
    assert run.kernel.counters["internal_errors"] == 0
    changed = {k: (run.baseline.get(k), v) for k, v in run.stats.items()
               if run.baseline.get(k) != v}
    assert changed == {}, "stat: (baseline, after)"


# -- the OPENDIR/MKDIR-heavy mode ----------------------------------------------------------

DIRS_CALLS = 20_000
#: Small enough that the numbered tree, its snapshots and the held handles run the
#: budget out often, large enough that most kinds of call also succeed often.
DIRS_LIMIT = 96 << 10


def test_dirs_mode_meets_enomem_and_leaves_the_metadata_budget_at_its_baseline(
        boot: Any) -> None:
    run = boot("syscall-fuzz", {"/etc/fuzz.conf": f"0xD1E5 {DIRS_CALLS}\n".encode(),
                                "/etc/fuzz-dirs.conf": b""},
               timeout=120.0, metadata_limit=DIRS_LIMIT)
    lines = run.task_lines("init")
    assert [line for line in lines if line.startswith("FAIL")] == []
    assert run.result.status == 0, "\n".join(lines[-40:])
    assert "syscall-fuzz: OPENDIR/MKDIR-heavy mode (/etc/fuzz-dirs.conf)" in lines
    assert f"SUMMARY {DIRS_CALLS} calls, 0 unexpected" in lines
    ok = {m[1]: int(m[2]) for line in lines
          if (m := re.fullmatch(r"calls (\w+): \d+ \((\d+) ok\)", line))}
    assert ok["OPENDIR"] > 200 and ok["MKDIR"] > 200 and ok["CLOSE"] > 200, ok
    assert any(re.fullmatch(r"result ENOMEM: \d{3,}", line) for line in lines)
    assert run.fs.metadata.peak > DIRS_LIMIT - 1024  # the budget ran out
    assert run.kernel.counters["internal_errors"] == 0
    assert run.kernel.counters["host_memory_errors"] == 0


# --- many-process mode ------------------------------------------------------------------------

#: Tight limits, so that every kind of refusal happens while several fuzzers run.
PROCS_LIMITS = Limits(frames=2048, mappings=24, tasks=10, children=3, unreaped=2)


def test_fuzzers_spawning_fuzzers_meet_the_limits_and_nothing_leaks(boot: Any) -> None:
    run = boot("syscall-fuzz", {
        "/etc/fuzz.conf": b"0xF0CA11 8000\n",
        "/etc/fuzz-procs.conf": b"4 2 1500\n",  # 4 actions each, two levels, 1500 calls
        "/bin/syscall-fuzz": "syscall-fuzz",
    }, timeout=120.0, limits=PROCS_LIMITS)
    top = run.task_lines("init")
    children = run.task_lines("syscall-fuzz")
    assert [line for line in top + children if line.startswith("FAIL")] == []
    assert run.result.status == 0, "\n".join(top[-40:])
    assert "SUMMARY 8000 calls, 0 unexpected" in top
    (procs,) = [line for line in top if line.startswith("procs:")]
    counts = re.fullmatch(r"procs: started (\d+), refused (\d+) EAGAIN (\d+) ENOMEM, "
                          r"reaped (\d+)", procs)
    assert counts is not None
    started, eagain, _, reaped = map(int, counts.groups())
    assert started >= 1 and eagain >= 1 and reaped == started
    grandchildren = sum(line.startswith("SUMMARY 1500 calls, 0 unexpected") for line in children)
    assert grandchildren == sum(int(m.group(1)) for m in map(
        re.compile(r"procs: started (\d+)").match, children) if m) + started
    assert run.kernel.counters["internal_errors"] == 0
    assert run.kernel.counters["task_limit_refusals"] >= eagain
    changed = {k: (run.baseline.get(k), v) for k, v in run.stats.items()
               if run.baseline.get(k) != v}
    assert changed == {}, "stat: (baseline, after)"


# --- channels mode ------------------------------------------------------------------------

CHAN_CALLS = 5_000


def test_channels_mode_moves_handles_and_nothing_leaks(boot: Any) -> None:
    run = boot("syscall-fuzz", {"/etc/fuzz.conf": f"0xC4A7 {CHAN_CALLS}\n".encode(),
                                "/etc/fuzz-chan.conf": b""}, timeout=120.0)
    lines = run.task_lines("init")
    assert [line for line in lines if line.startswith("FAIL")] == []
    assert run.result.status == 0, "\n".join(lines[-40:])
    assert "syscall-fuzz: channels mode (/etc/fuzz-chan.conf)" in lines
    assert f"SUMMARY {CHAN_CALLS} calls, 0 unexpected" in lines
    ok = {m[1]: int(m[2]) for line in lines
          if (m := re.fullmatch(r"calls (\w+): \d+ \((\d+) ok\)", line))}
    assert ok["SEND"] > 200 and ok["RECV"] > 50 and ok["DUPLICATE"] > 40, ok
    errors = {m[1]: int(m[2]) for line in lines
              if (m := re.fullmatch(r"result (\w+): (\d+)", line))}
    for errno in ("EMSGSIZE", "EAGAIN", "EPIPE", "EBUSY", "EPERM"):
        assert errors[errno] > 0, errno
    assert run.kernel.counters["internal_errors"] == 0


# --- threads mode ---------------------------------------------------------------------------

THREADS = 4
THREAD_CALLS = 2_500


def test_fuzzing_threads_on_shared_handles_see_only_documented_answers_and_nothing_leaks(
        boot2: Any) -> None:
    run = boot2("syscall-fuzz", {"/etc/fuzz.conf": f"0x7EAD5 {THREAD_CALLS}\n".encode(),
                                 "/etc/fuzz-threads.conf": f"{THREADS}\n".encode()},
                timeout=120.0, time_slice=0.001)
    lines = run.task_lines("init")
    assert [line for line in lines if line.startswith("FAIL")] == []
    assert run.result.status == 0, "\n".join(lines[-40:])
    assert f"syscall-fuzz: threads mode, {THREADS} threads" in lines
    per_thread = [m for line in lines
                  if (m := re.fullmatch(rf"thread (\d): {THREAD_CALLS} calls, (\d+) ok, "
                                        r"0 unexpected", line))]
    assert sorted(int(m[1]) for m in per_thread) == list(range(THREADS))
    assert all(int(m[2]) > 0 for m in per_thread)
    assert f"SUMMARY {THREADS * THREAD_CALLS} calls, 0 unexpected" in lines
    assert run.kernel.counters["internal_errors"] == 0
    assert run.kernel.counters["preemptions"] > 0  # the threads took turns on the CPUs
    changed = {k: (run.baseline.get(k), v) for k, v in run.stats.items()
               if run.baseline.get(k) != v}
    assert changed == {}, "stat: (baseline, after)"
