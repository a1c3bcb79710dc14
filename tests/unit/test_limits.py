"""Resource limits (kernel/limits.py) under the real handlers over the fake VM.

Each limit is driven to its edge: the call at the limit gets its error, changes
nothing, and the kernel's counts say so; below the limit the same call succeeds.
A hypothesis test at the end checks the MMAP placement rules of the region map
against a naive model of pages.
"""

from __future__ import annotations

import pytest
from fake_vm import FakeVm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from copra.abi.spec import (
    MAX_HANDLES,
    MMAP_BASE,
    PAGE_SIZE,
    USER_START,
    Errno,
    FileMode,
    MapFlag,
    Sys,
)
from copra.hw.x86 import PTE_ADDR_MASK
from copra.kernel import packit
from copra.kernel.cpu import Next
from copra.kernel.errors import SyscallError
from copra.kernel.frames import FrameOwner
from copra.kernel.image import packaged_program
from copra.kernel.kernel import Kernel
from copra.kernel.limits import DEFAULT_FRAME_SHARE, DEFAULT_LIMITS, Limits
from copra.kernel.objects.log import Log
from copra.kernel.process import Process
from copra.kernel.ramfs import FramePageStore, RamFs
from copra.kernel.thread import ThreadState

STRINGS = USER_START  # a page holding the strings below
FILE_PATH, PROGRAM_PATH, ROOT_PATH = STRINGS, STRINGS + 8, STRINGS + 24
ANON = MapFlag.READ | MapFlag.WRITE | MapFlag.ANONYMOUS
FIXED = ANON | MapFlag.FIXED
PROGRAM = packaged_program("hello")


def make_kernel(limits: Limits = DEFAULT_LIMITS, pages: int = 1024) -> Kernel:
    vm = FakeVm(pages=pages)
    fs = RamFs(store=FramePageStore(vm.frames))  # type: ignore[arg-type]
    fs.populate(packit.encode([packit.PackItEntry("/f", b"\x90" * 100),
                               packit.PackItEntry("/bin/prog", PROGRAM)]))
    return Kernel(vm, fs, lambda line: None, limits)  # type: ignore[arg-type]


def process(k: Kernel, pid: int = 7) -> Process:
    """A process with one read-only page of strings, as if spawned by nobody."""
    proc = Process(pid, "t", 0, k.vm.frames, {}, Log("t", lambda line: None), k.fs.root,
                   k.limits)
    proc.map_anonymous(STRINGS, 1, writable=False, executable=False)
    entry = proc.space.lookup(STRINGS)
    assert entry is not None
    page = entry & PTE_ADDR_MASK
    for addr, text in ((FILE_PATH, b"/f\0"), (PROGRAM_PATH, b"/bin/prog\0"), (ROOT_PATH, b"/\0")):
        k.vm.memory.write(page + addr - STRINGS, text)
    proc.start_at(STRINGS, tid=proc.pid).state = ThreadState.RUNNING  # as if on a CPU
    k.processes[proc.pid] = proc
    return proc


def call(k: Kernel, proc: Process, number: int, *args: int) -> int:
    regs = k.vm.cpus[0].regs
    regs.rax = number
    regs.rdi, regs.rsi, regs.r8, regs.r9, regs.r10 = (*args, 0, 0, 0, 0, 0)[:5]
    assert k.dispatch(k.vm.cpus[0], proc.threads[0]) is Next.GO_ON  # type: ignore[arg-type]
    value = regs.rax
    return value - (1 << 64) if value >> 63 else value


def mmap(k: Kernel, proc: Process, pages: int, hint: int = 0, flags: int = ANON) -> int:
    return call(k, proc, Sys.MMAP, 0, hint, 0, pages * PAGE_SIZE, flags)


def held_by_owner(k: Kernel) -> int:
    used = k.vm.frames.used
    return used[FrameOwner.USER] + used[FrameOwner.PAGE_TABLE]


