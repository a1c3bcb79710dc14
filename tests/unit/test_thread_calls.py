"""Thread, futex, event, WAIT_MANY and time handlers over the fake VM (no KVM)."""

from __future__ import annotations

import struct

from fake_vm import FakeVm

from copra.abi.spec import (
    PAGE_SIZE,
    TIMEOUT_NEVER,
    USER_END,
    USER_START,
    WAIT_MANY_MAX,
    Errno,
    Sys,
)
from copra.hw.x86 import PTE_ADDR_MASK
from copra.kernel.cpu import Next
from copra.kernel.kernel import Kernel
from copra.kernel.limits import DEFAULT_LIMITS, Limits
from copra.kernel.objects.event import Event
from copra.kernel.objects.log import Log
from copra.kernel.process import Process
from copra.kernel.ramfs import FramePageStore, RamFs
from copra.kernel.thread import Thread, ThreadState
from copra.kernel.waitqueue import Signal

WORD = USER_START  # a writable page; its first word is 7


def setup(limits: Limits = DEFAULT_LIMITS) -> tuple[Kernel, Process, Thread]:
    vm = FakeVm(pages=512)
    fs = RamFs(store=FramePageStore(vm.frames))  # type: ignore[arg-type]
    k = Kernel(vm, fs, lambda line: None, limits)  # type: ignore[arg-type]
    proc = Process(7, "t", 0, vm.frames, {}, Log("t", lambda line: None), fs.root, limits)
    proc.map_anonymous(WORD, 1, writable=True, executable=False)
    entry = proc.space.lookup(WORD)
    assert entry is not None
    vm.memory.write(entry & PTE_ADDR_MASK, (7).to_bytes(4, "little"))
    main = proc.start_at(WORD, tid=1000)
    main.state = ThreadState.RUNNING  # as if on a CPU
    k.processes[proc.pid] = proc
    return k, proc, main


def call(k: Kernel, thread: Thread, number: int, *args: int) -> int | Next:
    regs = k.vm.cpus[0].regs
    regs.rax = number
    regs.rdi, regs.rsi, regs.r8, regs.r9, regs.r10 = (*args, 0, 0, 0, 0, 0)[:5]
    step = k.dispatch(k.vm.cpus[0], thread)  # type: ignore[arg-type]
    if step is not Next.GO_ON:
        return step
    value = regs.rax
    return value - (1 << 64) if value >> 63 else value


def test_thread_create_returns_a_handle_and_queues_a_thread_with_its_registers() -> None:
    k, proc, main = setup()
    handle = call(k, main, Sys.THREAD_CREATE, WORD, WORD + PAGE_SIZE - 8, 42, WORD)
    assert isinstance(handle, int) and handle > 0
    new = proc.handles.get(handle, Thread)
    assert new.state is ThreadState.RUNNABLE and new in proc.threads
    ctx = new.context
    assert (ctx.regs.rip, ctx.regs.rsp, ctx.regs.rdi, ctx.fs_base) == (
        WORD, WORD + PAGE_SIZE - 8, 42, WORD)


def test_thread_create_outside_user_space_is_einval_and_starts_nothing() -> None:
    k, proc, main = setup()
    for args in ((0, WORD + 8, 0, 0), (WORD, USER_END + 8, 0, 0), (WORD, WORD + 8, 0, USER_END)):
        assert call(k, main, Sys.THREAD_CREATE, *args) == Errno.EINVAL
    assert proc.threads == [main] and len(proc.handles) == 1


def test_thread_create_at_the_thread_limit_is_eagain_without_a_handle() -> None:
    k, proc, main = setup(Limits(threads=2))
    assert call(k, main, Sys.THREAD_CREATE, WORD, WORD + 8, 0, 0) == 1
    assert call(k, main, Sys.THREAD_CREATE, WORD, WORD + 8, 0, 0) == Errno.EAGAIN
    assert len(proc.threads) == 2 and len(proc.handles) == 2


def test_thread_exit_of_one_of_two_threads_sets_its_code_and_signals_its_handle() -> None:
    k, proc, main = setup()
    handle = call(k, main, Sys.THREAD_CREATE, WORD, WORD + 8, 0, 0)
    assert isinstance(handle, int)
    other = proc.handles.get(handle, Thread)
    assert call(k, other, Sys.THREAD_EXIT, 5) is Next.LEAVE
    assert other.state is ThreadState.EXITED and other.code == 5
    assert other.ended_queue.signals & Signal.ENDED and proc.status is None
    assert call(k, main, Sys.JOIN, handle) == 5


def test_last_thread_exit_ends_the_process_as_exit_would() -> None:
    k, proc, main = setup()
    assert call(k, main, Sys.THREAD_EXIT, 3) is Next.LEAVE
    assert proc.status == 3 << 16 and main.state is ThreadState.EXITED


def test_thread_join_of_itself_or_a_non_thread_is_refused() -> None:
    k, proc, main = setup()
    own = proc.handles.install(main)
    assert call(k, main, Sys.JOIN, own) == Errno.EINVAL
    assert call(k, main, Sys.JOIN, 0) == Errno.ENOTSUPP  # the log


