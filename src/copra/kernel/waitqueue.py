"""Signals and observers: how a thread waits for kernel objects, whatever their kind.

Every object a thread can wait for (threads and processes, which end; events; later
channels, VCPUs, IRQ objects) owns a ``WaitQueue``: a set of signal bits, the
object's observable state (``spec.Signal``, part of the ABI: WAIT_MANY's masks), and
the observers waiting for some of them.
A waiting thread registers one ``Observer`` (kernel/thread.py's ``Waiter``) on each
queue it waits on, each with a mask; when any queue raises a bit in an observer's
mask, the observer is notified once and removed from that queue. A syscall that
waits is written once, for every kind: check the state, ``observe`` (which checks
the signals again, atomically with the registration), and block if nothing is
ready; the scheduler runs it again when an observer fires (kernel/kernel.py).

Why no wake-up can be lost: ``observe`` tests the signals and adds the observer
under the queue's lock, and ``raise_signals`` sets the bits and collects the
observers under the same lock; so an observer either sees the bits at once or is
notified when they come. The notified thread may not have blocked yet (it is still
on its way out of the syscall): the scheduler keeps that wake-up (``Thread``'s
``wake_pending``) and the thread does not block.

Invariants: an observer is in a queue's list at most once, and only while none of
its mask's bits is raised there (a raise removes it before notifying); ``cancel``
removes it and is harmless when it already went.

Locking: one lock per queue (class "waitqueue"), taken after every object lock and
before the scheduler's: ``notify`` runs with it held and may take the scheduler lock
(kernel/lockdep.py). Observers must not touch other wait queues in ``notify``.
"""

from __future__ import annotations

from typing import Protocol

from copra.abi.spec import Signal
from copra.kernel import lockdep

#: No signal: the mask of an observer that waits for ``wake`` only (a futex's).
NO_SIGNALS = Signal(0)

__all__ = ["NO_SIGNALS", "Observer", "Signal", "WaitQueue"]


class Observer(Protocol):
    def notify(self, queue: WaitQueue, signals: int) -> None:
        """Some bit of this observer's mask was raised on ``queue`` (lock held);
        ``signals`` is the raised bits of its mask (``Signal`` values, as an int)."""


class WaitQueue:
    """One object's signals and the observers waiting for them.

    The bits and masks are kept as plain ints: ``Signal`` is an ``IntFlag``, whose
    operators cost about a microsecond each in CPython 3.11, and this is on the path of
    every wake-up. ``signals`` and ``observe`` answer ``Signal`` values."""

    __slots__ = ("_lock", "_observers", "_signals")

    def __init__(self, signals: Signal = NO_SIGNALS) -> None:
        self._lock = lockdep.lock("waitqueue")
        self._signals = int(signals)
        self._observers: list[tuple[Observer, int]] = []

    @property
    def signals(self) -> Signal:
        return Signal(self._signals)

    def __len__(self) -> int:
        """How many observers wait here."""
        return len(self._observers)

    def observe(self, observer: Observer, mask: Signal) -> Signal:
        """The bits of ``mask`` raised now; if none, ``observer`` waits for them."""
        bits = int(mask)
        with self._lock:
            ready = self._signals & bits
            if not ready:
                self._observers.append((observer, bits))
                return NO_SIGNALS
        return Signal(ready)

    def cancel(self, observer: Observer) -> None:
        with self._lock:
            self._observers = [(o, m) for o, m in self._observers if o is not observer]

    def raise_signals(self, bits: Signal) -> None:
        """Set ``bits``; notify (and remove) every observer waiting for one of them."""
        raised = int(bits)
        with self._lock:
            self._signals |= raised
            observers = self._observers
            if not observers:
                return
            fired = [(o, m) for o, m in observers if m & raised]
            if fired:
                self._observers = [(o, m) for o, m in observers if not m & raised]
            signals = self._signals
            for observer, mask in fired:
                observer.notify(self, signals & mask)

    def wake(self, count: int) -> int:
        """Notify (and remove) the first ``count`` observers, whatever their mask: an
        edge, not a state (a futex's wake-up). Returns how many were notified."""
        with self._lock:
            woken, self._observers = self._observers[:count], self._observers[count:]
            for observer, _mask in woken:
                observer.notify(self, 0)
            return len(woken)

    def clear_signals(self, bits: Signal) -> None:
        cleared = int(bits)
        with self._lock:
            self._signals &= ~cleared
