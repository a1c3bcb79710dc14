"""End to end: thread-local storage. The first thread's TLS block comes from the
kernel (EXEC reads PT_TLS), every spawned thread's from libcopra; Rust's
``thread_local!`` (``tls``) and gcc's ``__thread`` (``c-tls``) both see a copy of their
own in every thread, initialised from .tdata with .tbss zeroed."""

from __future__ import annotations

from typing import Any

from test_programs import assert_no_leak


def test_rust_thread_locals_are_per_thread_on_two_vcpus(boot2: Any) -> None:
    run = boot2("tls")
    lines = run.task_lines("init")
    assert run.result.status == 0, "\n".join(run.lines)
    assert lines == ["tls: ok: 4 threads x 20000 rounds, .tdata, .tbss, lazy keys and "
                     "destructors"]
    assert_no_leak(run)


def test_c_thread_variables_are_per_thread(boot: Any) -> None:
    run = boot("c-tls")
    lines = run.task_lines("init")
    assert run.result.status == 0, "\n".join(run.lines)
    assert lines == ["c-tls: ok: 4 threads, __thread .tdata, .tbss and a 64-byte aligned "
                     "variable"]
    assert_no_leak(run)