def test_futex_wait_on_a_changed_word_is_eagain_and_a_bad_address_is_refused() -> None:
    k, _, main = setup()
    assert call(k, main, Sys.FUTEX_WAIT, WORD, 8, TIMEOUT_NEVER) == Errno.EAGAIN
    assert call(k, main, Sys.FUTEX_WAIT, WORD + 2, 7, TIMEOUT_NEVER) == Errno.EINVAL
    assert call(k, main, Sys.FUTEX_WAIT, 0xDEAD0000, 7, TIMEOUT_NEVER) == Errno.EFAULT
    assert call(k, main, Sys.FUTEX_WAIT, WORD, 7, 0) == Errno.ETIMEDOUT


def test_futex_wait_blocks_and_wake_counts_the_woken() -> None:
    k, proc, main = setup()
    assert call(k, main, Sys.FUTEX_WAIT, WORD, 7, TIMEOUT_NEVER) is Next.LEAVE
    assert main.state is ThreadState.BLOCKED and len(proc.futexes[WORD]) == 1
    other = proc.start_at(WORD, tid=1001)
    other.state = ThreadState.RUNNING
    assert call(k, other, Sys.FUTEX_WAKE, WORD, 10) == 1
    assert main.state is ThreadState.RUNNABLE and WORD not in proc.futexes
    assert call(k, other, Sys.FUTEX_WAKE, WORD, 10) == 0


def test_process_exit_ends_every_thread_and_signals_their_handles() -> None:
    k, proc, main = setup()
    handle = call(k, main, Sys.THREAD_CREATE, WORD, WORD + 8, 0, 0)
    assert isinstance(handle, int)
    other = proc.handles.get(handle, Thread)
    assert call(k, main, Sys.EXIT, 9) is Next.LEAVE
    assert other.state is ThreadState.EXITED and other.ended_queue.signals & Signal.ENDED
    assert proc.status == 9 << 16 and proc.threads == [] and k.sched.runnable() == 0


# --- events, WAIT_MANY, process handles, time -----------------------------------------------

ITEMS = WORD + 64  # WaitItem array in the writable page


def items(k: Kernel, proc: Process, *pairs: tuple[int, int]) -> None:
    raw = b"".join(struct.pack("<IIII", h, mask, 0, 0) for h, mask in pairs)
    entry = proc.space.lookup(WORD)
    assert entry is not None
    k.vm.memory.write((entry & PTE_ADDR_MASK) + (ITEMS - WORD), raw)


def ready(k: Kernel, proc: Process, count: int) -> list[int]:
    entry = proc.space.lookup(WORD)
    assert entry is not None
    raw = k.vm.memory.read((entry & PTE_ADDR_MASK) + (ITEMS - WORD), 16 * count)
    return [struct.unpack_from("<I", raw, 16 * i + 8)[0] for i in range(count)]


def test_wait_many_answers_at_once_for_a_raised_signal_and_fills_ready() -> None:
    k, proc, main = setup()
    idle, busy = (call(k, main, Sys.EVENT_CREATE, 0) for _ in range(2))
    assert isinstance(idle, int) and isinstance(busy, int)
    proc.handles.get(busy, Event).write(2)
    items(k, proc, (idle, Signal.READABLE), (busy, Signal.READABLE | Signal.ENDED))
    assert call(k, main, Sys.WAIT_MANY, ITEMS, 2, TIMEOUT_NEVER) == 1
    assert ready(k, proc, 2) == [0, Signal.READABLE]


def test_wait_many_blocks_on_nothing_raised_and_answers_zero_after_a_zero_timeout() -> None:
    k, proc, main = setup()
    idle = call(k, main, Sys.EVENT_CREATE, 0)
    assert isinstance(idle, int)
    items(k, proc, (idle, Signal.READABLE))
    assert call(k, main, Sys.WAIT_MANY, ITEMS, 1, 0) == 0
    assert call(k, main, Sys.WAIT_MANY, ITEMS, 1, TIMEOUT_NEVER) is Next.LEAVE
    assert main.state is ThreadState.BLOCKED


def test_wait_many_refuses_bad_counts_masks_and_handles_without_wait() -> None:
    k, proc, main = setup()
    event = call(k, main, Sys.EVENT_CREATE, 0)
    assert isinstance(event, int)
    assert call(k, main, Sys.WAIT_MANY, ITEMS, 0, 0) == Errno.EINVAL
    assert call(k, main, Sys.WAIT_MANY, ITEMS, WAIT_MANY_MAX + 1, 0) == Errno.EINVAL
    items(k, proc, (event, 0))
    assert call(k, main, Sys.WAIT_MANY, ITEMS, 1, 0) == Errno.EINVAL
    items(k, proc, (event, 16))
    assert call(k, main, Sys.WAIT_MANY, ITEMS, 1, 0) == Errno.EINVAL
    items(k, proc, (0, Signal.READABLE))  # the log: no WAIT right
    assert call(k, main, Sys.WAIT_MANY, ITEMS, 1, 0) == Errno.EPERM


def test_process_open_of_a_task_that_is_no_child_is_enotfound() -> None:
    k, _, main = setup()
    assert call(k, main, Sys.PROCESS_OPEN, 7) == Errno.ENOTFOUND  # itself
    assert call(k, main, Sys.PROCESS_OPEN, 99) == Errno.ENOTFOUND


def test_clock_never_goes_back_and_sleep_of_zero_returns_at_once() -> None:
    k, _, main = setup()
    first = call(k, main, Sys.CLOCK)
    second = call(k, main, Sys.CLOCK)
    assert isinstance(first, int) and isinstance(second, int) and second >= first
    assert call(k, main, Sys.SLEEP, 0) == 0
    assert call(k, main, Sys.SLEEP, 10**9) is Next.LEAVE and main.deadline is not None
