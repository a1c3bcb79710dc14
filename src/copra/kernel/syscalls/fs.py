"""Class 1, files: OPEN ... RMDIR, upstream's numbers and semantics (docs/ramfs.md).

READ and WRITE also move an event's counter (objects/event.py): exactly 8 bytes; and
exchange records with a stream object (``objects.StreamObject``: a device model's
event, vmm/device.py), which checks its own lengths.
Paths resolve against the caller's root. READ and READDIR check the whole buffer
before they act and copy out under the object's lock (kernel/objects/), so a bad
buffer moves no position. The handlers' shape and context are in table.py.
"""

from __future__ import annotations

from copra.abi.spec import DIRENT, USER_END, Errno, FileFlag, FileMode, Sys
from copra.hw.kvm import KvmRegs
from copra.kernel.errors import SyscallError, WouldBlock
from copra.kernel.handles import Rights
from copra.kernel.objects import StreamObject
from copra.kernel.objects.directory import OpenDirectory
from copra.kernel.objects.event import EVENT_IO, Event
from copra.kernel.objects.file import (
    OpenFile,
    decode_file_flags,
    decode_file_mode,
    decode_seek_mode,
)
from copra.kernel.objects.log import Log
from copra.kernel.syscalls.table import Call, Status, SyscallSpec, table, u32
from copra.kernel.usermem import UserPtr, check_buffer, copy_in, copy_out
from copra.kernel.waitqueue import Signal

#: Largest single READ/WRITE transfer; larger requests are partial (the count says so).
MAX_IO = 1 << 20
#: Most entries one READDIR fills.
MAX_READDIR = 256


def sys_open(c: Call, r: KvmRegs) -> int:
    p = c.process
    path = c.path(r.rdi)
    mode = decode_file_mode(r.rsi)
    flags = decode_file_flags(r.r8)
    handle = p.handles.reserve()  # EMFILE before CREATE or TRUNC change the fs
    try:
        opened = OpenFile.open(c.kernel.fs, path, FileMode(mode), FileFlag(flags), root=p.root)
    except BaseException:
        p.handles.cancel(handle)
        raise
    rights = Rights.MOVABLE
    if opened.readable:
        rights |= Rights.READ | Rights.MAP
    if opened.writable:
        rights |= Rights.WRITE
    return p.handles.fill(handle, opened, rights)


def sys_read(c: Call, r: KvmRegs) -> int:
    p = c.process
    handle, buf, length = u32(r.rdi), UserPtr(r.rsi), min(r.r8, MAX_IO)
    # The log is write-only: its handle lacks READ, so it answers EWRONLY too.
    obj = c.handle_of(handle, OpenFile, Event, StreamObject, refused_by_rights=(Log,))
    if isinstance(obj, Event):
        return _read_event(c, obj, buf, r.r8)
    if isinstance(obj, StreamObject):
        return obj.read_stream(c, buf, r.r8)
    with p.mem_lock:
        check_buffer(p.space, buf, r.r8, write=True, usable=length)

    def out(data: bytes) -> None:
        with p.mem_lock:
            copy_out(p.space, buf, data)

    return len(obj.read(length, out))


def _read_event(c: Call, event: Event, buf: UserPtr, length: int) -> int:
    """READ of an event: its value (8 bytes), which becomes 0; blocks while it is 0."""
    p = c.process
    if length != EVENT_IO:
        raise SyscallError(Errno.EINVAL, f"an event is read 8 bytes at a time, not {length}")
    if not c.thread.resumed:  # a woken READ was checked before it blocked; copy_out
        with p.mem_lock:      # checks the buffer again before the value is taken
            check_buffer(p.space, buf, EVENT_IO, write=True, usable=EVENT_IO)

    def out(data: bytes) -> None:
        with p.mem_lock:
            copy_out(p.space, buf, data)

    while event.take(out) is None:
        if event.nonblocking:
            raise SyscallError(Errno.EAGAIN, "the event's counter is 0")
        if not c.kernel.wait_for(c.thread, event.queue, Signal.READABLE):
            c.thread.withdraw = event.offer(c.thread, out, c.kernel.wake)
            raise WouldBlock
    return EVENT_IO


