"""A small typed binding over /dev/kvm, in pure Python (fcntl, ctypes, mmap).

Ioctl numbers and structure layouts follow the KVM API documentation
(Documentation/virt/kvm/api.rst, "4. API description") and the x86 uapi headers
(include/uapi/linux/kvm.h, arch/x86/include/uapi/asm/kvm.h). Each constant names the
section it comes from.

What this binding does not do: in-kernel irqchip, dirty logging, nested state. Only
what copra's machine uses is here.

XSAVE state (api.rst 4.42-4.45, 4.134 KVM_GET_XSAVE2) travels as an opaque buffer in
the standard (non-compacted) XSAVE format, whose component offsets follow CPUID leaf
0xD of the host; its size is ``Vcpu.xsave_size``: at least 4096 bytes (struct
kvm_xsave), more when KVM_CAP_XSAVE2 says so (dynamic features such as AMX tile
data, enabled with arch_prctl). KVM_SET_XSAVE reads that many bytes from the buffer
whatever the ioctl number says, so ``set_xsave`` refuses a buffer of another size.

Ownership: a ``Kvm``/``Vm``/``Vcpu`` object owns its file descriptor and closes it in
``close()``. A ``Vcpu`` must be run by one host thread at a time (KVM enforces this
with the vcpu mutex; copra keeps one thread per vCPU). The ``kvm_run`` page is shared
with the kernel module and is only read or written by the thread that runs the vCPU.

Pitfalls handled here (measured on PVM hosts, see docs/architecture.md):
- ``fcntl.ioctl`` passes an int argument as a C int, so arguments above 2**31 go
  through libc ``ioctl`` via ctypes with an unsigned long;
- ``fcntl.ioctl`` copies ``bytes`` arguments into a 1024-byte buffer; structures are
  passed as ``bytearray`` or ctypes objects (by address, no size limit).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Final

# --- ioctl encoding (include/uapi/asm-generic/ioctl.h) -------------------------------

_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
KVMIO: Final = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def _iow(nr: int, size: int) -> int:
    return _ioc(_IOC_WRITE, nr, size)


def _ior(nr: int, size: int) -> int:
    return _ioc(_IOC_READ, nr, size)


def _iowr(nr: int, size: int) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, size)


# --- structures (arch/x86/include/uapi/asm/kvm.h) ------------------------------------


class KvmRegs(ctypes.Structure):
    """struct kvm_regs (api.rst 4.11 KVM_GET_REGS): 18 u64."""

    _fields_ = [
        (n, ctypes.c_uint64)
        for n in (
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
            "rip", "rflags",
        )
    ]  # fmt: skip

    rax: int
    rbx: int
    rcx: int
    rdx: int
    rsi: int
    rdi: int
    rsp: int
    rbp: int
    r8: int
    r9: int
    r10: int
    r11: int
    r12: int
    r13: int
    r14: int
    r15: int
    rip: int
    rflags: int


class KvmSegment(ctypes.Structure):
    """struct kvm_segment: 24 bytes."""

    _fields_ = [
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint32),
        ("selector", ctypes.c_uint16),
        ("type", ctypes.c_uint8),
        ("present", ctypes.c_uint8),
        ("dpl", ctypes.c_uint8),
        ("db", ctypes.c_uint8),
        ("s", ctypes.c_uint8),
        ("l", ctypes.c_uint8),
        ("g", ctypes.c_uint8),
        ("avl", ctypes.c_uint8),
        ("unusable", ctypes.c_uint8),
        ("padding", ctypes.c_uint8),
    ]

    base: int
    limit: int
    selector: int
    type: int
    present: int
    dpl: int
    db: int
    s: int
    l: int  # noqa: E741 - the kernel's field name
    g: int
    avl: int
    unusable: int


class KvmDtable(ctypes.Structure):
    """struct kvm_dtable: 16 bytes."""

    _fields_ = [
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint16),
        ("padding", ctypes.c_uint16 * 3),
    ]

    base: int
    limit: int


class KvmSregs(ctypes.Structure):
    """struct kvm_sregs (api.rst 4.13 KVM_GET_SREGS): 312 bytes."""

    _fields_ = [
        ("cs", KvmSegment),
        ("ds", KvmSegment),
        ("es", KvmSegment),
        ("fs", KvmSegment),
        ("gs", KvmSegment),
        ("ss", KvmSegment),
        ("tr", KvmSegment),
        ("ldt", KvmSegment),
        ("gdt", KvmDtable),
        ("idt", KvmDtable),
        ("cr0", ctypes.c_uint64),
        ("cr2", ctypes.c_uint64),
        ("cr3", ctypes.c_uint64),
        ("cr4", ctypes.c_uint64),
        ("cr8", ctypes.c_uint64),
        ("efer", ctypes.c_uint64),
        ("apic_base", ctypes.c_uint64),
        ("interrupt_bitmap", ctypes.c_uint64 * 4),
    ]

    cs: KvmSegment
    ds: KvmSegment
    es: KvmSegment
    fs: KvmSegment
    gs: KvmSegment
    ss: KvmSegment
    tr: KvmSegment
    ldt: KvmSegment
    gdt: KvmDtable
    idt: KvmDtable
    cr0: int
    cr2: int
    cr3: int
    cr4: int
    cr8: int
    efer: int
    apic_base: int


class KvmFpu(ctypes.Structure):
    """struct kvm_fpu (api.rst 4.22 KVM_GET_FPU): 416 bytes of x87 and SSE state."""

    _fields_ = [
        ("fpr", ctypes.c_uint8 * 128),
        ("fcw", ctypes.c_uint16),
        ("fsw", ctypes.c_uint16),
        ("ftwx", ctypes.c_uint8),
        ("pad1", ctypes.c_uint8),
        ("last_opcode", ctypes.c_uint16),
        ("last_ip", ctypes.c_uint64),
        ("last_dp", ctypes.c_uint64),
        ("xmm", ctypes.c_uint8 * 256),
        ("mxcsr", ctypes.c_uint32),
        ("pad2", ctypes.c_uint32),
    ]

    fcw: int
    mxcsr: int

    @classmethod
    def initial(cls) -> KvmFpu:
        """The state after FNINIT and a reset MXCSR: what a new process starts with."""
        fpu = cls()
        fpu.fcw = 0x037F
        fpu.mxcsr = 0x1F80
        return fpu


class KvmXcr(ctypes.Structure):
    """struct kvm_xcr (api.rst 4.44 KVM_GET_XCRS): 16 bytes."""

    _fields_ = [
        ("xcr", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("value", ctypes.c_uint64),
    ]

    xcr: int
    value: int


KVM_MAX_XCRS: Final = 16


class KvmXcrs(ctypes.Structure):
    """struct kvm_xcrs (api.rst 4.44 KVM_GET_XCRS): 392 bytes."""

    _fields_ = [
        ("nr_xcrs", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("xcrs", KvmXcr * KVM_MAX_XCRS),
        ("padding", ctypes.c_uint64 * 16),
    ]

    nr_xcrs: int
    flags: int
    xcrs: ctypes.Array[KvmXcr]


KVM_XSAVE_SIZE: Final = 4096  # struct kvm_xsave: __u32 region[1024]


class KvmUserspaceMemoryRegion(ctypes.Structure):
    """struct kvm_userspace_memory_region (api.rst 4.35): 32 bytes."""

    _fields_ = [
        ("slot", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("guest_phys_addr", ctypes.c_uint64),
        ("memory_size", ctypes.c_uint64),
        ("userspace_addr", ctypes.c_uint64),
    ]


class KvmEnableCap(ctypes.Structure):
    """struct kvm_enable_cap (api.rst 4.37): 104 bytes."""

    _fields_ = [
        ("cap", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("args", ctypes.c_uint64 * 4),
        ("pad", ctypes.c_uint8 * 64),
    ]


class KvmCpuidEntry2(ctypes.Structure):
    """struct kvm_cpuid_entry2 (api.rst 4.46): 40 bytes."""

    _fields_ = [
        ("function", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("eax", ctypes.c_uint32),
        ("ebx", ctypes.c_uint32),
        ("ecx", ctypes.c_uint32),
        ("edx", ctypes.c_uint32),
        ("padding", ctypes.c_uint32 * 3),
    ]

    function: int
    index: int
    flags: int
    eax: int
    ebx: int
    ecx: int
    edx: int


CPUID_MAX_ENTRIES: Final = 256


class KvmCpuid2(ctypes.Structure):
    """struct kvm_cpuid2 with room for CPUID_MAX_ENTRIES entries."""

    _fields_ = [
        ("nent", ctypes.c_uint32),
        ("padding", ctypes.c_uint32),
        ("entries", KvmCpuidEntry2 * CPUID_MAX_ENTRIES),
    ]

    nent: int
    entries: ctypes.Array[KvmCpuidEntry2]

    def find(self, function: int, index: int = 0) -> KvmCpuidEntry2 | None:
        """The entry for leaf ``function`` (sub-leaf ``index``), None if absent."""
        for i in range(self.nent):
            entry = self.entries[i]
            if entry.function == function and entry.index == index:
                return entry
        return None


# kvm_run: the exit-reason union is 256 bytes at offset 32; sync regs follow it.
class KvmRunIo(ctypes.Structure):
    _fields_ = [
        ("direction", ctypes.c_uint8),
        ("size", ctypes.c_uint8),
        ("port", ctypes.c_uint16),
        ("count", ctypes.c_uint32),
        ("data_offset", ctypes.c_uint64),
    ]


class KvmRunMmio(ctypes.Structure):
    _fields_ = [
        ("phys_addr", ctypes.c_uint64),
        ("data", ctypes.c_uint8 * 8),
        ("len", ctypes.c_uint32),
        ("is_write", ctypes.c_uint8),
    ]


class KvmRunInternal(ctypes.Structure):
    _fields_ = [
        ("suberror", ctypes.c_uint32),
        ("ndata", ctypes.c_uint32),
        ("data", ctypes.c_uint64 * 16),
    ]


class KvmRunMsr(ctypes.Structure):
    _fields_ = [
        ("error", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 7),
        ("reason", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("data", ctypes.c_uint64),
    ]


class KvmRunExit(ctypes.Union):
    _fields_ = [
        ("io", KvmRunIo),
        ("mmio", KvmRunMmio),
        ("internal", KvmRunInternal),
        ("msr", KvmRunMsr),
        ("hw_reason", ctypes.c_uint64),
        ("padding", ctypes.c_uint8 * 256),
    ]


class KvmVcpuEvents(ctypes.Structure):
    """struct kvm_vcpu_events (api.rst 4.31): 64 bytes, kept opaque."""

    _fields_ = [("raw", ctypes.c_uint8 * 64)]


class KvmSyncRegs(ctypes.Structure):
    """struct kvm_sync_regs (x86): regs, sregs, events."""

    _fields_ = [("regs", KvmRegs), ("sregs", KvmSregs), ("events", KvmVcpuEvents)]

    regs: KvmRegs
    sregs: KvmSregs


class KvmRun(ctypes.Structure):
    """struct kvm_run (api.rst 5. The kvm_run structure), x86 layout."""

    _fields_ = [
        ("request_interrupt_window", ctypes.c_uint8),
        ("immediate_exit", ctypes.c_uint8),
        ("padding1", ctypes.c_uint8 * 6),
        ("exit_reason", ctypes.c_uint32),
        ("ready_for_interrupt_injection", ctypes.c_uint8),
        ("if_flag", ctypes.c_uint8),
        ("flags", ctypes.c_uint16),
        ("cr8", ctypes.c_uint64),
        ("apic_base", ctypes.c_uint64),
        ("exit", KvmRunExit),
        ("kvm_valid_regs", ctypes.c_uint64),
        ("kvm_dirty_regs", ctypes.c_uint64),
        ("s", KvmSyncRegs),
    ]

    request_interrupt_window: int
    immediate_exit: int
    exit_reason: int
    ready_for_interrupt_injection: int
    if_flag: int
    exit: KvmRunExit
    kvm_valid_regs: int
    kvm_dirty_regs: int
    s: KvmSyncRegs


assert ctypes.sizeof(KvmRegs) == 144
assert ctypes.sizeof(KvmFpu) == 416
assert ctypes.sizeof(KvmSregs) == 312
assert ctypes.sizeof(KvmXcrs) == 392
assert KvmRun.s.offset == 304

# --- ioctl numbers (api.rst section 4, per ioctl) ------------------------------------

KVM_GET_API_VERSION: Final = _io(0x00)  # 4.1
KVM_CREATE_VM: Final = _io(0x01)  # 4.2
KVM_CHECK_EXTENSION: Final = _io(0x03)  # 4.4
KVM_GET_VCPU_MMAP_SIZE: Final = _io(0x04)  # 4.5
KVM_GET_SUPPORTED_CPUID: Final = _iowr(0x05, 8)  # 4.46
KVM_CREATE_VCPU: Final = _io(0x41)  # 4.7
KVM_SET_USER_MEMORY_REGION: Final = _iow(0x46, ctypes.sizeof(KvmUserspaceMemoryRegion))  # 4.35
KVM_SET_TSS_ADDR: Final = _io(0x47)  # 4.40
KVM_SET_IDENTITY_MAP_ADDR: Final = _iow(0x48, 8)  # 4.58
KVM_RUN: Final = _io(0x80)  # 4.10
KVM_GET_REGS: Final = _ior(0x81, ctypes.sizeof(KvmRegs))  # 4.11
KVM_SET_REGS: Final = _iow(0x82, ctypes.sizeof(KvmRegs))  # 4.12
KVM_INTERRUPT: Final = _iow(0x86, 4)  # 4.16 (struct kvm_interrupt: __u32 irq)
KVM_GET_SREGS: Final = _ior(0x83, ctypes.sizeof(KvmSregs))  # 4.13
KVM_SET_SREGS: Final = _iow(0x84, ctypes.sizeof(KvmSregs))  # 4.14
KVM_GET_FPU: Final = _ior(0x8C, ctypes.sizeof(KvmFpu))  # 4.22
KVM_SET_FPU: Final = _iow(0x8D, ctypes.sizeof(KvmFpu))  # 4.23
KVM_SET_CPUID2: Final = _iow(0x90, 8)  # 4.20
KVM_ENABLE_CAP: Final = _iow(0xA3, ctypes.sizeof(KvmEnableCap))  # 4.37
KVM_SET_MSRS: Final = _iow(0x89, 8)  # 4.19 (struct kvm_msrs header)
KVM_GET_XSAVE: Final = _ior(0xA4, KVM_XSAVE_SIZE)  # 4.42
KVM_SET_XSAVE: Final = _iow(0xA5, KVM_XSAVE_SIZE)  # 4.43
KVM_GET_XCRS: Final = _ior(0xA6, ctypes.sizeof(KvmXcrs))  # 4.44
KVM_SET_XCRS: Final = _iow(0xA7, ctypes.sizeof(KvmXcrs))  # 4.45
KVM_GET_XSAVE2: Final = _ior(0xCF, KVM_XSAVE_SIZE)  # 4.134
KVM_X86_SET_MSR_FILTER: Final = _iow(0xC6, 392)  # 4.97 (struct kvm_msr_filter)
KVM_GET_STATS_FD: Final = _io(0xCE)  # 4.133

KVM_API_VERSION: Final = 12

# Capabilities (include/uapi/linux/kvm.h).
KVM_CAP_USER_MEMORY: Final = 3
KVM_CAP_SET_TSS_ADDR: Final = 4
KVM_CAP_XSAVE: Final = 55
KVM_CAP_XCRS: Final = 56
KVM_CAP_SYNC_REGS: Final = 74
KVM_CAP_IMMEDIATE_EXIT: Final = 136
KVM_CAP_X86_USER_SPACE_MSR: Final = 188
KVM_CAP_X86_MSR_FILTER: Final = 189
KVM_CAP_SPLIT_IRQCHIP: Final = 121
KVM_CAP_X2APIC_API: Final = 129
KVM_CAP_READONLY_MEM: Final = 81
KVM_CAP_NR_MEMSLOTS: Final = 10
#: KVM_CAP_X86_USER_SPACE_MSR argument bits: which failed MSR accesses exit to user
#: space (api.rst 7.21); also kvm_run.msr.reason.
KVM_MSR_EXIT_REASON_INVAL: Final = 1 << 0
KVM_MSR_EXIT_REASON_UNKNOWN: Final = 1 << 1
KVM_MSR_EXIT_REASON_FILTER: Final = 1 << 2
KVM_CAP_DISABLE_QUIRKS2: Final = 213
#: KVM_CAP_DISABLE_QUIRKS2 bit: without it KVM rewrites a guest's VMCALL/VMMCALL in
#: guest memory into the host vendor's instruction (api.rst 7.31).
KVM_X86_QUIRK_FIX_HYPERCALL_INSN: Final = 1 << 5
KVM_CAP_XSAVE2: Final = 208
KVM_CAP_BINARY_STATS_FD: Final = 203

# kvm_valid_regs / kvm_dirty_regs bits (arch/x86/include/uapi/asm/kvm.h).
KVM_SYNC_X86_REGS: Final = 1 << 0
KVM_SYNC_X86_SREGS: Final = 1 << 1
KVM_SYNC_X86_EVENTS: Final = 1 << 2


class ExitReason:
    """KVM_EXIT_* (include/uapi/linux/kvm.h)."""

    UNKNOWN: Final = 0
    EXCEPTION: Final = 1
    IO: Final = 2
    HYPERCALL: Final = 3
    DEBUG: Final = 4
    HLT: Final = 5
    MMIO: Final = 6
    IRQ_WINDOW_OPEN: Final = 7
    SHUTDOWN: Final = 8
    FAIL_ENTRY: Final = 9
    INTR: Final = 10
    INTERNAL_ERROR: Final = 17
    X86_RDMSR: Final = 29
    X86_WRMSR: Final = 30


KVM_EXIT_IO_IN: Final = 0
KVM_EXIT_IO_OUT: Final = 1
#: kvm_run.internal.suberror of KVM_EXIT_INTERNAL_ERROR: the instruction emulator
#: could not run an instruction (include/uapi/linux/kvm.h).
KVM_INTERNAL_ERROR_EMULATION: Final = 1


#: struct kvm_msr_filter (api.rst 4.97): at most this many ranges; a range's bitmap
#: holds at most KVM_MSR_FILTER_MAX_BITMAP_SIZE bytes; range flags READ and WRITE.
KVM_MSR_FILTER_MAX_RANGES: Final = 16
KVM_MSR_FILTER_MAX_BITMAP_SIZE: Final = 0x600
KVM_MSR_FILTER_READ: Final = 1 << 0
KVM_MSR_FILTER_WRITE: Final = 1 << 1


class KvmMsrFilterRange(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("nmsrs", ctypes.c_uint32),
        ("base", ctypes.c_uint32),
        ("bitmap", ctypes.c_void_p),
    ]


class KvmMsrFilter(ctypes.Structure):
    """struct kvm_msr_filter: flags (0: default allow), 16 ranges (a bit set allows)."""

    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("ranges", KvmMsrFilterRange * KVM_MSR_FILTER_MAX_RANGES),
    ]


assert ctypes.sizeof(KvmMsrFilter) == 392


class KvmError(Exception):
    """/dev/kvm is missing, unusable, or an ioctl failed."""


_libc = ctypes.CDLL(None, use_errno=True)
_libc_ioctl = _libc.ioctl
_libc_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]
_libc_ioctl.restype = ctypes.c_int


def _ioctl_ulong(fd: int, request: int, arg: int) -> int:
    """ioctl with an unsigned long argument (fcntl.ioctl truncates to a C int)."""
    ret = int(_libc_ioctl(fd, request, arg))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _ioctl_struct(fd: int, request: int, obj: ctypes.Structure) -> int:
    return _ioctl_ulong(fd, request, ctypes.addressof(obj))


_STATS_HEADER = struct.Struct("<6I")  # struct kvm_stats_header (api.rst 4.133)
_STATS_DESC = struct.Struct("<IhHII")  # struct kvm_stats_desc, before its name


def read_stats(fd: int) -> dict[str, int]:
    """KVM's binary statistics of a VM or vCPU file descriptor (api.rst 4.133
    KVM_GET_STATS_FD): each counter's name and value; a statistic of several buckets
    (a histogram) is given as the sum of its buckets. KvmError where KVM has no stats
    file descriptor (before Linux 5.14)."""
    try:
        stats_fd = fcntl.ioctl(fd, KVM_GET_STATS_FD)
    except OSError as e:
        raise KvmError(f"KVM_GET_STATS_FD: {e.strerror}") from e
    try:
        _flags, name_size, count, _id_at, descs_at, data_at = _STATS_HEADER.unpack(
            os.pread(stats_fd, _STATS_HEADER.size, 0))
        size = _STATS_DESC.size + name_size
        raw = os.pread(stats_fd, size * count, descs_at)
        descs = []
        for at in range(0, size * count, size):
            _kind, _exponent, values, offset, _bucket = _STATS_DESC.unpack_from(raw, at)
            name = raw[at + _STATS_DESC.size : at + size].split(b"\0", 1)[0].decode()
            descs.append((name, values, offset))
        end = max((offset + 8 * values for _, values, offset in descs), default=0)
        data = os.pread(stats_fd, end, data_at)
        return {name: sum(struct.unpack_from(f"<{values}Q", data, offset))
                for name, values, offset in descs}
    finally:
        os.close(stats_fd)


def kvm_unavailable_reason(path: str = "/dev/kvm") -> str | None:
    """Why KVM cannot be used here, in one line, or None if it can."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"{path} does not exist (no KVM on this machine)"
    except PermissionError:
        return f"{path} is not accessible to this user (add yourself to the kvm group)"
    except OSError as e:
        return f"{path} cannot be opened: {e.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        if version != KVM_API_VERSION:
            return f"{path} speaks KVM API version {version}, copra needs {KVM_API_VERSION}"
        if fcntl.ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) <= 0:
            return f"{path} lacks KVM_CAP_USER_MEMORY"
    except OSError as e:
        return f"{path} does not answer KVM ioctls: {e.strerror}"
    finally:
        os.close(fd)
    return None


