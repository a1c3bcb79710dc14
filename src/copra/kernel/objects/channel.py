"""A channel endpoint: one end of a bidirectional, bounded message queue pair that carries
bytes and moves handles between processes (Zircon's channels, with copra's limits).

CHANNEL_CREATE makes two connected endpoints. SEND on one appends a message - up to
``CHANNEL_MAX_BYTES`` bytes and ``CHANNEL_MAX_HANDLES`` handles - to the other's
queue; RECV on an endpoint takes the oldest message of its own queue. A message is
delivered whole and in order, or not at all.

Invariants:
- each endpoint's queue holds at most ``CHANNEL_QUEUE_MAX`` messages; SEND to a full
  queue changes nothing (the caller waits or answers EAGAIN);
- a queued message holds one reference on every object it carries (the reference the
  sender's handle held: ``HandleTable.take``), and gives it to the receiver's new
  handle (``HandleTable.adopt``): an object in transit is never closed, counted twice
  or lost; a message that cannot be delivered (EMSGSIZE, EMFILE, EFAULT) stays at the
  head of the queue, untouched;
- an endpoint is *closed* when its last reference goes - every handle closed and no
  message carrying it - (``on_close``): its queue is emptied and each object the
  messages carried is released; SEND towards it answers EPIPE from then on; RECV on its
  peer delivers what was queued before and then answers EPIPE;
- no endpoint is ever carried, directly or through other endpoints' queues, by a
  message in its own queue: such a cycle could never be received or closed. A
  message can never carry the endpoint it is sent through, or that endpoint's peer
  (EINVAL), and an endpoint whose queue holds a message carrying an endpoint cannot
  be sent (EBUSY: receive those first). That suffices: the send that would close a
  cycle E1 -> E2 -> ... -> E1 ("E is queued towards F") must carry some Ei whose
  queue already holds E(i-1). Every send that carries handles holds one system-wide
  lock (class "channel.moves") from that check to the append, so two sends cannot
  close a cycle between them; ``carried`` (the endpoints in an endpoint's queued
  messages) only grows under that lock;
- a RECV (or CHANNEL_CALL) that blocks leaves an offer in ``receivers`` (its thread,
  how to deliver into its buffers, how to wake it): the SEND that makes the queue
  non-empty takes the oldest offer whose process is not ending and delivers there at
  once, under the channel lock, exactly as that RECV would have: the message is
  consumed (or, on EMSGSIZE/EFAULT/EMFILE, stays queued) and the receiver's result
  set before it is woken (kernel/thread.py, ``withdraw``); the receiver's own CPU
  then only returns to user mode. An offer leaves ``receivers`` when a SEND takes it
  or its thread withdraws it (woken otherwise, or its process ending: both under the
  channel lock, so a delivery is over or never starts);
- signals (``spec.Signal``, for WAIT_MANY): READABLE exactly while the endpoint's queue
  holds a message; WRITABLE exactly while the peer is open and its queue has room;
  PEER_CLOSED from the peer's close on (never cleared).

Rights: WRITE guards SEND, READ guards RECV, WAIT guards WAIT_MANY; a carried handle
needs TRANSFER. CHANNEL_CREATE gives both endpoints READ, WRITE, WAIT, TRANSFER and
DUPLICATE.

Locking: the two endpoints share one lock (class "channel"), which guards both queues,
both ``closed`` flags, ``carried`` and the signal changes; a send with handles takes
``MOVES`` (class "channel.moves") before it. SEND holds it while it takes the handles
from the sender's table (``handles`` after it); RECV holds it while it checks the
receiver's buffers, installs the handles and copies out under the receiver's
``mem_lock`` (``process.mem`` after it), so a message is delivered or left as it was,
and no other receiver sees it in between. The budget and the wait queues come after.
Objects are released (which may close other endpoints) only with no channel lock
held: ``release_all`` does it iteratively, so a chain of endpoints nested in messages
does not recurse.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from copra.abi.spec import CHANNEL_QUEUE_MAX, Errno, Signal
from copra.kernel import lockdep
from copra.kernel.budget import MetadataBudget
from copra.kernel.errors import SyscallError
from copra.kernel.objects import KernelObject, ObjectKind, handoff
from copra.kernel.objects.handoff import HandOff
from copra.kernel.waitqueue import WaitQueue

if TYPE_CHECKING:
    from copra.kernel.thread import Thread

#: Entry = (object, rights): one handle in transit (handles.Entry; not imported, the
#: handle table imports this package).
Entry = tuple[KernelObject, int]

#: ``HandleTable.take`` bound to the sender's table and ids: (forbidden objects, a
#: check for each object) -> the entries taken.
Take = Callable[[tuple[KernelObject, ...], Callable[[KernelObject], None]], list[Entry]]

#: Estimated host bytes of a queued message besides its payload, and per handle it
#: carries: what each message is charged to the metadata budget.
MESSAGE_OVERHEAD = 256
HANDLE_OVERHEAD = 72


class Message:
    """One queued message: its bytes and the handles it moves."""

    __slots__ = ("charge", "data", "endpoints", "entries")

    def __init__(self, data: bytes, entries: list[Entry], charge: int) -> None:
        self.data = data
        self.entries = entries
        self.charge = charge
        self.endpoints = sum(isinstance(obj, Endpoint) for obj, _ in entries)


#: Held by every SEND that carries handles, around the cycle check and the append.
MOVES = lockdep.lock("channel.moves")


def _not_carrying_endpoints(obj: KernelObject) -> None:
    if isinstance(obj, Endpoint) and obj.carried:
        raise SyscallError(Errno.EBUSY, "the endpoint's queue holds a message carrying an "
                                        "endpoint: receive it before the endpoint moves")


class _Shared:
    """What both endpoints of one channel share."""

    __slots__ = ("budget", "lock")

    def __init__(self, budget: MetadataBudget | None) -> None:
        self.lock = lockdep.lock("channel")
        self.budget = budget


class Endpoint(KernelObject):
    kind = ObjectKind.CHANNEL

    def __init__(self, shared: _Shared) -> None:
        super().__init__()
        self._shared = shared
        self.peer: Endpoint = self  # set by ``pair``
        self.inbox: deque[Message] = deque()
        self.closed = False
        self.carried = 0  #: endpoints carried by the messages of ``inbox``
        self.queue = WaitQueue(Signal.WRITABLE)
        #: Blocked receivers a SEND delivers to directly, oldest first.
        self.receivers: deque[HandOff[Message]] = deque()

    @classmethod
    def pair(cls, budget: MetadataBudget | None = None) -> tuple[Endpoint, Endpoint]:
        shared = _Shared(budget)
        a, b = cls(shared), cls(shared)
        a.peer, b.peer = b, a
        return a, b

    def wait_queue(self) -> WaitQueue:
        return self.queue

    def send(self, data: bytes, handle_count: int, take: Take) -> bool:
        """Queue ``data`` and the handles ``take`` removes from the sender (it is called
        under the channel lock with the endpoints no message may carry and a check to
        run on every object, and is all or nothing). False, with nothing changed, when
        the peer's queue is full; EPIPE when the peer is closed; ENOMEM when the
        metadata budget is spent."""
        if not handle_count:
            return self._send(data, 0, take)
        with MOVES:
            return self._send(data, handle_count, take)

    def _send(self, data: bytes, handle_count: int, take: Take) -> bool:
        shared = self._shared
        charge = MESSAGE_OVERHEAD + len(data) + HANDLE_OVERHEAD * handle_count
        with shared.lock:
            peer = self.peer
            if peer.closed:
                raise SyscallError(Errno.EPIPE, "the peer endpoint is closed")
            if len(peer.inbox) >= CHANNEL_QUEUE_MAX:
                return False
            if shared.budget is not None:
                shared.budget.charge(charge, "a channel message")
            try:
                entries = take((self, peer), _not_carrying_endpoints) if handle_count else []
            except BaseException:
                if shared.budget is not None:
                    shared.budget.release(charge)
                raise
            message = Message(data, entries, charge)
            peer.inbox.append(message)
            peer.carried += message.endpoints
            if len(peer.inbox) == 1 and not (peer.receivers and peer._hand_over(message)):
                peer.queue.raise_signals(Signal.READABLE)
            if len(peer.inbox) == CHANNEL_QUEUE_MAX:
                self.queue.clear_signals(Signal.WRITABLE)
            return True

    def _hand_over(self, message: Message) -> bool:
        """Deliver ``message``, the only one queued here, to the oldest blocked receiver
        (channel lock held); True if it was consumed. A delivery error (EMSGSIZE,
        EFAULT, EMFILE) is that receiver's answer, and the message stays queued."""
        while self.receivers:
            offer = self.receivers.popleft()
            offer.taken = True
            thread = offer.thread
            if thread.process.ending:
                continue
            try:
                offer.deliver(message)
            except SyscallError as e:
                thread.result = int(e.errno)
                offer.wake(thread)
                return False
            except Exception:  # its own dispatch will meet it again
                offer.wake(thread)
                return False
            self.inbox.popleft()
            self.carried -= message.endpoints
            if self._shared.budget is not None:
                self._shared.budget.release(message.charge)
            thread.result = len(message.data)
            offer.wake(thread)
            return True
        return False

    def offer(self, thread: Thread, deliver: Callable[[Message], None],
              wake: Callable[[Thread], None]) -> Callable[[], int | None]:
        """``thread`` blocks in a receive on this endpoint: a SEND may deliver to it
        directly. Returns its ``withdraw`` (kernel/thread.py)."""
        return handoff.offer(self.receivers, self._shared.lock, thread, deliver, wake)

    def receive(self, deliver: Callable[[Message], None]) -> Message | None:
        """The oldest message, after ``deliver`` (called under the channel lock) put it
        in the receiver; if ``deliver`` raises, the message stays queued as it was.
        None when the queue is empty and the peer open; EPIPE when both hold."""
        shared = self._shared
        with shared.lock:
            if not self.inbox:
                if self.peer.closed:
                    raise SyscallError(Errno.EPIPE, "the queue is empty and the peer "
                                                    "endpoint closed")
                return None
            message = self.inbox[0]
            deliver(message)
            self.inbox.popleft()
            self.carried -= message.endpoints
            if shared.budget is not None:
                shared.budget.release(message.charge)
            if not self.inbox:
                self.queue.clear_signals(Signal.READABLE)
            if len(self.inbox) == CHANNEL_QUEUE_MAX - 1 and not self.closed:
                self.peer.queue.raise_signals(Signal.WRITABLE)
            return message

    def __len__(self) -> int:
        """Messages queued towards this endpoint."""
        return len(self.inbox)

    def on_close(self) -> None:
        shared = self._shared
        with shared.lock:
            self.closed = True
            for offer in self.receivers:  # their withdraw finds no result: dispatched again
                offer.taken = True
            self.receivers.clear()
            drained = list(self.inbox)
            self.inbox.clear()
            self.carried = 0
            if shared.budget is not None:
                shared.budget.release(sum(m.charge for m in drained))
            self.queue.clear_signals(Signal.READABLE | Signal.WRITABLE)
            peer = self.peer
            if not peer.closed:
                peer.queue.clear_signals(Signal.WRITABLE)
                peer.queue.raise_signals(Signal.PEER_CLOSED)
        release_all(obj for message in drained for obj, _ in message.entries)


class _Releasing(threading.local):
    def __init__(self) -> None:
        self.pending: list[KernelObject] | None = None


_releasing = _Releasing()


def release_all(objects: Iterable[KernelObject]) -> None:
    """Release one reference on each object. A release that closes an endpoint whose
    queue carried more objects adds them to this host thread's pending list instead
    of recursing, so nesting depth costs no stack."""
    state = _releasing
    if state.pending is not None:
        state.pending.extend(objects)
        return
    state.pending = list(objects)
    try:
        while state.pending:
            state.pending.pop().release()
    finally:
        state.pending = None
