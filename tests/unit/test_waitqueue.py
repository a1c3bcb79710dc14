"""Wait queues (kernel/waitqueue.py): signals, observers, no lost notification."""

from __future__ import annotations

from copra.kernel.waitqueue import NO_SIGNALS, Signal, WaitQueue


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Signal] = []

    def notify(self, queue: WaitQueue, signals: Signal) -> None:
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
