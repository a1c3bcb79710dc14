"""The lock-order checker (kernel/lockdep.py): on in the suite, refuses inversions."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from copra.kernel import lockdep
from copra.kernel.lockdep import LockOrderError

DOC = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text("utf-8")


def test_checker_is_on_in_the_test_suite() -> None:
    # Fails when the suite runs without COPRA_LOCKDEP=1 (tests/conftest.py sets it).
    assert lockdep.enabled()
    assert isinstance(lockdep.lock("sched"), lockdep.CheckedLock)


def test_lock_taken_against_the_order_is_refused_before_it_blocks() -> None:
    outer, inner = lockdep.lock("tasks"), lockdep.lock("sched")
    with inner, lockdep.expect_violation(), pytest.raises(LockOrderError, match="'tasks'"):
        outer.acquire()
    assert outer.acquire(blocking=False)  # it was never taken
    outer.release()


def test_locks_taken_in_the_order_nest() -> None:
    outer, inner = lockdep.lock("tasks"), lockdep.lock("sched")
    with outer, inner:
        pass


def test_two_locks_of_one_class_do_not_nest() -> None:
    a, b = lockdep.lock("waitqueue"), lockdep.lock("waitqueue")
    with a, lockdep.expect_violation(), pytest.raises(LockOrderError, match="same class"):
        b.acquire()


def test_reentrant_lock_may_be_taken_again_by_its_holder() -> None:
    mem = lockdep.rlock("process.mem")
    with mem, mem:
        pass
    assert mem.acquire(blocking=False)
    mem.release()


def test_plain_lock_taken_twice_by_its_holder_is_refused() -> None:
    lock = lockdep.lock("frames")
    with lock, lockdep.expect_violation(), pytest.raises(LockOrderError, match="again"):
        lock.acquire()


def test_non_blocking_acquire_is_never_refused() -> None:
    outer, inner = lockdep.lock("tasks"), lockdep.lock("sched")
    with inner:
        assert outer.acquire(blocking=False)
        outer.release()


def test_unknown_lock_class_is_refused() -> None:
    with pytest.raises(ValueError, match=r"not in lockdep\.ORDER"):
        lockdep.lock("nonesuch")


def test_condition_wait_releases_and_retakes_a_checked_lock() -> None:
    lock = lockdep.lock("sched")
    cond = lockdep.condition(lock)
    ready: list[int] = []

    def producer() -> None:
        with cond:
            ready.append(1)
            cond.notify()

    with cond:
        worker = threading.Thread(target=producer)
        worker.start()
        assert cond.wait_for(lambda: ready, timeout=10)
    worker.join()


def test_architecture_doc_gives_the_same_order() -> None:
    section = DOC.split("### The lock order", 1)[1].split("\n#", 1)[0]
    assert tuple(re.findall(r"^\d+\. `([a-z.]+)`", section, re.M)) == lockdep.ORDER
