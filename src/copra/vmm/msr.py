"""The MSR split of one guest: which MSRs the kernel owns, which user mode claimed.

Follows KVM's user-space MSR exits (KVM_CAP_X86_USER_SPACE_MSR) and MSR filter
(KVM_X86_SET_MSR_FILTER, api.rst 4.97), as the COCONUT developers agreed (minutes
2024-06-26). For each RDMSR or WRMSR a guest makes:

1. a **kernel-owned** MSR (``KERNEL_OWNED``: the x2APIC range 0x800-0x8FF,
   IA32_APIC_BASE 0x1B, IA32_TSC_DEADLINE 0x6E0) is answered by the kernel's x2APIC
   (vmm/x2apic.py) and never reaches user mode; a VMM cannot claim one (EINVAL);
2. an MSR user mode **claimed** for that direction (VM_SET_MSR_FILTER: ranges and
   bitmaps, one policy call replacing the last) comes to the VMM through the run page
   (VcpuExit.MSR_READ / MSR_WRITE), KVM's own handling or not;
3. any other MSR KVM knows, KVM answers itself (the TSC, the SYSENTER MSRs, EFER ...);
4. any other MSR raises #GP in the guest (what KVM alone does for an unknown MSR).

``MsrPolicy`` is the pure part: it validates a policy and turns it into the filter
KVM must apply so that claimed and kernel-owned MSRs exit (a KVM range allows where
its bit is set; the first range that covers an MSR for a direction decides). It
holds no lock: the VM object replaces its policy under its own lock and exits read
the current one (a single reference read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from copra.abi.spec import MSR_FILTER_MAX_RANGES, MSR_RANGE_MAX_MSRS, MsrFilterFlag

MSR_APIC_BASE: Final = 0x1B
MSR_TSC_DEADLINE: Final = 0x6E0
X2APIC_FIRST: Final = 0x800
X2APIC_LAST: Final = 0x8FF
#: (first, last) inclusive ranges the kernel answers.
KERNEL_OWNED: Final = ((MSR_APIC_BASE, MSR_APIC_BASE), (MSR_TSC_DEADLINE, MSR_TSC_DEADLINE),
                       (X2APIC_FIRST, X2APIC_LAST))
#: KVM's limits: 16 ranges, bitmaps of at most 0x600 bytes.
KVM_RANGES: Final = 16
KVM_BITMAP_BITS: Final = 0x600 * 8


def kernel_owned(index: int) -> bool:
    return any(lo <= index <= hi for lo, hi in KERNEL_OWNED)


class PolicyError(ValueError):
    """A VM_SET_MSR_FILTER request that cannot be applied (the message says why)."""


@dataclass(frozen=True)
class ClaimRange:
    flags: MsrFilterFlag
    base: int
    bitmap: bytes  #: bit i (byte i // 8, bit i % 8) claims base + i

    def indices(self) -> list[int]:
        out = []
        for byte_index, byte in enumerate(self.bitmap):
            if byte:
                for bit in range(8):
                    if byte >> bit & 1:
                        out.append(self.base + byte_index * 8 + bit)
        return out


def check_range(flags: int, base: int, count: int) -> None:
    """The fixed fields of one MsrRange (PolicyError if bad)."""
    if not flags or flags & ~int(MsrFilterFlag.READ | MsrFilterFlag.WRITE):
        raise PolicyError(f"range flags {flags:#x}: READ, WRITE or both")
    if not 1 <= count <= MSR_RANGE_MAX_MSRS:
        raise PolicyError(f"range of {count} MSRs: 1 to {MSR_RANGE_MAX_MSRS:#x} allowed")
    if base + count > 1 << 32:
        raise PolicyError(f"range {base:#x}+{count:#x} passes MSR 0xffffffff")


class MsrPolicy:
    """The MSRs user mode claimed, per direction, and the KVM filter they need."""

    def __init__(self, ranges: tuple[ClaimRange, ...] = ()) -> None:
        if len(ranges) > MSR_FILTER_MAX_RANGES:
            raise PolicyError(f"{len(ranges)} ranges: at most {MSR_FILTER_MAX_RANGES}")
        reads: set[int] = set()
        writes: set[int] = set()
        for r in ranges:
            indices = r.indices()
            for index in indices:
                if kernel_owned(index):
                    raise PolicyError(f"MSR {index:#x} is kernel-owned and cannot be claimed")
            if MsrFilterFlag.READ in r.flags:
                reads.update(indices)
            if MsrFilterFlag.WRITE in r.flags:
                writes.update(indices)
        self.reads: frozenset[int] = frozenset(reads)
        self.writes: frozenset[int] = frozenset(writes)
        self.kvm_ranges = self._kvm_filter()

    def claimed(self, index: int, write: bool) -> bool:
        return index in (self.writes if write else self.reads)

    def _kvm_filter(self) -> list[tuple[int, int, bytes]]:
        """(flags, base, bitmap) ranges for KVM_X86_SET_MSR_FILTER: every claimed MSR
        and IA32_APIC_BASE and IA32_TSC_DEADLINE are denied (they exit to copra),
        everything else is allowed. (The x2APIC range needs no filter: without an
        in-kernel APIC KVM hands its MSRs to user space as failed accesses, and the
        filter could not cover them anyway: docs/apic.md.)"""
        fixed = {MSR_APIC_BASE, MSR_TSC_DEADLINE}
        read_deny = sorted(self.reads | fixed)
        write_deny = sorted(self.writes | fixed)
        if read_deny == write_deny:
            out = _windows(read_deny, int(MsrFilterFlag.READ | MsrFilterFlag.WRITE))
        else:
            out = (_windows(read_deny, int(MsrFilterFlag.READ))
                   + _windows(write_deny, int(MsrFilterFlag.WRITE)))
        if len(out) > KVM_RANGES:
            raise PolicyError(f"the claimed MSRs are too scattered for KVM's filter: "
                              f"{len(out)} ranges of at most {KVM_BITMAP_BITS} MSRs, "
                              f"{KVM_RANGES} allowed")
        return out


def _windows(denied: list[int], flags: int) -> list[tuple[int, int, bytes]]:
    """Cover the sorted ``denied`` MSRs with as few bitmaps of at most KVM_BITMAP_BITS
    bits as a greedy pass gives; every other bit of a bitmap allows."""
    out: list[tuple[int, int, bytes]] = []
    i = 0
    while i < len(denied):
        base = denied[i]
        j = i
        while j + 1 < len(denied) and denied[j + 1] < base + KVM_BITMAP_BITS:
            j += 1
        bits = denied[j] - base + 1
        bitmap = bytearray(b"\xff" * ((bits + 7) // 8))
        for index in denied[i:j + 1]:
            offset = index - base
            bitmap[offset // 8] &= ~(1 << (offset % 8)) & 0xFF
        out.append((flags, base, bytes(bitmap)))
        i = j + 1
    return out
