"""The scheduler: the run queue, the current thread of each CPU, idle CPUs, wake-ups.

Round robin over one run queue shared by every CPU: a CPU takes the thread at its
head (``pick``), runs it until it blocks, ends or its slice ends, and a preempted
thread goes to the back (``yield_``). A CPU with nothing to run blocks its host
thread on the scheduler's condition variable (no spinning) until a thread becomes
runnable or the run ends. Any host thread may wake a blocked thread (``wake``):
the CPU loops, the timer, an observer fired by an object's signal.

A blocked thread with a ``deadline`` (a wait with a timeout) is also kept in
``_timed``; the timer thread calls ``expire`` to wake those whose deadline passed.

The run ends (every ``pick`` returns None) when ``stop`` is called, or when every
CPU is idle with nothing runnable and no timed wait pending: no thread can ever run
again then, because only a running thread or the timer makes another one runnable.

Invariants (with kernel/thread.py's states):
- a thread is in ``_queue`` iff it is RUNNABLE, at most once;
- ``current[i]`` is the RUNNING thread CPU i took, or None; a RUNNING thread is
  exactly one CPU's current thread (``thread.cpu``);
- ``wake_pending`` is only set on a RUNNING thread, by a wake-up that came before it
  blocked; ``block`` then makes it RUNNABLE at once (no wake-up is lost);
- ``idle`` counts the CPUs waiting in ``pick``; ``finished`` never goes back;
- ``_timed`` holds exactly the BLOCKED threads that have a deadline.

Locking: ONE lock (class "sched", kernel/lockdep.py) guards all of the above and every
thread's ``state``, ``cpu``, ``retry`` and ``wake_pending``; the idle condition
variable is on it. It is taken after object and wait-queue locks (an observer's
``notify`` wakes under its queue's lock) and before the VM's gate lock; nothing is
called out of the scheduler with it held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from copra.kernel import lockdep
from copra.kernel.thread import Thread, ThreadState
from copra.kernel.waitqueue import Signal, WaitQueue


class Scheduler:
    def __init__(self, cpus: int) -> None:
        self.lock = lockdep.lock("sched")
        self._cond = lockdep.condition(self.lock)
        self._queue: deque[Thread] = deque()
        self.current: list[Thread | None] = [None] * cpus
        self.idle = 0
        self.stopped = False
        self.finished = False
        self._timed: set[Thread] = set()

    # --- what the CPUs do ------------------------------------------------------------

    def add(self, thread: Thread) -> None:
        """A new thread joins the run queue."""
        with self.lock:
            thread.state = ThreadState.RUNNABLE
            self._queue.append(thread)
            self._cond.notify()

    def pick(self, cpu: int) -> Thread | None:
        """The next thread for CPU ``cpu`` (now RUNNING there); blocks while there is
        none; None once the run has ended."""
        with self.lock:
            while not self._queue:
                if self.stopped or self.finished:
                    return None
                self.idle += 1
                if self.idle == len(self.current) and not self._timed:
                    self.finished = True  # nothing runs, nothing can wake anything
                    self.idle -= 1
                    self._cond.notify_all()
                    return None
                self._cond.wait()
                self.idle -= 1
            if self.stopped:
                return None
            thread = self._queue.popleft()
            thread.state = ThreadState.RUNNING
            thread.cpu = cpu
            thread.wake_pending = False
            self.current[cpu] = thread
            return thread

    def others_waiting(self) -> bool:
        """Whether a preempted thread would make room for another (a racy hint)."""
        return bool(self._queue) or self.stopped

    def yield_(self, thread: Thread) -> None:
        """The RUNNING thread's slice ended: to the back of the queue."""
        with self.lock:
            self._leave(thread)
            thread.state = ThreadState.RUNNABLE
            self._queue.append(thread)
            self._cond.notify()

    def block(self, thread: Thread) -> None:
        """The RUNNING thread waits (its waiter is registered): BLOCKED, unless a
        wake-up came first, then RUNNABLE again."""
        with self.lock:
            self._leave(thread)
            thread.retry = True
            if thread.wake_pending:
                thread.wake_pending = False
                thread.state = ThreadState.RUNNABLE
                self._queue.append(thread)
                self._cond.notify()
            else:
                thread.state = ThreadState.BLOCKED
                if thread.deadline is not None:
                    self._timed.add(thread)

    def leave(self, thread: Thread) -> None:
        """The RUNNING thread has ended on its CPU."""
        with self.lock:
            self._leave(thread)
            self._cond.notify_all()  # ``wait_left`` may wait for it

    def _leave(self, thread: Thread) -> None:
        cpu = thread.cpu
        if cpu is not None and self.current[cpu] is thread:
            self.current[cpu] = None
        thread.cpu = None

    # --- what anyone may do ------------------------------------------------------------

    def wake(self, thread: Thread) -> None:
        """Make a BLOCKED thread RUNNABLE (a RUNNING one will not block next)."""
        with self.lock:
            if thread.state is ThreadState.BLOCKED:
                self._timed.discard(thread)
                thread.state = ThreadState.RUNNABLE
                self._queue.append(thread)
                self._cond.notify()
            elif thread.state is ThreadState.RUNNING:
                thread.wake_pending = True

    def exit(self, thread: Thread) -> None:
        """The thread has ended: never run it again (a RUNNING thread stays its CPU's
        current thread until that CPU calls ``leave``)."""
        with self.lock:
            if thread.state is ThreadState.RUNNABLE:
                self._queue.remove(thread)
            self._timed.discard(thread)
            thread.state = ThreadState.EXITED

    def stop(self) -> None:
        """End the run: every ``pick`` returns None from now on."""
        with self.lock:
            self.stopped = True
            self._cond.notify_all()

    def wait_left(self, threads: list[Thread], caller: Thread | None,
                  kick: Callable[[int], None]) -> None:
        """Return once no thread of ``threads`` (EXITED already) but ``caller`` is any
        CPU's current thread: ``kick(cpu)`` makes each such CPU notice."""
        with self.lock:
            while True:
                busy = {t.cpu for t in threads if t is not caller and t.cpu is not None}
                if not busy:
                    return
                for cpu in busy:
                    assert cpu is not None
                    kick(cpu)
                self._cond.wait()

    def expire(self, now: float) -> None:
        """Wake every timed wait whose deadline has passed (the timer thread)."""
        with self.lock:
            due = [t for t in self._timed if t.deadline is not None and t.deadline <= now]
            for thread in due:
                self._timed.discard(thread)
                thread.state = ThreadState.RUNNABLE
                self._queue.append(thread)
                self._cond.notify()

    def next_deadline(self) -> float | None:
        with self.lock:
            return min((t.deadline for t in self._timed if t.deadline is not None),
                       default=None)

    def runnable(self) -> int:
        with self.lock:
            return len(self._queue)


class Waiter:
    """A thread's registrations on the wait queues it waits on: fires once, wakes it."""

    __slots__ = ("_queues", "_wake", "fired", "thread")

    def __init__(self, thread: Thread, wake: Callable[[Thread], None]) -> None:
        self.thread = thread
        self._wake = wake
        self._queues: list[WaitQueue] = []
        #: The queues that notified it since the thread's syscall began (what woke it).
        self.fired: list[WaitQueue] = []

    def watch(self, queue: WaitQueue, mask: Signal) -> Signal:
        """The bits of ``mask`` raised on ``queue`` now; if none, wait for them."""
        ready = queue.observe(self, mask)
        if not ready:
            self._queues.append(queue)
        return ready

    def notify(self, queue: WaitQueue, signals: Signal) -> None:
        self.fired.append(queue)
        self._wake(self.thread)

    def cancel(self) -> None:
        """Leave every queue (the thread runs again, or ends)."""
        for queue in self._queues:
            queue.cancel(self)
        self._queues.clear()
