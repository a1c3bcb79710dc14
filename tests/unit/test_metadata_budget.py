"""The metadata budget: what RAM-fs names, nodes and OPENDIR snapshots charge, when the
charge goes back, ENOMEM at the limit, and how close the charges are to the host bytes
that tracemalloc sees."""

from __future__ import annotations

import contextlib
import gc
import sys
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from copra.abi.spec import Errno
from copra.kernel import lockdep, packit
from copra.kernel.budget import MEMORY_SHARE, MetadataBudget, default_metadata_limit
from copra.kernel.errors import SyscallError
from copra.kernel.objects.directory import OPEN_DIRECTORY_BYTES, OpenDirectory
from copra.kernel.ramfs import (
    DIRECTORY_BYTES,
    FILE_BYTES,
    Directory,
    RamFs,
    entry_bytes,
    snapshot_bytes,
)


def errno_of(action: Callable[[], object]) -> Errno:
    with pytest.raises(SyscallError) as err:
        action()
    return err.value.errno


def tree(fs: RamFs, path: str = "/") -> dict[str, object]:
    """The whole tree under ``path`` as nested dicts (files as their contents)."""
    out: dict[str, object] = {}
    for entry in fs.opendir(path):
        child = f"{path.rstrip('/')}/{entry.name}"
        out[entry.name] = tree(fs, child) if isinstance(entry.node, Directory) else \
            fs.open(child).read(0, 1 << 20)
    return out


# -- the budget itself -------------------------------------------------------------------


def test_budget_charge_and_release_move_in_use_and_peak() -> None:
    budget = MetadataBudget(100)
    budget.charge(60, "a")
    budget.charge(40, "b")
    budget.release(60)
    assert (budget.in_use, budget.peak, budget.refused) == (40, 100, 0)


def test_budget_charge_past_the_limit_is_enomem_and_takes_nothing() -> None:
    budget = MetadataBudget(100)
    budget.charge(90, "a")
    with pytest.raises(SyscallError) as err:
        budget.charge(11, "mkdir /x")
    assert err.value.errno is Errno.ENOMEM
    assert "mkdir /x" in err.value.message and "90 of 100" in err.value.message
    assert (budget.in_use, budget.refused) == (90, 1)


def test_budget_without_limit_never_refuses() -> None:
    budget = MetadataBudget(None)
    budget.charge(1 << 40, "a")
    assert budget.in_use == 1 << 40


def test_budget_rejects_negative_limit_and_charge() -> None:
    with pytest.raises(ValueError):
        MetadataBudget(-1)
    with pytest.raises(ValueError):
        MetadataBudget(10).charge(-1, "a")


def test_default_limit_is_an_eighth_of_the_memory_size() -> None:
    assert MEMORY_SHARE == 8
    assert default_metadata_limit(256 << 20) == 32 << 20


# -- what the RAM fs charges, and when it goes back -------------------------------------------


def test_new_fs_charges_only_its_root() -> None:
    assert RamFs().metadata.in_use == DIRECTORY_BYTES


def test_fs_limit_below_the_root_directory_is_refused() -> None:
    with pytest.raises(ValueError, match="root directory"):
        RamFs(metadata_limit=DIRECTORY_BYTES - 1)


def test_mkdir_charges_node_and_name_and_rmdir_returns_them() -> None:
    fs = RamFs()
    base = fs.metadata.in_use
    fs.mkdir("/dir")
    assert fs.metadata.in_use == base + DIRECTORY_BYTES + entry_bytes("dir")
    fs.rmdir("/dir")
    assert fs.metadata.in_use == base


def test_create_charges_node_and_name_and_unlink_returns_them() -> None:
    fs = RamFs()
    base = fs.metadata.in_use
    fs.create("/file").write(0, b"x")
    assert fs.metadata.in_use == base + FILE_BYTES + entry_bytes("file")
    fs.unlink("/file")
    assert fs.metadata.in_use == base


def test_name_charge_grows_with_the_name() -> None:
    assert entry_bytes("a" * 200) - entry_bytes("a") == 199
    assert entry_bytes("\u00e9" * 10) > entry_bytes("e" * 10)  # not ASCII: bigger str


