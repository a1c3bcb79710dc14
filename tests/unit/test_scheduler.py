"""The scheduler (kernel/scheduler.py) without KVM: states, wake-ups, idle CPUs, the end."""

from __future__ import annotations

import threading

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from copra.kernel import wakeq
from copra.kernel.cpu import UserContext
from copra.kernel.scheduler import Scheduler, Waiter
from copra.kernel.thread import Thread, ThreadState
from copra.kernel.waitqueue import NO_SIGNALS, Signal, WaitQueue


def thread(tid: int) -> Thread:
    return Thread(tid, None, UserContext(0))  # type: ignore[arg-type]


def test_picked_thread_runs_on_that_cpu() -> None:
    sched = Scheduler(2)
    t = thread(1)
    sched.add(t)
    assert sched.pick(1) is t
    assert (t.state, t.cpu, sched.current) == (ThreadState.RUNNING, 1, [None, t])


def test_pick_with_every_cpu_idle_ends_the_run() -> None:
    sched = Scheduler(1)
    assert sched.pick(0) is None
    assert sched.finished and sched.pick(0) is None


def test_preempted_thread_goes_behind_the_others() -> None:
    sched = Scheduler(1)
    a, b = thread(1), thread(2)
    sched.add(a)
    sched.add(b)
    assert sched.pick(0) is a
    sched.yield_(a)
    assert [sched.pick(0), a.state] == [b, ThreadState.RUNNABLE]


def test_wake_of_a_blocked_thread_makes_it_runnable() -> None:
    sched = Scheduler(1)
    t = thread(1)
    sched.add(t)
    sched.pick(0)
    sched.block(t)
    assert (t.state, t.retry, sched.current) == (ThreadState.BLOCKED, True, [None])
    sched.wake(t)
    assert sched.pick(0) is t


def test_wake_before_the_thread_blocked_is_not_lost() -> None:
    sched = Scheduler(1)
    t = thread(1)
    sched.add(t)
    sched.pick(0)
    sched.wake(t)  # e.g. an observer fired while the thread left its syscall
    sched.block(t)
    assert t.state is ThreadState.RUNNABLE and sched.pick(0) is t


def test_ended_runnable_thread_leaves_the_queue() -> None:
    sched = Scheduler(1)
    t = thread(1)
    sched.add(t)
    sched.exit(t)
    assert t.state is ThreadState.EXITED and sched.runnable() == 0


def test_stop_ends_every_pick() -> None:
    sched = Scheduler(1)
    sched.add(thread(1))
    sched.stop()
    assert sched.pick(0) is None


def test_idle_cpu_waits_until_a_thread_is_added_from_another_host_thread() -> None:
    sched = Scheduler(2)
    busy = thread(1)
    sched.add(busy)
    assert sched.pick(0) is busy  # CPU 0 is busy: CPU 1's pick must wait, not end
    got: list[Thread | None] = []
    idle_cpu = threading.Thread(target=lambda: got.append(sched.pick(1)))
    idle_cpu.start()
    late = thread(2)
    sched.add(late)
    idle_cpu.join(timeout=30)
    assert got == [late]


def cpu1_idle_after_b_blocked() -> tuple[Scheduler, Thread, Thread, list[Thread | None],
                                        threading.Thread]:
    """Two CPUs ran a (CPU 0) and b (CPU 1); b blocked and CPU 1 now waits in ``pick``
    on a host thread of its own, whose result lands in the list returned."""
    sched = Scheduler(2)
    a, b = thread(1), thread(2)
    sched.add(a)
    sched.add(b)
    assert sched.pick(0) is a and sched.pick(1) is b
    sched.block(b)
    got: list[Thread | None] = []
    idle_cpu = threading.Thread(target=lambda: got.append(sched.pick(1)))
    idle_cpu.start()
    while True:  # until CPU 1 waits in pick
        with sched.lock:
            if sched._waiting[1]:
                break
    return sched, a, b, got, idle_cpu


