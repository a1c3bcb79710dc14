"""CHANNEL_CREATE, SEND, RECV, DUPLICATE, REPLACE and EXEC_HANDLES through the syscall
dispatcher over the fake VM (no KVM): argument decoding, the message structure, the
blocking paths and the limits that the native suite cannot reach with default limits."""

from __future__ import annotations

import struct

from test_thread_calls import WORD, call, setup

from copra.abi.spec import PAGE_SIZE, ChannelFlag, Errno, Sys
from copra.hw.x86 import PTE_ADDR_MASK
from copra.kernel.cpu import Next
from copra.kernel.kernel import Kernel
from copra.kernel.limits import Limits
from copra.kernel.objects.channel import Endpoint
from copra.kernel.process import Process
from copra.kernel.thread import Thread, ThreadState
from copra.kernel.waitqueue import Signal, WaitQueue

MSG = WORD + 256  # a ChannelMessage
DATA = WORD + 512
IDS = WORD + 1024
PATH = WORD + 2048


def poke(k: Kernel, proc: Process, addr: int, data: bytes) -> None:
    entry = proc.space.lookup(WORD)
    assert entry is not None and addr + len(data) <= WORD + PAGE_SIZE
    k.vm.memory.write((entry & PTE_ADDR_MASK) + (addr - WORD), data)


def peek(k: Kernel, proc: Process, addr: int, n: int) -> bytes:
    entry = proc.space.lookup(WORD)
    assert entry is not None
    return bytes(k.vm.memory.read((entry & PTE_ADDR_MASK) + (addr - WORD), n))


def message(k: Kernel, proc: Process, data_len: int, ids: list[int], cap: int = 0) -> None:
    poke(k, proc, IDS, struct.pack(f"<{len(ids)}I", *ids))
    poke(k, proc, MSG, struct.pack("<QQII", DATA, IDS, data_len, max(cap, len(ids))))


def create(k: Kernel, main: object) -> tuple[int, int]:
    raw = call(k, main, Sys.CHANNEL_CREATE, 0)  # type: ignore[arg-type]
    assert isinstance(raw, int) and raw >= 0
    return raw & 0xFFFF_FFFF, raw >> 32


def test_send_then_recv_moves_bytes_and_a_handle_and_writes_the_sizes() -> None:
    k, proc, main = setup()
    a, b = create(k, main)
    event = call(k, main, Sys.EVENT_CREATE, 0)
    assert isinstance(event, int)
    poke(k, proc, DATA, b"hello")
    message(k, proc, 5, [event])
    assert call(k, main, Sys.SEND, a, MSG, 0) == 0
    assert call(k, main, Sys.CLOSE, event) == Errno.ENOTFOUND
    poke(k, proc, DATA, b"\0" * 5)
    message(k, proc, 16, [], cap=4)
    assert call(k, main, Sys.RECV, b, MSG, 0) == 5
    assert peek(k, proc, DATA, 5) == b"hello"
    assert struct.unpack("<II", peek(k, proc, MSG + 16, 8)) == (5, 1)
    (new,) = struct.unpack("<I", peek(k, proc, IDS, 4))
    assert call(k, main, Sys.CLOSE, new) == 0


def test_recv_with_block_on_an_empty_queue_blocks_and_send_wakes_it() -> None:
    k, proc, main = setup()
    a, b = create(k, main)
    message(k, proc, 8, [])
    assert call(k, main, Sys.RECV, b, MSG, int(ChannelFlag.BLOCK)) is Next.LEAVE
    assert main.state is ThreadState.BLOCKED
    other = proc.start_at(WORD, tid=1001)
    other.state = ThreadState.RUNNING
    assert call(k, other, Sys.SEND, a, MSG, 0) == 0
    assert main.state is ThreadState.RUNNABLE