def test_unlinked_file_still_held_stays_charged_until_dropped() -> None:
    fs = RamFs()
    base = fs.metadata.in_use
    held = fs.create("/file")
    fs.unlink("/file")
    assert fs.metadata.in_use == base + FILE_BYTES
    del held
    assert fs.metadata.in_use == base


def test_opendir_charges_snapshot_and_handle_and_close_returns_them() -> None:
    fs = RamFs()
    for name in ("a", "b", "c"):
        fs.create(f"/{name}")
    base = fs.metadata.in_use
    handle = OpenDirectory.open(fs, "/")
    assert fs.metadata.in_use == base + snapshot_bytes(3) + OPEN_DIRECTORY_BYTES
    handle.on_close()
    assert fs.metadata.in_use == base + OPEN_DIRECTORY_BYTES  # the object is still here
    del handle
    assert fs.metadata.in_use == base


def test_opendirs_of_an_unchanged_directory_share_one_snapshot() -> None:
    fs = RamFs()
    for i in range(100):
        fs.create(f"/f{i}")
    base = fs.metadata.in_use
    handles = [OpenDirectory.open(fs, "/") for _ in range(10)]
    assert fs.metadata.in_use == base + snapshot_bytes(100) + 10 * OPEN_DIRECTORY_BYTES
    fs.create("/new")  # a change: the next OPENDIR takes a snapshot of its own
    handles.append(OpenDirectory.open(fs, "/"))
    assert len(handles[-1]) == 101 and len(handles[0]) == 100
    assert fs.metadata.in_use == (base + entry_bytes("new") + FILE_BYTES + snapshot_bytes(100)
                                  + snapshot_bytes(101) + 11 * OPEN_DIRECTORY_BYTES)


def test_removed_names_a_snapshot_lists_stay_charged_until_it_closes() -> None:
    fs = RamFs()
    fs.mkdir("/d")
    for i in range(5):
        fs.create(f"/d/f{i}")
    base = fs.metadata.in_use
    handle = OpenDirectory.open(fs, "/d")
    with_handle = fs.metadata.in_use
    for i in range(5):
        fs.unlink(f"/d/f{i}")
    assert fs.metadata.in_use == with_handle  # the snapshot still lists (holds) them
    assert [e.name for e in handle.readdir(10)] == [f"f{i}" for i in range(5)]
    handle.on_close()
    del handle
    assert fs.metadata.in_use == base - 5 * FILE_BYTES - sum(entry_bytes(f"f{i}")
                                                              for i in range(5))


def test_populate_charges_every_new_directory_once_and_every_file() -> None:
    fs = RamFs()
    fs.mkdir("/etc")
    base = fs.metadata.in_use
    archive = packit.encode([packit.PackItEntry("/etc/a", b"1"),
                             packit.PackItEntry("/bin/x/y", b"2"),
                             packit.PackItEntry("/bin/x/z", b"")])
    fs.populate(archive)
    expected = (2 * DIRECTORY_BYTES + entry_bytes("bin") + entry_bytes("x")
                + 3 * FILE_BYTES + entry_bytes("a") + entry_bytes("y") + entry_bytes("z"))
    assert fs.metadata.in_use == base + expected


def test_removing_everything_returns_the_budget_to_the_root_alone() -> None:
    fs = RamFs()
    for d in range(20):
        fs.mkdir(f"/d{d}")
        for f in range(20):
            fs.create(f"/d{d}/f{f}").write(0, b"data")
    for d in range(20):
        for f in range(20):
            fs.unlink(f"/d{d}/f{f}")
        fs.rmdir(f"/d{d}")
    assert fs.metadata.in_use == DIRECTORY_BYTES
    assert fs.pages_in_use == 0


def test_dropping_the_fs_returns_every_charge() -> None:
    fs = RamFs()
    fs.populate(packit.encode([packit.PackItEntry(f"/a/b{i}/c", b"x") for i in range(10)]))
    budget = fs.metadata
    del fs
    gc.collect()
    assert budget.in_use == 0