class Kvm:
    """The /dev/kvm system handle."""

    def __init__(self, path: str = "/dev/kvm") -> None:
        reason = kvm_unavailable_reason(path)
        if reason is not None:
            raise KvmError(reason)
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self.vcpu_mmap_size = fcntl.ioctl(self.fd, KVM_GET_VCPU_MMAP_SIZE)

    def check_extension(self, cap: int) -> int:
        return fcntl.ioctl(self.fd, KVM_CHECK_EXTENSION, cap)

    def supported_cpuid(self) -> KvmCpuid2:
        cpuid = KvmCpuid2()
        cpuid.nent = CPUID_MAX_ENTRIES
        _ioctl_struct(self.fd, KVM_GET_SUPPORTED_CPUID, cpuid)
        return cpuid

    def create_vm(self) -> Vm:
        return Vm(self, fcntl.ioctl(self.fd, KVM_CREATE_VM, 0))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(eq=False)
class MemorySlot:
    slot: int
    guest_phys_addr: int
    memory: mmap.mmap
    owned: bool = True  #: the VM created the memory and unmaps it at close


class Vm:
    """A KVM virtual machine (api.rst 4.2)."""

    def __init__(self, kvm: Kvm, fd: int) -> None:
        self.kvm = kvm
        self.fd = fd
        self.slots: list[MemorySlot] = []
        self.vcpus: list[Vcpu] = []

    def check_extension(self, cap: int) -> int:
        return fcntl.ioctl(self.fd, KVM_CHECK_EXTENSION, cap)

    def add_memory(self, guest_phys_addr: int, size: int) -> mmap.mmap:
        """Back [guest_phys_addr, +size) with fresh anonymous host memory."""
        mem = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        # Transparent huge pages where the host offers them (THP "madvise" mode): the
        # first touch of fresh guest memory then faults 2 MiB at a time instead of
        # 4 KiB (a new process's frames, docs/performance.md "Process life cycle").
        with contextlib.suppress(AttributeError, OSError):
            mem.madvise(mmap.MADV_HUGEPAGE)
        buf = (ctypes.c_char * size).from_buffer(mem)
        region = KvmUserspaceMemoryRegion(
            slot=len(self.slots),
            flags=0,
            guest_phys_addr=guest_phys_addr,
            memory_size=size,
            userspace_addr=ctypes.addressof(buf),
        )
        del buf  # the address stays valid for the life of the mmap
        _ioctl_struct(self.fd, KVM_SET_USER_MEMORY_REGION, region)
        self.slots.append(MemorySlot(region.slot, guest_phys_addr, mem))
        return mem

    def share_memory(self, guest_phys_addr: int, memory: mmap.mmap) -> MemorySlot:
        """Back [guest_phys_addr, +len(memory)) with ``memory``, host memory another
        VM's slot may also use (one host mapping seen by two VMs: no copy). The slot
        takes the lowest free number; ``close`` leaves ``memory`` to its owner."""
        used = {s.slot for s in self.slots}
        number = next(n for n in itertools.count() if n not in used)
        buf = (ctypes.c_char * len(memory)).from_buffer(memory)
        region = KvmUserspaceMemoryRegion(slot=number, flags=0, guest_phys_addr=guest_phys_addr,
                                          memory_size=len(memory),
                                          userspace_addr=ctypes.addressof(buf))
        del buf
        _ioctl_struct(self.fd, KVM_SET_USER_MEMORY_REGION, region)
        slot = MemorySlot(number, guest_phys_addr, memory, owned=False)
        self.slots.append(slot)
        return slot

    def remove_memory(self, slot: MemorySlot) -> None:
        """Delete a slot ``share_memory`` added (its memory stays its owner's)."""
        region = KvmUserspaceMemoryRegion(slot=slot.slot, flags=0,
                                          guest_phys_addr=slot.guest_phys_addr,
                                          memory_size=0, userspace_addr=0)
        _ioctl_struct(self.fd, KVM_SET_USER_MEMORY_REGION, region)
        self.slots.remove(slot)

    def set_msr_filter(self, ranges: list[tuple[int, int, bytes]]) -> None:
        """KVM_X86_SET_MSR_FILTER (api.rst 4.97), default allow: each (flags, base,
        bitmap) range covers len(bitmap) * 8 MSRs from ``base``; a clear bit denies the
        access (with KVM_MSR_EXIT_REASON_FILTER enabled it exits to user space)."""
        if len(ranges) > KVM_MSR_FILTER_MAX_RANGES:
            raise ValueError(f"{len(ranges)} MSR filter ranges, at most "
                             f"{KVM_MSR_FILTER_MAX_RANGES}")
        request = KvmMsrFilter(flags=0)
        keep = []
        for i, (flags, base, bitmap) in enumerate(ranges):
            if not 0 < len(bitmap) <= KVM_MSR_FILTER_MAX_BITMAP_SIZE:
                raise ValueError(f"MSR filter bitmap of {len(bitmap)} bytes")
            buf = ctypes.create_string_buffer(bytes(bitmap), len(bitmap))
            keep.append(buf)
            request.ranges[i].flags = flags
            request.ranges[i].base = base
            request.ranges[i].nmsrs = len(bitmap) * 8
            request.ranges[i].bitmap = ctypes.addressof(buf)
        _ioctl_struct(self.fd, KVM_X86_SET_MSR_FILTER, request)
        del keep

    def remap_memory(self, index: int) -> None:
        """Delete and re-add memory slot ``index`` (same memory): KVM drops every
        mapping it derived from the slot (shadow pages, TLBs)."""
        slot = self.slots[index]
        buf = (ctypes.c_char * len(slot.memory)).from_buffer(slot.memory)
        region = KvmUserspaceMemoryRegion(slot=slot.slot, flags=0,
                                          guest_phys_addr=slot.guest_phys_addr,
                                          memory_size=0, userspace_addr=ctypes.addressof(buf))
        _ioctl_struct(self.fd, KVM_SET_USER_MEMORY_REGION, region)
        region.memory_size = len(slot.memory)
        _ioctl_struct(self.fd, KVM_SET_USER_MEMORY_REGION, region)
        del buf

    def enable_cap(self, cap: int, *args: int) -> None:
        """KVM_ENABLE_CAP on the VM (api.rst 4.37) with up to four u64 arguments."""
        request = KvmEnableCap(cap=cap)
        for i, value in enumerate(args):
            request.args[i] = value
        _ioctl_struct(self.fd, KVM_ENABLE_CAP, request)

    def set_tss_addr(self, addr: int) -> None:
        _ioctl_ulong(self.fd, KVM_SET_TSS_ADDR, addr)

    def create_vcpu(self) -> Vcpu:
        index = len(self.vcpus)
        vcpu = Vcpu(self, fcntl.ioctl(self.fd, KVM_CREATE_VCPU, index), index)
        self.vcpus.append(vcpu)
        return vcpu

    def close(self) -> None:
        for vcpu in self.vcpus:
            vcpu.close()
        self.vcpus.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        # Guest memory is unmapped after the VM fd is gone: KVM no longer refers to it.
        for slot in self.slots:
            if not slot.owned:
                continue
            with contextlib.suppress(BufferError):  # a view still exported: dies with it
                slot.memory.close()
        self.slots.clear()


