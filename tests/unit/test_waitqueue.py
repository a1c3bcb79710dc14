"""Wait queues (kernel/waitqueue.py): signals, observers, no lost notification."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from copra.kernel.waitqueue import NO_SIGNALS, Signal, WaitQueue


class Recorder:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def notify(self, queue: WaitQueue, signals: int) -> None:
        self.seen.append(signals)


def test_observe_of_a_raised_signal_answers_at_once_and_registers_nothing() -> None:
    queue, obs = WaitQueue(Signal.READABLE), Recorder()
    assert queue.observe(obs, Signal.READABLE | Signal.ENDED) == Signal.READABLE
    assert len(queue) == 0


def test_raise_notifies_a_matching_observer_once_and_removes_it() -> None:
    queue, obs = WaitQueue(), Recorder()
    assert queue.observe(obs, Signal.ENDED) == NO_SIGNALS
    queue.raise_signals(Signal.ENDED)
    queue.raise_signals(Signal.ENDED)
    assert obs.seen == [Signal.ENDED] and len(queue) == 0


def test_raise_of_another_bit_leaves_the_observer_waiting() -> None:
    queue, obs = WaitQueue(), Recorder()
    queue.observe(obs, Signal.ENDED)
    queue.raise_signals(Signal.READABLE)
    assert obs.seen == [] and len(queue) == 1


def test_cancelled_observer_is_not_notified() -> None:
    queue, obs = WaitQueue(), Recorder()
    queue.observe(obs, Signal.READABLE)
    queue.cancel(obs)
    queue.cancel(obs)  # harmless when gone
    queue.raise_signals(Signal.READABLE)
    assert obs.seen == []


def test_cleared_signal_makes_observers_wait_again() -> None:
    queue, obs = WaitQueue(Signal.READABLE), Recorder()
    queue.clear_signals(Signal.READABLE)
    assert queue.observe(obs, Signal.READABLE) == NO_SIGNALS and len(queue) == 1


class WaitQueueMachine(RuleBasedStateMachine):
    """Random observe/raise/clear/wake/cancel sequences against a model of the queue:
    an observer is notified at most once per registration, only for a raised bit of
    its mask (or by ``wake``), and stays registered exactly while nothing fired."""

    def __init__(self) -> None:
        super().__init__()
        self.queue = WaitQueue()
        self.signals = Signal(0)
        self.waiting: dict[int, tuple[Recorder, Signal]] = {}
        self.recorders = [Recorder() for _ in range(4)]
        self.seen = [0] * 4

    @rule(who=st.integers(0, 3), mask=st.sampled_from([1, 2, 3, 4, 6, 7]))
    def observe(self, who: int, mask: int) -> None:
        if who in self.waiting:
            return
        ready = self.queue.observe(self.recorders[who], Signal(mask))
        assert ready == self.signals & mask
        if not ready:
            self.waiting[who] = (self.recorders[who], Signal(mask))

    @rule(bits=st.sampled_from([1, 2, 4, 3]))
    def raise_(self, bits: int) -> None:
        self.signals |= bits
        self.queue.raise_signals(Signal(bits))
        for who, (_, mask) in list(self.waiting.items()):
            if mask & bits:
                del self.waiting[who]
                self.seen[who] += 1

    @rule(bits=st.sampled_from([1, 2, 4, 7]))
    def clear(self, bits: int) -> None:
        self.signals &= ~Signal(bits)
        self.queue.clear_signals(Signal(bits))

    @rule(count=st.integers(0, 5))
    def wake(self, count: int) -> None:
        order = [who for who in self.waiting][:count]  # FIFO: registration order
        assert self.queue.wake(count) == len(order)
        for who in order:
            del self.waiting[who]
            self.seen[who] += 1

    @rule(who=st.integers(0, 3))
    def cancel(self, who: int) -> None:
        self.queue.cancel(self.recorders[who])
        self.waiting.pop(who, None)

    @invariant()
    def matches_the_model(self) -> None:
        assert len(self.queue) == len(self.waiting)
        assert self.queue.signals == self.signals
        assert [len(r.seen) for r in self.recorders] == self.seen


TestWaitQueueMachine = WaitQueueMachine.TestCase