def test_directory_index_rebuilt_after_mass_removal_still_finds_every_name() -> None:
    fs = RamFs()
    for i in range(300):
        fs.create(f"/f{i}")
    removed = [i for i in range(300) if i % 3 == 0 or i < 200]
    for i in removed:
        fs.unlink(f"/f{i}")
    remaining = {f"f{i}" for i in range(300) if i not in removed}
    assert len(remaining) == 67
    assert fs.root._high < 300  # rebuilt on the way down
    assert {e.name for e in fs.opendir("/")} == remaining
    for name in remaining:
        assert fs.lookup(f"/{name}") is not None
    assert errno_of(lambda: fs.lookup("/f201x")) is Errno.ENOTFOUND


# -- ENOMEM at the limit: nothing changes --------------------------------------------------


def full_fs(room: int) -> RamFs:
    """A fs with a few names and ``room`` bytes left in its budget."""
    probe = RamFs()
    probe.mkdir("/d")
    probe.create("/d/f").write(0, b"keep")
    fs = RamFs(metadata_limit=probe.metadata.in_use + room)
    fs.mkdir("/d")
    fs.create("/d/f").write(0, b"keep")
    assert fs.metadata.limit is not None
    assert fs.metadata.limit - fs.metadata.in_use == room
    return fs


def test_mkdir_past_the_limit_is_enomem_and_changes_nothing() -> None:
    room = DIRECTORY_BYTES + entry_bytes("new") - 1
    fs = full_fs(room)
    before, in_use = tree(fs), fs.metadata.in_use
    assert errno_of(lambda: fs.mkdir("/d/new")) is Errno.ENOMEM
    assert (tree(fs), fs.metadata.in_use) == (before, in_use)
    fs.unlink("/d/f")  # room again
    fs.mkdir("/d/new")


def test_mkdir_that_just_fits_succeeds() -> None:
    fs = full_fs(DIRECTORY_BYTES + entry_bytes("new"))
    fs.mkdir("/d/new")
    assert fs.metadata.in_use == fs.metadata.limit


def test_create_past_the_limit_is_enomem_and_changes_nothing() -> None:
    fs = full_fs(FILE_BYTES + entry_bytes("g") - 1)
    before, in_use = tree(fs), fs.metadata.in_use
    assert errno_of(lambda: fs.create("/d/g")) is Errno.ENOMEM
    assert errno_of(lambda: fs.open_or_create("/d/g")) is Errno.ENOMEM
    assert fs.open_or_create("/d/f")[1] is False  # opening an existing file costs nothing
    assert (tree(fs), fs.metadata.in_use) == (before, in_use)


def test_opendir_past_the_limit_is_enomem_and_changes_nothing() -> None:
    fs = full_fs(snapshot_bytes(1) - 1)
    in_use = fs.metadata.in_use
    assert errno_of(lambda: OpenDirectory.open(fs, "/d")) is Errno.ENOMEM
    assert fs.metadata.in_use == in_use
    assert fs.metadata.refused == 1


def test_opendir_with_room_for_the_snapshot_but_not_the_handle_takes_neither() -> None:
    fs = full_fs(snapshot_bytes(1) + OPEN_DIRECTORY_BYTES - 1)
    in_use = fs.metadata.in_use
    assert errno_of(lambda: OpenDirectory.open(fs, "/d")) is Errno.ENOMEM
    assert fs.metadata.in_use == in_use  # at once, not when a collection runs


def test_populate_past_the_limit_is_enomem_and_changes_nothing() -> None:
    fs = full_fs(1000)
    before, in_use = tree(fs), fs.metadata.in_use
    archive = packit.encode([packit.PackItEntry(f"/new/f{i}", b"x" * 5000) for i in range(5)])
    assert errno_of(lambda: fs.populate(archive)) is Errno.ENOMEM
    assert (tree(fs), fs.metadata.in_use, fs.pages_in_use) == (before, in_use, 1)


# -- the charges are honest: within a band of what tracemalloc measures ------------------------