def test_send_with_block_to_a_full_queue_blocks_until_a_recv() -> None:
    k, proc, main = setup()
    a, b = create(k, main)
    message(k, proc, 1, [])
    while (rax := call(k, main, Sys.SEND, a, MSG, 0)) == 0:
        pass
    assert rax == Errno.EAGAIN
    assert call(k, main, Sys.SEND, a, MSG, int(ChannelFlag.BLOCK)) is Next.LEAVE
    other = proc.start_at(WORD, tid=1001)
    other.state = ThreadState.RUNNING
    assert call(k, other, Sys.RECV, b, MSG, 0) == 1
    assert main.state is ThreadState.RUNNABLE


def test_a_blocked_recv_is_woken_by_the_peers_close_and_answers_epipe() -> None:
    k, proc, main = setup()
    a, b = create(k, main)
    message(k, proc, 8, [])
    assert call(k, main, Sys.RECV, b, MSG, int(ChannelFlag.BLOCK)) is Next.LEAVE
    other = proc.start_at(WORD, tid=1001)
    other.state = ThreadState.RUNNING
    assert call(k, other, Sys.CLOSE, a) == 0
    assert main.state is ThreadState.RUNNABLE
    main.state = ThreadState.RUNNING
    assert call(k, main, Sys.RECV, b, MSG, int(ChannelFlag.BLOCK)) == Errno.EPIPE


def test_recv_into_a_table_at_its_limit_is_emfile_and_keeps_the_message() -> None:
    k, proc, main = setup(Limits(handles=5))
    a, b = create(k, main)  # the log, a, b
    events = [call(k, main, Sys.EVENT_CREATE, 0) for _ in range(2)]
    message(k, proc, 0, events)  # type: ignore[arg-type]
    assert call(k, main, Sys.SEND, a, MSG, 0) == 0
    filler = call(k, main, Sys.EVENT_CREATE, 0)
    assert isinstance(filler, int)  # 4 of 5: one free, the message needs two
    message(k, proc, 0, [], cap=2)
    assert call(k, main, Sys.RECV, b, MSG, 0) == Errno.EMFILE
    assert len(proc.handles.get(b, Endpoint)) == 1 and len(proc.handles) == 4
    assert call(k, main, Sys.CLOSE, filler) == 0
    assert call(k, main, Sys.RECV, b, MSG, 0) == 0
    assert len(proc.handles) == 5


def test_exec_handles_beyond_the_childs_handle_limit_is_emfile_and_moves_nothing() -> None:
    k, proc, main = setup(Limits(handles=3))
    events = [call(k, main, Sys.EVENT_CREATE, 0) for _ in range(2)]
    poke(k, proc, PATH, b"/bin/x\0")
    # Three handles and the child's log do not fit a limit of three (checked first:
    # the log's missing TRANSFER right would be found later).
    poke(k, proc, IDS, struct.pack("<3I", *events, 0))  # type: ignore[arg-type]
    assert call(k, main, Sys.EXEC_HANDLES, PATH, PATH + 5, IDS, 3, 0) == Errno.EMFILE
    assert len(proc.handles) == 3


def test_duplicate_and_replace_decode_their_rights() -> None:
    k, _, main = setup()
    event = call(k, main, Sys.EVENT_CREATE, 0)
    assert isinstance(event, int)
    assert call(k, main, Sys.DUPLICATE, event, 1 << 6) == Errno.EINVAL
    dup = call(k, main, Sys.DUPLICATE, event, 0xFFFF_FFFF)
    assert isinstance(dup, int) and dup > event
    assert call(k, main, Sys.REPLACE, dup, 1) == 0
    assert call(k, main, Sys.REPLACE, dup, 2) == Errno.EPERM


def test_a_recv_whose_handle_is_closed_just_before_it_waits_answers_enotfound() -> None:
    k, proc, main = setup()
    _, b = create(k, main)
    message(k, proc, 8, [])
    wait_for = k.wait_for

    def closed_first(thread: Thread, queue: WaitQueue, mask: Signal) -> Signal:
        proc.handles.remove(b)  # another thread's CLOSE: its wake-up finds no waiter yet
        return wait_for(thread, queue, mask)

    k.wait_for = closed_first  # type: ignore[method-assign]
    assert call(k, main, Sys.RECV, b, MSG, int(ChannelFlag.BLOCK)) == Errno.ENOTFOUND
    assert main.state is ThreadState.RUNNING
