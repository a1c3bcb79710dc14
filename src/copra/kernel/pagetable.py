"""x86-64 4-level page tables of one address space, kept in the SVSM's physical memory.

Follows Intel SDM Vol. 3A 4.5 (4-level paging, 4 KiB pages only). The upper half
(PML4 slots 256..511) belongs to the kernel: every address space shares the same
kernel PML4 entries, which never carry the U bit, so kernel structures are never
reachable from CPL3. The lower half is the process's; user leaves carry U.

Invariants:
- only 4 KiB leaves; intermediate entries are P|W|U|A (the leaf decides the access);
- every entry is written with its accessed bit set, and a writable leaf with its dirty
  bit too: nothing in copra reads them, and a clear bit costs a fault in KVM's shadow
  MMU at the first access (or first write) of the page, which sets it in the guest's
  entry (~70 µs per new process of `hello`, docs/performance.md);
- a user-half table frame belongs to this address space alone; it comes from the
  ``FrameSource`` given at creation (a process's ``FrameAccount``, which charges it
  to the process's frame limit); ``table_frames`` hands them to the caller, who
  frees them once the VM has invalidated its mappings; kernel-half tables are
  shared and never freed here;
- a leaf entry is 0 unless present (``unmap`` writes 0), so a run of free entries
  is a run of zero bytes (``map_run`` checks it so);
- ``map`` refuses to replace a present leaf (the caller unmaps first), so frames are
  never lost by overwriting;
- ``map`` and ``unmap`` touch only the lower half (below 2**47), never the shared
  kernel tables; user leaves lie below ``spec.USER_END``.

Locking: the owning process's memory lock serialises all calls; nothing here locks.
Translations: adding a mapping needs nothing (the CPU, or KVM's shadow MMU, walks
the tables on the next miss). Removing or changing a present entry, or freeing a
table frame, is not seen by KVM's shadow MMU (the tables are written from the host):
callers invalidate with ``SvsmVm.invalidate_mappings`` before the frames are reused
(kernel/process.py, docs/architecture.md).
"""

from __future__ import annotations

import struct

from copra.abi.spec import PAGE_SIZE, USER_END
from copra.hw.x86 import PTE_A, PTE_ADDR_MASK, PTE_D, PTE_NX, PTE_P, PTE_U, PTE_W, is_canonical
from copra.kernel.frames import FrameOwner, FrameSource

_ENTRY = struct.Struct("<Q")
KERNEL_HALF_FIRST_SLOT = 256
_TABLE_FLAGS = PTE_P | PTE_W | PTE_U | PTE_A
_ZERO_TABLE = bytes(PAGE_SIZE)


def _indices(va: int) -> tuple[int, int, int, int]:
    return (va >> 39) & 0x1FF, (va >> 30) & 0x1FF, (va >> 21) & 0x1FF, (va >> 12) & 0x1FF


class MappingError(Exception):
    """A map/unmap request that contradicts the current page tables or leaves the user half."""


def _check_user_half(va: int) -> None:
    # The upper half's tables are shared by every address space, and a non-canonical
    # address would index them (bit 47 selects PML4 slot 256 and up): neither may be
    # changed through one address space.
    if va < 0 or va >> 47:
        raise MappingError(f"{va:#x} is not in the user half")


