"""The scheduler: the run queue, the current thread of each CPU, idle CPUs, wake-ups.

Round robin over one run queue shared by every CPU: a CPU takes the thread at its
head (``pick``), runs it until it blocks, ends or its slice ends, and a preempted
thread goes to the back (``yield_``). A CPU with nothing to run blocks its host
thread on its own ``IdleWait`` (kernel/wakeq.py, no spinning) until a thread is
handed to it or becomes runnable, or the run ends. Any host thread may wake a blocked thread
(``wake``): the CPU loops, the timer, an observer fired by an object's signal.

Affinity: a thread made runnable while the CPU it last ran on is idle goes to that
CPU's mailbox and that CPU is woken, rather than to the shared queue where the CPU
that woke it (busy now, about to block perhaps) would take it: the idle CPU's vCPU
may still hold the thread's context (loading it again is then free, kernel/cpu.py),
and two threads passing a token between two CPUs each stay on their own instead of
taking turns on one (docs/performance.md, "Threads"). Otherwise a runnable thread
goes to the shared queue and one idle CPU, if any, is woken for it.

Waking an idle CPU is a post on its ``IdleWait`` (an eventfd, kernel/wakeq.py), made
after the scheduler's lock is released; a CPU's own host thread defers its posts until
it next gives up the GIL (kernel/wakeq.py: the woken host thread would otherwise wake
only to wait for the GIL its waker still holds).

Sync wake-ups (Linux's WF_SYNC): a syscall whose thread is about to block right after
it wakes another (CHANNEL_CALL, DEVICE_REPLY) runs its wake-up inside ``sync(cpu)``:
the first thread woken there goes to the mailbox of the waker's own CPU, without
waking any host thread, and that CPU takes it as soon as the waker blocks: one
context switch on a CPU that is running anyway instead of an idle CPU's host thread
woken. Except when the woken thread's own CPU is idle, waiting in ``pick``: its vCPU
still holds the thread's context, and waking that CPU (~36 us of host wake-up and GIL
hand-over here) measured cheaper than a switch on the waker's CPU (an XSAVE pair and
a context load, ~25-30 us more on the critical path: docs/performance.md). Should the
waker not block after all, ``unsync`` hands the thread on as an ordinary wake-up
would.

A blocked thread with a ``deadline`` (a wait with a timeout) is also kept in
``_timed``; the timer thread calls ``expire`` to wake those whose deadline passed.

The run ends (every ``pick`` returns None) when ``stop`` is called, or when every
CPU is idle with nothing runnable and no timed wait pending: no thread can ever run
again then, because only a running thread or the timer makes another one runnable.

Invariants (with kernel/thread.py's states):
- a thread is RUNNABLE iff it is in ``_queue`` or in one CPU's ``_mailbox``, once
  (``queued_on``: -1 for the shared queue, the CPU's index for a mailbox); a
  mailbox gets threads only while its CPU waits in ``pick``, or from a sync wake-up
  by its current thread, which then blocks or calls ``unsync`` before it runs on;
- ``current[i]`` is the RUNNING thread CPU i took, or None; a RUNNING thread is
  exactly one CPU's current thread (``thread.cpu``);
- ``wake_pending`` is only set on a RUNNING thread, by a wake-up that came before it
  blocked; ``block`` then makes it RUNNABLE at once (no wake-up is lost);
- ``idle`` counts the CPUs waiting in ``pick``; ``_waiting[i]`` is True while CPU i
  waits there and no wake-up was sent to it; clearing it queues exactly one post on
  CPU i's ``IdleWait`` (kernel/wakeq.py), which ends that wait; ``finished`` never
  goes back;
- ``_timed`` holds exactly the BLOCKED threads that have a deadline.

Locking: ONE lock (class "sched", kernel/lockdep.py) guards all of the above and every
thread's ``state``, ``cpu``, ``last_cpu``, ``queued_on``, ``retry`` and
``wake_pending``; ``wait_left``'s condition variable is on it. It is taken after
object and wait-queue locks (an observer's ``notify`` wakes under its queue's lock)
and before the VM's gate lock; nothing is called out of the scheduler with it held,
and no idle CPU is posted with it held (a woken CPU's first act is to take it).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from copra.kernel import lockdep, wakeq
from copra.kernel.thread import Thread, ThreadState
from copra.kernel.waitqueue import Signal, WaitQueue


class Scheduler:
    #: Whether ``sync`` hands threads to the waker's CPU (off: ordinary wake-ups; the
    #: benchmarks compare both).
    sync_wakeups = True
    #: Whether CPU host threads defer their wake-ups of idle CPUs until they give up
    #: the GIL (kernel/wakeq.py; off: posted when the lock is released, for benchmarks).
    defer_wakeups = True

    def __init__(self, cpus: int) -> None:
        self.lock = lockdep.lock("sched")
        #: What each idle CPU sleeps on: a wake-up goes to the CPU it is for.
        self._idle = [wakeq.IdleWait() for _ in range(cpus)]
        self._left = lockdep.condition(self.lock)  # ``wait_left``'s
        self._queue: deque[Thread] = deque()
        #: Threads handed to one idle CPU (the one whose vCPU still holds their context).
        self._mailbox: list[deque[Thread]] = [deque() for _ in range(cpus)]
        #: CPUs blocked in ``pick`` that no wake-up has been sent to yet.
        self._waiting = [False] * cpus
        self.current: list[Thread | None] = [None] * cpus
        self.idle = 0
        self.stopped = False
        self.finished = False
        self._timed: set[Thread] = set()
        #: The CPU a sync wake-up from this host thread goes to (``sync``), or None.
        self._sync = threading.local()
        self.sync_handoffs = 0

    # --- what the CPUs do ------------------------------------------------------------

    def _runnable(self, thread: Thread) -> None:
        """Make ``thread`` RUNNABLE (lock held): to the mailbox of the CPU it last ran
        on if that CPU is idle (its vCPU may still hold the thread's context, and the
        CPU that made it runnable is busy), else to the shared queue, waking an idle
        CPU if there is one."""
        thread.state = ThreadState.RUNNABLE
        home = thread.last_cpu
        if home is not None and self._waiting[home]:
            self._mailbox[home].append(thread)
            thread.queued_on = home
            self._wake_cpu(home)
            return
        self._queue.append(thread)
        thread.queued_on = -1
        for cpu, waiting in enumerate(self._waiting):
            if waiting:
                self._wake_cpu(cpu)
                return

    def _wake_cpu(self, cpu: int) -> None:
        """End CPU ``cpu``'s wait in ``pick`` (lock held; it is waiting): one post, made
        once the lock is released (kernel/wakeq.py)."""
        self._waiting[cpu] = False
        wakeq.queue(self._idle[cpu])

    def add(self, thread: Thread) -> None:
        """A new thread joins the run queue."""
        with self.lock:
            self._runnable(thread)
        wakeq.post_queued()

    def pick(self, cpu: int) -> Thread | None:
        """The next thread for CPU ``cpu`` (now RUNNING there): what was handed to it,
        else the head of the shared queue; blocks while there is none; None once the
        run has ended."""
        box, lock = self._mailbox[cpu], self.lock
        lock.acquire()
        try:
            while not box and not self._queue:
                if self.stopped or self.finished:
                    return None
                if self.idle + 1 == len(self.current) and not self._timed \
                        and not any(self._mailbox):
                    self.finished = True  # nothing runs, nothing can wake anything
                    self._wake_all()
                    return None
                self.idle += 1
                self._waiting[cpu] = True
                lock.release()
                try:
                    wakeq.flush()  # this CPU's deferred wake-ups, before it sleeps
                    self._idle[cpu].wait()
                finally:
                    lock.acquire()
                self._waiting[cpu] = False
                self.idle -= 1
            if self.stopped:
                return None
            thread = box.popleft() if box else self._queue.popleft()
            thread.queued_on = None
            thread.state = ThreadState.RUNNING
            thread.cpu = thread.last_cpu = cpu
            thread.wake_pending = False
            self.current[cpu] = thread
            return thread
        finally:
            lock.release()
            wakeq.post_queued()

    def _wake_all(self) -> None:
        for cpu, waiting in enumerate(self._waiting):
            if waiting:
                self._wake_cpu(cpu)
        self._left.notify_all()

    def others_waiting(self) -> bool:
        """Whether a preempted thread would make room for another (a racy hint)."""
        return bool(self._queue) or self.stopped

    def yield_(self, thread: Thread) -> None:
        """The RUNNING thread's slice ended: to the back of the queue."""
        with self.lock:
            self._leave(thread)
            self._runnable(thread)
        wakeq.post_queued()

    def block(self, thread: Thread) -> None:
        """The RUNNING thread waits (its waiter is registered): BLOCKED, unless a
        wake-up came first, then RUNNABLE again."""
        with self.lock:
            self._leave(thread)
            thread.retry = True
            if thread.wake_pending:
                thread.wake_pending = False
                self._runnable(thread)
            else:
                thread.state = ThreadState.BLOCKED
                if thread.deadline is not None:
                    self._timed.add(thread)
        wakeq.post_queued()

    def leave(self, thread: Thread) -> None:
        """The RUNNING thread has ended on its CPU."""
        with self.lock:
            self._leave(thread)
            self._left.notify_all()  # ``wait_left`` may wait for it

    def _leave(self, thread: Thread) -> None:
        cpu = thread.cpu
        if cpu is not None and self.current[cpu] is thread:
            self.current[cpu] = None
        thread.cpu = None

    # --- what anyone may do ------------------------------------------------------------

    def wake(self, thread: Thread) -> None:
        """Make a BLOCKED thread RUNNABLE (a RUNNING one will not block next)."""
        cpu = getattr(self._sync, "cpu", None)
        with self.lock:
            if thread.state is ThreadState.BLOCKED:
                self._timed.discard(thread)
                home = thread.last_cpu
                if cpu is not None and home is not None and home != cpu \
                        and self._waiting[home]:
                    cpu = None  # its idle CPU still holds its context: wake that one
                if cpu is not None:
                    self._sync.cpu = None  # only the first wake-up is handed over
                    thread.state = ThreadState.RUNNABLE
                    self._mailbox[cpu].append(thread)
                    thread.queued_on = cpu
                    self.sync_handoffs += 1
                else:
                    self._runnable(thread)
            elif thread.state is ThreadState.RUNNING:
                thread.wake_pending = True
        wakeq.post_queued()

    @contextmanager
    def sync(self, cpu: int) -> Iterator[None]:
        """Wake-ups made by this host thread inside go to CPU ``cpu``'s mailbox (the
        first one only): the caller is CPU ``cpu``'s current thread and blocks next, or
        calls ``unsync(cpu)``."""
        if not self.sync_wakeups:
            yield
            return
        self._sync.cpu = cpu
        try:
            yield
        finally:
            self._sync.cpu = None

    def unsync(self, cpu: int) -> None:
        """CPU ``cpu``'s current thread goes on after all: what a sync wake-up put in its
        mailbox becomes an ordinary wake-up (another CPU's, or the shared queue)."""
        box = self._mailbox[cpu]
        if not box:  # racy but safe: only this CPU's own thread fills it while running
            return
        with self.lock:
            moved = list(box)
            box.clear()
            for thread in moved:
                self._runnable(thread)
        wakeq.post_queued()

    def exit(self, thread: Thread) -> None:
        """The thread has ended: never run it again (a RUNNING thread stays its CPU's
        current thread until that CPU calls ``leave``)."""
        with self.lock:
            if thread.state is ThreadState.RUNNABLE:
                where = thread.queued_on
                (self._queue if where is None or where < 0 else self._mailbox[where]
                 ).remove(thread)
                thread.queued_on = None
            self._timed.discard(thread)
            thread.state = ThreadState.EXITED

    def stop(self) -> None:
        """End the run: every ``pick`` returns None from now on."""
        with self.lock:
            self.stopped = True
            self._wake_all()
        wakeq.post_queued()

    def wait_left(self, threads: list[Thread], caller: Thread | None,
                  kick: Callable[[int], None]) -> None:
        """Return once no thread of ``threads`` (EXITED already) but ``caller`` is any
        CPU's current thread: ``kick(cpu)`` makes each such CPU notice."""
        wakeq.flush()  # a CPU's host thread may block here
        with self.lock:
            while True:
                busy = {t.cpu for t in threads if t is not caller and t.cpu is not None}
                if not busy:
                    return
                for cpu in busy:
                    assert cpu is not None
                    kick(cpu)
                self._left.wait()

    def expire(self, now: float) -> None:
        """Wake every timed wait whose deadline has passed (the timer thread)."""
        with self.lock:
            due = [t for t in self._timed if t.deadline is not None and t.deadline <= now]
            for thread in due:
                self._timed.discard(thread)
                self._runnable(thread)
        wakeq.post_queued()

    def next_deadline(self) -> float | None:
        with self.lock:
            return min((t.deadline for t in self._timed if t.deadline is not None),
                       default=None)

    def runnable(self) -> int:
        with self.lock:
            return len(self._queue) + sum(len(box) for box in self._mailbox)

    def queued(self) -> list[Thread]:
        """Every RUNNABLE thread, in the shared queue or a CPU's mailbox (for tests)."""
        with self.lock:
            return [*self._queue, *(t for box in self._mailbox for t in box)]


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

    def notify(self, queue: WaitQueue, signals: int) -> None:
        self.fired.append(queue)
        self._wake(self.thread)

    def cancel(self) -> None:
        """Leave every queue (the thread runs again, or ends)."""
        for queue in self._queues:
            queue.cancel(self)
        self._queues.clear()
