"""How an idle CPU's host thread sleeps, and wake-ups deferred until the waker lets go.

An idle CPU blocks its host thread on its own ``IdleWait``: a lock used as a binary
semaphore, so ``wait`` sleeps in the host's futex with the GIL released and ``post``
(a release, from another host thread) wakes it with one futex wake. An eventfd was
tried first: its write gives up the GIL, so the woken host thread took the GIL from
under its waker, which then waited for it back before its own ``KVM_RUN`` (profiled:
the write took ~260 us per call with both host threads on one host core).

Deferred wake-ups (Linux's ``wake_q``).
Waking an idle CPU while holding the GIL costs two host wake-ups in a row: the woken
host thread returns from its wait only to block on the GIL, which the waker holds
until it next lets go of it (its own ``KVM_RUN``, or its own idle wait), and is then
woken a second time. So a CPU's host thread (inside ``deferred``) does not post at
once: the scheduler queues the posts here (``queue``), and ``flush`` issues them right
before this thread gives up the GIL. The scheduler calls ``flush`` before a CPU
blocks idle, ``Cpu`` before every ``KVM_RUN`` of its vCPU, and every other place a
CPU's host thread may block or give up the GIL with wake-ups queued flushes first:
VCPU_RUN before it runs a guest vCPU, IRQ_SIGNAL before it yields the GIL,
``Scheduler.wait_left``, the stop-the-world ``Gate.close``, closing a VCPU while its
runner is inside, and the CPU loop when it ends (docs/architecture.md, "Deferred
wake-ups"). Every other host thread (the timer, tests) posts as soon as the
scheduler's lock is released.

Invariant: a wake-up queued on a CPU's host thread is posted before that thread next
sleeps idle, enters a guest (its vCPU's or one VCPU_RUN runs), yields the GIL in
IRQ_SIGNAL, waits for other CPUs (``wait_left``, ``Gate.close``, a VCPU's runner), or
ends its loop; in between it runs only kernel
code, whose locks are held for short sections by threads that never wait for an idle
CPU. A wake-up is delayed by at most that Python work, never lost.

Locking: the queue is per host thread (thread-local), touched only by its thread; an
``IdleWait`` is its own lock, outside the lock order (a post never blocks). Posts are
made with the scheduler's lock released (a woken CPU's first act is to take it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class IdleWait:
    """What one idle CPU's host thread sleeps on: a lock used as a binary semaphore,
    held while nobody posted. A post made before the ``wait`` is not lost (that
    ``wait`` returns at once); the scheduler posts once per wait (its ``_waiting``)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def wait(self) -> None:
        """Sleep until a ``post`` (or return at once if one came since the last wait)."""
        self._lock.acquire()

    def post(self) -> None:
        self._lock.release()


class _HostThread(threading.local):
    def __init__(self) -> None:
        #: This is a CPU's host thread: its posts wait for ``flush``.
        self.defer = False
        self.posts: list[IdleWait] = []


_here = _HostThread()


@contextmanager
def deferred(enabled: bool = True) -> Iterator[None]:
    """Inside (a CPU's host thread runs inside), this host thread's wake-ups wait for
    ``flush``; whatever is queued at the end is posted then. ``enabled`` False: posts
    go out as the scheduler's lock is released, as on any other host thread."""
    here = _here
    was, here.defer = here.defer, enabled or here.defer
    try:
        yield
    finally:
        here.defer = was
        flush()


def queue(idle: IdleWait) -> None:
    """Wake the CPU that sleeps on ``idle`` (the scheduler's lock held): at ``flush``
    on a CPU's host thread, at ``post_queued`` elsewhere."""
    _here.posts.append(idle)


def post_queued() -> None:
    """The scheduler's lock was released: post what was queued, unless this is a
    CPU's host thread (which posts at ``flush``)."""
    here = _here
    if here.posts and not here.defer:
        flush()


def flush() -> None:
    """Post every wake-up this host thread queued (not under the scheduler's lock)."""
    posts = _here.posts
    if posts:
        for idle in posts:
            idle.post()
        posts.clear()
