"""BATCH (class 0, 0x20, copra's): many syscalls for one entry into the kernel.

The caller passes an array of ``BatchRecord`` (abi/spec.py: number, five arguments,
user data, result), a count (1 to ``BATCH_MAX``) and ``BatchFlag`` flags. The records
are copied in once, run in order through the same table and handlers as single
calls (with the same rights checks), and the records that ran are copied out once,
each with its ``result`` filled in; BATCH returns how many ran. With STOP_ON_ERROR
it stops after the first record whose result is an error. docs/abi.md has the rules.

Calls that wait or end the caller are refused in a batch, without running, with
EINVAL in their record: EXIT, THREAD_EXIT, WAIT, JOIN, FUTEX_WAIT, WAIT_MANY, SLEEP,
CHANNEL_CALL and DEVICE_REPLY (which send or answer and then wait) and BATCH itself
(no nesting). Any other call that would have to block (a READ of an
empty event, a full channel...) is not put to sleep: its record answers EAGAIN, and
whatever it had registered to wait on is dropped. A batch therefore never blocks,
and a blocked thread never has half a batch behind it.

Invariants: nothing runs unless the whole array is readable and writable (EFAULT
first, no side effect); the array is read once, before the first record runs, so a
record cannot change a later one; ``user_data`` is never read; a record that did
not run is not written. When the caller's process ends during a record (a kill from
another thread), the batch ends there and nothing is copied out.

Locking: as for single calls (table.py); BATCH holds no lock while records run and
takes ``mem_lock`` only for its two copies.
"""

from __future__ import annotations

import struct
from time import perf_counter
from typing import Final

from copra.abi.spec import (
    BATCH_MAX,
    BATCH_RECORD,
    ERROR_THRESHOLD,
    BatchFlag,
    Errno,
    Sys,
)
from copra.hw.kvm import KvmRegs
from copra.kernel.errors import SyscallError, ThreadEnded, WouldBlock
from copra.kernel.syscalls.table import Call, Status, SyscallSpec, table
from copra.kernel.usermem import UserPtr, check_buffer, copy_in, copy_out

_RECORD: Final = struct.Struct("<6QQq")  # number, args[5], user_data, result
assert _RECORD.size == BATCH_RECORD.size
_RESULT_OFFSET: Final = 56
_U64: Final = (1 << 64) - 1
_ALL_FLAGS: Final = int(BatchFlag.STOP_ON_ERROR)

#: Refused inside a batch (EINVAL in the record): they wait, or end the caller.
REFUSED_IN_BATCH: Final = frozenset(int(s) for s in (
    Sys.EXIT, Sys.THREAD_EXIT, Sys.WAIT, Sys.JOIN, Sys.FUTEX_WAIT, Sys.WAIT_MANY,
    Sys.SLEEP, Sys.BATCH, Sys.CHANNEL_CALL, Sys.DEVICE_REPLY))


def sys_batch(c: Call, r: KvmRegs) -> int:
    p = c.process
    addr, count, flags = r.rdi, r.rsi, r.r8
    if flags & ~_ALL_FLAGS:
        raise SyscallError(Errno.EINVAL, f"unknown BATCH flag bits {flags & ~_ALL_FLAGS:#x}")
    if not 1 <= count <= BATCH_MAX:
        raise SyscallError(Errno.EINVAL, f"BATCH count {count} outside 1..{BATCH_MAX}")
    size = count * _RECORD.size
    with p.mem_lock:
        check_buffer(p.space, UserPtr(addr), size, write=True, usable=size)
        records = bytearray(copy_in(p.space, UserPtr(addr), size))
    stop_on_error = bool(flags & BatchFlag.STOP_ON_ERROR)
    outer = c.spec
    regs = KvmRegs()
    ran = 0
    try:
        for i in range(count):
            offset = i * _RECORD.size
            number, a0, a1, a2, a3, a4, _user, _result = _RECORD.unpack_from(records, offset)
            result = _run_one(c, regs, number, a0, a1, a2, a3, a4) & _U64
            struct.pack_into("<Q", records, offset + _RESULT_OFFSET, result)
            ran += 1
            if stop_on_error and result >= ERROR_THRESHOLD:
                break
    finally:
        c.spec = outer
    with p.mem_lock:
        copy_out(p.space, UserPtr(addr), memoryview(records)[:ran * _RECORD.size])
    return ran


def _run_one(c: Call, regs: KvmRegs, number: int, a0: int, a1: int, a2: int, a3: int,
             a4: int) -> int:
    """One record's result (rax as a single call would have it). ThreadEnded passes."""
    probe = c.probe
    start = perf_counter() if probe is not None else 0.0
    spec = c.kernel.syscall_spec(number)
    if spec is None:
        result = int(Errno.ENOSYS)
    elif number in REFUSED_IN_BATCH:
        result = int(Errno.EINVAL)
    else:
        regs.rax, regs.rdi, regs.rsi, regs.r8, regs.r9, regs.r10 = number, a0, a1, a2, a3, a4
        c.spec = spec
        thread = c.thread
        try:
            result = spec.handler(c, regs)
        except WouldBlock:
            # Not in a batch: forget what it registered to wait on, answer EAGAIN.
            if thread.waiter is not None:
                thread.waiter.cancel()
                thread.waiter.fired.clear()
            thread.deadline = None
            result = int(Errno.EAGAIN)
            withdraw = thread.withdraw
            if withdraw is not None:  # a RECV's offer to its senders (objects/channel.py)
                thread.withdraw = None
                taken = withdraw()
                if taken is not None:  # a SEND delivered meanwhile: that is the answer
                    result = taken
        except ThreadEnded:
            raise  # the caller's process ends under it: the batch ends here
        except Exception as e:  # SyscallError, MemoryError, a kernel bug: as single calls
            result = c.kernel.error_result(c.process, number, e)
    if probe is not None:
        probe.syscall(number, start, perf_counter(), result & _U64, blocked=False)
    return result


TABLE: dict[int, SyscallSpec] = table([
    SyscallSpec(Sys.BATCH, sys_batch, Status.COPRA),
])
