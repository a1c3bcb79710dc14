"""EXEC's prepared images (kernel/loader.py): kept by file and version, never shared
frames, bad files refused every time, and every frame back when the processes end."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from fake_vm import FakeVm
from test_elf import TEXT, R, Seg, W, X, build_elf, typical_program

from copra.abi.spec import PAGE_SIZE, USER_STACK_TOP, Errno
from copra.hw.x86 import PTE_ADDR_MASK, PTE_W
from copra.kernel import packit
from copra.kernel.errors import SyscallError
from copra.kernel.kernel import Kernel
from copra.kernel.loader import prepare
from copra.kernel.process import Process
from copra.kernel.ramfs import FramePageStore, RamFs

FIRST = build_elf(typical_program())
SECOND = build_elf([Seg(TEXT, b"\xf4" * 64, R | X), Seg(TEXT + 0x1000, b"\x02" * 8, R | W)])


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    vm = FakeVm(pages=1024)
    fs = RamFs(store=FramePageStore(vm.frames))  # type: ignore[arg-type]
    fs.populate(packit.encode([packit.PackItEntry("/bin/p", FIRST),
                               packit.PackItEntry("/bin/bad", b"\x7fELF" + bytes(60))]))
    yield Kernel(vm, fs, lambda line: None)  # type: ignore[arg-type]


def end(k: Kernel, proc: Process) -> None:
    k.exit_process(proc, 0)
    k.processes.pop(proc.pid, None)
    k.vm.flush_quarantine()  # type: ignore[attr-defined]


def held(k: Kernel) -> dict[str, int]:
    """Frames allocated, by owner (owners holding none left out)."""
    return {owner.value: n for owner, n in k.vm.frames.used.items() if n}


def page(k: Kernel, proc: Process, va: int) -> tuple[int, bytes]:
    entry = proc.space.lookup(va)
    assert entry is not None
    return entry, k.vm.memory.read(entry & PTE_ADDR_MASK, PAGE_SIZE)


def test_file_version_changes_with_every_write_and_truncate_only() -> None:
    fs = RamFs()
    file = fs.create("/f")
    versions = [file.version]
    file.write(0, b"abc")
    versions.append(file.version)
    file.read(0, 3)
    versions.append(file.version)
    file.truncate(1)
    versions.append(file.version)
    assert versions[0] != versions[1] == versions[2] != versions[3]
    assert file.read_all() == (versions[3], b"a")


def test_second_exec_of_a_file_uses_its_prepared_image_with_fresh_frames(
        kernel: Kernel) -> None:
    first = kernel.spawn("/bin/p")
    second = kernel.spawn("/bin/p")
    assert (kernel.images.misses, kernel.images.hits, len(kernel.images)) == (1, 1, 1)
    for va in (TEXT, TEXT + 0x2000, TEXT + 0x3000):
        (entry_a, data_a), (entry_b, data_b) = page(kernel, first, va), page(kernel, second, va)
        assert data_a == data_b and entry_a & PTE_ADDR_MASK != entry_b & PTE_ADDR_MASK
    writable, data = page(kernel, first, TEXT + 0x3000)
    assert writable & PTE_W and data[0xA78 : 0xA78 + 0x10] == b"\x01" * 0x10
    kernel.vm.memory.write(writable & PTE_ADDR_MASK, b"\xff" * PAGE_SIZE)  # first writes
    assert page(kernel, second, TEXT + 0x3000)[1] == data  # the other never sees it
    assert page(kernel, kernel.spawn("/bin/p"), TEXT + 0x3000)[1] == data  # nor a new one


def test_exec_after_the_file_is_rewritten_loads_the_new_contents(kernel: Kernel) -> None:
    kernel.spawn("/bin/p")
    file = kernel.fs.open("/bin/p")
    file.truncate(0)
    file.write(0, SECOND)
    proc = kernel.spawn("/bin/p")
    assert page(kernel, proc, TEXT)[1][:64] == b"\xf4" * 64
    assert proc.threads[0].context.regs.rip == TEXT
    assert kernel.images.misses == 2 and len(kernel.images) == 1


def test_bad_image_is_enoexec_at_every_exec_and_never_kept(kernel: Kernel) -> None:
    before = held(kernel)
    for _ in range(2):
        with pytest.raises(SyscallError) as err:
            kernel.spawn("/bin/bad")
        assert err.value.errno == Errno.ENOEXEC and "not ELF64" in err.value.message
    assert len(kernel.images) == 0
    assert held(kernel) == before


def test_cache_forgets_an_unlinked_file_and_keeps_at_most_its_limit(kernel: Kernel) -> None:
    kernel.spawn("/bin/p")
    kernel.fs.unlink("/bin/p")
    gc.collect()
    assert len(kernel.images) == 0
    kernel.images.max_entries = 2
    for name in ("a", "b", "c"):
        kernel.fs.create(f"/bin/{name}").write(0, FIRST)
        kernel.spawn(f"/bin/{name}")
    assert len(kernel.images) == 2


def test_ended_processes_of_one_image_give_every_frame_back(kernel: Kernel) -> None:
    before = held(kernel)
    procs = [kernel.spawn("/bin/p") for _ in range(3)]
    assert kernel.vm.frames.used != before
    for proc in procs:
        end(kernel, proc)
    assert held(kernel) == before
    assert kernel.vm.frames.free_count == kernel.vm.frames.total - sum(before.values())


def test_exec_maps_the_stack_and_the_tls_page_writable_and_not_executable(
        kernel: Kernel) -> None:
    proc = kernel.spawn("/bin/p")
    tp = proc.threads[0].context.fs_base
    for va in (USER_STACK_TOP - PAGE_SIZE, tp & ~(PAGE_SIZE - 1)):
        entry, _ = page(kernel, proc, va)
        assert entry & PTE_W and entry >> 63
    assert page(kernel, proc, tp & ~(PAGE_SIZE - 1))[1][tp % PAGE_SIZE:][:8] == \
        tp.to_bytes(8, "little")


def test_prepare_copies_only_the_pages_the_file_fills() -> None:
    huge = build_elf([Seg(TEXT, b"\x90" * 16, R | X),
                      Seg(TEXT + 0x1000, b"\x01" * 8, R | W, memsz=1 << 40)])
    prepared = prepare(huge)
    data = next(plan for plan in prepared.plans if plan.start == TEXT + 0x1000)
    assert data.pages == (1 << 40) // PAGE_SIZE and [i for i, _ in data.contents] == [0]
    assert prepared.nbytes <= 4 * PAGE_SIZE


def test_exec_of_an_image_too_large_for_memory_is_enomem_and_leaks_nothing(
        kernel: Kernel) -> None:
    kernel.fs.create("/bin/huge").write(0, build_elf(
        [Seg(TEXT, b"\x90" * 16, R | X), Seg(TEXT + 0x1000, b"\x01", R | W, memsz=1 << 40)]))
    before = held(kernel)
    with pytest.raises(SyscallError) as err:
        kernel.spawn("/bin/huge")
    assert err.value.errno == Errno.ENOMEM
    assert held(kernel) == before
