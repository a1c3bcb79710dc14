"""Class 0, copra's channels and handle moves: CHANNEL_CREATE, SEND, RECV, DUPLICATE,
REPLACE and EXEC_HANDLES (docs/abi.md; the endpoint itself is objects/channel.py).

SEND and RECV take a ``ChannelMessage`` (spec.CHANNEL_MESSAGE): the bytes and the
handle array with their lengths; RECV writes the sizes of the message back into it,
also when it answers EMSGSIZE. Both block only with ``ChannelFlag.BLOCK`` and answer
EAGAIN otherwise; a blocked call is dispatched again from the start when woken.

A blocking SEND or RECV whose handle is closed or sent away by another thread wakes
and answers ENOTFOUND; one that registered its waiter just after such a CLOSE checks
the handle again before it sleeps (``_block``), so no wake-up is lost.

All or nothing: SEND copies the bytes and the ids in and validates every argument
before it takes anything; the handles leave the sender's table in one step
(``HandleTable.take``) under the channel lock, after the queue was found to have room,
so a refused SEND leaves every handle where it was. RECV checks the receiver's
buffers, installs every handle (``HandleTable.adopt``) and copies out under the
channel lock and the receiver's ``mem_lock``: EMSGSIZE, EFAULT and EMFILE leave the
message queued, whole, and the receiver's table as it was. EXEC_HANDLES moves its
handles only once the child is loaded (``Services.spawn``'s ``give``): a child that
cannot start leaves them with the caller.

The handlers' shape and context are in table.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from copra.abi.spec import (
    CHANNEL_MAX_BYTES,
    CHANNEL_MAX_HANDLES,
    CHANNEL_MESSAGE,
    RIGHTS_SAME,
    ChannelFlag,
    Errno,
    Right,
    Sys,
)
from copra.hw.kvm import KvmRegs
from copra.kernel.errors import SyscallError, WouldBlock
from copra.kernel.handles import Rights
from copra.kernel.objects import KernelObject
from copra.kernel.objects.channel import Endpoint, Entry, Message, Take
from copra.kernel.process import Process
from copra.kernel.syscalls.table import Call, Status, SyscallSpec, table, u32
from copra.kernel.usermem import UserPtr, check_buffer, copy_in, copy_out
from copra.kernel.waitqueue import Signal

_MESSAGE = struct.Struct("<QQII")  # data, handles, data_len, handle_count
assert _MESSAGE.size == CHANNEL_MESSAGE.size
_SIZES_OFFSET = 16
_SIZES = struct.Struct("<II")
_ALL_RIGHTS = int(Right.READ | Right.WRITE | Right.MAP | Right.WAIT | Right.TRANSFER
                  | Right.DUPLICATE)
#: The rights of a new endpoint.
ENDPOINT_RIGHTS = Rights.READ | Rights.WRITE | Rights.WAIT | Rights.MOVABLE


def _flags(raw: int) -> ChannelFlag:
    if raw & ~int(ChannelFlag.BLOCK):
        raise SyscallError(Errno.EINVAL, f"unknown channel flag bits {raw:#x}")
    return ChannelFlag(raw)


def _rights(raw: int, same_allowed: bool) -> int:
    if same_allowed and raw == RIGHTS_SAME:
        return raw
    if raw & ~_ALL_RIGHTS:
        raise SyscallError(Errno.EINVAL, f"unknown right bits {raw:#x}")
    return raw


def _ids(c: Call, addr: int, count: int) -> list[int]:
    """``count`` distinct handle ids from the caller's array at ``addr``."""
    if count > CHANNEL_MAX_HANDLES:
        raise SyscallError(Errno.EINVAL, f"{count} handles: at most "
                                         f"{CHANNEL_MAX_HANDLES} move at once")
    if not count:
        return []
    p = c.process
    with p.mem_lock:
        raw = copy_in(p.space, UserPtr(addr), 4 * count)
    ids = list(struct.unpack(f"<{count}I", raw))
    if len(set(ids)) != count:
        raise SyscallError(Errno.EINVAL, "a handle appears twice in one move")
    return ids


def sys_channel_create(c: Call, r: KvmRegs) -> int:
    if r.rdi:
        raise SyscallError(Errno.EINVAL, f"CHANNEL_CREATE flags {r.rdi:#x}: none are defined")
    p = c.process
    a, b = Endpoint.pair(c.kernel.fs.metadata)
    for end in (a, b):
        end.acquire()  # the references adopt hands to the two handles
    try:
        first, second = p.handles.adopt([(a, int(ENDPOINT_RIGHTS)), (b, int(ENDPOINT_RIGHTS))])
    except BaseException:
        a.release()
        b.release()
        raise
    return (second << 32) | first