# --- the Limits value -----------------------------------------------------------------------


def test_default_frame_limit_is_the_documented_share_of_the_pool() -> None:
    assert Limits().frame_limit(65536) == 65536 * 3 // 4 == int(65536 * DEFAULT_FRAME_SHARE)
    assert Limits(frames=10).frame_limit(65536) == 10


@pytest.mark.parametrize("field", Limits.names())
@pytest.mark.parametrize("value", [0, -1, 1 << 32, True, 2.0])
def test_limits_refuse_values_outside_one_to_u32_max(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"limit {field} must be an integer"):
        Limits(**{field: value})  # type: ignore[arg-type]


# --- frames -----------------------------------------------------------------------------------


def test_process_frames_and_page_tables_are_charged_to_it() -> None:
    k = make_kernel(Limits(frames=100))
    proc = process(k)
    assert proc.account.held == held_by_owner(k)  # 1 page + PML4, PDPT, PD, PT
    before = proc.account.held
    mmap(k, proc, 3)  # a new 512 GiB area: three new tables and three pages
    assert proc.account.held == before + 6 == held_by_owner(k)


def test_mmap_beyond_the_frame_limit_is_enomem_and_takes_nothing() -> None:
    k = make_kernel(Limits(frames=40))
    proc = process(k)
    free = k.vm.frames.free_count
    room = proc.account.limit - proc.account.held
    assert mmap(k, proc, room) == Errno.ENOMEM  # the tables need frames too
    assert k.vm.frames.free_count == free
    assert len(proc.regions) == 1
    assert mmap(k, proc, room - 3) == MMAP_BASE
    assert proc.account.held == proc.account.limit
    assert mmap(k, proc, 1) == Errno.ENOMEM
    assert k.counters["internal_errors"] == 0


def test_munmap_takes_the_charge_off_and_the_room_can_be_used_again() -> None:
    k = make_kernel(Limits(frames=40))
    proc = process(k)
    addr = mmap(k, proc, proc.account.limit - proc.account.held - 3)
    assert mmap(k, proc, 1) == Errno.ENOMEM
    assert call(k, proc, Sys.MUNMAP, addr, 2 * PAGE_SIZE) == 0
    assert mmap(k, proc, 2) == addr
    assert proc.account.held == proc.account.limit == held_by_owner(k)


def test_read_only_file_mapping_is_not_charged_but_its_pages_past_eof_are() -> None:
    k = make_kernel(Limits(frames=100))
    proc = process(k)
    handle = call(k, proc, Sys.OPEN, FILE_PATH, FileMode.READ, 0)
    before = proc.account.held
    addr = call(k, proc, Sys.MMAP, handle, 0, 0, 3 * PAGE_SIZE, MapFlag.READ)
    assert proc.account.held == before + 3 + 2  # two zero pages past EOF, three tables
    assert call(k, proc, Sys.MUNMAP, addr, 3 * PAGE_SIZE) == 0
    assert proc.account.held == before + 3  # the tables stay until the process ends
    assert k.fs.open("/f").size == 100


def test_read_only_file_mapping_past_eof_beyond_the_limit_is_enomem() -> None:
    k = make_kernel(Limits(frames=20))
    proc = process(k)
    handle = call(k, proc, Sys.OPEN, FILE_PATH, FileMode.READ, 0)
    free, refs = k.vm.frames.free_count, k.vm.frames.refcount(k.fs.open("/f").frame(0))
    assert call(k, proc, Sys.MMAP, handle, 0, 0, 30 * PAGE_SIZE, MapFlag.READ) == Errno.ENOMEM
    assert k.vm.frames.free_count == free
    assert k.vm.frames.refcount(k.fs.open("/f").frame(0)) == refs