class AddressSpace:
    """One PML4 and the user-half tables under it."""

    def __init__(self, frames: FrameSource, kernel_entries: dict[int, int]) -> None:
        self.frames = frames
        self._view = frames.memory.view
        self._base = frames.memory.base
        for slot, entry in kernel_entries.items():
            if slot < KERNEL_HALF_FIRST_SLOT:
                raise ValueError("kernel entries live in the upper half")
            if entry & PTE_U:
                raise ValueError(f"kernel entry {slot} carries the U bit")
        self.pml4 = frames.alloc(FrameOwner.PAGE_TABLE)
        self._tables: list[int] = [self.pml4]
        #: Leaf entries ``lookup`` found present, by page number: every user copy looks
        #: its pages up. Only ``unmap`` and giving the tables up remove entries (``map``
        #: refuses to replace a present one), and they drop them here too.
        self._leaves: dict[int, int] = {}
        #: The page table (level 1) covering each 2 MiB range ``_walk`` has reached, by
        #: ``va >> 21``: user-half tables are never freed while the space lives.
        self._level1: dict[int, int] = {}
        for slot, entry in kernel_entries.items():
            self._set(self.pml4, slot, entry)

    def _get(self, table: int, index: int) -> int:
        return int(_ENTRY.unpack_from(self._view, table - self._base + index * 8)[0])

    def _set(self, table: int, index: int, value: int) -> None:
        _ENTRY.pack_into(self._view, table - self._base + index * 8, value)

    def _walk(self, va: int, create: bool) -> int | None:
        """The physical address of the page table (level 1) covering va."""
        known = self._level1.get(va >> 21)
        if known is not None:
            return known
        table = self.pml4
        for index in _indices(va)[:3]:
            entry = self._get(table, index)
            if not entry & PTE_P:
                if not create:
                    return None
                new = self.frames.alloc(FrameOwner.PAGE_TABLE)
                self._tables.append(new)
                self._set(table, index, new | _TABLE_FLAGS)
                table = new
            else:
                table = entry & PTE_ADDR_MASK
        self._level1[va >> 21] = table
        return table

    def map(self, va: int, pa: int, *, writable: bool, executable: bool, user: bool = True) -> None:
        if va % PAGE_SIZE or pa % PAGE_SIZE:
            raise MappingError(f"unaligned mapping {va:#x} -> {pa:#x}")
        _check_user_half(va)
        if user and va >= USER_END:
            raise MappingError(f"{va:#x} is not a user address")
        table = self._walk(va, create=True)
        assert table is not None
        index = _indices(va)[3]
        if self._get(table, index) & PTE_P:
            raise MappingError(f"{va:#x} is already mapped")
        entry = pa | PTE_P | PTE_A
        if writable:
            entry |= PTE_W | PTE_D
        if user:
            entry |= PTE_U
        if not executable:
            entry |= PTE_NX
        self._set(table, index, entry)

    def map_run(self, va: int, frames: list[int], *, writable: bool, executable: bool,
                mapped: list[int]) -> None:
        """Map ``frames`` at consecutive user pages from ``va``, walking the tables once
        per page table instead of once per page and writing each table's entries in one
        go, appending each address mapped to ``mapped``. It stops at the first page
        table holding a page already mapped or a frame that is not page-aligned
        (MappingError; nothing of that table's part is written), or a table it cannot
        get (the frame source's error); the caller unmaps ``mapped`` to undo."""
        if va % PAGE_SIZE:
            raise MappingError(f"unaligned mapping at {va:#x}")
        flags = PTE_P | PTE_U | PTE_A | (PTE_W | PTE_D if writable else 0) \
            | (0 if executable else PTE_NX)
        view, base = self._view, self._base
        done, total = 0, len(frames)
        while done < total:
            at = va + done * PAGE_SIZE
            _check_user_half(at)
            index = (at >> 12) & 0x1FF
            count = min(512 - index, total - done)
            if at + count * PAGE_SIZE > USER_END:
                raise MappingError(f"{max(at, USER_END):#x} is not a user address")
            table = self._walk(at, create=True)
            assert table is not None
            offset = table - base + index * 8
            if view[offset : offset + count * 8] != _ZERO_TABLE[: count * 8]:
                old = struct.unpack_from(f"<{count}Q", view, offset)
                first = next((i for i, entry in enumerate(old) if entry & PTE_P), None)
                if first is not None:
                    raise MappingError(f"{at + first * PAGE_SIZE:#x} is already mapped")
            chunk = frames[done : done + count]
            if any(pa % PAGE_SIZE for pa in chunk):
                pa = next(pa for pa in chunk if pa % PAGE_SIZE)
                raise MappingError(f"unaligned frame {pa:#x}")
            struct.pack_into(f"<{count}Q", view, offset, *[pa | flags for pa in chunk])
            mapped.extend(range(at, at + count * PAGE_SIZE, PAGE_SIZE))
            done += count

    def unmap(self, va: int, cleared: list[int] | None = None) -> int | None:
        """Remove the leaf for va; returns the frame it mapped, or None. The physical
        address of the entry cleared is appended to ``cleared`` (for
        ``SvsmVm.drop_translations``)."""
        _check_user_half(va)
        table = self._walk(va, create=False)
        if table is None:
            return None
        index = _indices(va)[3]
        entry = self._get(table, index)
        if not entry & PTE_P:
            return None
        self._set(table, index, 0)
        self._leaves.pop(va >> 12, None)
        if cleared is not None:
            cleared.append(table + index * 8)
        return entry & PTE_ADDR_MASK

    def lookup(self, va: int) -> int | None:
        """The leaf entry for va (flags and frame), or None when nothing is mapped.
        (On every user copy's path: the walk is written out, without helpers.)"""
        leaf = self._leaves.get(va >> 12)
        if leaf is not None:
            return leaf
        if not is_canonical(va):
            return None
        view, base, unpack = self._view, self._base, _ENTRY.unpack_from
        entry = unpack(view, self.pml4 - base + ((va >> 36) & 0xFF8))[0]
        if not entry & PTE_P:
            return None
        entry = unpack(view, (entry & PTE_ADDR_MASK) - base + ((va >> 27) & 0xFF8))[0]
        if not entry & PTE_P:
            return None
        entry = unpack(view, (entry & PTE_ADDR_MASK) - base + ((va >> 18) & 0xFF8))[0]
        if not entry & PTE_P:
            return None
        entry = unpack(view, (entry & PTE_ADDR_MASK) - base + ((va >> 9) & 0xFF8))[0]
        if not entry & PTE_P:
            return None
        self._leaves[va >> 12] = entry
        return int(entry)

    def table_frames(self) -> list[int]:
        """Give up every table frame of the user half: the caller frees them once the
        VM no longer translates through them. The space is unusable afterwards."""
        tables, self._tables = self._tables, []
        self._leaves.clear()
        self._level1.clear()
        return tables

    def destroy(self) -> None:
        """Free every table frame of the user half (the leaves' frames are the caller's)."""
        self.frames.free_many(self._tables)
        self._tables.clear()
        self._leaves.clear()
        self._level1.clear()