class Vcpu:
    """A virtual CPU (api.rst 4.7) with its mmapped kvm_run page.

    With KVM_CAP_SYNC_REGS the general and segment registers travel in the kvm_run
    page: ``run.s.regs``/``run.s.sregs`` are valid after every exit, and setting the
    matching bit in ``run.kvm_dirty_regs`` makes KVM load them on the next KVM_RUN,
    so an exit round trip needs no GET/SET_REGS ioctls.

    XSAVE buffers come from ``new_xsave`` (``xsave_size`` bytes, see the module
    docstring); ``get_xsave`` uses KVM_GET_XSAVE2 where KVM has it, which copies
    the whole buffer, else KVM_GET_XSAVE (exactly 4096 bytes).
    """

    def __init__(self, vm: Vm, fd: int, index: int) -> None:
        self.vm = vm
        self.fd = fd
        self.index = index
        self._map = mmap.mmap(fd, vm.kvm.vcpu_mmap_size, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
        self.run_page = KvmRun.from_buffer(self._map)
        sync = vm.check_extension(KVM_CAP_SYNC_REGS)
        self.sync_regs = bool(sync & KVM_SYNC_X86_REGS)
        #: KVM publishes (and takes back, when dirty) struct kvm_vcpu_events in kvm_run.
        self.sync_events = bool(sync & KVM_SYNC_X86_EVENTS)
        self._run_request = KVM_RUN
        xsave2 = vm.check_extension(KVM_CAP_XSAVE2)
        self.xsave_size = max(xsave2, KVM_XSAVE_SIZE)
        self._get_xsave_request = KVM_GET_XSAVE2 if xsave2 > 0 else KVM_GET_XSAVE

    def run(self) -> int:
        """Enter the guest until the next exit; returns the exit reason.

        Raises InterruptedError when a signal arrives (the caller's timer uses this).
        """
        fcntl.ioctl(self.fd, self._run_request, 0)
        return int(self.run_page.exit_reason)

    @property
    def run_area(self) -> mmap.mmap:
        """The whole mmapped kvm_run area: port I/O data lives at
        ``run_page.exit.io.data_offset`` in it (api.rst 5, KVM_EXIT_IO)."""
        return self._map

    def interrupt(self, vector: int) -> None:
        """KVM_INTERRUPT (api.rst 4.16): queue external interrupt ``vector``; only
        without an in-kernel irqchip, and only when ``run_page.ready_for_interrupt_injection``
        says the guest can take it."""
        if not 0 <= vector <= 0xFF:
            raise ValueError(f"interrupt vector {vector} is not 0-255")
        irq = ctypes.c_uint32(vector)
        _ioctl_ulong(self.fd, KVM_INTERRUPT, ctypes.addressof(irq))

    def get_regs(self) -> KvmRegs:
        regs = KvmRegs()
        _ioctl_struct(self.fd, KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: KvmRegs) -> None:
        _ioctl_struct(self.fd, KVM_SET_REGS, regs)

    def get_sregs(self) -> KvmSregs:
        sregs = KvmSregs()
        _ioctl_struct(self.fd, KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: KvmSregs) -> None:
        _ioctl_struct(self.fd, KVM_SET_SREGS, sregs)

    def get_fpu(self, fpu: KvmFpu) -> None:
        _ioctl_struct(self.fd, KVM_GET_FPU, fpu)

    def set_fpu(self, fpu: KvmFpu) -> None:
        _ioctl_struct(self.fd, KVM_SET_FPU, fpu)

    def new_xsave(self) -> ctypes.Array[ctypes.c_uint8]:
        """A zeroed buffer of ``xsave_size`` bytes for get_xsave/set_xsave."""
        return (ctypes.c_uint8 * self.xsave_size)()

    def get_xsave(self, area: ctypes.Array[ctypes.c_uint8]) -> None:
        """Copy the vCPU's XSAVE state into ``area`` (standard format)."""
        if ctypes.sizeof(area) != self.xsave_size:
            raise ValueError(f"XSAVE buffer of {ctypes.sizeof(area)} bytes, "
                             f"this vCPU's is {self.xsave_size}")
        _ioctl_ulong(self.fd, self._get_xsave_request, ctypes.addressof(area))

    def set_xsave(self, area: ctypes.Array[ctypes.c_uint8]) -> None:
        """Load the vCPU's XSAVE state from ``area``.

        KVM initialises every user component whose XSTATE_BV bit is clear, including
        components outside KVM's own set (on PVM hosts: AMX tile configuration). It
        rejects (EINVAL) a header with bits KVM does not support or reserved bits set.
        """
        if ctypes.sizeof(area) != self.xsave_size:
            raise ValueError(f"XSAVE buffer of {ctypes.sizeof(area)} bytes, "
                             f"this vCPU's is {self.xsave_size}")
        _ioctl_ulong(self.fd, KVM_SET_XSAVE, ctypes.addressof(area))

    def get_xcrs(self) -> KvmXcrs:
        xcrs = KvmXcrs()
        _ioctl_struct(self.fd, KVM_GET_XCRS, xcrs)
        return xcrs

    def set_xcrs(self, xcrs: KvmXcrs) -> None:
        _ioctl_struct(self.fd, KVM_SET_XCRS, xcrs)

    def get_xcr0(self) -> int:
        xcrs = self.get_xcrs()
        for i in range(min(xcrs.nr_xcrs, KVM_MAX_XCRS)):
            if xcrs.xcrs[i].xcr == 0:
                return int(xcrs.xcrs[i].value)
        raise KvmError("KVM_GET_XCRS reported no XCR0")

    def set_xcr0(self, value: int) -> None:
        """Set the guest's XCR0 (EINVAL if KVM finds it inconsistent with the CPUID)."""
        xcrs = KvmXcrs()
        xcrs.nr_xcrs = 1
        xcrs.xcrs[0].xcr = 0
        xcrs.xcrs[0].value = value
        self.set_xcrs(xcrs)

    def set_cpuid(self, cpuid: KvmCpuid2) -> None:
        _ioctl_struct(self.fd, KVM_SET_CPUID2, cpuid)

    def set_msrs(self, values: dict[int, int]) -> None:
        """KVM_SET_MSRS (api.rst 4.19): every MSR of ``values`` or KvmError."""
        buf = bytearray(8 + 16 * len(values))
        struct.pack_into("<I", buf, 0, len(values))
        for i, (index, data) in enumerate(values.items()):
            struct.pack_into("<IIQ", buf, 8 + 16 * i, index, 0, data)
        done = fcntl.ioctl(self.fd, KVM_SET_MSRS, buf)
        if done != len(values):
            raise KvmError(f"KVM_SET_MSRS set {done} of {len(values)} MSRs")

    def enable_sync_regs(self, events: bool = False) -> None:
        """Ask KVM to publish regs and sregs in kvm_run after every exit, and the vCPU's
        events too with ``events`` where KVM offers it (``sync_events``)."""
        if not self.sync_regs:
            raise KvmError("KVM_CAP_SYNC_REGS is not available")
        self.run_page.kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | (
            KVM_SYNC_X86_EVENTS if events and self.sync_events else 0)

    def stats(self) -> dict[str, int]:
        """This vCPU's counters as KVM keeps them (``read_stats``): exits by kind,
        page faults the MMU took (``pf_taken``), instructions emulated, ..."""
        return read_stats(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            del self.run_page
            with contextlib.suppress(BufferError):
                self._map.close()
            os.close(self.fd)
            self.fd = -1


def errno_name(err: int) -> str:
    return errno.errorcode.get(err, str(err))
