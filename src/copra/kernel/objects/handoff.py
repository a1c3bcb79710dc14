"""A blocked syscall its waker may complete directly (kernel/thread.py, ``withdraw``).

An object with blocked readers (an event's READs, an endpoint's RECVs) keeps one
``HandOff`` per blocked thread (``offer`` puts it on the object's list and returns the
thread's ``withdraw``). A writer that finds one takes it off the object's list,
under the object's lock, sets ``taken``, gives it what the blocked call waited for
(``deliver``, which does what the call would have done when dispatched again) and wakes
the thread (``wake``); the thread's ``withdraw`` then finds ``taken`` and returns the
result instead of dispatching its syscall again.

Locking: ``taken`` and the object's list are guarded by the object's lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections import deque

    from copra.kernel.lockdep import KernelLock
    from copra.kernel.thread import Thread

T = TypeVar("T")


class HandOff(Generic[T]):
    """One blocked call, and how to complete it with a ``T``."""

    __slots__ = ("deliver", "taken", "thread", "wake")

    def __init__(self, thread: Thread, deliver: Callable[[T], None],
                 wake: Callable[[Thread], None]) -> None:
        self.thread = thread
        self.deliver = deliver
        self.wake = wake
        #: Off the object's list: a writer took it, or the object let go of all.
        self.taken = False


def offer(waiting: deque[HandOff[T]], lock: KernelLock, thread: Thread,
          deliver: Callable[[T], None],
          wake: Callable[[Thread], None]) -> Callable[[], int | None]:
    """``thread`` blocks on an object whose blocked calls wait in ``waiting`` (guarded by
    ``lock``, the object's): a writer may complete it. Returns its ``withdraw``: the
    result a writer set, or None after taking the call off the list (dispatched again)."""
    handoff = HandOff(thread, deliver, wake)
    with lock:
        waiting.append(handoff)

    def withdraw() -> int | None:
        with lock:
            if handoff.taken:  # a writer took it: it set the result
                result, thread.result = thread.result, None
                return result
            waiting.remove(handoff)
            return None

    return withdraw
