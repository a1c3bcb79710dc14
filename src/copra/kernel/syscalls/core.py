"""Class 0, core: EXIT, MMAP, MUNMAP, MRESIZE, EXEC, WAIT, CLOSE, and copra's threads
and futexes: THREAD_CREATE, THREAD_EXIT, JOIN, FUTEX_WAIT, FUTEX_WAKE
(docs/abi.md).

Upstream's numbers; MMAP, MUNMAP and MRESIZE follow upstream's unmerged draft, WAIT
and the thread and futex calls are copra's. The handlers' shape and context are in
table.py.

A futex is a 32-bit word of the process's memory, named by its user address; its
wait queue lives in the process (``Process.futexes``) under ``mem_lock``, which
FUTEX_WAIT holds from reading the word to registering its waiter and FUTEX_WAKE
holds while it wakes: a wake-up between the two is impossible, so none is lost.
A woken FUTEX_WAIT returns 0 without looking at the word again (as Linux's).

Address-space changes hold the process's ``mem_lock`` throughout; frames a MUNMAP or
a shrinking MRESIZE takes away go to ``Services.release_unmapped``, which makes
sure no CPU still translates to them before they are reused. WAIT looks its child up
under the kernel's ``tasks_lock`` and waits on the child's ``ended_queue``.
"""

from __future__ import annotations

import struct
import time

from copra.abi.spec import (
    EXIT_STATUS_SHIFT,
    PAGE_SIZE,
    TIMEOUT_NEVER,
    USER_END,
    USER_START,
    WAIT_ITEM,
    WAIT_MANY_MAX,
    Errno,
    MapFlag,
    Signal,
    Sys,
)
from copra.hw.kvm import KvmRegs
from copra.kernel.errors import SyscallError, ThreadEnded, WouldBlock
from copra.kernel.frames import FrameOwner, OutOfMemory
from copra.kernel.handles import Rights
from copra.kernel.objects import KernelObject, MappableObject
from copra.kernel.objects.event import Event, decode_event_flags
from copra.kernel.objects.file import OpenFile
from copra.kernel.process import MAP_AREA_END, Process, RegionKind
from copra.kernel.syscalls.table import Call, Status, SyscallSpec, table, u32
from copra.kernel.thread import Thread
from copra.kernel.usermem import UserPtr, check_buffer, copy_in, copy_out
from copra.kernel.waitqueue import NO_SIGNALS, WaitQueue

_WAIT_ITEM = struct.Struct("<IIII")  # handle, signals, ready, pad
assert _WAIT_ITEM.size == WAIT_ITEM.size
_READY_OFFSET = 8
_ALL_SIGNALS = sum(int(s) for s in Signal)
_ALL_MAP_FLAGS = int(MapFlag.READ | MapFlag.WRITE | MapFlag.EXEC | MapFlag.PRIVATE
                     | MapFlag.ANONYMOUS | MapFlag.FIXED)


def sys_exit(c: Call, r: KvmRegs) -> int:
    p = c.process
    c.kernel.exit_process(p, (r.rdi & 0xFFFF) << EXIT_STATUS_SHIFT, c.thread)
    raise ThreadEnded


def sys_exec(c: Call, r: KvmRegs) -> int:
    p = c.process
    path = c.path(r.rdi)
    root_path = c.path(r.rsi)
    if r.r8:
        raise SyscallError(Errno.EINVAL, f"EXEC flags {r.r8:#x}: none are defined")
    if not root_path:
        raise SyscallError(Errno.EINVAL, "EXEC root path is empty")
    root = c.kernel.fs.lookup_dir(root_path, root=p.root)
    return c.kernel.spawn(path, parent=p.pid, root=root).pid


def sys_wait(c: Call, r: KvmRegs) -> int:
    p, k = c.process, c.kernel
    pid = u32(r.rdi)
    with k.tasks_lock:
        child = k.child(p, pid)
        if child is None:
            raise SyscallError(Errno.ENOTFOUND, f"no child with task id {pid}")
        if child.status is None and not k.wait_for(c.thread, child.ended_queue, Signal.ENDED):
            raise WouldBlock
        return k.reap(p, child)