def test_woken_thread_goes_to_the_idle_cpu_it_last_ran_on() -> None:
    sched, _a, b, got, idle_cpu = cpu1_idle_after_b_blocked()
    with wakeq.deferred():  # as on CPU 0's host thread: CPU 1 is posted at the end
        sched.wake(b)  # from CPU 0, which runs a: b is handed to CPU 1, not queued for 0
        assert b.queued_on == 1 and not sched.others_waiting()
    idle_cpu.join(timeout=30)
    assert got == [b] and b.cpu == 1


def test_deferred_wake_up_reaches_the_idle_cpu_only_when_flushed() -> None:
    sched, _a, b, got, idle_cpu = cpu1_idle_after_b_blocked()
    with wakeq.deferred():
        sched.wake(b)
        idle_cpu.join(timeout=0.05)  # it cannot return: nothing was posted yet
        assert got == [] and idle_cpu.is_alive()
        wakeq.flush()
        idle_cpu.join(timeout=30)
    assert got == [b] and b.cpu == 1


def test_cpu_about_to_sleep_posts_the_wake_ups_it_deferred() -> None:
    sched, a, b, got1, idle_cpu = cpu1_idle_after_b_blocked()
    got0: list[Thread | None] = []

    def cpu0() -> None:
        with wakeq.deferred():
            sched.wake(b)  # deferred: CPU 0 still runs a
            sched.block(a)
            got0.append(sched.pick(0))  # CPU 0 goes idle: it posts CPU 1 first

    busy_cpu = threading.Thread(target=cpu0)
    busy_cpu.start()
    idle_cpu.join(timeout=30)
    assert got1 == [b]
    sched.stop()
    busy_cpu.join(timeout=30)
    assert got0 == [None]


def test_woken_thread_whose_cpu_is_busy_goes_to_the_shared_queue() -> None:
    sched = Scheduler(2)
    a, b, c = thread(1), thread(2), thread(3)
    for t in (a, b, c):
        sched.add(t)
    assert sched.pick(0) is a and sched.pick(1) is b
    sched.block(b)
    assert sched.pick(1) is c  # CPU 1 is busy again when b is woken
    sched.wake(b)
    assert b.queued_on == -1 and sched.others_waiting()


def test_waiter_wakes_its_thread_when_the_queue_signals() -> None:
    sched = Scheduler(1)
    t = thread(1)
    sched.add(t)
    sched.pick(0)
    queue = WaitQueue()
    waiter = Waiter(t, sched.wake)
    assert waiter.watch(queue, Signal.ENDED) == NO_SIGNALS
    sched.block(t)
    queue.raise_signals(Signal.ENDED)
    assert t.state is ThreadState.RUNNABLE