def test_mresize_growth_is_charged_and_refused_beyond_the_limit() -> None:
    k = make_kernel(Limits(frames=30))
    proc = process(k)
    addr = mmap(k, proc, 1)
    room = proc.account.limit - proc.account.held
    assert call(k, proc, Sys.MRESIZE, addr, (room + 2) * PAGE_SIZE) == Errno.ENOMEM
    assert len(proc.regions.get(addr).frames) == 1  # type: ignore[union-attr]
    assert call(k, proc, Sys.MRESIZE, addr, (room + 1) * PAGE_SIZE) == 0
    assert proc.account.held == proc.account.limit == held_by_owner(k)


def test_frame_hog_at_its_limit_leaves_a_sibling_the_rest() -> None:
    k = make_kernel(Limits(frames=600), pages=1024)
    hog, sibling = process(k, 7), process(k, 8)
    got = 0
    for chunk in (64, 8, 1):
        while mmap(k, hog, chunk) > 0:
            got += chunk
    assert hog.account.held == 600
    assert mmap(k, sibling, 300) > 0
    assert k.counters["internal_errors"] == 0


def test_spawn_with_a_frame_limit_below_the_image_is_enomem_and_leaks_nothing() -> None:
    k = make_kernel(Limits(frames=8))
    free = k.vm.frames.free_count
    with pytest.raises(SyscallError) as err:
        k.spawn("/bin/prog")
    assert err.value.errno == Errno.ENOMEM
    assert "limit of 8 frames" in err.value.message
    assert k.vm.frames.free_count == free
    assert k.processes == {}


# --- mappings -------------------------------------------------------------------------------


def test_mmap_at_the_mapping_limit_is_enomem_and_takes_no_frame() -> None:
    k = make_kernel(Limits(mappings=5))
    proc = process(k)
    for _ in range(4):
        assert mmap(k, proc, 1) > 0
    free = k.vm.frames.free_count
    assert mmap(k, proc, 1) == Errno.ENOMEM
    handle = call(k, proc, Sys.OPEN, FILE_PATH, FileMode.READ, 0)
    assert call(k, proc, Sys.MMAP, handle, 0, 0, PAGE_SIZE, MapFlag.READ) == Errno.ENOMEM
    assert k.vm.frames.free_count == free
    assert len(proc.regions) == 5


def test_munmap_that_would_split_at_the_mapping_limit_is_enomem_and_unmaps_nothing() -> None:
    k = make_kernel(Limits(mappings=2))
    proc = process(k)
    addr = mmap(k, proc, 3)
    free = k.vm.frames.free_count
    assert call(k, proc, Sys.MUNMAP, addr + PAGE_SIZE, PAGE_SIZE) == Errno.ENOMEM
    assert k.vm.frames.free_count == free
    assert proc.space.lookup(addr + PAGE_SIZE) is not None
    assert call(k, proc, Sys.MUNMAP, addr, PAGE_SIZE) == 0  # trimming splits nothing
    assert call(k, proc, Sys.MUNMAP, addr + 2 * PAGE_SIZE, PAGE_SIZE) == 0
    assert len(proc.regions) == 2


def test_munmap_split_below_the_mapping_limit_makes_two_regions() -> None:
    k = make_kernel(Limits(mappings=3))
    proc = process(k)
    addr = mmap(k, proc, 3)
    assert call(k, proc, Sys.MUNMAP, addr + PAGE_SIZE, PAGE_SIZE) == 0
    assert [(r.start, len(r.frames)) for r in proc.regions][1:] == [
        (addr, 1), (addr + 2 * PAGE_SIZE, 1)]


def test_spawn_of_an_image_with_more_segments_than_the_mapping_limit_is_enomem() -> None:
    k = make_kernel(Limits(mappings=2))
    free = k.vm.frames.free_count
    with pytest.raises(SyscallError) as err:
        k.spawn("/bin/prog")
    assert err.value.errno == Errno.ENOMEM
    assert "limit of 2 mappings" in err.value.message
    assert k.vm.frames.free_count == free


# --- handles --------------------------------------------------------------------------------


