"""Channel endpoints and handle moves between tables, without KVM: the queue's rules,
the signals, all-or-nothing moves, and a hypothesis model of several handle tables
under sends, receives, duplicates and closes (no object lost or counted twice)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from copra.abi.spec import CHANNEL_QUEUE_MAX, RIGHTS_SAME, Errno, Signal
from copra.kernel.budget import MetadataBudget
from copra.kernel.cpu import UserContext
from copra.kernel.errors import SyscallError
from copra.kernel.handles import HandleTable, Rights
from copra.kernel.objects import KernelObject, ObjectKind
from copra.kernel.objects.channel import Endpoint, Message
from copra.kernel.thread import Thread

MOVE = Rights.READ | Rights.WRITE | Rights.WAIT | Rights.MOVABLE


class Thing(KernelObject):
    """An object that counts its closes."""

    kind = ObjectKind.EVENT

    def __init__(self) -> None:
        super().__init__()
        self.closes = 0

    def on_close(self) -> None:
        self.closes += 1


class Exclusive(Thing):
    exclusive = True


def errno_of(call: object) -> Errno:
    assert callable(call)
    with pytest.raises(SyscallError) as info:
        call()
    return info.value.errno


def pair_in(table: HandleTable, budget: MetadataBudget | None = None) -> tuple[int, int]:
    a, b = Endpoint.pair(budget)
    a.acquire()
    b.acquire()
    first, second = table.adopt([(a, int(MOVE)), (b, int(MOVE))])
    return first, second


def send(table: HandleTable, endpoint: int, data: bytes, ids: list[int]) -> bool:
    end = table.get(endpoint, Endpoint)
    return end.send(data, len(ids), lambda forbid, check: table.take(ids, forbid, check))


def recv(table: HandleTable, endpoint: int) -> tuple[bytes, list[int]] | None:
    end = table.get(endpoint, Endpoint)
    got: list[int] = []

    def deliver(message: Message) -> None:
        got.extend(table.adopt(message.entries))

    message = end.receive(deliver)
    return None if message is None else (message.data, got)


def test_send_moves_handles_and_recv_installs_them_under_new_ids() -> None:
    t = HandleTable()
    a, b = pair_in(t)
    thing = Thing()
    h = t.install(thing, MOVE)
    assert send(t, a, b"hi", [h])
    assert errno_of(lambda: t.get(h, Thing)) == Errno.ENOTFOUND
    assert thing._refs == 1  # held by the message
    data, ids = recv(t, b) or (b"", [])
    assert data == b"hi" and t.get(ids[0], Thing) is thing and thing._refs == 1


def test_send_refuses_the_endpoint_itself_or_its_peer_and_moves_nothing() -> None:
    t = HandleTable()
    a, b = pair_in(t)
    other = t.install(Thing(), MOVE)
    assert errno_of(lambda: send(t, a, b"", [other, a])) == Errno.EINVAL
    assert errno_of(lambda: send(t, a, b"", [other, b])) == Errno.EINVAL
    assert len(t) == 3 and t.get(other, Thing) is not None


def test_send_of_handle_without_transfer_returns_eperm_and_moves_nothing() -> None:
    t = HandleTable()
    a, _ = pair_in(t)
    movable = t.install(Thing(), MOVE)
    fixed = t.install(Thing(), Rights.READ)
    assert errno_of(lambda: send(t, a, b"", [movable, fixed])) == Errno.EPERM
    assert len(t) == 4


def test_full_queue_refuses_without_change_and_recv_makes_room_writable() -> None:
    t = HandleTable()
    a, b = pair_in(t)
    end_a = t.get(a, Endpoint)
    for i in range(CHANNEL_QUEUE_MAX):
        assert send(t, a, bytes([i]), [])
    assert not end_a.queue.signals & Signal.WRITABLE
    h = t.install(Thing(), MOVE)
    assert not send(t, a, b"x", [h])
    assert t.get(h, Thing) is not None
    assert recv(t, b) == (b"\x00", [])
    assert end_a.queue.signals & Signal.WRITABLE


def test_messages_arrive_in_order_and_readable_follows_the_queue() -> None:
    t = HandleTable()
    a, b = pair_in(t)
    end_b = t.get(b, Endpoint)
    assert not end_b.queue.signals & Signal.READABLE
    send(t, a, b"1", [])
    send(t, a, b"2", [])
    assert end_b.queue.signals & Signal.READABLE
    assert [recv(t, b), recv(t, b), recv(t, b)] == [(b"1", []), (b"2", []), None]
    assert not end_b.queue.signals & Signal.READABLE


def test_closing_the_receiver_releases_queued_handles_and_peer_sees_epipe() -> None:
    t = HandleTable()
    a, b = pair_in(t)
    thing = Thing()
    h = t.install(thing, MOVE)
    send(t, a, b"", [h])
    t.remove(b)
    assert thing.closes == 1
    end_a = t.get(a, Endpoint)
    assert end_a.queue.signals & Signal.PEER_CLOSED
    assert not end_a.queue.signals & Signal.WRITABLE
    assert errno_of(lambda: send(t, a, b"", [])) == Errno.EPIPE


def test_recv_delivers_queued_messages_after_the_sender_closed_then_epipe() -> None:
    t = HandleTable()
    a, b = pair_in(t)
    send(t, a, b"last", [])
    t.remove(a)
    assert recv(t, b) == (b"last", [])
    assert errno_of(lambda: recv(t, b)) == Errno.EPIPE


def test_recv_into_a_full_table_returns_emfile_and_keeps_the_message_whole() -> None:
    sender, receiver = HandleTable(), HandleTable(limit=4)
    a, b = Endpoint.pair()
    a.acquire()
    b.acquire()
    ha = sender.adopt([(a, int(MOVE))])[0]
    hb = receiver.adopt([(b, int(MOVE))])[0]
    things = [Thing(), Thing()]
    ids = [sender.install(x, MOVE) for x in things]
    assert send(sender, ha, b"two", ids)
    filler = [receiver.install(Thing(), MOVE) for _ in range(2)]  # 3 of 4 used
    assert errno_of(lambda: recv(receiver, hb)) == Errno.EMFILE
    assert len(receiver) == 3 and len(b) == 1
    assert all(x._refs == 1 and x.closes == 0 for x in things)
    receiver.remove(filler[0])
    data, got = recv(receiver, hb) or (b"", [])
    assert data == b"two" and [receiver.get(i, Thing) for i in got] == things


def test_nested_endpoints_close_without_recursion() -> None:
    t = HandleTable()
    a, first = pair_in(t)
    before = KernelObject.live[ObjectKind.CHANNEL]
    for _ in range(3000):  # deeper than the interpreter's recursion limit
        next_a, b = pair_in(t)
        assert send(t, a, b"", [b])  # b rides in the queue of the previous b
        t.remove(a)
        a = next_a
    t.remove(a)
    t.remove(first)
    assert KernelObject.live[ObjectKind.CHANNEL] == before - 2


def test_endpoint_whose_queue_carries_an_endpoint_cannot_move_so_no_cycle_forms() -> None:
    t = HandleTable()
    a1, b1 = pair_in(t)
    a2, b2 = pair_in(t)
    assert send(t, a2, b"", [b1])  # b1 now queued towards b2
    assert errno_of(lambda: send(t, a1, b"", [b2])) == Errno.EBUSY
    assert t.get(b2, Endpoint) is not None
    before = KernelObject.live[ObjectKind.CHANNEL]
    for h in (a1, a2, b2):
        t.remove(h)
    assert KernelObject.live[ObjectKind.CHANNEL] == before - 4


def test_budget_is_charged_per_queued_message_and_released_on_receive() -> None:
    budget = MetadataBudget(limit=1000)
    t = HandleTable()
    a, b = pair_in(t, budget)
    assert send(t, a, b"x" * 500, [])
    assert budget.in_use > 500
    assert errno_of(lambda: send(t, a, b"y" * 500, [])) == Errno.ENOMEM
    recv(t, b)
    assert budget.in_use == 0


def test_duplicate_keeps_or_reduces_rights_and_refuses_exclusive_objects() -> None:
    t = HandleTable()
    h = t.install(Thing(), MOVE)
    same = t.duplicate(h, RIGHTS_SAME)
    assert t.rights(same) == MOVE
    less = t.duplicate(h, int(Rights.READ))
    assert t.rights(less) == Rights.READ
    assert errno_of(lambda: t.duplicate(less, int(Rights.READ))) == Errno.EPERM
    assert errno_of(lambda: t.duplicate(h, int(Rights.ALL))) == Errno.EPERM
    x = t.install(Exclusive(), MOVE)
    assert errno_of(lambda: t.duplicate(x, RIGHTS_SAME)) == Errno.EBUSY


def test_restrict_only_reduces_rights() -> None:
    t = HandleTable()
    h = t.install(Thing(), Rights.READ | Rights.TRANSFER)
    t.restrict(h, int(Rights.READ))
    assert t.rights(h) == Rights.READ
    assert errno_of(lambda: t.restrict(h, int(Rights.READ | Rights.WRITE))) == Errno.EPERM


class Tables(RuleBasedStateMachine):
    """Three processes' tables, channels between them, things moving around. Every
    object's references equal the entries and queued messages naming it."""

    def __init__(self) -> None:
        super().__init__()
        self.tables = [HandleTable(limit=12) for _ in range(3)]
        self.objects: list[KernelObject] = []

    def _ids(self, t: int) -> list[int]:
        return sorted(self.tables[t]._objects)

    @rule(t=st.integers(0, 2), u=st.integers(0, 2))
    def create_channel(self, t: int, u: int) -> None:
        a, b = Endpoint.pair()
        a.acquire()
        b.acquire()
        try:
            self.tables[t].adopt([(a, int(MOVE))])
        except SyscallError:
            a.release()
            b.release()
            return
        try:
            self.tables[u].adopt([(b, int(MOVE))])
        except SyscallError:
            b.release()
        self.objects += [a, b]

    @rule(t=st.integers(0, 2))
    def make_thing(self, t: int) -> None:
        thing = Thing()
        try:
            self.tables[t].install(thing, MOVE)
        except SyscallError:
            return
        self.objects.append(thing)

    @rule(t=st.integers(0, 2), pick=st.integers(0, 50), picks=st.lists(st.integers(0, 50),
                                                                         max_size=4))
    def send(self, t: int, pick: int, picks: list[int]) -> None:
        ids = self._ids(t)
        ends = [i for i in ids if isinstance(self.tables[t]._objects[i][0], Endpoint)]
        if not ends or not ids:
            return
        end = ends[pick % len(ends)]
        moved = sorted({ids[p % len(ids)] for p in picks})
        before = dict(self.tables[t]._objects)
        try:
            ok = send(self.tables[t], end, b"m", moved)
        except SyscallError:
            ok = False
        if not ok:
            assert self.tables[t]._objects == before

    @rule(t=st.integers(0, 2), pick=st.integers(0, 50))
    def receive(self, t: int, pick: int) -> None:
        ids = self._ids(t)
        ends = [i for i in ids if isinstance(self.tables[t]._objects[i][0], Endpoint)]
        if not ends:
            return
        end = self.tables[t].get(ends[pick % len(ends)], Endpoint)
        queued = len(end)
        before = len(self.tables[t])
        try:
            recv(self.tables[t], ends[pick % len(ends)])
        except SyscallError as e:
            assert e.errno in (Errno.EMFILE, Errno.EPIPE)
            assert len(end) == queued and len(self.tables[t]) == before

    @rule(t=st.integers(0, 2), pick=st.integers(0, 50))
    def close(self, t: int, pick: int) -> None:
        ids = self._ids(t)
        if ids:
            self.tables[t].remove(ids[pick % len(ids)])

    @rule(t=st.integers(0, 2), pick=st.integers(0, 50))
    def duplicate(self, t: int, pick: int) -> None:
        ids = self._ids(t)
        if ids:
            try:
                self.tables[t].duplicate(ids[pick % len(ids)], RIGHTS_SAME)
            except SyscallError as e:
                assert e.errno == Errno.EMFILE

    @invariant()
    def references_match_holders(self) -> None:
        holders: dict[int, int] = {}
        for table in self.tables:
            for obj, _ in table._objects.values():
                holders[id(obj)] = holders.get(id(obj), 0) + 1
        for obj in self.objects:
            if isinstance(obj, Endpoint):
                for message in obj.inbox:
                    for carried, _ in message.entries:
                        holders[id(carried)] = holders.get(id(carried), 0) + 1
        for obj in self.objects:
            assert obj._refs == holders.get(id(obj), 0)
            if isinstance(obj, Thing):
                assert obj.closes == (obj._refs == 0)

    def teardown(self) -> None:
        for table in self.tables:
            table.close_all()
        for obj in self.objects:  # no cycle of endpoints can hold anything
            assert obj._refs == 0
            if isinstance(obj, Endpoint):
                assert obj.closed and not obj.inbox


