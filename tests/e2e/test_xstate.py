"""End to end: vector registers and the rest of the XSAVE state stay inside their process.

``user/testprogs/src/bin/xstate.rs`` (as /init) detects with CPUID and XGETBV which
register classes it may use (MXCSR and FCW always; AVX upper halves; AVX-512 opmasks,
zmm upper halves and zmm16-31 where present), fills them with its pattern, EXECs
``xstate-child`` and keeps rewriting and checking its patterns while the child runs;
the child checks that it started with the initial state and keeps its own patterns;
after WAIT the parent checks its registers once more. Where CPUID says AVX or AVX-512
is unusable, the child must die of #UD when it tries it.

Once with the kernel's time slice and once with a 1 ms slice, so that the two
processes are preempted in the middle of their patterns many times.
"""

from __future__ import annotations

from typing import Any

import pytest

from copra.hw import x86
from copra.kernel import kernel as kernel_module

CHILD = {"/bin/xstate-child": "xstate-child"}
CHECKS = (
    "parent's state held while the child ran",
    "parent's state held across WAIT",
    "child started clean and kept its own state",
)


def assert_all_checks_pass(run: Any) -> None:
    lines = run.task_lines("init")
    failures = [line for line in lines if line.startswith("FAIL")]
    assert failures == [], "\n".join(run.lines)
    assert [line.removeprefix("PASS ") for line in lines if line.startswith("PASS")] == \
        list(CHECKS)
    assert run.result.status == 0
    assert run.kernel.counters["internal_errors"] == 0
    assert run.stats["processes"] == 0
    assert run.stats["user_frames"] == 0


def test_xsave_state_is_private_to_each_process(boot: Any) -> None:
    run = boot("xstate", CHILD)
    assert_all_checks_pass(run)


def test_process_cpuid_offers_exactly_the_state_the_kernel_keeps(boot: Any) -> None:
    run = boot("xstate", CHILD)
    xcr0 = run.kernel.vm.xcr0
    avx = bool(xcr0 & (1 << x86.XFeature.AVX))
    avx512 = xcr0 & x86.XCR0_AVX512 == x86.XCR0_AVX512
    header = run.task_lines("init")[0]
    assert f"AVX {'yes' if avx else 'no'}, AVX-512 {'yes' if avx512 else 'no'}" in header


def test_xsave_state_is_private_under_a_short_time_slice(
        boot: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_module, "TIME_SLICE", 0.001)
    run = boot("xstate", CHILD)
    assert_all_checks_pass(run)
    # Not a timing assertion about copra: the guard that this test did what it says.
    # Each process checks its registers for tens of milliseconds, so a 1 ms tick
    # preempts them many times.
    assert run.kernel.counters["preemptions"] > 0