def _outgoing(c: Call, msg_addr: UserPtr) -> tuple[bytes, list[int]]:
    """The bytes and the handle ids of the ChannelMessage at ``msg_addr``."""
    p = c.process
    with p.mem_lock:
        data_addr, ids_addr, length, count = _MESSAGE.unpack(
            copy_in(p.space, msg_addr, _MESSAGE.size))
    if length > CHANNEL_MAX_BYTES:
        raise SyscallError(Errno.EINVAL, f"{length} bytes: a message carries at most "
                                         f"{CHANNEL_MAX_BYTES}")
    with p.mem_lock:
        data = copy_in(p.space, UserPtr(data_addr), length) if length else b""
    return data, _ids(c, ids_addr, count)


def _taker(p: Process, ids: list[int]) -> Take:
    def take(forbid: tuple[KernelObject, ...],
             check: Callable[[KernelObject], None]) -> list[Entry]:
        return p.handles.take(ids, forbid, check)

    return take


def sys_send(c: Call, r: KvmRegs) -> int:
    p = c.process
    msg_addr, flags = UserPtr(r.rsi), _flags(r.r8)
    with p.mem_lock:
        data_addr, ids_addr, length, count = _MESSAGE.unpack(
            copy_in(p.space, msg_addr, _MESSAGE.size))
    if length > CHANNEL_MAX_BYTES:
        raise SyscallError(Errno.EINVAL, f"{length} bytes: a message carries at most "
                                         f"{CHANNEL_MAX_BYTES}")
    endpoint = c.handle(u32(r.rdi), Endpoint)
    with p.mem_lock:
        data = copy_in(p.space, UserPtr(data_addr), length) if length else b""
    ids = _ids(c, ids_addr, count)
    take = _taker(p, ids)
    while not endpoint.send(data, len(ids), take):
        if ChannelFlag.BLOCK not in flags:
            raise SyscallError(Errno.EAGAIN, "the peer's queue is full")
        if not c.kernel.wait_for(c.thread, endpoint.queue,
                                 Signal.WRITABLE | Signal.PEER_CLOSED):
            _block(c, u32(r.rdi), endpoint)
    return 0


def _block(c: Call, handle: int, endpoint: Endpoint,
           deliver: Callable[[Message], None] | None = None) -> None:
    """Block, unless ``handle`` was closed or sent since the call looked it up: the
    wake-up of that CLOSE or SEND may have come before the waiter was registered, so
    the call answers as if made after it (ENOTFOUND) instead of sleeping on. A
    receive (``deliver``) leaves an offer a SEND may deliver to directly."""
    if c.process.handles.names(handle, endpoint):
        if deliver is not None:
            c.thread.withdraw = endpoint.offer(c.thread, deliver, c.kernel.wake)
        raise WouldBlock
    waiter = c.thread.waiter
    if waiter is not None:
        waiter.cancel()
    raise SyscallError(Errno.ENOTFOUND, f"handle {handle} was closed or moved meanwhile")


def _deliverer(p: Process, msg_addr: UserPtr,
               whole: bool = False) -> Callable[[Message], None]:
    """How a message goes into the buffers the ChannelMessage at ``msg_addr`` names
    (the message checked writable here, EFAULT; with ``whole`` the buffer and the id
    array too, as far as a message can fill them): run under the channel lock, by the
    receiver or by the SEND that hands the message over (objects/channel.py), all or
    nothing."""
    with p.mem_lock:
        check_buffer(p.space, msg_addr, _MESSAGE.size, write=True, usable=_MESSAGE.size)
        data_addr, ids_addr, capacity, handle_capacity = _MESSAGE.unpack(
            copy_in(p.space, msg_addr, _MESSAGE.size))
        if whole:
            room = min(capacity, CHANNEL_MAX_BYTES)
            ids_room = 4 * min(handle_capacity, CHANNEL_MAX_HANDLES)
            if room:
                check_buffer(p.space, UserPtr(data_addr), room, write=True, usable=room)
            if ids_room:
                check_buffer(p.space, UserPtr(ids_addr), ids_room, write=True, usable=ids_room)

    def deliver(message: Message) -> None:
        length, count = len(message.data), len(message.entries)
        sizes = _SIZES.pack(length, count)
        with p.mem_lock:
            if length > capacity or count > handle_capacity:
                copy_out(p.space, msg_addr + _SIZES_OFFSET, sizes)
                raise SyscallError(Errno.EMSGSIZE, f"the message has {length} bytes and "
                                   f"{count} handles; the buffers hold {capacity} and "
                                   f"{handle_capacity}")
            data, ids = UserPtr(data_addr), UserPtr(ids_addr)
            check_buffer(p.space, data, length, write=True, usable=length)
            check_buffer(p.space, ids, 4 * count, write=True, usable=4 * count)
            new = p.handles.adopt(message.entries) if count else []
            # Nothing below can fail: the buffers were checked under the same mem_lock.
            if length:
                copy_out(p.space, data, message.data)
            if count:
                copy_out(p.space, ids, struct.pack(f"<{count}I", *new))
            copy_out(p.space, msg_addr + _SIZES_OFFSET, sizes)

    return deliver