def sys_close(c: Call, r: KvmRegs) -> int:
    p = c.process
    if not p.handles.remove(u32(r.rdi)):
        raise SyscallError(Errno.ENOTFOUND, f"no handle {u32(r.rdi)}")
    return 0


def _map_flags(raw: int) -> MapFlag:
    if raw & ~_ALL_MAP_FLAGS:
        raise SyscallError(Errno.EINVAL, f"unknown MMAP flag bits {raw & ~_ALL_MAP_FLAGS:#x}")
    flags = MapFlag(raw)
    if MapFlag.READ not in flags:
        raise SyscallError(Errno.EINVAL, "MMAP needs READ: every x86 mapping is readable")
    if MapFlag.WRITE in flags and MapFlag.EXEC in flags:
        raise SyscallError(Errno.EPERM, "copra refuses writable and executable mappings")
    return flags


def _pages(length: int) -> int:
    if length == 0 or length > MAP_AREA_END:
        raise SyscallError(Errno.EINVAL, f"length {length:#x} is zero or beyond user space")
    return -(-length // PAGE_SIZE)


def sys_mmap(c: Call, r: KvmRegs) -> int:
    p = c.process
    hint, offset, flags = r.rsi, r.r8, _map_flags(r.r10)
    pages = _pages(r.r9)
    if hint % PAGE_SIZE or offset % PAGE_SIZE:
        raise SyscallError(Errno.EINVAL, "address hint and offset must be page-aligned")
    file: OpenFile | None = None
    if MapFlag.ANONYMOUS in flags:
        if offset:
            raise SyscallError(Errno.EINVAL, "an anonymous mapping has no offset")
    else:
        target = c.handle_either(u32(r.rdi), OpenFile, MappableObject)
        if isinstance(target, MappableObject):
            return _map_object(c, target, hint, offset, pages, flags)
        file = target
        if MapFlag.WRITE in flags and MapFlag.PRIVATE not in flags:
            raise SyscallError(Errno.ENOTSUPP, "shared writable file mappings are not supported")
    writable, executable = MapFlag.WRITE in flags, MapFlag.EXEC in flags
    with p.mem_lock:
        p.check_mapping_room()
        start = _place(p, hint, pages, flags)
        try:
            if file is None:
                p.map_anonymous(start, pages, writable=writable, executable=executable)
            elif writable or executable:
                # A private copy: writable, or executable — the file's own frames stay
                # writable through WRITE, so sharing them would let code change after
                # it was mapped executable (a W+X mapping by another name).
                region = p.map_anonymous(start, pages, writable=writable,
                                         executable=executable, kind=RegionKind.FILE_PRIVATE)
                data = file.file.read(offset, pages * PAGE_SIZE)
                memory = c.kernel.memory
                for i in range(0, len(data), PAGE_SIZE):
                    memory.write(region.frames[i // PAGE_SIZE], data[i:i + PAGE_SIZE])
            else:
                shared = _file_frames(p, file, offset // PAGE_SIZE, pages)
                try:
                    p.map_frames(start, shared, writable=False, executable=False,
                                 kind=RegionKind.FILE_SHARED)
                except BaseException:
                    p.account.free_many(shared)
                    raise
        except OutOfMemory as e:
            raise SyscallError(Errno.ENOMEM, str(e)) from e
    return start


def _place(p: Process, hint: int, pages: int, flags: MapFlag) -> int:
    """Where a mapping of ``pages`` goes (caller holds ``mem_lock``)."""
    if MapFlag.FIXED in flags:
        end = hint + pages * PAGE_SIZE
        if hint < USER_START or end > MAP_AREA_END:
            raise SyscallError(Errno.EINVAL, f"FIXED range {hint:#x}+{pages} pages is "
                                             "outside the mapping area")
        if not p.is_free(hint, end):
            raise SyscallError(Errno.EEXIST, f"FIXED range at {hint:#x} is already mapped")
        return hint
    return p.find_free(pages, hint)


def _map_object(c: Call, obj: MappableObject, hint: int, offset: int, pages: int,
                flags: MapFlag) -> int:
    """MMAP of an object's pages: shared with the kernel (PRIVATE and EXEC refused)."""
    if MapFlag.PRIVATE in flags or MapFlag.EXEC in flags:
        raise SyscallError(Errno.EINVAL, f"a {obj.kind.value} is mapped shared and "
                                         "never executable")
    p = c.process
    writable = MapFlag.WRITE in flags
    with p.mem_lock:
        p.check_mapping_room()
        start = _place(p, hint, pages, flags)
        frames = obj.map_pages(offset // PAGE_SIZE, pages, writable)
        try:
            p.map_frames(start, frames, writable=writable, executable=False,
                         kind=RegionKind.OBJECT)
        except BaseException as e:
            c.kernel.release_unmapped(c.cpu, frames, [])  # the references back (never mapped)
            if isinstance(e, OutOfMemory):
                raise SyscallError(Errno.ENOMEM, str(e)) from e
            raise
    return start


def _file_frames(p: Process, file: OpenFile, first: int, pages: int) -> list[int]:
    """References on the file's frames for pages [first, first + pages); pages past
    the file's end get fresh zeroed private frames, charged to the process."""
    past_end = pages - max(0, min(pages, file.file.page_count - first))
    if past_end > p.account.available:
        raise SyscallError(Errno.ENOMEM, f"{past_end} pages past the file's end, "
                                         f"{p.account.available} frames available")
    out: list[int] = []
    try:
        for index in range(first, first + pages):
            try:
                pa = file.file.share_frame(index)  # atomic with respect to truncate
            except IndexError:
                pa = p.account.alloc(FrameOwner.USER)
            out.append(pa)
    except BaseException:
        p.account.free_many(out)
        raise
    return out


def _unmap(c: Call, start: int, end: int) -> int:
    entries: list[int] = []
    released = c.process.unmap_range(start, end, entries)
    if released:
        c.kernel.release_unmapped(c.cpu, released, entries)
    return len(released)


def sys_munmap(c: Call, r: KvmRegs) -> int:
    p = c.process
    start, pages = r.rdi, _pages(r.rsi)
    if start % PAGE_SIZE:
        raise SyscallError(Errno.EINVAL, f"address {start:#x} is not page-aligned")
    end = start + pages * PAGE_SIZE
    if start < USER_START or end > USER_END:
        raise SyscallError(Errno.EINVAL, "range is outside user space")
    with p.mem_lock:
        if not _unmap(c, start, end):
            raise SyscallError(Errno.ENOTFOUND, f"nothing is mapped in {start:#x}..{end:#x}")
    return 0


def sys_mresize(c: Call, r: KvmRegs) -> int:
    p = c.process
    start, pages = r.rdi, _pages(r.rsi)
    with p.mem_lock:
        region = p.region_at(start)
        if region is None or not region.mmapped:
            raise SyscallError(Errno.ENOTFOUND, f"no MMAP mapping starts at {start:#x}")
        have = len(region.frames)
        if pages < have:
            _unmap(c, start + pages * PAGE_SIZE, region.end)
        elif pages > have:
            if region.kind is not RegionKind.ANONYMOUS:
                raise SyscallError(Errno.ENOTSUPP, "only anonymous mappings can grow")
            try:
                p.grow(region, pages - have)
            except OutOfMemory as e:
                raise SyscallError(Errno.ENOMEM, str(e)) from e
    return 0



# --- threads and futexes ------------------------------------------------------------


def sys_thread_create(c: Call, r: KvmRegs) -> int:
    entry, stack, arg, fs_base = r.rdi, r.rsi, r.r8, r.r9
    if not USER_START <= entry < USER_END:
        raise SyscallError(Errno.EINVAL, f"entry {entry:#x} is outside user space")
    if not USER_START < stack <= USER_END:
        raise SyscallError(Errno.EINVAL, f"stack top {stack:#x} is outside user space")
    if fs_base >= USER_END:
        raise SyscallError(Errno.EINVAL, f"FS base {fs_base:#x} is outside user space")
    p = c.process
    handle = p.handles.reserve()
    try:
        thread = c.kernel.new_thread(p, entry, stack, arg, fs_base)
    except BaseException:
        p.handles.cancel(handle)
        raise
    p.handles.fill(handle, thread, Rights.WAIT | Rights.MOVABLE)
    try:
        c.kernel.start_thread(thread)
    except BaseException:
        p.handles.remove(handle)
        raise
    return handle


def sys_thread_exit(c: Call, r: KvmRegs) -> int:
    c.kernel.end_thread(c.thread, u32(r.rdi))
    raise ThreadEnded


def sys_join(c: Call, r: KvmRegs) -> int:
    target = c.handle_either(u32(r.rdi), Thread, Process)
    if target is c.thread:
        raise SyscallError(Errno.EINVAL, "a thread cannot join itself")
    result = target.code if isinstance(target, Thread) else target.status
    if result is None:
        if not c.kernel.wait_for(c.thread, target.ended_queue, Signal.ENDED):
            raise WouldBlock
        # ENDED is raised after the code (status) is set.
        result = target.code if isinstance(target, Thread) else target.status
        if result is None:
            raise SyscallError(Errno.UNKNOWN, "ended without a result")
    return result


# --- processes as objects, events, waiting on many, time ----------------------------


def sys_process_open(c: Call, r: KvmRegs) -> int:
    pid = u32(r.rdi)
    p, k = c.process, c.kernel
    p.handles.check_room()
    with k.tasks_lock:
        child = k.child(p, pid)
        if child is None:
            raise SyscallError(Errno.ENOTFOUND, f"no child with task id {pid}")
        return p.handles.install(child, Rights.WAIT | Rights.MOVABLE)


def sys_event_create(c: Call, r: KvmRegs) -> int:
    flags = decode_event_flags(r.rdi)
    p = c.process
    p.handles.check_room()
    return p.handles.install(Event(flags), Rights.READ | Rights.WRITE | Rights.WAIT
                             | Rights.MOVABLE)


def _deadline(c: Call, timeout: int) -> float | None:
    """The deadline of a wait with ``timeout`` ns, fixed at its first dispatch."""
    t = c.thread
    if not t.resumed:
        t.deadline = None if timeout == TIMEOUT_NEVER else time.monotonic() + timeout / 1e9
    return t.deadline


def sys_wait_many(c: Call, r: KvmRegs) -> int:
    items, count, timeout = UserPtr(r.rdi), r.rsi, r.r8
    if not 1 <= count <= WAIT_MANY_MAX:
        raise SyscallError(Errno.EINVAL, f"WAIT_MANY of {count} items: 1 to "
                                         f"{WAIT_MANY_MAX} are allowed")
    p = c.process
    size = WAIT_ITEM.size * count
    with p.mem_lock:
        check_buffer(p.space, items, size, write=True, usable=size)
        raw = copy_in(p.space, items, size)
    wanted: list[tuple[WaitQueue, Signal]] = []
    for i in range(count):
        handle, mask = _WAIT_ITEM.unpack_from(raw, i * WAIT_ITEM.size)[:2]
        if not mask or mask & ~_ALL_SIGNALS:
            raise SyscallError(Errno.EINVAL, f"item {i}: signals {mask:#x}")
        obj = p.handles.get(handle, KernelObject, Rights.WAIT)
        queue = obj.wait_queue()
        if queue is None:
            raise SyscallError(Errno.ENOTSUPP, f"item {i}: a {obj.kind.value} raises no signals")
        wanted.append((queue, Signal(mask)))
    deadline = _deadline(c, timeout)
    ready = [queue.signals & mask for queue, mask in wanted]
    if not any(ready) and (deadline is None or time.monotonic() < deadline):
        for i, (queue, mask) in enumerate(wanted):
            ready[i] = c.kernel.wait_for(c.thread, queue, mask)
        if not any(ready):
            raise WouldBlock
    out = bytearray(raw)
    for i, bits in enumerate(ready):
        struct.pack_into("<I", out, i * WAIT_ITEM.size + _READY_OFFSET, int(bits))
    with p.mem_lock:
        copy_out(p.space, items, out)
    return sum(1 for bits in ready if bits)


def sys_clock(c: Call, r: KvmRegs) -> int:
    return time.monotonic_ns()


def sys_sleep(c: Call, r: KvmRegs) -> int:
    deadline = _deadline(c, r.rdi)
    if deadline is not None and time.monotonic() < deadline:
        raise WouldBlock  # the timer wakes the thread at the deadline
    return 0


def _futex_address(addr: int) -> int:
    if addr % 4 or not USER_START <= addr < USER_END:
        raise SyscallError(Errno.EINVAL, f"futex address {addr:#x} is not an aligned "
                                         "user address")
    return addr


def sys_futex_wait(c: Call, r: KvmRegs) -> int:
    addr, expected, timeout = _futex_address(r.rdi), u32(r.rsi), r.r8
    t, p = c.thread, c.process
    if t.resumed and t.waiter is not None and t.waiter.fired:
        return 0  # woken by FUTEX_WAKE
    _deadline(c, timeout)
    with p.mem_lock:
        word = int.from_bytes(copy_in(p.space, UserPtr(addr), 4), "little")
        if word != expected:
            raise SyscallError(Errno.EAGAIN, f"the futex word is {word:#x}, not {expected:#x}")
        if t.deadline is not None and time.monotonic() >= t.deadline:
            queue = p.futexes.get(addr)
            if queue is not None and not len(queue):
                del p.futexes[addr]
            raise SyscallError(Errno.ETIMEDOUT, "the futex wait timed out")
        queue = p.futexes.setdefault(addr, WaitQueue())
        c.kernel.wait_for(t, queue, NO_SIGNALS)
    raise WouldBlock


def sys_futex_wake(c: Call, r: KvmRegs) -> int:
    addr, count = _futex_address(r.rdi), min(r.rsi, 1 << 31)
    p = c.process
    with p.mem_lock:
        queue = p.futexes.get(addr)
        if queue is None:
            return 0
        woken = queue.wake(count)
        if not len(queue):
            del p.futexes[addr]
    return woken


TABLE = table((
    SyscallSpec(Sys.EXIT, sys_exit, Status.UPSTREAM),
    SyscallSpec(Sys.MMAP, sys_mmap, Status.IMPROVED, Rights.MAP, Errno.EWRONLY),
    SyscallSpec(Sys.MUNMAP, sys_munmap, Status.IMPROVED),
    SyscallSpec(Sys.MRESIZE, sys_mresize, Status.IMPROVED),
    SyscallSpec(Sys.EXEC, sys_exec, Status.IMPROVED),
    SyscallSpec(Sys.WAIT, sys_wait, Status.COPRA),
    SyscallSpec(Sys.CLOSE, sys_close, Status.IMPROVED),
    SyscallSpec(Sys.THREAD_CREATE, sys_thread_create, Status.COPRA),
    SyscallSpec(Sys.THREAD_EXIT, sys_thread_exit, Status.COPRA),
    SyscallSpec(Sys.JOIN, sys_join, Status.COPRA, Rights.WAIT),
    SyscallSpec(Sys.FUTEX_WAIT, sys_futex_wait, Status.COPRA),
    SyscallSpec(Sys.FUTEX_WAKE, sys_futex_wake, Status.COPRA),
    SyscallSpec(Sys.PROCESS_OPEN, sys_process_open, Status.COPRA),
    SyscallSpec(Sys.EVENT_CREATE, sys_event_create, Status.COPRA),
    SyscallSpec(Sys.WAIT_MANY, sys_wait_many, Status.COPRA),
    SyscallSpec(Sys.CLOCK, sys_clock, Status.COPRA),
    SyscallSpec(Sys.SLEEP, sys_sleep, Status.COPRA),
))