def sys_write(c: Call, r: KvmRegs) -> int:
    p = c.process
    handle, length = u32(r.rdi), min(r.r8, MAX_IO)
    target = c.process.handles.get(handle, (OpenFile, Log, Event, StreamObject),
                                   c.spec.rights, c.spec.denied)
    if isinstance(target, StreamObject):
        return target.write_stream(c, UserPtr(r.rsi), r.r8)
    obj = target  # one of the other three kinds, its rights checked by ``get``
    assert isinstance(obj, (OpenFile, Log, Event))
    if isinstance(obj, Event):
        if r.r8 != EVENT_IO:
            raise SyscallError(Errno.EINVAL, f"an event is written 8 bytes at a time, "
                                             f"not {r.r8}")
        with p.mem_lock:
            amount = int.from_bytes(copy_in(p.space, UserPtr(r.rsi), EVENT_IO), "little")
        obj.write(amount)
        return EVENT_IO
    assert isinstance(obj, (OpenFile, Log))  # the kinds looked up, less those above
    with p.mem_lock:
        if length != r.r8:  # longer than one call moves: the whole range is checked
            check_buffer(p.space, UserPtr(r.rsi), r.r8, write=False, usable=length)
        # copy_in checks what it copies as check_buffer would (usermem.py's rules)
        data = copy_in(p.space, UserPtr(r.rsi), length)
    return obj.write(data)


def sys_seek(c: Call, r: KvmRegs) -> int:
    p = c.process
    # Upstream's order: the handle (any fs object), then the mode, then its kind, so
    # a directory with a bad mode is EINVAL. The log is a file of size 0 upstream:
    # every SEEK on it answers 0.
    obj = p.handles.get(u32(r.rdi), (OpenFile, OpenDirectory, Log))
    mode = decode_seek_mode(r.r8)
    if isinstance(obj, Log):
        return 0
    if not isinstance(obj, OpenFile):
        raise SyscallError(Errno.ENOTSUPP, f"handle {u32(r.rdi)} is a {obj.kind.value}")
    return obj.seek(r.rsi, mode)


def sys_truncate(c: Call, r: KvmRegs) -> int:
    obj = c.handle(u32(r.rdi), OpenFile)
    return obj.truncate(r.rsi)


def sys_unlink(c: Call, r: KvmRegs) -> int:
    p = c.process
    c.kernel.fs.unlink(c.path(r.rdi), root=p.root)
    return 0


def sys_opendir(c: Call, r: KvmRegs) -> int:
    p = c.process
    path = c.path(r.rdi)
    if not path:  # upstream's find_dir refuses "" ("/" is the root)
        raise SyscallError(Errno.EINVAL, "OPENDIR of an empty path")
    handle = p.handles.reserve()  # EMFILE before the snapshot is charged
    try:
        opened = OpenDirectory.open(c.kernel.fs, path, root=p.root)
    except BaseException:
        p.handles.cancel(handle)
        raise
    return p.handles.fill(handle, opened, Rights.READ | Rights.MOVABLE)


def sys_readdir(c: Call, r: KvmRegs) -> int:
    p = c.process
    obj = c.handle(u32(r.rdi), OpenDirectory)
    buf, count = UserPtr(r.rsi), min(r.r8, MAX_READDIR)
    if r.r8 > (USER_END // DIRENT.size):
        raise SyscallError(Errno.EFAULT, f"{r.r8} entries do not fit in user memory")
    with p.mem_lock:
        check_buffer(p.space, buf, r.r8 * DIRENT.size, write=True, usable=count * DIRENT.size)

    def out(data: bytes) -> None:
        with p.mem_lock:
            copy_out(p.space, buf, data)

    return len(obj.readdir(count, out))


def sys_mkdir(c: Call, r: KvmRegs) -> int:
    p = c.process
    c.kernel.fs.mkdir(c.path(r.rdi), root=p.root)
    return 0


def sys_rmdir(c: Call, r: KvmRegs) -> int:
    p = c.process
    c.kernel.fs.rmdir(c.path(r.rdi), root=p.root)
    return 0


TABLE = table((
    SyscallSpec(Sys.OPEN, sys_open, Status.IMPROVED),
    SyscallSpec(Sys.READ, sys_read, Status.UPSTREAM, Rights.READ, Errno.EWRONLY),
    SyscallSpec(Sys.WRITE, sys_write, Status.UPSTREAM, Rights.WRITE, Errno.ERDONLY),
    SyscallSpec(Sys.SEEK, sys_seek, Status.UPSTREAM),
    SyscallSpec(Sys.TRUNCATE, sys_truncate, Status.UPSTREAM, Rights.WRITE, Errno.ERDONLY),
    SyscallSpec(Sys.UNLINK, sys_unlink, Status.IMPROVED),
    SyscallSpec(Sys.OPENDIR, sys_opendir, Status.IMPROVED),
    SyscallSpec(Sys.READDIR, sys_readdir, Status.UPSTREAM, Rights.READ),
    SyscallSpec(Sys.MKDIR, sys_mkdir, Status.UPSTREAM),
    SyscallSpec(Sys.RMDIR, sys_rmdir, Status.IMPROVED),
))