def test_configured_handle_limit_answers_emfile_at_that_count() -> None:
    k = make_kernel(Limits(handles=5))
    proc = process(k)
    assert [call(k, proc, Sys.OPEN, FILE_PATH, FileMode.READ, 0) for _ in range(5)] == [
        1, 2, 3, 4, Errno.EMFILE]
    assert call(k, proc, Sys.OPENDIR, ROOT_PATH) == Errno.EMFILE
    assert call(k, proc, Sys.CLOSE, 2) == 0
    assert call(k, proc, Sys.OPENDIR, ROOT_PATH) == 2


def test_default_handle_limit_is_the_spec_value() -> None:
    assert process(make_kernel()).handles.limit == MAX_HANDLES


# --- children and tasks ------------------------------------------------------------------------


def exec_(k: Kernel, parent: Process) -> int:
    return call(k, parent, Sys.EXEC, PROGRAM_PATH, ROOT_PATH, 0)


def end(k: Kernel, pid: int) -> None:
    k.exit_process(k.processes[pid], 0)


def test_exec_at_the_limit_of_running_children_is_eagain_and_spawns_nothing() -> None:
    k = make_kernel(Limits(children=2))
    parent = process(k)
    a, b = exec_(k, parent), exec_(k, parent)
    free, runnable = k.vm.frames.free_count, k.sched.runnable()
    assert exec_(k, parent) == Errno.EAGAIN
    assert (k.vm.frames.free_count, k.sched.runnable()) == (free, runnable)
    assert k.counters["task_limit_refusals"] == 1
    end(k, a)  # ended, not reaped: no longer running
    assert parent.live_children == 1 and parent.unreaped_children == 1
    c = exec_(k, parent)
    assert c == b + 1


def test_exec_at_the_limit_of_unreaped_children_is_eagain_until_one_is_reaped() -> None:
    k = make_kernel(Limits(unreaped=2))
    parent = process(k)
    children = [exec_(k, parent) for _ in range(2)]
    for pid in children:
        end(k, pid)
    assert exec_(k, parent) == Errno.EAGAIN
    assert call(k, parent, Sys.WAIT, children[0]) == 0
    assert parent.unreaped_children == 1
    assert exec_(k, parent) > 0


def test_child_ending_beyond_the_unreaped_limit_is_kept_and_reapable() -> None:
    k = make_kernel(Limits(unreaped=1))
    parent = process(k)
    children = [exec_(k, parent) for _ in range(3)]
    for code, pid in enumerate(children):
        k.exit_process(k.processes[pid], code << 16)
    assert parent.unreaped_children == 3
    assert [call(k, parent, Sys.WAIT, pid) for pid in children] == [0, 1 << 16, 2 << 16]
    assert parent.children == set() and parent.unreaped_children == 0


def test_exec_at_the_task_limit_is_eagain_whoever_asks() -> None:
    k = make_kernel(Limits(tasks=4))
    first, second = process(k, 7), process(k, 8)
    assert exec_(k, first) > 0
    assert exec_(k, second) > 0
    assert exec_(k, first) == Errno.EAGAIN
    assert exec_(k, second) == Errno.EAGAIN
    with pytest.raises(SyscallError) as err:
        k.spawn("/bin/prog")
    assert err.value.errno == Errno.EAGAIN


def test_unreaped_children_count_towards_the_task_limit() -> None:
    k = make_kernel(Limits(tasks=3))
    parent = process(k)
    a, _ = exec_(k, parent), exec_(k, parent)
    end(k, a)
    assert exec_(k, parent) == Errno.EAGAIN
    call(k, parent, Sys.WAIT, a)
    assert exec_(k, parent) > 0


