"""RAM fs pages in guest frames: the frame store over a plain bytearray, no KVM.

The file behaviours of test_ramfs.py that touch pages are repeated over both stores;
the rest checks what only frames have: the bytes are in guest memory, dropped pages go
back to the allocator, and a frame a mapping shares outlives truncate and unlink.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.abi.spec import PAGE_SIZE, Errno
from copra.kernel.errors import SyscallError
from copra.kernel.frames import FrameAllocator, FrameOwner, PhysicalMemory
from copra.kernel.packit import PackItEntry, encode
from copra.kernel.ramfs import File, FramePageStore, HostPageStore, RamFs

BASE = 0x20_0000  # a non-zero base, so frame addresses and buffer offsets differ
RESERVED = 2  # frames below the pool, never handed out


def allocator(frames: int = 32) -> FrameAllocator:
    """``frames`` allocatable frames above RESERVED reserved ones, at BASE."""
    memory = PhysicalMemory(memoryview(bytearray((frames + RESERVED) * PAGE_SIZE)), base=BASE)
    return FrameAllocator(memory, BASE + RESERVED * PAGE_SIZE)


def frame_fs(frames: int = 32, max_pages: int | None = None) -> tuple[RamFs, FrameAllocator]:
    alloc = allocator(frames)
    return RamFs(max_pages=max_pages, store=FramePageStore(alloc)), alloc


def errno_of(call: Callable[[], object]) -> Errno:
    with pytest.raises(SyscallError) as info:
        call()
    return info.value.errno


FsFactory = Callable[..., RamFs]


def _host(max_pages: int | None = None) -> RamFs:
    return RamFs(max_pages=max_pages)


def _frames(max_pages: int | None = None) -> RamFs:
    return frame_fs(max_pages=max_pages)[0]


@pytest.fixture(params=[_host, _frames], ids=["host", "frames"])
def new_fs(request: pytest.FixtureRequest) -> FsFactory:
    factory: FsFactory = request.param
    return factory


# -- file behaviour over both stores ------------------------------------------------


def test_default_store_is_host_memory() -> None:
    fs = RamFs()
    assert isinstance(fs.store, HostPageStore) and not fs.frame_backed
    assert frame_fs()[0].frame_backed


def test_write_across_page_boundary_reads_back(new_fs: FsFactory) -> None:
    file = new_fs().create("/f")
    file.write(0, b"\xff" * 512)
    file.write(PAGE_SIZE - 256, b"\xaa" * 512)
    assert file.read(0, 3 * PAGE_SIZE) == b"\xff" * 512 + bytes(PAGE_SIZE - 768) + b"\xaa" * 512


def test_write_past_eof_leaves_zero_gap(new_fs: FsFactory) -> None:
    file = new_fs().create("/f")
    file.write(0, b"ab")
    file.write(PAGE_SIZE + 2, b"cd")
    assert file.read(0, PAGE_SIZE + 4) == b"ab" + bytes(PAGE_SIZE) + b"cd"


def test_truncate_zeroes_the_tail_of_the_last_page(new_fs: FsFactory) -> None:
    fs = new_fs()
    file = fs.create("/f")
    file.write(0, b"x" * 100)
    file.truncate(10)
    assert bytes(fs.page(file, 0)) == b"x" * 10 + bytes(PAGE_SIZE - 10)
    file.write(20, b"y")
    assert file.read(0, 100) == b"x" * 10 + bytes(10) + b"y"


def test_truncate_grow_returns_einval(new_fs: FsFactory) -> None:
    file = new_fs().create("/f")
    file.write(0, b"abc")
    assert errno_of(lambda: file.truncate(4)) == Errno.EINVAL
    assert file.size == 3


def test_page_view_is_read_only_and_aliases_the_file(new_fs: FsFactory) -> None:
    fs = new_fs()
    file = fs.create("/f")
    file.write(0, b"old")
    view = fs.page(file, 0)
    assert view.readonly and len(view) == PAGE_SIZE
    file.write(0, b"new")
    assert bytes(view[:3]) == b"new"


def test_page_past_last_raises_indexerror(new_fs: FsFactory) -> None:
    fs = new_fs()
    file = fs.create("/f")
    file.write(0, b"a")
    with pytest.raises(IndexError):
        fs.page(file, 1)


def test_pages_in_use_follows_writes_and_truncates(new_fs: FsFactory) -> None:
    fs = new_fs()
    fs.create("/a").write(0, b"x" * (PAGE_SIZE + 1))
    file = fs.create("/b")
    file.write(0, bytes(3 * PAGE_SIZE))
    fs.create("/empty")
    assert fs.pages_in_use == 5
    file.truncate(PAGE_SIZE)
    assert fs.pages_in_use == 3


def test_unlinked_file_pages_return_when_last_reference_goes(new_fs: FsFactory) -> None:
    fs = new_fs()
    file = fs.create("/a")
    file.write(0, bytes(2 * PAGE_SIZE))
    fs.unlink("/a")
    assert fs.pages_in_use == 2
    del file
    gc.collect()
    assert fs.pages_in_use == 0


def test_write_beyond_page_limit_returns_enomem_without_change(new_fs: FsFactory) -> None:
    fs = new_fs(max_pages=2)
    file = fs.create("/a")
    file.write(0, b"x")
    assert errno_of(lambda: file.write(0, bytes(3 * PAGE_SIZE))) == Errno.ENOMEM
    assert file.size == 1 and fs.pages_in_use == 1 and file.read(0, 1) == b"x"


def test_populate_creates_files_with_their_bytes(new_fs: FsFactory) -> None:
    fs = new_fs()
    archive = encode([PackItEntry("/init", b"I"), PackItEntry("/bin/hello", b"H" * 5000)])
    assert fs.populate(archive) == 2
    assert fs.open("/bin/hello").read(0, 9999) == b"H" * 5000
    assert fs.open("/init").read(0, 9) == b"I"
    assert fs.pages_in_use == 3


def test_populate_beyond_page_limit_returns_enomem_and_changes_nothing(
    new_fs: FsFactory,
) -> None:
    fs = new_fs(max_pages=1)
    archive = encode([PackItEntry("/a", b"1"), PackItEntry("/b", b"2")])
    assert errno_of(lambda: fs.populate(archive)) == Errno.ENOMEM
    assert fs.opendir("/") == () and fs.pages_in_use == 0


# -- the bytes are in guest frames ----------------------------------------------------


def test_file_bytes_are_in_its_frames() -> None:
    fs, frames = frame_fs()
    file = fs.create("/f")
    data = bytes(range(256)) * 20  # two pages, the second partly used
    file.write(0, data)
    pas = [file.frame(0), file.frame(1)]
    assert frames.memory.read(pas[0], PAGE_SIZE) == data[:PAGE_SIZE]
    assert frames.memory.read(pas[1], PAGE_SIZE) == data[PAGE_SIZE:] + bytes(
        2 * PAGE_SIZE - len(data)
    )


def test_file_frames_are_distinct_page_aligned_pool_frames_owned_by_file() -> None:
    fs, frames = frame_fs()
    file = fs.create("/f")
    file.write(0, bytes(3 * PAGE_SIZE))
    pas = [file.frame(i) for i in range(3)]
    assert len(set(pas)) == 3
    for pa in pas:
        assert pa % PAGE_SIZE == 0 and pa >= BASE + RESERVED * PAGE_SIZE
        assert frames.owner_of(pa) is FrameOwner.FILE and frames.refcount(pa) == 1
    assert frames.used[FrameOwner.FILE] == 3


def test_page_view_is_the_frame_memory() -> None:
    fs, frames = frame_fs()
    file = fs.create("/f")
    file.write(0, b"abc")
    frames.memory.write(file.frame(0) + 1, b"B")  # what a guest write would do
    assert bytes(fs.page(file, 0)[:3]) == b"aBc" and file.read(0, 3) == b"aBc"


def test_frame_past_last_page_raises_indexerror() -> None:
    fs, _ = frame_fs()
    file = fs.create("/f")
    file.write(0, b"a")
    with pytest.raises(IndexError, match="page 1 of a file with 1 pages"):
        file.frame(1)
    with pytest.raises(IndexError):
        file.share_frame(-1)


def test_frame_of_host_page_raises_valueerror() -> None:
    file = RamFs().create("/f")
    file.write(0, b"a")
    with pytest.raises(ValueError, match="host memory"):
        file.frame(0)
    with pytest.raises(ValueError, match="host memory"):
        file.share_frame(0)


def test_truncate_returns_frames_to_the_allocator() -> None:
    fs, frames = frame_fs()
    file = fs.create("/f")
    file.write(0, bytes(3 * PAGE_SIZE))
    dropped = file.frame(2)
    file.truncate(PAGE_SIZE + 1)
    assert frames.used[FrameOwner.FILE] == 2 == fs.pages_in_use
    assert frames.owner_of(dropped) is None
    file.truncate(0)
    assert frames.used[FrameOwner.FILE] == 0 and frames.free_count == frames.total


def test_unlink_returns_frames_when_the_last_reference_goes() -> None:
    fs, frames = frame_fs()
    file = fs.create("/f")
    file.write(0, bytes(2 * PAGE_SIZE))
    fs.unlink("/f")
    assert frames.used[FrameOwner.FILE] == 2  # still open
    del file
    gc.collect()
    assert frames.used[FrameOwner.FILE] == 0 and frames.free_count == frames.total


def test_dropping_the_fs_returns_every_frame() -> None:
    fs, frames = frame_fs()
    fs.populate(encode([PackItEntry("/a", bytes(5000)), PackItEntry("/d/b", b"b")]))
    assert frames.used[FrameOwner.FILE] == 3
    del fs
    gc.collect()
    assert frames.free_count == frames.total


# -- a mapping's reference --------------------------------------------------------------


def test_frame_takes_no_reference_and_share_frame_takes_one() -> None:
    fs, frames = frame_fs()
    file = fs.create("/f")
    file.write(0, b"a")
    pa = file.frame(0)
    assert frames.refcount(pa) == 1
    assert file.share_frame(0) == pa and frames.refcount(pa) == 2


def test_shared_frame_survives_truncate_until_the_last_free() -> None:
    fs, frames = frame_fs()
    file = fs.create("/f")
    file.write(0, b"m" * PAGE_SIZE + b"n")
    pa = file.share_frame(1)  # a read-only mapping of page 1
    file.truncate(PAGE_SIZE)
    assert fs.pages_in_use == 1
    assert frames.owner_of(pa) is FrameOwner.FILE and frames.refcount(pa) == 1
    others = [frames.alloc(FrameOwner.USER) for _ in range(frames.free_count)]
    assert pa not in others  # never handed to anyone else while mapped
    assert frames.memory.read(pa, 1) == b"n"  # the mapping still sees the page it had
    frames.free_many(others)
    frames.free(pa)  # unmap
    assert frames.owner_of(pa) is None and frames.used[FrameOwner.FILE] == 1


def test_shared_frame_survives_unlink_until_the_last_free() -> None:
    fs, frames = frame_fs()
    file = fs.create("/f")
    file.write(0, b"mapped")
    pa = file.share_frame(0)
    fs.unlink("/f")
    del file
    gc.collect()
    assert fs.pages_in_use == 0
    assert frames.used[FrameOwner.FILE] == 1 and frames.memory.read(pa, 6) == b"mapped"
    frames.free(pa)
    assert frames.free_count == frames.total


def test_truncate_of_mapped_page_zeroes_its_tail_in_the_frame() -> None:
    fs, frames = frame_fs()
    file = fs.create("/f")
    file.write(0, b"x" * 100)
    pa = file.share_frame(0)
    file.truncate(10)
    assert frames.memory.read(pa, 100) == b"x" * 10 + bytes(90)


# -- exhaustion ---------------------------------------------------------------------------


def test_write_when_frames_run_out_returns_enomem_and_keeps_no_frame() -> None:
    fs, frames = frame_fs(frames=3)
    file = fs.create("/f")
    file.write(0, b"x")
    assert errno_of(lambda: file.write(0, bytes(5 * PAGE_SIZE))) == Errno.ENOMEM
    assert file.size == 1 and file.read(0, 1) == b"x"
    assert fs.pages_in_use == 1 == frames.used[FrameOwner.FILE]
    assert frames.free_count == 2


def test_populate_when_frames_run_out_returns_enomem_and_changes_nothing() -> None:
    fs, frames = frame_fs(frames=2)
    archive = encode([PackItEntry("/a", b"1"), PackItEntry("/d/b", bytes(PAGE_SIZE + 1))])
    assert errno_of(lambda: fs.populate(archive)) == Errno.ENOMEM
    assert fs.opendir("/") == () and fs.pages_in_use == 0
    assert frames.free_count == frames.total


def test_max_pages_bounds_a_frame_fs_below_the_pool() -> None:
    fs, frames = frame_fs(frames=8, max_pages=2)
    file = fs.create("/f")
    assert errno_of(lambda: file.write(0, bytes(3 * PAGE_SIZE))) == Errno.ENOMEM
    assert frames.free_count == 8


# -- random sequences --------------------------------------------------------------------

FILES = 3
POOL = 24

op = st.one_of(
    st.tuples(st.just("write"), st.integers(0, FILES - 1), st.integers(0, 3 * PAGE_SIZE),
              st.integers(1, PAGE_SIZE + 9)),
    st.tuples(st.just("truncate"), st.integers(0, FILES - 1), st.integers(0, 3 * PAGE_SIZE),
              st.just(0)),
    st.tuples(st.just("unlink"), st.integers(0, FILES - 1), st.integers(0, 1), st.just(0)),
    st.tuples(st.just("close"), st.integers(0, 7), st.just(0), st.just(0)),
    st.tuples(st.just("map"), st.integers(0, FILES - 1), st.integers(0, 4), st.just(0)),
    st.tuples(st.just("unmap"), st.integers(0, 7), st.just(0), st.just(0)),
)


@dataclass
class Model:
    fs: RamFs
    frames: FrameAllocator
    linked: dict[int, File] = field(default_factory=dict)  # /f<k>
    data: dict[int, bytearray] = field(default_factory=dict)  # expected contents of /f<k>
    unlinked: list[File] = field(default_factory=list)  # unlinked, still held (a handle)
    mapped: list[int] = field(default_factory=list)  # one entry per reference taken

    def live(self) -> list[File]:
        return [*self.linked.values(), *self.unlinked]

    def check(self) -> None:
        held = {f.frame(i) for f in self.live() for i in range(f.page_count)}
        assert self.fs.pages_in_use == len(held) == sum(f.page_count for f in self.live())
        assert self.frames.used[FrameOwner.FILE] == len(held | set(self.mapped))
        assert self.frames.free_count + self.frames.used[FrameOwner.FILE] == self.frames.total


def apply(m: Model, kind: str, k: int, a: int, b: int) -> None:
    if kind == "write":
        if k not in m.linked:
            m.linked[k] = m.fs.create(f"/f{k}")
            m.data[k] = bytearray()
        payload = bytes([k + 1]) * b
        try:
            m.linked[k].write(a, payload)
        except SyscallError as e:  # the pool is small: ENOMEM, and nothing changed
            assert e.errno == Errno.ENOMEM
            return
        model = m.data[k]
        model += bytes(max(0, a - len(model)))
        model[a : a + b] = payload
    elif kind == "truncate" and k in m.linked and a <= len(m.data[k]):
        m.linked[k].truncate(a)
        del m.data[k][a:]
    elif kind == "unlink" and k in m.linked:
        m.fs.unlink(f"/f{k}")
        file = m.linked.pop(k)
        del m.data[k]
        if a:
            m.unlinked.append(file)
    elif kind == "close" and m.unlinked:
        m.unlinked.pop(k % len(m.unlinked))
    elif kind == "map" and k in m.linked and a < m.linked[k].page_count:
        m.mapped.append(m.linked[k].share_frame(a))
    elif kind == "unmap" and m.mapped:
        m.frames.free(m.mapped.pop(k % len(m.mapped)))


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=30))
def test_frames_in_use_equal_pages_held_and_mapped(ops: list[tuple[str, int, int, int]]) -> None:
    fs, frames = frame_fs(frames=POOL)
    m = Model(fs, frames)
    for kind, k, a, b in ops:
        apply(m, kind, k, a, b)
        m.check()
    for k, file in m.linked.items():
        assert file.read(0, file.size + PAGE_SIZE) == bytes(m.data[k])
        for i in range(file.page_count):
            expected = bytes(m.data[k][i * PAGE_SIZE : (i + 1) * PAGE_SIZE])
            assert frames.memory.read(file.frame(i), PAGE_SIZE) == expected + bytes(
                PAGE_SIZE - len(expected)
            )
    frames.free_many(m.mapped)
    m.mapped.clear()
    m.check()
    assert frames.used[FrameOwner.FILE] == fs.pages_in_use
