"""The syscall table: number -> name, handler, status (gVisor's linux64.go as data).

Every handler has one shape, seL4's decode-then-invoke: read and validate every
argument with no side effect, look up handles through ``HandleTable.get`` with the
expected kind, act, then copy results out. A handler returns the value for rax or
raises ``SyscallError`` (the dispatcher writes -errno), ``WouldBlock`` or
``ProcessExited``. Arguments come from rdi, rsi, r8, r9, r10 (spec.ARG_REGISTERS);
handle arguments use the low 32 bits, as upstream.

Locking: handlers run on the vCPU thread of the calling process; memory copies hold
the process's ``mem_lock``; file objects lock themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from copra.abi.spec import (
    EXIT_STATUS_SHIFT,
    PATH_MAX,
    Capability,
    Errno,
    FileFlag,
    FileMode,
    PlatformType,
    Sys,
)
from copra.hw.kvm import KvmRegs
from copra.kernel.errors import SyscallError
from copra.kernel.kernel import Kernel, ProcessExited, WouldBlock
from copra.kernel.objects import KernelObject
from copra.kernel.objects.directory import OpenDirectory
from copra.kernel.objects.file import (
    OpenFile,
    decode_file_flags,
    decode_file_mode,
    decode_seek_mode,
)
from copra.kernel.objects.log import Log
from copra.kernel.process import Process, State
from copra.kernel.usermem import UserPtr, copy_in, copy_in_str, copy_out

#: Largest single READ/WRITE transfer; larger requests are partial (the count says so).
MAX_IO = 1 << 20
#: Most entries one READDIR fills.
MAX_READDIR = 256

Handler = Callable[[Kernel, Process, KvmRegs], int]


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


def sys_exit(k: Kernel, p: Process, r: KvmRegs) -> int:
    k.exit_process(p, (r.rdi & 0xFFFF) << EXIT_STATUS_SHIFT)
    raise ProcessExited


def sys_exec(k: Kernel, p: Process, r: KvmRegs) -> int:
    path = _path(p, r.rdi)
    root_path = _path(p, r.rsi)
    if r.r8:
        raise SyscallError(Errno.EINVAL, f"EXEC flags {r.r8:#x}: none are defined")
    if not root_path:
        raise SyscallError(Errno.EINVAL, "EXEC root path is empty")
    root = k.fs.lookup_dir(root_path, root=p.root)
    return k.spawn(path, parent=p.pid, root=root).pid


def sys_wait(k: Kernel, p: Process, r: KvmRegs) -> int:
    pid = _u32(r.rdi)
    child = k.processes.get(pid)
    if child is None or child.parent != p.pid:
        raise SyscallError(Errno.ENOTFOUND, f"no child with task id {pid}")
    if child.status is None:
        p.blocked_on = pid
        raise WouldBlock
    del k.processes[pid]
    return child.status


def sys_close(k: Kernel, p: Process, r: KvmRegs) -> int:
    if not p.handles.remove(_u32(r.rdi)):
        raise SyscallError(Errno.ENOTFOUND, f"no handle {_u32(r.rdi)}")
    return 0


# --- class 1: files ---------------------------------------------------------------------


def sys_open(k: Kernel, p: Process, r: KvmRegs) -> int:
    path = _path(p, r.rdi)
    mode = decode_file_mode(r.rsi)
    flags = decode_file_flags(r.r8)
    opened = OpenFile.open(k.fs, path, FileMode(mode), FileFlag(flags), root=p.root)
    return p.handles.install(opened)


def sys_read(k: Kernel, p: Process, r: KvmRegs) -> int:
    handle, buf, length = _u32(r.rdi), UserPtr(r.rsi), min(r.r8, MAX_IO)
    obj = p.handles.get(handle, KernelObject)
    if isinstance(obj, Log):
        raise SyscallError(Errno.EWRONLY, "the task log is write-only")
    if not isinstance(obj, OpenFile):
        raise SyscallError(Errno.ENOTSUPP, f"handle {handle} is a {obj.kind.value}")

    def out(data: bytes) -> None:
        with p.mem_lock:
            copy_out(p.space, buf, data)

    return len(obj.read(length, out))


def sys_write(k: Kernel, p: Process, r: KvmRegs) -> int:
    handle, length = _u32(r.rdi), min(r.r8, MAX_IO)
    obj = p.handles.get(handle, KernelObject)
    if not isinstance(obj, OpenFile | Log):
        raise SyscallError(Errno.ENOTSUPP, f"handle {handle} is a {obj.kind.value}")
    if isinstance(obj, OpenFile) and not obj.writable:
        raise SyscallError(Errno.ERDONLY, "write on a handle opened without WRITE")
    with p.mem_lock:
        data = copy_in(p.space, UserPtr(r.rsi), length)
    return obj.write(data)


def sys_seek(k: Kernel, p: Process, r: KvmRegs) -> int:
    obj = p.handles.get(_u32(r.rdi), OpenFile)
    return obj.seek(r.rsi, decode_seek_mode(r.r8))


def sys_truncate(k: Kernel, p: Process, r: KvmRegs) -> int:
    obj = p.handles.get(_u32(r.rdi), OpenFile)
    return obj.truncate(r.rsi)


def sys_unlink(k: Kernel, p: Process, r: KvmRegs) -> int:
    k.fs.unlink(_path(p, r.rdi), root=p.root)
    return 0


def sys_opendir(k: Kernel, p: Process, r: KvmRegs) -> int:
    return p.handles.install(OpenDirectory.open(k.fs, _path(p, r.rdi), root=p.root))


def sys_readdir(k: Kernel, p: Process, r: KvmRegs) -> int:
    obj = p.handles.get(_u32(r.rdi), OpenDirectory)
    buf, count = UserPtr(r.rsi), min(r.r8, MAX_READDIR)

    def out(data: bytes) -> None:
        with p.mem_lock:
            copy_out(p.space, buf, data)

    return len(obj.readdir(count, out))


def sys_mkdir(k: Kernel, p: Process, r: KvmRegs) -> int:
    k.fs.mkdir(_path(p, r.rdi), root=p.root)
    return 0


def sys_rmdir(k: Kernel, p: Process, r: KvmRegs) -> int:
    k.fs.rmdir(_path(p, r.rdi), root=p.root)
    return 0


# --- class 3: system information ----------------------------------------------------------


def sys_capabilities(k: Kernel, p: Process, r: KvmRegs) -> int:
    index = _u32(r.rdi)
    if index == Capability.COUNT:
        return len(Capability)
    if index == Capability.VM_BITMAP:
        return 0
    if index == Capability.FEATURES:
        return int(PlatformType.COPRA_KVM)
    raise SyscallError(Errno.ENOTFOUND, f"no capability index {index}")


SYSCALLS: dict[int, SyscallSpec] = {
    int(s.number): s
    for s in (
        SyscallSpec(Sys.EXIT, sys_exit, Status.UPSTREAM),
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

__all__ = ["SYSCALLS", "State", "Status", "SyscallSpec"]
