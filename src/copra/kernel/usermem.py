"""The one path by which the kernel touches user memory: copy-in and copy-out.

A user pointer is never a bare int in the kernel: handlers receive ``UserPtr``
values from the dispatcher and can only resolve them here, against the calling
process's page tables (Hubris ``USlice``, gVisor ``CopyContext``).

Rules, checked before any byte moves (so a failed copy has no side effects):
- the whole range [addr, addr + length) lies in the user half below
  ``spec.USER_END``; overflow, non-canonical and kernel-half ranges are EFAULT;
- every page of it is mapped with the U bit, and, for copy-out, with W;
  otherwise EFAULT (copra answers EFAULT where upstream answers EINVAL for a
  range outside user space: both are in docs/abi.md);
- strings are read up to a NUL within PATH_MAX bytes (ENAMETOOLONG beyond) and
  must be UTF-8 (EINVAL otherwise).

Locking: the caller holds the process's memory lock for the duration of a copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from copra.abi.spec import PAGE_SIZE, PATH_MAX, USER_END, Errno
from copra.hw.x86 import PTE_ADDR_MASK, PTE_U, PTE_W
from copra.kernel.errors import SyscallError
from copra.kernel.pagetable import AddressSpace


@dataclass(frozen=True, slots=True)
class UserPtr:
    """A claim on user memory at ``addr``; resolvable only by this module."""

    addr: int

    def __add__(self, offset: int) -> UserPtr:
        return UserPtr((self.addr + offset) & ((1 << 64) - 1))


def _pages(space: AddressSpace, ptr: UserPtr, length: int, write: bool) -> list[tuple[int, int]]:
    """(physical address, byte count) runs covering the range, or EFAULT."""
    start = ptr.addr
    if length < 0 or start + length > USER_END or start >= USER_END:
        raise SyscallError(Errno.EFAULT, f"range {start:#x}+{length:#x} is outside user memory")
    runs: list[tuple[int, int]] = []
    va = start
    end = start + length
    need = PTE_U | PTE_W if write else PTE_U
    while va < end:
        entry = space.lookup(va & ~(PAGE_SIZE - 1))
        if entry is None or entry & need != need:
            what = "writable" if write else "mapped"
            raise SyscallError(Errno.EFAULT, f"user address {va:#x} is not {what}")
        chunk = min(end - va, PAGE_SIZE - (va % PAGE_SIZE))
        runs.append(((entry & PTE_ADDR_MASK) + va % PAGE_SIZE, chunk))
        va += chunk
    return runs


def check_buffer(space: AddressSpace, ptr: UserPtr, length: int, *, write: bool,
                 usable: int) -> None:
    """Validate a syscall's buffer argument before the syscall acts.

    The whole of [addr, addr + length) must lie in user space (a length that wraps
    or reaches the kernel half is EFAULT even where only part would be used), and
    its first ``usable`` bytes — what the syscall may transfer — must be mapped
    (writable when ``write``). A call that would transfer nothing (a read at EOF)
    still fails on a bad buffer, so the answer never depends on the file position.
    """
    _pages(space, ptr, 0, write)  # bounds of the start
    if ptr.addr + length > USER_END:
        raise SyscallError(Errno.EFAULT, f"range {ptr.addr:#x}+{length:#x} leaves user memory")
    _pages(space, ptr, min(length, usable), write)


def copy_in(space: AddressSpace, ptr: UserPtr, length: int) -> bytes:
    runs = _pages(space, ptr, length, write=False)
    mem = space.frames.memory
    if len(runs) == 1:
        return mem.read(*runs[0])
    return b"".join(mem.read(pa, n) for pa, n in runs)


def copy_out(space: AddressSpace, ptr: UserPtr, data: bytes | bytearray | memoryview) -> None:
    runs = _pages(space, ptr, len(data), write=True)
    mem = space.frames.memory
    view = memoryview(data)
    done = 0
    for pa, n in runs:
        mem.write(pa, view[done : done + n])
        done += n


def copy_in_str(space: AddressSpace, ptr: UserPtr, limit: int = PATH_MAX) -> str:
    """A NUL-terminated UTF-8 string of at most limit bytes including the NUL."""
    out = bytearray()
    va = ptr.addr
    while len(out) < limit:
        chunk = min(limit - len(out), PAGE_SIZE - (va % PAGE_SIZE))
        data = copy_in(space, UserPtr(va), chunk)
        nul = data.find(0)
        if nul >= 0:
            out += data[:nul]
            try:
                return out.decode("utf-8")
            except UnicodeDecodeError as e:
                raise SyscallError(Errno.EINVAL, "string is not valid UTF-8") from e
        out += data
        va += chunk
    raise SyscallError(Errno.ENAMETOOLONG, f"string longer than {limit - 1} bytes")