class SchedulerMachine(RuleBasedStateMachine):
    """Random sequences of scheduler calls keep the invariants of scheduler.py."""

    CPUS = 3

    def __init__(self) -> None:
        super().__init__()
        self.sched = Scheduler(self.CPUS)
        self.threads: list[Thread] = []

    def _in(self, state: ThreadState) -> list[Thread]:
        return [t for t in self.threads if t.state is state]

    @rule()
    def add(self) -> None:
        t = thread(len(self.threads) + 1)
        self.threads.append(t)
        self.sched.add(t)

    @precondition(lambda self: self.sched.runnable() > 0)
    @rule(cpu=st.integers(0, CPUS - 1))
    def pick(self, cpu: int) -> None:
        if self.sched.current[cpu] is not None:
            return
        t = self.sched.pick(cpu)
        assert t is not None and t.state is ThreadState.RUNNING

    @rule(data=st.data())
    def running_thread_acts(self, data: st.DataObject) -> None:
        running = self._in(ThreadState.RUNNING)
        if not running:
            return
        t = data.draw(st.sampled_from(running))
        action = data.draw(st.sampled_from(["yield", "block", "exit", "wake-then-block"]))
        if action == "yield":
            self.sched.yield_(t)
        elif action == "block":
            self.sched.block(t)
        elif action == "wake-then-block":
            self.sched.wake(t)
            self.sched.block(t)
            assert t.state is ThreadState.RUNNABLE
        else:
            self.sched.exit(t)
            self.sched.leave(t)

    @rule(data=st.data())
    def wake_any(self, data: st.DataObject) -> None:
        if self.threads:
            t = data.draw(st.sampled_from(self.threads))
            before = t.state
            self.sched.wake(t)
            if before is ThreadState.BLOCKED:
                assert t.state is ThreadState.RUNNABLE

    @rule(data=st.data())
    def exit_any(self, data: st.DataObject) -> None:
        idle = [t for t in self.threads if t.state is not ThreadState.RUNNING]
        if idle:
            self.sched.exit(data.draw(st.sampled_from(idle)))

    @invariant()
    def queue_holds_exactly_the_runnable_threads(self) -> None:
        queued = self.sched.queued()
        assert len(queued) == len(set(map(id, queued)))
        assert {id(t) for t in queued} == {id(t) for t in self._in(ThreadState.RUNNABLE)}

    @invariant()
    def running_threads_are_the_current_ones(self) -> None:
        current = [t for t in self.sched.current if t is not None]
        assert {id(t) for t in current} == {id(t) for t in self._in(ThreadState.RUNNING)}
        for cpu, t in enumerate(self.sched.current):
            assert t is None or t.cpu == cpu


TestSchedulerMachine = SchedulerMachine.TestCase


def test_sync_wake_hands_the_woken_thread_to_the_wakers_cpu() -> None:
    sched = Scheduler(2)
    a, b = thread(1), thread(2)
    sched.add(a)
    sched.add(b)
    assert sched.pick(0) is a and sched.pick(1) is b
    sched.block(b)
    with sched.sync(0):
        sched.wake(b)
    assert b.queued_on == 0 and not sched.others_waiting()
    sched.block(a)  # the waker blocks: its CPU takes b at once
    assert sched.pick(0) is b and b.cpu == 0


def b_blocked_while_c_runs(sched: Scheduler) -> tuple[Thread, Thread, Thread]:
    """On two CPUs: a runs on CPU 0; b ran on CPU 1, blocked, and c runs there now."""
    a, b, c = thread(1), thread(2), thread(3)
    for t in (a, b, c):
        sched.add(t)
    assert sched.pick(0) is a and sched.pick(1) is b
    sched.block(b)
    assert sched.pick(1) is c
    return a, b, c


def test_sync_wake_hands_over_only_the_first_thread_woken() -> None:
    sched = Scheduler(2)
    _a, b, c = b_blocked_while_c_runs(sched)
    sched.block(c)
    with sched.sync(0):
        sched.wake(b)
        sched.wake(c)
    assert (b.queued_on, c.queued_on) == (0, -1)


def test_unsync_turns_the_hand_over_into_an_ordinary_wake_up() -> None:
    sched = Scheduler(2)
    _a, b, _c = b_blocked_while_c_runs(sched)
    with sched.sync(0):
        sched.wake(b)
    sched.unsync(0)  # a did not block after all: b must not wait behind it
    assert b.queued_on == -1 and sched.others_waiting() and sched.queued() == [b]


def test_sync_wake_off_is_an_ordinary_wake_up() -> None:
    sched = Scheduler(2)
    sched.sync_wakeups = False
    _a, b, _c = b_blocked_while_c_runs(sched)
    with sched.sync(0):
        sched.wake(b)
    assert b.queued_on == -1


def test_sync_wake_of_a_thread_whose_own_cpu_is_idle_goes_to_that_cpu() -> None:
    sched, _a, b, got, idle_cpu = cpu1_idle_after_b_blocked()
    with wakeq.deferred(), sched.sync(0):
        sched.wake(b)  # CPU 1 still holds b's context: no switch on CPU 0
        assert b.queued_on == 1
    idle_cpu.join(timeout=30)
    assert got == [b] and b.cpu == 1
