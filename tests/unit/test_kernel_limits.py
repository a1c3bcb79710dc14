"""The kernel under memory and handle pressure, and the W^X rule for file mappings.

Runs the real handlers over the fake VM (no KVM): each test checks the answer
and that nothing is left behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fake_vm import FakeVm

from copra.abi.spec import (
    MAX_HANDLES,
    MMAP_BASE,
    PAGE_SIZE,
    USER_MAP_END,
    USER_START,
    Errno,
    FileFlag,
    FileMode,
    MapFlag,
    Sys,
)
from copra.hw.x86 import PTE_ADDR_MASK
from copra.kernel import packit
from copra.kernel.boot import make_kernel
from copra.kernel.cpu import Next
from copra.kernel.errors import SyscallError
from copra.kernel.frames import FrameOwner
from copra.kernel.kernel import Kernel, task_name
from copra.kernel.objects.file import OpenFile
from copra.kernel.objects.log import Log
from copra.kernel.process import Process
from copra.kernel.ramfs import FramePageStore, RamFs
from copra.kernel.syscalls import fs as fs_syscalls
from copra.kernel.thread import ThreadState

PATH = USER_START  # a page holding "/f\0"


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    vm = FakeVm(pages=512)
    fs = RamFs(store=FramePageStore(vm.frames))  # type: ignore[arg-type]
    fs.populate(packit.encode([packit.PackItEntry("/f", b"\x90" * 100)]))
    yield Kernel(vm, fs, lambda line: None)  # type: ignore[arg-type]


def process(k: Kernel) -> Process:
    proc = Process(7, "t", 0, k.vm.frames, {}, Log("t", lambda line: None), k.fs.root)
    proc.map_anonymous(PATH, 1, writable=False, executable=False)
    entry = proc.space.lookup(PATH)
    assert entry is not None
    k.vm.memory.write(entry & PTE_ADDR_MASK, b"/f\0/new\0")
    proc.start_at(PATH, tid=proc.pid).state = ThreadState.RUNNING  # as if on a CPU
    k.processes[proc.pid] = proc
    return proc


def call(k: Kernel, proc: Process, number: int, *args: int) -> int:
    regs = k.vm.cpus[0].regs
    regs.rax = number
    regs.rdi, regs.rsi, regs.r8, regs.r9, regs.r10 = (*args, 0, 0, 0, 0, 0)[:5]
    assert k.dispatch(k.vm.cpus[0], proc.threads[0]) is Next.GO_ON  # type: ignore[arg-type]
    value = regs.rax
    return value - (1 << 64) if value >> 63 else value


def exhaust(k: Kernel, keep: int) -> list[int]:
    frames = k.vm.frames
    taken = [frames.alloc(FrameOwner.USER) for _ in range(frames.free_count - keep)]
    return taken


def test_mmap_that_runs_out_of_page_table_frames_maps_nothing_and_leaks_nothing(
        kernel: Kernel) -> None:
    proc = process(kernel)
    # Two pages straddling a 2 MiB boundary need a new page table for the second.
    start = MMAP_BASE + (2 << 20) - PAGE_SIZE
    taken = exhaust(kernel, keep=2)
    flags = MapFlag.READ | MapFlag.WRITE | MapFlag.ANONYMOUS | MapFlag.FIXED
    assert call(kernel, proc, Sys.MMAP, 0, start, 0, 2 * PAGE_SIZE, flags) == Errno.ENOMEM
    assert proc.space.lookup(start) is None
    assert kernel.vm.frames.free_count == 2
    kernel.vm.frames.free_many(taken)
    assert call(kernel, proc, Sys.MMAP, 0, start, 0, 2 * PAGE_SIZE, flags) == start
    assert kernel.counters["internal_errors"] == 0


def test_spawn_without_a_frame_for_the_page_tables_is_enomem(kernel: Kernel) -> None:
    kernel.fs.populate(packit.encode([packit.PackItEntry("/bin/x", b"\x7fELF")]))
    taken = exhaust(kernel, keep=0)
    with pytest.raises(SyscallError) as err:
        kernel.spawn("/bin/x")
    assert err.value.errno == Errno.ENOMEM
    kernel.vm.frames.free_many(taken)
    assert kernel.vm.frames.used[FrameOwner.PAGE_TABLE] == 0


def test_open_create_at_the_handle_limit_is_emfile_and_creates_nothing(kernel: Kernel) -> None:
    proc = process(kernel)
    while len(proc.handles) < MAX_HANDLES:
        assert call(kernel, proc, Sys.OPEN, PATH, FileMode.READ, 0) > 0
    result = call(kernel, proc, Sys.OPEN, PATH + 3, FileMode.WRITE, FileFlag.CREATE)
    assert result == Errno.EMFILE
    with pytest.raises(SyscallError):
        kernel.fs.open("/new")


def test_open_trunc_at_the_handle_limit_is_emfile_and_keeps_the_file(kernel: Kernel) -> None:
    proc = process(kernel)
    while len(proc.handles) < MAX_HANDLES:
        call(kernel, proc, Sys.OPEN, PATH, FileMode.READ, 0)
    result = call(kernel, proc, Sys.OPEN, PATH, FileMode.WRITE | FileMode.TRUNC, 0)
    assert result == Errno.EMFILE
    assert kernel.fs.open("/f").size == 100


def test_open_create_racing_for_the_last_handle_takes_it_before_creating(
        kernel: Kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another thread of the process installs a handle while OPEN creates its file:
    # OPEN reserved the last id first, so the other call is refused (free of effects)
    # and OPEN succeeds; before, OPEN created the file and then answered EMFILE.
    proc = process(kernel)
    while len(proc.handles) < MAX_HANDLES - 1:
        assert call(kernel, proc, Sys.OPEN, PATH, FileMode.READ, 0) > 0
    real_open = fs_syscalls.OpenFile.open
    other: list[Errno] = []

    def open_while_another_thread_installs(*args: Any, **kwargs: Any) -> OpenFile:
        try:
            proc.handles.install(Log("other", lambda line: None))
        except SyscallError as e:
            other.append(e.errno)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(fs_syscalls.OpenFile, "open", open_while_another_thread_installs)
    handle = call(kernel, proc, Sys.OPEN, PATH + 3, FileMode.WRITE, FileFlag.CREATE)
    assert handle == MAX_HANDLES - 1 and other == [Errno.EMFILE]
    assert kernel.fs.open("/new").size == 0


def test_open_create_that_fails_gives_its_reserved_handle_back(kernel: Kernel) -> None:
    proc = process(kernel)
    before = len(proc.handles)
    # "/f/x": a path under a file is ENOTDIR, after the id was reserved
    kernel.vm.memory.write(proc.space.lookup(PATH) & PTE_ADDR_MASK, b"/f/x\0")  # type: ignore[operator]
    assert call(kernel, proc, Sys.OPEN, PATH, FileMode.WRITE, FileFlag.CREATE) < 0
    assert len(proc.handles) == before
    assert call(kernel, proc, Sys.OPENDIR, PATH) < 0
    assert len(proc.handles) == before


def test_executable_file_mapping_is_a_private_copy(kernel: Kernel) -> None:
    proc = process(kernel)
    handle = call(kernel, proc, Sys.OPEN, PATH, FileMode.READ, 0)
    addr = call(kernel, proc, Sys.MMAP, handle, 0, 0, PAGE_SIZE, MapFlag.READ | MapFlag.EXEC)
    entry = proc.space.lookup(addr)
    assert entry is not None
    assert entry & PTE_ADDR_MASK != kernel.fs.open("/f").frame(0)
    kernel.fs.open("/f").write(0, b"\xcc")  # the file changes; the code does not
    assert kernel.vm.memory.read(entry & PTE_ADDR_MASK, 1) == b"\x90"


def test_read_only_file_mapping_shares_the_file_frame(kernel: Kernel) -> None:
    proc = process(kernel)
    handle = call(kernel, proc, Sys.OPEN, PATH, FileMode.READ, 0)
    addr = call(kernel, proc, Sys.MMAP, handle, 0, 0, PAGE_SIZE, MapFlag.READ)
    entry = proc.space.lookup(addr)
    assert entry is not None
    assert entry & PTE_ADDR_MASK == kernel.fs.open("/f").frame(0)


def test_huge_read_only_file_mapping_past_eof_is_enomem_at_once(kernel: Kernel) -> None:
    proc = process(kernel)
    handle = call(kernel, proc, Sys.OPEN, PATH, FileMode.READ, 0)
    free = kernel.vm.frames.free_count
    result = call(kernel, proc, Sys.MMAP, handle, 0, 0, (free + 2) * PAGE_SIZE, MapFlag.READ)
    assert result == Errno.ENOMEM
    assert kernel.vm.frames.free_count == free


def test_mmap_fixed_may_not_cover_the_stack_guard_page(kernel: Kernel) -> None:
    proc = process(kernel)
    flags = MapFlag.READ | MapFlag.ANONYMOUS | MapFlag.FIXED
    assert call(kernel, proc, Sys.MMAP, 0, USER_MAP_END - PAGE_SIZE, 0, PAGE_SIZE, flags) > 0
    assert call(kernel, proc, Sys.MMAP, 0, USER_MAP_END, 0, PAGE_SIZE, flags) == Errno.EINVAL


@pytest.mark.parametrize(("path", "name"), [
    ("/bin/hello", "hello"),
    ("/bin/kernel", "kernel_"),
    ("/bin/kernel] x", "kernel__x"),
    ("/init", "init"),
    ("/bin/caf\u00e9", "caf_"),
])
def test_task_names_cannot_forge_another_log_prefix(path: str, name: str) -> None:
    assert task_name(path) == name


# -- host memory: the metadata budget and MemoryError ------------------------------------


def budgeted(room: int) -> tuple[Kernel, list[str]]:
    """A kernel whose RAM fs has ``room`` bytes of metadata budget left after /f, and
    the lines it logs."""
    vm = FakeVm(pages=512)
    archive = packit.encode([packit.PackItEntry("/f", b"\x90" * 100)])
    probe, _ = make_kernel(vm, archive, lambda line: None)  # type: ignore[arg-type]
    limit = probe.fs.metadata.in_use + room
    lines: list[str] = []
    kernel, _ = make_kernel(vm, archive, lines.append,  # type: ignore[arg-type]
                            metadata_limit=limit)
    return kernel, lines


def test_make_kernel_takes_an_eighth_of_the_memory_for_metadata_by_default() -> None:
    vm = FakeVm(pages=512)
    kernel, _ = make_kernel(vm, packit.encode([]), lambda line: None)  # type: ignore[arg-type]
    assert kernel.fs.metadata.limit == 512 * PAGE_SIZE // 8
    assert kernel.stats()["metadata_bytes"] == kernel.fs.metadata.in_use > 0


def test_mkdir_past_the_metadata_budget_is_enomem_logged_with_its_reason() -> None:
    kernel, lines = budgeted(room=100)
    proc = process(kernel)
    before = kernel.stats()["metadata_bytes"]
    assert call(kernel, proc, Sys.MKDIR, PATH + 3) == Errno.ENOMEM
    assert kernel.stats()["metadata_bytes"] == before
    assert kernel.counters["enomem"] == 1
    logged = [line for line in lines if "ENOMEM" in line]
    assert len(logged) == 1 and "metadata budget" in logged[0] and "mkdir /new" in logged[0]
    with pytest.raises(SyscallError):
        kernel.fs.lookup("/new")


def test_opendir_snapshots_go_back_to_the_budget_when_the_process_exits() -> None:
    kernel, _ = budgeted(room=1 << 20)
    proc = process(kernel)
    entry = proc.space.lookup(PATH)
    assert entry is not None
    kernel.vm.memory.write((entry & PTE_ADDR_MASK) + 8, b"/\0")
    before = kernel.stats()["metadata_bytes"]
    for _ in range(10):
        assert call(kernel, proc, Sys.OPENDIR, PATH + 8) > 0  # "/": the root
        assert call(kernel, proc, Sys.OPEN, PATH + 3, FileMode.WRITE, FileFlag.CREATE) > 0
        assert call(kernel, proc, Sys.UNLINK, PATH + 3) == 0  # changed: a fresh snapshot
    assert kernel.stats()["metadata_bytes"] > before
    kernel.exit_process(proc, 0)
    assert kernel.stats()["metadata_bytes"] == before


def test_host_memory_error_in_a_handler_is_enomem_counted_without_traceback(
        kernel: Kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    kernel.console = lines.append
    proc = process(kernel)

    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(kernel.fs, "mkdir", exhausted)
    results = [call(kernel, proc, Sys.MKDIR, PATH + 3) for _ in range(9)]
    assert results == [Errno.ENOMEM] * 9
    assert kernel.counters["host_memory_errors"] == 9
    assert kernel.counters["internal_errors"] == 0
    assert len(lines) == 4  # the 1st, 2nd, 4th and 8th
    assert all("host memory exhausted" in line for line in lines)
    assert not any("Traceback" in line for line in lines)