def traced_growth(action: Callable[[], object]) -> tuple[int, object]:
    """Host bytes ``action`` leaves allocated (what it returns stays alive), by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with lockdep.unchecked():  # measure the objects production makes
            kept = action()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, kept
    finally:
        tracemalloc.stop()


N = 2000


def many_dirs(fs: RamFs) -> None:
    for i in range(N):
        fs.mkdir(f"/d/name{i:06d}")


def many_files(fs: RamFs) -> None:
    for i in range(N):
        fs.create(f"/d/name{i:06d}")


def fresh_snapshots(fs: RamFs) -> list[OpenDirectory]:
    handles = []
    for _ in range(200):
        fs.mkdir("/d/x")  # a change: every OPENDIR takes its own snapshot
        fs.rmdir("/d/x")
        handles.append(OpenDirectory.open(fs, "/d"))
    return handles


def shared_snapshots(fs: RamFs) -> list[OpenDirectory]:
    return [OpenDirectory.open(fs, "/d") for _ in range(N)]


@pytest.mark.parametrize("action", [many_dirs, many_files, fresh_snapshots, shared_snapshots],
                         ids=lambda f: f.__name__)
def test_charge_is_within_a_band_of_the_host_bytes_tracemalloc_sees(
        action: Callable[[RamFs], object]) -> None:
    fs = RamFs()
    fs.mkdir("/d")
    for i in range(500):
        fs.create(f"/d/existing{i:04d}")
    before = fs.metadata.in_use
    measured, kept = traced_growth(lambda: action(fs))
    charged = fs.metadata.in_use - before
    assert 0.85 <= charged / measured <= 1.25, f"charged {charged}, measured {measured}"
    del kept


# -- a state machine: any sequence of operations keeps the books ------------------------------


NAMES = st.sampled_from(["/a", "/b", "/a/x", "/a/y", "/b/x", "/a/x/z", "/" + "n" * 200])


class BudgetMachine(RuleBasedStateMachine):
    """Random mkdir/create/unlink/rmdir/OPENDIR/close under a tight limit: in_use never
    passes the limit, a refused operation changes nothing, and closing and removing
    everything returns the budget to the root's charge."""

    def __init__(self) -> None:
        super().__init__()
        self.fs = RamFs(metadata_limit=DIRECTORY_BYTES + 3000)
        self.handles: list[OpenDirectory] = []

    def attempt(self, action: Callable[[], object]) -> None:
        before, in_use = tree(self.fs), self.fs.metadata.in_use
        try:
            action()
        except SyscallError as e:
            assert (tree(self.fs), self.fs.metadata.in_use) == (before, in_use), e.errno

    @rule(path=NAMES)
    def mkdir(self, path: str) -> None:
        self.attempt(lambda: self.fs.mkdir(path))

    @rule(path=NAMES)
    def create(self, path: str) -> None:
        self.attempt(lambda: self.fs.create(path))

    @rule(path=NAMES)
    def unlink(self, path: str) -> None:
        self.attempt(lambda: self.fs.unlink(path))

    @rule(path=NAMES)
    def rmdir(self, path: str) -> None:
        self.attempt(lambda: self.fs.rmdir(path))

    @rule(path=st.sampled_from(["/", "/a", "/b"]))
    def opendir(self, path: str) -> None:
        self.attempt(lambda: self.handles.append(OpenDirectory.open(self.fs, path)))

    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        if self.handles:
            handle = self.handles.pop(data.draw(st.integers(0, len(self.handles) - 1)))
            handle.on_close()

    @invariant()
    def within_limit(self) -> None:
        assert self.fs.metadata.limit is not None
        assert DIRECTORY_BYTES <= self.fs.metadata.in_use <= self.fs.metadata.limit

    def teardown(self) -> None:
        while self.handles:
            self.handles.pop().on_close()
        for path in ("/a/x/z", "/a/x", "/a/y", "/b/x", "/a", "/b", "/" + "n" * 200):
            for remove in (self.fs.unlink, self.fs.rmdir):
                with contextlib.suppress(SyscallError):
                    remove(path)
        assert self.fs.metadata.in_use == DIRECTORY_BYTES, tree(self.fs)


TestBudgetMachine = BudgetMachine.TestCase
TestBudgetMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_sys_getsizeof_of_a_name_is_what_entry_bytes_adds() -> None:
    assert entry_bytes("abc") - entry_bytes("") == sys.getsizeof("abc") - sys.getsizeof("")
