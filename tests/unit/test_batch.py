"""BATCH (kernel/syscalls/batch.py) over the fake VM, no KVM: records run in order
through the real handlers, results copied back, the refusals and the limits."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from fake_vm import FakeVm
from test_kernel_limits import PATH, call, process

from copra.abi.spec import (
    BATCH_MAX,
    BATCH_RECORD,
    PAGE_SIZE,
    BatchFlag,
    Capability,
    Errno,
    FileMode,
    Sys,
)
from copra.hw.x86 import PTE_ADDR_MASK
from copra.kernel import packit
from copra.kernel.kernel import Kernel
from copra.kernel.process import Process
from copra.kernel.ramfs import FramePageStore, RamFs
from copra.kernel.stats import CpuProbe

RECORDS = PATH + 16 * PAGE_SIZE  # a writable page for the array
READ_ONLY = PATH  # the read-only page holding "/f\0/new\0"
_RECORD = struct.Struct("<6QQq")
SENTINEL = 0x5EED
USER_DATA = 0xDA7A


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    vm = FakeVm(pages=512)
    fs = RamFs(store=FramePageStore(vm.frames))  # type: ignore[arg-type]
    fs.populate(packit.encode([packit.PackItEntry("/f", b"\x90" * 100)]))
    yield Kernel(vm, fs, lambda line: None)  # type: ignore[arg-type]


@pytest.fixture
def proc(kernel: Kernel) -> Process:
    p = process(kernel)
    p.map_anonymous(RECORDS, 1, writable=True, executable=False)
    return p


def _page(k: Kernel, p: Process, va: int) -> int:
    entry = p.space.lookup(va)
    assert entry is not None
    return entry & PTE_ADDR_MASK


def put(k: Kernel, p: Process, calls: list[tuple[int, ...]]) -> None:
    data = b"".join(_RECORD.pack(number, *(*args, 0, 0, 0, 0, 0)[:5], USER_DATA + i, SENTINEL)
                    for i, (number, *args) in enumerate(calls))
    k.vm.memory.write(_page(k, p, RECORDS), data)


def results(k: Kernel, p: Process, n: int) -> list[int]:
    raw = k.vm.memory.read(_page(k, p, RECORDS), n * BATCH_RECORD.size)
    records = [_RECORD.unpack_from(raw, i * BATCH_RECORD.size) for i in range(n)]
    assert [r[6] for r in records] == [USER_DATA + i for i in range(n)]  # never changed
    return [r[7] for r in records]


def test_batch_runs_every_record_and_writes_each_result(kernel: Kernel, proc: Process) -> None:
    put(kernel, proc, [(Sys.CAPABILITIES, Capability.COUNT),
                       (Sys.OPEN, PATH, FileMode.READ, 0),
                       (Sys.CLOSE, 99)])
    assert call(kernel, proc, Sys.BATCH, RECORDS, 3, 0) == 3
    count, handle, closed = results(kernel, proc, 3)
    assert count == 2 and handle > 0 and closed == Errno.ENOTFOUND
    assert len(proc.handles) == 2  # handle 0 and what the OPEN gave


def test_batch_stop_on_error_leaves_later_records_unrun(kernel: Kernel, proc: Process) -> None:
    put(kernel, proc, [(Sys.CAPABILITIES, 0), (Sys.CLOSE, 99), (Sys.OPEN, PATH, 1, 0)])
    assert call(kernel, proc, Sys.BATCH, RECORDS, 3, BatchFlag.STOP_ON_ERROR) == 2
    assert results(kernel, proc, 3) == [2, Errno.ENOTFOUND, SENTINEL]
    assert len(proc.handles) == 1  # only handle 0: the OPEN never ran


def test_batch_refuses_calls_that_wait_or_end_the_caller(kernel: Kernel, proc: Process) -> None:
    refused = [Sys.EXIT, Sys.THREAD_EXIT, Sys.WAIT, Sys.JOIN, Sys.FUTEX_WAIT, Sys.WAIT_MANY,
               Sys.SLEEP, Sys.BATCH]
    put(kernel, proc, [(number, 0) for number in refused])
    assert call(kernel, proc, Sys.BATCH, RECORDS, len(refused), 0) == len(refused)
    assert results(kernel, proc, len(refused)) == [Errno.EINVAL] * len(refused)
    assert proc.status is None


def test_batch_answers_eagain_where_a_call_would_block(kernel: Kernel, proc: Process) -> None:
    event = call(kernel, proc, Sys.EVENT_CREATE, 0)
    put(kernel, proc, [(Sys.READ, event, RECORDS + 2048, 8), (Sys.CAPABILITIES, 0)])
    assert call(kernel, proc, Sys.BATCH, RECORDS, 2, 0) == 2
    assert results(kernel, proc, 2) == [Errno.EAGAIN, 2]
    thread = proc.threads[0]
    assert thread.waiter is not None and not thread.waiter._queues  # nothing left watched


def test_batch_unknown_number_is_enosys_in_its_record(kernel: Kernel, proc: Process) -> None:
    put(kernel, proc, [(0x7777,)])
    assert call(kernel, proc, Sys.BATCH, RECORDS, 1, 0) == 1
    assert results(kernel, proc, 1) == [Errno.ENOSYS]


@pytest.mark.parametrize("count", [0, BATCH_MAX + 1])
def test_batch_count_outside_the_limit_is_einval(kernel: Kernel, proc: Process,
                                                 count: int) -> None:
    assert call(kernel, proc, Sys.BATCH, RECORDS, count, 0) == Errno.EINVAL


def test_batch_unknown_flag_is_einval(kernel: Kernel, proc: Process) -> None:
    assert call(kernel, proc, Sys.BATCH, RECORDS, 1, 2) == Errno.EINVAL


def test_batch_on_a_read_only_array_is_efault_and_runs_nothing(kernel: Kernel,
                                                               proc: Process) -> None:
    # The read-only page holds the path: parsed as a record it would be a call; none runs.
    assert call(kernel, proc, Sys.BATCH, READ_ONLY, 1, 0) == Errno.EFAULT
    assert call(kernel, proc, Sys.BATCH, RECORDS + PAGE_SIZE - 32, 1, 0) == Errno.EFAULT


def test_batch_counts_each_record_in_the_statistics(kernel: Kernel, proc: Process) -> None:
    probe = CpuProbe(0, None)
    kernel._calls[0].probe = probe
    put(kernel, proc, [(Sys.CAPABILITIES, 0)] * 5 + [(Sys.CLOSE, 99)])
    assert call(kernel, proc, Sys.BATCH, RECORDS, 6, 0) == 6
    assert probe.syscalls[Sys.CAPABILITIES].count == 5
    assert (probe.syscalls[Sys.CLOSE].count, probe.syscalls[Sys.CLOSE].errors) == (1, 1)