def _receive(c: Call, handle: int, endpoint: Endpoint, deliver: Callable[[Message], None],
             block: bool) -> int:
    while (message := endpoint.receive(deliver)) is None:
        if not block:
            raise SyscallError(Errno.EAGAIN, "the queue is empty")
        if not c.kernel.wait_for(c.thread, endpoint.queue,
                                 Signal.READABLE | Signal.PEER_CLOSED):
            _block(c, handle, endpoint, deliver)
    return len(message.data)


def sys_recv(c: Call, r: KvmRegs) -> int:
    flags = _flags(r.r8)
    deliver = _deliverer(c.process, UserPtr(r.rsi))
    endpoint = c.handle(u32(r.rdi), Endpoint)
    return _receive(c, u32(r.rdi), endpoint, deliver, ChannelFlag.BLOCK in flags)


def sys_channel_call(c: Call, r: KvmRegs) -> int:
    """SEND the message at rsi, then RECV into the one at r8, blocking (Zircon's
    zx_channel_call without transaction ids: the answer is the next message queued
    towards the endpoint). The send never blocks (EAGAIN: a full queue, nothing
    sent); once sent, a dispatch after a wake-up only receives (``half_done``).
    The peer the send wakes runs on this CPU next (a sync wake-up, scheduler.py)."""
    p, thread, cpu = c.process, c.thread, c.cpu
    if r.r9:
        raise SyscallError(Errno.EINVAL, f"CHANNEL_CALL flags {r.r9:#x}: none are defined")
    handle = u32(r.rdi)
    deliver = _deliverer(p, UserPtr(r.r8), whole=not thread.half_done)
    endpoint = c.handle(handle, Endpoint)
    if not thread.half_done:
        data, ids = _outgoing(c, UserPtr(r.rsi))
        with c.kernel.sync_wake(cpu):
            if not endpoint.send(data, len(ids), _taker(p, ids)):
                raise SyscallError(Errno.EAGAIN, "the peer's queue is full: nothing sent")
        thread.half_done = True
    try:
        received = _receive(c, handle, endpoint, deliver, block=True)
    except WouldBlock:
        raise
    except BaseException:
        c.kernel.unsync(cpu)
        raise
    c.kernel.unsync(cpu)
    return received


def sys_duplicate(c: Call, r: KvmRegs) -> int:
    rights = _rights(u32(r.rsi), same_allowed=True)
    return c.process.handles.duplicate(u32(r.rdi), rights)


def sys_replace(c: Call, r: KvmRegs) -> int:
    rights = _rights(u32(r.rsi), same_allowed=False)
    c.process.handles.restrict(u32(r.rdi), rights)
    return 0


def sys_exec_handles(c: Call, r: KvmRegs) -> int:
    p = c.process
    path = c.path(r.rdi)
    root_path = c.path(r.rsi)
    if r.r10:
        raise SyscallError(Errno.EINVAL, f"EXEC_HANDLES flags {r.r10:#x}: none are defined")
    if not root_path:
        raise SyscallError(Errno.EINVAL, "EXEC root path is empty")
    ids = _ids(c, r.r8, r.r9)
    if len(ids) + 1 > p.limits.handles:
        raise SyscallError(Errno.EMFILE, f"{len(ids)} handles and the log do not fit the "
                                         f"child's limit of {p.limits.handles}")
    root = c.kernel.fs.lookup_dir(root_path, root=p.root)

    def give(child: Process) -> int:
        entries = p.handles.take(ids)
        child.handles.adopt(entries)  # ids 1..n: a fresh table holds only the log
        return len(entries)

    return c.kernel.spawn(path, parent=p.pid, root=root, give=give).pid


TABLE = table((
    SyscallSpec(Sys.CHANNEL_CREATE, sys_channel_create, Status.COPRA),
    SyscallSpec(Sys.SEND, sys_send, Status.COPRA, Rights.WRITE),
    SyscallSpec(Sys.RECV, sys_recv, Status.COPRA, Rights.READ),
    SyscallSpec(Sys.DUPLICATE, sys_duplicate, Status.COPRA),
    SyscallSpec(Sys.REPLACE, sys_replace, Status.COPRA),
    SyscallSpec(Sys.EXEC_HANDLES, sys_exec_handles, Status.COPRA),
    SyscallSpec(Sys.CHANNEL_CALL, sys_channel_call, Status.COPRA, Rights.READ | Rights.WRITE),
))
