"""Handle table: lowest-free ids, limit, checked lookup, and reference counting of objects."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from copra.abi.spec import MAX_HANDLES, Errno
from copra.kernel.errors import SyscallError
from copra.kernel.handles import HandleTable
from copra.kernel.objects import KernelObject, ObjectKind


class FakeFile(KernelObject):
    """Counts its on_close calls."""

    kind = ObjectKind.FILE

    def __init__(self) -> None:
        super().__init__()
        self.closes = 0

    def on_close(self) -> None:
        self.closes += 1


class FakeDirectory(FakeFile):
    kind = ObjectKind.DIRECTORY


class FakeLog(KernelObject):
    kind = ObjectKind.LOG


def errno_of(call: object) -> Errno:
    assert callable(call)
    with pytest.raises(SyscallError) as info:
        call()
    return info.value.errno


# -- ids -------------------------------------------------------------------------------


def test_install_into_empty_table_hands_out_ids_from_zero() -> None:
    table = HandleTable()
    assert [table.install(FakeFile()) for _ in range(3)] == [0, 1, 2]
    assert len(table) == 3


def test_install_after_remove_reuses_the_removed_id() -> None:
    table = HandleTable()
    for _ in range(3):
        table.install(FakeFile())
    table.remove(1)
    assert table.install(FakeFile()) == 1
    assert table.install(FakeFile()) == 3


def test_install_reuses_the_lowest_of_several_free_ids() -> None:
    table = HandleTable()
    for _ in range(5):
        table.install(FakeFile())
    for handle in (3, 0, 2):
        table.remove(handle)
    assert [table.install(FakeFile()) for _ in range(4)] == [0, 2, 3, 5]


def test_install_after_removing_the_highest_id_reuses_it() -> None:
    table = HandleTable()
    for _ in range(3):
        table.install(FakeFile())
    table.remove(2)
    assert table.install(FakeFile()) == 2


# -- the limit -------------------------------------------------------------------------


def test_install_beyond_default_limit_returns_emfile() -> None:
    table = HandleTable()
    for _ in range(MAX_HANDLES):
        table.install(FakeFile())
    assert errno_of(lambda: table.install(FakeFile())) is Errno.EMFILE
    assert len(table) == MAX_HANDLES


def test_install_refused_with_emfile_takes_no_reference() -> None:
    table = HandleTable(limit=2)
    table.install(FakeFile())
    table.install(FakeFile())
    obj = FakeFile()
    assert errno_of(lambda: table.install(obj)) is Errno.EMFILE
    table.remove(0)
    handle = table.install(obj)
    table.remove(handle)
    assert obj.closes == 1  # a reference leaked by the refused install would keep it open


def test_install_after_emfile_and_a_remove_succeeds_with_the_freed_id() -> None:
    table = HandleTable(limit=3)
    for _ in range(3):
        table.install(FakeFile())
    assert errno_of(lambda: table.install(FakeFile())) is Errno.EMFILE
    table.remove(1)
    assert table.install(FakeFile()) == 1


# -- lookup ----------------------------------------------------------------------------


def test_get_with_matching_kind_returns_the_installed_object() -> None:
    table = HandleTable()
    obj = FakeFile()
    handle = table.install(obj)
    assert table.get(handle, FakeFile) is obj
    assert table.get(handle, KernelObject) is obj


def test_get_of_missing_id_returns_enotfound() -> None:
    table = HandleTable()
    table.install(FakeFile())
    assert errno_of(lambda: table.get(1, FakeFile)) is Errno.ENOTFOUND
    assert errno_of(lambda: table.get(0xFFFF_FFFF, FakeFile)) is Errno.ENOTFOUND


def test_get_of_removed_id_returns_enotfound() -> None:
    table = HandleTable()
    handle = table.install(FakeFile())
    table.remove(handle)
    assert errno_of(lambda: table.get(handle, FakeFile)) is Errno.ENOTFOUND


def test_get_with_wrong_kind_returns_enotsupp() -> None:
    table = HandleTable()
    handle = table.install(FakeLog())
    assert errno_of(lambda: table.get(handle, FakeFile)) is Errno.ENOTSUPP


def test_get_of_subclass_kind_with_base_kind_returns_enotsupp() -> None:
    table = HandleTable()
    handle = table.install(FakeFile())
    assert errno_of(lambda: table.get(handle, FakeDirectory)) is Errno.ENOTSUPP


# -- references ------------------------------------------------------------------------


def test_remove_of_missing_id_returns_false() -> None:
    table = HandleTable()
    assert table.remove(0) is False
    handle = table.install(FakeFile())
    assert table.remove(handle) is True
    assert table.remove(handle) is False


def test_remove_of_only_handle_closes_object_once() -> None:
    table = HandleTable()
    obj = FakeFile()
    handle = table.install(obj)
    table.remove(handle)
    table.remove(handle)
    assert obj.closes == 1


def test_object_with_two_handles_closes_only_when_the_last_goes() -> None:
    table = HandleTable()
    obj = FakeFile()
    first, second = table.install(obj), table.install(obj)
    table.remove(first)
    assert obj.closes == 0
    table.remove(second)
    assert obj.closes == 1


def test_object_shared_by_two_tables_closes_when_both_release_it() -> None:
    a, b = HandleTable(), HandleTable()
    obj = FakeFile()
    a.install(obj)
    b.install(obj)
    a.close_all()
    assert obj.closes == 0
    b.close_all()
    assert obj.closes == 1


def test_close_all_closes_every_object_once_and_empties_the_table() -> None:
    table = HandleTable()
    objs = [FakeFile(), FakeDirectory(), FakeFile()]
    for obj in objs:
        table.install(obj)
    table.install(objs[0])
    table.remove(1)
    table.close_all()
    assert [obj.closes for obj in objs] == [1, 1, 1]
    assert len(table) == 0
    assert errno_of(lambda: table.get(0, KernelObject)) is Errno.ENOTFOUND


def test_install_after_close_all_starts_again_at_zero() -> None:
    table = HandleTable()
    for _ in range(4):
        table.install(FakeFile())
    table.remove(2)
    table.close_all()
    assert [table.install(FakeFile()) for _ in range(3)] == [0, 1, 2]


# -- property: install/remove against a model -----------------------------------------

LIMIT = 5


class HandleTableMachine(RuleBasedStateMachine):
    """Every step is checked against a dict of id -> object and a per-object ref count."""

    objects = Bundle("objects")

    def __init__(self) -> None:
        super().__init__()
        self.table = HandleTable(limit=LIMIT)
        self.model: dict[int, FakeFile] = {}
        self.expected_closes: dict[int, int] = {}  # id(obj) -> closes so far
        self.all: list[FakeFile] = []

    @rule(target=objects, directory=st.booleans())
    def new_object(self, directory: bool) -> FakeFile:
        obj = FakeDirectory() if directory else FakeFile()
        self.all.append(obj)
        self.expected_closes[id(obj)] = 0
        return obj

    def _refs(self, obj: FakeFile) -> int:
        return sum(1 for o in self.model.values() if o is obj)

    @rule(obj=objects)
    def install(self, obj: FakeFile) -> None:
        if len(self.model) == LIMIT:
            assert errno_of(lambda: self.table.install(obj)) is Errno.EMFILE
            return
        expected = min(i for i in range(LIMIT + 1) if i not in self.model)
        assert self.table.install(obj) == expected
        self.model[expected] = obj

    @rule(handle=st.integers(0, LIMIT + 1))
    def remove(self, handle: int) -> None:
        obj = self.model.pop(handle, None)
        assert self.table.remove(handle) is (obj is not None)
        if obj is not None and self._refs(obj) == 0:
            self.expected_closes[id(obj)] += 1

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def remove_installed(self, data: st.DataObject) -> None:
        self.remove(data.draw(st.sampled_from(sorted(self.model))))

    @rule(handle=st.integers(0, LIMIT + 1), want_directory=st.booleans())
    def get(self, handle: int, want_directory: bool) -> None:
        kind = FakeDirectory if want_directory else FakeFile
        obj = self.model.get(handle)
        if obj is None:
            assert errno_of(lambda: self.table.get(handle, kind)) is Errno.ENOTFOUND
        elif isinstance(obj, kind):
            assert self.table.get(handle, kind) is obj
        else:
            assert errno_of(lambda: self.table.get(handle, kind)) is Errno.ENOTSUPP

    @precondition(lambda self: len(self.model) == LIMIT)  # rarely, so tables fill and drain
    @rule()
    def close_all(self) -> None:
        for obj in {id(o): o for o in self.model.values()}.values():
            self.expected_closes[id(obj)] += 1
        self.model.clear()
        self.table.close_all()

    @invariant()
    def table_matches_model(self) -> None:
        assert len(self.table) == len(self.model)
        for handle, obj in self.model.items():
            assert self.table.get(handle, KernelObject) is obj

    @invariant()
    def each_object_closed_exactly_when_its_last_handle_went(self) -> None:
        for obj in self.all:
            assert obj.closes == self.expected_closes[id(obj)]


HandleTableMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30,
                                                deadline=None)
test_handle_table_against_model = HandleTableMachine.TestCase


def test_reserved_id_counts_against_the_limit_and_names_nothing_until_filled() -> None:
    table = HandleTable(limit=2)
    first = table.install(FakeFile())
    reserved = table.reserve()
    assert reserved == first + 1 and len(table) == 2
    assert errno_of(lambda: table.install(FakeFile())) == Errno.EMFILE
    assert errno_of(lambda: table.get(reserved, FakeFile)) == Errno.ENOTFOUND
    assert not table.remove(reserved)  # a CLOSE of it finds nothing; the id stays taken
    obj = FakeFile()
    assert table.fill(reserved, obj) == reserved
    assert table.get(reserved, FakeFile) is obj


def test_cancelled_reservation_gives_the_lowest_id_back() -> None:
    table = HandleTable(limit=4)
    reserved = table.reserve()
    table.install(FakeFile())
    table.cancel(reserved)
    assert len(table) == 1 and table.install(FakeFile()) == reserved


def test_fill_after_the_table_was_emptied_closes_the_object() -> None:
    table = HandleTable()
    reserved = table.reserve()
    table.close_all()  # the process ended while the call made its object
    obj = FakeFile()
    table.fill(reserved, obj)
    assert obj.closes == 1 and len(table) == 0
