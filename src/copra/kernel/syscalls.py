"""The syscall table: number -> name, handler, status (gVisor's linux64.go as data).

Every handler has one shape, seL4's decode-then-invoke: read and validate every
argument with no side effect, look up handles through ``HandleTable.get`` with the
expected kind, act, then copy results out. A handler returns the value for rax or
raises ``SyscallError`` (the dispatcher writes -errno), ``WouldBlock`` or
``ProcessExited``. Arguments come from rdi, rsi, r8, r9, r10 (spec.ARG_REGISTERS);
handle arguments use the low 32 bits, as upstream.

Locking: handlers run on the vCPU thread of the calling thread; memory copies hold
the process's ``mem_lock``; file objects lock themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from copra.abi.spec import (
    DIRENT,
    EXIT_STATUS_SHIFT,
    PAGE_SIZE,
    PATH_MAX,
    USER_END,
    USER_START,
    Capability,
    Errno,
    FileFlag,
    FileMode,
    MapFlag,
    PlatformType,
    Sys,
)
from copra.hw.kvm import KvmRegs
from copra.kernel.errors import SyscallError
from copra.kernel.frames import FrameOwner, OutOfMemory
from copra.kernel.handles import Rights
from copra.kernel.kernel import Kernel, ProcessExited, WouldBlock
from copra.kernel.objects.directory import OpenDirectory
from copra.kernel.objects.file import (
    OpenFile,
    decode_file_flags,
    decode_file_mode,
    decode_seek_mode,
)
from copra.kernel.objects.log import Log
from copra.kernel.process import MAP_AREA_END, Process, RegionKind
from copra.kernel.thread import Thread
from copra.kernel.usermem import UserPtr, check_buffer, copy_in, copy_in_str, copy_out
from copra.kernel.waitqueue import Signal

#: Largest single READ/WRITE transfer; larger requests are partial (the count says so).
MAX_IO = 1 << 20
#: Most entries one READDIR fills.
MAX_READDIR = 256

Handler = Callable[[Kernel, Thread, KvmRegs], int]
_ALL_MAP_FLAGS = int(MapFlag.READ | MapFlag.WRITE | MapFlag.EXEC | MapFlag.PRIVATE
                     | MapFlag.ANONYMOUS | MapFlag.FIXED)


class Status(Enum):
    UPSTREAM = "as upstream"
    IMPROVED = "upstream number, copra semantics differ (docs/abi.md)"
    COPRA = "copra addition"


@dataclass(frozen=True)
class SyscallSpec:
    number: Sys
    handler: Handler
    status: Status


def _u32(value: int) -> int:
    return value & 0xFFFF_FFFF


def _path(proc: Process, addr: int) -> str:
    with proc.mem_lock:
        return copy_in_str(proc.space, UserPtr(addr), PATH_MAX)


# --- class 0: core ----------------------------------------------------------------------


def sys_exit(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    k.exit_process(p, (r.rdi & 0xFFFF) << EXIT_STATUS_SHIFT)
    raise ProcessExited


def sys_exec(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    path = _path(p, r.rdi)
    root_path = _path(p, r.rsi)
    if r.r8:
        raise SyscallError(Errno.EINVAL, f"EXEC flags {r.r8:#x}: none are defined")
    if not root_path:
        raise SyscallError(Errno.EINVAL, "EXEC root path is empty")
    root = k.fs.lookup_dir(root_path, root=p.root)
    return k.spawn(path, parent=p.pid, root=root).pid


def sys_wait(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    pid = _u32(r.rdi)
    with k.tasks_lock:
        child = k.processes.get(pid)
        if child is None or child.parent != p.pid:
            raise SyscallError(Errno.ENOTFOUND, f"no child with task id {pid}")
        if child.status is None and not k.wait_for(t, child.ended_queue, Signal.ENDED):
            raise WouldBlock
        return k.reap(p, child)


def sys_close(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    if not p.handles.remove(_u32(r.rdi)):
        raise SyscallError(Errno.ENOTFOUND, f"no handle {_u32(r.rdi)}")
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


def sys_mmap(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    hint, offset, flags = r.rsi, r.r8, _map_flags(r.r10)
    pages = _pages(r.r9)
    if hint % PAGE_SIZE or offset % PAGE_SIZE:
        raise SyscallError(Errno.EINVAL, "address hint and offset must be page-aligned")
    file: OpenFile | None = None
    if MapFlag.ANONYMOUS in flags:
        if offset:
            raise SyscallError(Errno.EINVAL, "an anonymous mapping has no offset")
    else:
        file = p.handles.get(_u32(r.rdi), OpenFile, Rights.MAP, Errno.EWRONLY)
        if MapFlag.WRITE in flags and MapFlag.PRIVATE not in flags:
            raise SyscallError(Errno.ENOTSUPP, "shared writable file mappings are not supported")
    writable, executable = MapFlag.WRITE in flags, MapFlag.EXEC in flags
    with p.mem_lock:
        p.check_mapping_room()
        if MapFlag.FIXED in flags:
            end = hint + pages * PAGE_SIZE
            if hint < USER_START or end > MAP_AREA_END:
                raise SyscallError(Errno.EINVAL, f"FIXED range {hint:#x}+{pages} pages is "
                                                 "outside the mapping area")
            if not p.is_free(hint, end):
                raise SyscallError(Errno.EEXIST, f"FIXED range at {hint:#x} is already mapped")
            start = hint
        else:
            start = p.find_free(pages, hint)
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
                for i in range(0, len(data), PAGE_SIZE):
                    k.vm.memory.write(region.frames[i // PAGE_SIZE], data[i:i + PAGE_SIZE])
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


def _unmap(k: Kernel, p: Process, start: int, end: int) -> int:
    released = p.unmap_range(start, end)
    if released:
        k.vm.invalidate_mappings()
        k.vm.frames.free_many(released)
    return len(released)


def sys_munmap(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    start, pages = r.rdi, _pages(r.rsi)
    if start % PAGE_SIZE:
        raise SyscallError(Errno.EINVAL, f"address {start:#x} is not page-aligned")
    end = start + pages * PAGE_SIZE
    if start < USER_START or end > USER_END:
        raise SyscallError(Errno.EINVAL, "range is outside user space")
    with p.mem_lock:
        if not _unmap(k, p, start, end):
            raise SyscallError(Errno.ENOTFOUND, f"nothing is mapped in {start:#x}..{end:#x}")
    return 0


def sys_mresize(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    start, pages = r.rdi, _pages(r.rsi)
    with p.mem_lock:
        region = p.region_at(start)
        if region is None or not region.mmapped:
            raise SyscallError(Errno.ENOTFOUND, f"no MMAP mapping starts at {start:#x}")
        have = len(region.frames)
        if pages < have:
            _unmap(k, p, start + pages * PAGE_SIZE, region.end)
        elif pages > have:
            if region.kind is not RegionKind.ANONYMOUS:
                raise SyscallError(Errno.ENOTSUPP, "only anonymous mappings can grow")
            try:
                p.grow(region, pages - have)
            except OutOfMemory as e:
                raise SyscallError(Errno.ENOMEM, str(e)) from e
    return 0


# --- class 1: files ---------------------------------------------------------------------


def sys_open(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    path = _path(p, r.rdi)
    mode = decode_file_mode(r.rsi)
    flags = decode_file_flags(r.r8)
    p.handles.check_room()  # before CREATE or TRUNC change the fs
    opened = OpenFile.open(k.fs, path, FileMode(mode), FileFlag(flags), root=p.root)
    rights = Rights.NONE
    if opened.readable:
        rights |= Rights.READ | Rights.MAP
    if opened.writable:
        rights |= Rights.WRITE
    return p.handles.install(opened, rights)


def sys_read(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    handle, buf, length = _u32(r.rdi), UserPtr(r.rsi), min(r.r8, MAX_IO)
    # The log is write-only: its handle lacks READ, so it answers EWRONLY too.
    obj = p.handles.get(handle, (OpenFile, Log), Rights.READ, Errno.EWRONLY)
    assert isinstance(obj, OpenFile)
    with p.mem_lock:
        check_buffer(p.space, buf, r.r8, write=True, usable=length)

    def out(data: bytes) -> None:
        with p.mem_lock:
            copy_out(p.space, buf, data)

    return len(obj.read(length, out))


def sys_write(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    handle, length = _u32(r.rdi), min(r.r8, MAX_IO)
    obj = p.handles.get(handle, (OpenFile, Log), Rights.WRITE, Errno.ERDONLY)
    assert isinstance(obj, OpenFile | Log)
    with p.mem_lock:
        check_buffer(p.space, UserPtr(r.rsi), r.r8, write=False, usable=length)
        data = copy_in(p.space, UserPtr(r.rsi), length)
    return obj.write(data)


def sys_seek(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    # Upstream's order: the handle (any fs object), then the mode, then its kind, so
    # a directory with a bad mode is EINVAL. The log is a file of size 0 upstream:
    # every SEEK on it answers 0.
    obj = p.handles.get(_u32(r.rdi), (OpenFile, OpenDirectory, Log))
    mode = decode_seek_mode(r.r8)
    if isinstance(obj, Log):
        return 0
    if not isinstance(obj, OpenFile):
        raise SyscallError(Errno.ENOTSUPP, f"handle {_u32(r.rdi)} is a {obj.kind.value}")
    return obj.seek(r.rsi, mode)


def sys_truncate(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    obj = p.handles.get(_u32(r.rdi), OpenFile, Rights.WRITE, Errno.ERDONLY)
    return obj.truncate(r.rsi)


def sys_unlink(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    k.fs.unlink(_path(p, r.rdi), root=p.root)
    return 0


def sys_opendir(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    path = _path(p, r.rdi)
    if not path:  # upstream's find_dir refuses "" ("/" is the root)
        raise SyscallError(Errno.EINVAL, "OPENDIR of an empty path")
    p.handles.check_room()
    return p.handles.install(OpenDirectory.open(k.fs, path, root=p.root), Rights.READ)


def sys_readdir(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    obj = p.handles.get(_u32(r.rdi), OpenDirectory, Rights.READ)
    buf, count = UserPtr(r.rsi), min(r.r8, MAX_READDIR)
    if r.r8 > (USER_END // DIRENT.size):
        raise SyscallError(Errno.EFAULT, f"{r.r8} entries do not fit in user memory")
    with p.mem_lock:
        check_buffer(p.space, buf, r.r8 * DIRENT.size, write=True, usable=count * DIRENT.size)

    def out(data: bytes) -> None:
        with p.mem_lock:
            copy_out(p.space, buf, data)

    return len(obj.readdir(count, out))


def sys_mkdir(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    k.fs.mkdir(_path(p, r.rdi), root=p.root)
    return 0


def sys_rmdir(k: Kernel, t: Thread, r: KvmRegs) -> int:
    p = t.process
    k.fs.rmdir(_path(p, r.rdi), root=p.root)
    return 0


# --- class 3: system information ----------------------------------------------------------


def sys_capabilities(k: Kernel, t: Thread, r: KvmRegs) -> int:
    index = _u32(r.rdi)
    if index == Capability.COUNT:
        return len(Capability) - 1  # the values after index 0, as upstream counts
    if index == Capability.VM_BITMAP:
        return 0
    if index == Capability.FEATURES:
        return int(PlatformType.COPRA_KVM)
    raise SyscallError(Errno.ENOTFOUND, f"no capability index {index}")


SYSCALLS: dict[int, SyscallSpec] = {
    int(s.number): s
    for s in (
        SyscallSpec(Sys.EXIT, sys_exit, Status.UPSTREAM),
        SyscallSpec(Sys.MMAP, sys_mmap, Status.IMPROVED),
        SyscallSpec(Sys.MUNMAP, sys_munmap, Status.IMPROVED),
        SyscallSpec(Sys.MRESIZE, sys_mresize, Status.IMPROVED),
        SyscallSpec(Sys.EXEC, sys_exec, Status.IMPROVED),
        SyscallSpec(Sys.WAIT, sys_wait, Status.COPRA),
        SyscallSpec(Sys.CLOSE, sys_close, Status.IMPROVED),
        SyscallSpec(Sys.OPEN, sys_open, Status.IMPROVED),
        SyscallSpec(Sys.READ, sys_read, Status.UPSTREAM),
        SyscallSpec(Sys.WRITE, sys_write, Status.UPSTREAM),
        SyscallSpec(Sys.SEEK, sys_seek, Status.UPSTREAM),
        SyscallSpec(Sys.TRUNCATE, sys_truncate, Status.UPSTREAM),
        SyscallSpec(Sys.UNLINK, sys_unlink, Status.IMPROVED),
        SyscallSpec(Sys.OPENDIR, sys_opendir, Status.IMPROVED),
        SyscallSpec(Sys.READDIR, sys_readdir, Status.UPSTREAM),
        SyscallSpec(Sys.MKDIR, sys_mkdir, Status.UPSTREAM),
        SyscallSpec(Sys.RMDIR, sys_rmdir, Status.IMPROVED),
        SyscallSpec(Sys.CAPABILITIES, sys_capabilities, Status.UPSTREAM),
    )
}

__all__ = ["SYSCALLS", "Status", "SyscallSpec"]
