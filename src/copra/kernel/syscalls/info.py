"""Class 3, system information: CAPABILITIES (docs/abi.md).

The handlers' shape and context are in table.py.
"""

from __future__ import annotations

from copra.abi.spec import Capability, Errno, PlatformType, Sys
from copra.hw.kvm import KvmRegs
from copra.kernel.errors import SyscallError
from copra.kernel.syscalls.table import Call, Status, SyscallSpec, table, u32


def sys_capabilities(c: Call, r: KvmRegs) -> int:
    index = u32(r.rdi)
    if index == Capability.COUNT:
        return len(Capability) - 1  # the values after index 0, as upstream counts
    if index == Capability.VM_BITMAP:
        return c.kernel.vm_bitmap()
    if index == Capability.FEATURES:
        return int(PlatformType.COPRA_KVM)
    raise SyscallError(Errno.ENOTFOUND, f"no capability index {index}")


TABLE = table((
    SyscallSpec(Sys.CAPABILITIES, sys_capabilities, Status.UPSTREAM),
))