def test_parent_ending_forgets_its_ended_children_and_frees_their_task_slots() -> None:
    k = make_kernel(Limits(tasks=4))
    parent = process(k)
    ended, running = exec_(k, parent), exec_(k, parent)
    end(k, ended)
    k.exit_process(parent, 0)  # itself nobody's child: forgotten at once
    assert set(k.processes) == {running}
    assert k.processes[running].parent == 0
    assert k.spawn("/bin/prog", parent=running).parent == running  # slots were freed
    end(k, running)  # an orphan: nobody will reap it
    assert len(k.processes) == 1 and k.stats()["tasks"] == 1


def test_blocked_wait_is_woken_by_the_end_of_the_child() -> None:
    k = make_kernel()
    parent = process(k)
    child = exec_(k, parent)
    waiter = parent.threads[0]
    regs = k.vm.cpus[0].regs
    regs.rax, regs.rdi = Sys.WAIT, child
    assert k.dispatch(k.vm.cpus[0], waiter) is Next.LEAVE  # type: ignore[arg-type]
    assert waiter.state is ThreadState.BLOCKED
    k.exit_process(k.processes[child], 5 << 16)
    assert waiter.state is ThreadState.RUNNABLE and parent.unreaped_children == 1
    assert call(k, parent, Sys.WAIT, child) == 5 << 16


# --- MMAP placement against a naive model -------------------------------------------------------

WINDOW = 48  # pages above MMAP_BASE where the model lives


@st.composite
def mapping_ops(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    ops = []
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["mmap", "mmap", "hint", "fixed", "munmap", "mresize"]))
        ops.append((kind, draw(st.integers(0, WINDOW - 1)), draw(st.integers(1, 6))))
    return ops


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mapping_ops())
def test_mmap_munmap_and_mresize_agree_with_a_naive_model(
        ops: list[tuple[str, int, int]]) -> None:
    k = make_kernel(Limits(mappings=1000), pages=1024)
    proc = process(k)
    model: dict[int, int] = {}  # first page (above MMAP_BASE) -> pages, one per region

    def free(first: int, count: int) -> bool:
        return all(s + n <= first or s >= first + count for s, n in model.items())

    for kind, page, count in ops:
        addr = MMAP_BASE + page * PAGE_SIZE
        if kind in ("mmap", "hint", "fixed"):
            result = mmap(k, proc, count, 0 if kind == "mmap" else addr,
                          FIXED if kind == "fixed" else ANON)
            if kind == "fixed" and not free(page, count):
                assert result == Errno.EEXIST
                continue
            want = page if kind != "mmap" and free(page, count) else \
                next(p for p in range(10 * WINDOW) if free(p, count))
            assert result == MMAP_BASE + want * PAGE_SIZE
            model[want] = count
        elif kind == "munmap":
            result = call(k, proc, Sys.MUNMAP, addr, count * PAGE_SIZE)
            hits = [(s, n) for s, n in model.items() if s < page + count and s + n > page]
            assert result == (0 if hits else Errno.ENOTFOUND)
            for s, n in hits:
                del model[s]
                if s < page:
                    model[s] = page - s
                if s + n > page + count:
                    model[page + count] = s + n - page - count
        else:
            result = call(k, proc, Sys.MRESIZE, addr, count * PAGE_SIZE)
            have = model.get(page)
            if have is None:
                assert result == Errno.ENOTFOUND
            elif count <= have or free(page + have, count - have):
                assert result == 0
                model[page] = count
            else:
                assert result == Errno.ENOMEM
        proc.regions.check()
        regions = [(r.start, len(r.frames)) for r in proc.regions if r.start >= MMAP_BASE]
        assert regions == sorted((MMAP_BASE + s * PAGE_SIZE, n) for s, n in model.items())
        for p in range(max((s + n for s, n in model.items()), default=0) + 2):
            mapped = any(s <= p < s + n for s, n in model.items())
            assert (proc.space.lookup(MMAP_BASE + p * PAGE_SIZE) is not None) == mapped
    assert proc.account.held == held_by_owner(k)
    assert k.counters["internal_errors"] == 0