TestTables = Tables.TestCase
TestTables.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


# --- a SEND that completes a blocked receiver's RECV (offers) ---------------------------


def receiver(ending: bool = False) -> Thread:
    return Thread(1, SimpleNamespace(ending=ending), UserContext(0))  # type: ignore[arg-type]


def test_send_delivers_to_a_blocked_receivers_offer_and_sets_its_result() -> None:
    a, b = Endpoint.pair()
    t = receiver()
    got: list[bytes] = []
    woken: list[Thread] = []
    withdraw = b.offer(t, lambda m: got.append(m.data), woken.append)
    assert a.send(b"hello", 0, lambda forbid, check: [])
    assert (got, woken, len(b), t.result) == ([b"hello"], [t], 0, 5)
    assert not b.queue.signals & Signal.READABLE
    assert withdraw() == 5 and t.result is None


def test_offer_whose_delivery_fails_answers_the_error_and_keeps_the_message() -> None:
    a, b = Endpoint.pair()
    t = receiver()
    woken: list[Thread] = []

    def too_small(message: Message) -> None:
        raise SyscallError(Errno.EMSGSIZE, "small")

    withdraw = b.offer(t, too_small, woken.append)
    assert a.send(b"hello", 0, lambda forbid, check: [])
    assert (woken, len(b), t.result) == ([t], 1, int(Errno.EMSGSIZE))
    assert b.queue.signals & Signal.READABLE
    assert withdraw() == int(Errno.EMSGSIZE)


def test_withdrawn_offer_gets_nothing() -> None:
    a, b = Endpoint.pair()
    t = receiver()
    got: list[bytes] = []
    withdraw = b.offer(t, lambda m: got.append(m.data), lambda thread: None)
    assert withdraw() is None
    assert a.send(b"x", 0, lambda forbid, check: [])
    assert (got, len(b), t.result) == ([], 1, None)


def test_offer_of_an_ending_process_is_skipped_and_the_message_stays() -> None:
    a, b = Endpoint.pair()
    t = receiver(ending=True)
    got: list[bytes] = []
    b.offer(t, lambda m: got.append(m.data), lambda thread: None)
    assert a.send(b"x", 0, lambda forbid, check: [])
    assert (got, len(b), t.result) == ([], 1, None)
    assert b.queue.signals & Signal.READABLE
