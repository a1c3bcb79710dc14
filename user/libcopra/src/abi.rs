//! The copra ABI: syscall numbers, errors, flags, limits and shared structures.
//!
//! generated from src/copra/abi/spec.py by copra.abi.gen; do not edit
//!
//! Every name is spelled as in the spec, so `Errno::EINVAL` here is `Errno.EINVAL`
//! there and `COPRA_ERRNO_EINVAL` in `include/copra/abi.h`.

#![allow(non_camel_case_types, clippy::upper_case_acronyms, dead_code)]

/// A syscall number: class in bits 63:32, index in bits 31:0 (upstream's scheme).
pub const fn sysno(class: u32, index: u32) -> u64 {
    ((class as u64) << 32) | index as u64
}

/// Status codes returned (negated, sign-extended to 64 bits) in rax.
///
/// The first twelve are upstream's values. copra produces each one for a specific,
/// documented condition; docs/abi.md lists them per syscall.
#[repr(i64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Errno {
    /// an argument is malformed: unknown flag bits, bad mode, non-UTF-8 path
    EINVAL = -1,
    /// the syscall number is not implemented (upstream answers EINVAL)
    ENOSYS = -2,
    /// out of physical frames or address space
    ENOMEM = -3,
    /// the handle lacks the right the operation needs
    EPERM = -4,
    /// a user pointer range is unmapped, kernel-half, non-canonical or read-only
    EFAULT = -5,
    /// the object is exclusive and already held (DUPLICATE of a VM or VCPU); SEND of an endpoint whose queue carries an endpoint (it could close a cycle)
    EBUSY = -6,
    /// no such file, directory, handle or capability index
    ENOTFOUND = -7,
    /// the handle's object kind does not support the operation
    ENOTSUPP = -8,
    /// create or mkdir of a name that exists
    EEXIST = -9,
    /// write or truncate through a handle opened without WRITE
    ERDONLY = -10,
    /// read through a handle opened without READ
    EWRONLY = -11,
    /// rmdir of a directory that still has entries
    ENOTEMPTY = -12,
    /// a file operation (unlink, open) named a directory
    EISDIR = -13,
    /// a directory operation (rmdir, opendir) named a file, or a path walks through a file
    ENOTDIR = -14,
    /// the process has reached its limit of open handles
    EMFILE = -15,
    /// EXEC found the file but it is not a loadable ELF64 x86-64 ET_EXEC image
    ENOEXEC = -16,
    /// a path is longer than PATH_MAX or a name longer than NAME_MAX
    ENAMETOOLONG = -17,
    /// EXEC: a limit on tasks (system-wide) or on the caller's running or unreaped children is reached; try again once a task has ended or been reaped (WAIT); THREAD_CREATE: the process holds its limit of threads; FUTEX_WAIT: the word no longer holds the expected value; SEND (RECV) without BLOCK: the queue is full (empty)
    EAGAIN = -18,
    /// a wait's timeout passed first (FUTEX_WAIT)
    ETIMEDOUT = -19,
    /// a WRITE to an event would carry its counter past EVENT_MAX
    EOVERFLOW = -20,
    /// RECV: the buffer or the handle array is too small for the next message, which stays queued; the ChannelMessage's sizes say what it needs
    EMSGSIZE = -21,
    /// SEND or RECV on a channel endpoint whose peer is closed (RECV: and empty)
    EPIPE = -22,
    /// VCPU_RUN was kicked out before the guest needed user mode: its timeout passed, another thread closed the VCPU or its VM, the process is ending; call it again
    EINTR = -23,
    /// an internal error with no better code (counted by the kernel)
    UNKNOWN = -128,
}

impl Errno {
    /// Every member, in declaration order.
    pub const ALL: [Self; 24] = [
        Self::EINVAL,
        Self::ENOSYS,
        Self::ENOMEM,
        Self::EPERM,
        Self::EFAULT,
        Self::EBUSY,
        Self::ENOTFOUND,
        Self::ENOTSUPP,
        Self::EEXIST,
        Self::ERDONLY,
        Self::EWRONLY,
        Self::ENOTEMPTY,
        Self::EISDIR,
        Self::ENOTDIR,
        Self::EMFILE,
        Self::ENOEXEC,
        Self::ENAMETOOLONG,
        Self::EAGAIN,
        Self::ETIMEDOUT,
        Self::EOVERFLOW,
        Self::EMSGSIZE,
        Self::EPIPE,
        Self::EINTR,
        Self::UNKNOWN,
    ];

    /// The member whose value is `value`, if any.
    pub const fn from_raw(value: i64) -> Option<Self> {
        match value {
            -1 => Some(Self::EINVAL),
            -2 => Some(Self::ENOSYS),
            -3 => Some(Self::ENOMEM),
            -4 => Some(Self::EPERM),
            -5 => Some(Self::EFAULT),
            -6 => Some(Self::EBUSY),
            -7 => Some(Self::ENOTFOUND),
            -8 => Some(Self::ENOTSUPP),
            -9 => Some(Self::EEXIST),
            -10 => Some(Self::ERDONLY),
            -11 => Some(Self::EWRONLY),
            -12 => Some(Self::ENOTEMPTY),
            -13 => Some(Self::EISDIR),
            -14 => Some(Self::ENOTDIR),
            -15 => Some(Self::EMFILE),
            -16 => Some(Self::ENOEXEC),
            -17 => Some(Self::ENAMETOOLONG),
            -18 => Some(Self::EAGAIN),
            -19 => Some(Self::ETIMEDOUT),
            -20 => Some(Self::EOVERFLOW),
            -21 => Some(Self::EMSGSIZE),
            -22 => Some(Self::EPIPE),
            -23 => Some(Self::EINTR),
            -128 => Some(Self::UNKNOWN),
            _ => None,
        }
    }

    /// The member's value.
    pub const fn raw(self) -> i64 {
        self as i64
    }

    /// The member's name as the spec spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::EINVAL => "EINVAL",
            Self::ENOSYS => "ENOSYS",
            Self::ENOMEM => "ENOMEM",
            Self::EPERM => "EPERM",
            Self::EFAULT => "EFAULT",
            Self::EBUSY => "EBUSY",
            Self::ENOTFOUND => "ENOTFOUND",
            Self::ENOTSUPP => "ENOTSUPP",
            Self::EEXIST => "EEXIST",
            Self::ERDONLY => "ERDONLY",
            Self::EWRONLY => "EWRONLY",
            Self::ENOTEMPTY => "ENOTEMPTY",
            Self::EISDIR => "EISDIR",
            Self::ENOTDIR => "ENOTDIR",
            Self::EMFILE => "EMFILE",
            Self::ENOEXEC => "ENOEXEC",
            Self::ENAMETOOLONG => "ENAMETOOLONG",
            Self::EAGAIN => "EAGAIN",
            Self::ETIMEDOUT => "ETIMEDOUT",
            Self::EOVERFLOW => "EOVERFLOW",
            Self::EMSGSIZE => "EMSGSIZE",
            Self::EPIPE => "EPIPE",
            Self::EINTR => "EINTR",
            Self::UNKNOWN => "UNKNOWN",
        }
    }
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyscallClass {
    CORE = 0,
    FILE = 1,
    /// upstream named VM_OPEN and VM_CAPABILITIES but never numbered them: copra's
    VMM = 2,
    SYSINFO = 3,
}

impl SyscallClass {
    /// Every member, in declaration order.
    pub const ALL: [Self; 4] = [
        Self::CORE,
        Self::FILE,
        Self::VMM,
        Self::SYSINFO,
    ];

    /// The member whose value is `value`, if any.
    pub const fn from_raw(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::CORE),
            1 => Some(Self::FILE),
            2 => Some(Self::VMM),
            3 => Some(Self::SYSINFO),
            _ => None,
        }
    }

    /// The member's value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The member's name as the spec spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::CORE => "CORE",
            Self::FILE => "FILE",
            Self::VMM => "VMM",
            Self::SYSINFO => "SYSINFO",
        }
    }
}

/// Syscall numbers: (class << 32) | index.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sys {
    EXIT = 0x0,
    MMAP = 0x1,
    MUNMAP = 0x2,
    MRESIZE = 0x3,
    EXEC = 0x4,
    /// copra: wait for a child and read its status (upstream has none)
    WAIT = 0x5,
    CLOSE = 0xa,
    /// entry, stack top, argument, FS base -> thread handle
    THREAD_CREATE = 0x10,
    /// code: ends the calling thread (the last: the process)
    THREAD_EXIT = 0x11,
    /// thread or process handle -> its code or status, once it ended
    JOIN = 0x12,
    /// address, expected u32, timeout ns: sleep while equal
    FUTEX_WAIT = 0x13,
    /// address, count -> threads woken
    FUTEX_WAKE = 0x14,
    /// task id of a child -> process handle
    PROCESS_OPEN = 0x15,
    /// EventFlag -> event handle (READ/WRITE 8 bytes)
    EVENT_CREATE = 0x16,
    /// WaitItem array, count, timeout ns -> items ready
    WAIT_MANY = 0x17,
    /// -> monotonic nanoseconds
    CLOCK = 0x18,
    /// nanoseconds
    SLEEP = 0x19,
    /// flags (0) -> (second << 32) | first endpoint handle
    CHANNEL_CREATE = 0x1a,
    /// endpoint, ChannelMessage, ChannelFlag -> 0
    SEND = 0x1b,
    /// endpoint, ChannelMessage, ChannelFlag -> bytes received
    RECV = 0x1c,
    /// handle, rights (or RIGHTS_SAME) -> a new handle
    DUPLICATE = 0x1d,
    /// handle, rights: the handle keeps only these rights
    REPLACE = 0x1e,
    /// path, root, handle array, count, flags (0) -> task id
    EXEC_HANDLES = 0x1f,
    /// BatchRecord array, count, BatchFlag -> records run
    BATCH = 0x20,
    CHANNEL_CALL = 0x21,
    OPEN = 0x1_0000_0000,
    READ = 0x1_0000_0001,
    WRITE = 0x1_0000_0002,
    SEEK = 0x1_0000_0003,
    TRUNCATE = 0x1_0000_0004,
    UNLINK = 0x1_0000_0005,
    OPENDIR = 0x1_0000_0006,
    READDIR = 0x1_0000_0007,
    MKDIR = 0x1_0000_0008,
    RMDIR = 0x1_0000_0009,
    /// VM index -> VM handle (exclusive system-wide)
    VM_OPEN = 0x2_0000_0000,
    /// VM handle, VmCap index -> value
    VM_CAPABILITIES = 0x2_0000_0001,
    /// VM handle, vCPU index -> VCPU handle (exclusive)
    VCPU_OPEN = 0x2_0000_0002,
    /// VCPU handle, timeout ns -> 0, the exit in the run page
    VCPU_RUN = 0x2_0000_0003,
    /// VM handle, MsrRange array, count: the MSRs user mode claims
    VM_SET_MSR_FILTER = 0x2_0000_0004,
    /// VM handle -> a handle on the guest's RAM (MMAP it)
    VM_MEMORY = 0x2_0000_0005,
    /// VM handle, first port, ports -> device event handle
    IO_EVENT_CREATE = 0x2_0000_0006,
    /// VM handle, guest-physical address, bytes -> handle
    MMIO_EVENT_CREATE = 0x2_0000_0007,
    /// VM handle, APIC id, vector, IrqFlag -> IRQ handle
    IRQ_CREATE = 0x2_0000_0008,
    /// IRQ handle: assert it (the vector becomes pending)
    IRQ_SIGNAL = 0x2_0000_0009,
    DEVICE_REPLY = 0x2_0000_000a,
    CAPABILITIES = 0x3_0000_0000,
}

impl Sys {
    /// Every member, in declaration order.
    pub const ALL: [Self; 47] = [
        Self::EXIT,
        Self::MMAP,
        Self::MUNMAP,
        Self::MRESIZE,
        Self::EXEC,
        Self::WAIT,
        Self::CLOSE,
        Self::THREAD_CREATE,
        Self::THREAD_EXIT,
        Self::JOIN,
        Self::FUTEX_WAIT,
        Self::FUTEX_WAKE,
        Self::PROCESS_OPEN,
        Self::EVENT_CREATE,
        Self::WAIT_MANY,
        Self::CLOCK,
        Self::SLEEP,
        Self::CHANNEL_CREATE,
        Self::SEND,
        Self::RECV,
        Self::DUPLICATE,
        Self::REPLACE,
        Self::EXEC_HANDLES,
        Self::BATCH,
        Self::CHANNEL_CALL,
        Self::OPEN,
        Self::READ,
        Self::WRITE,
        Self::SEEK,
        Self::TRUNCATE,
        Self::UNLINK,
        Self::OPENDIR,
        Self::READDIR,
        Self::MKDIR,
        Self::RMDIR,
        Self::VM_OPEN,
        Self::VM_CAPABILITIES,
        Self::VCPU_OPEN,
        Self::VCPU_RUN,
        Self::VM_SET_MSR_FILTER,
        Self::VM_MEMORY,
        Self::IO_EVENT_CREATE,
        Self::MMIO_EVENT_CREATE,
        Self::IRQ_CREATE,
        Self::IRQ_SIGNAL,
        Self::DEVICE_REPLY,
        Self::CAPABILITIES,
    ];

    /// The member whose value is `value`, if any.
    pub const fn from_raw(value: u64) -> Option<Self> {
        match value {
            0x0 => Some(Self::EXIT),
            0x1 => Some(Self::MMAP),
            0x2 => Some(Self::MUNMAP),
            0x3 => Some(Self::MRESIZE),
            0x4 => Some(Self::EXEC),
            0x5 => Some(Self::WAIT),
            0xa => Some(Self::CLOSE),
            0x10 => Some(Self::THREAD_CREATE),
            0x11 => Some(Self::THREAD_EXIT),
            0x12 => Some(Self::JOIN),
            0x13 => Some(Self::FUTEX_WAIT),
            0x14 => Some(Self::FUTEX_WAKE),
            0x15 => Some(Self::PROCESS_OPEN),
            0x16 => Some(Self::EVENT_CREATE),
            0x17 => Some(Self::WAIT_MANY),
            0x18 => Some(Self::CLOCK),
            0x19 => Some(Self::SLEEP),
            0x1a => Some(Self::CHANNEL_CREATE),
            0x1b => Some(Self::SEND),
            0x1c => Some(Self::RECV),
            0x1d => Some(Self::DUPLICATE),
            0x1e => Some(Self::REPLACE),
            0x1f => Some(Self::EXEC_HANDLES),
            0x20 => Some(Self::BATCH),
            0x21 => Some(Self::CHANNEL_CALL),
            0x1_0000_0000 => Some(Self::OPEN),
            0x1_0000_0001 => Some(Self::READ),
            0x1_0000_0002 => Some(Self::WRITE),
            0x1_0000_0003 => Some(Self::SEEK),
            0x1_0000_0004 => Some(Self::TRUNCATE),
            0x1_0000_0005 => Some(Self::UNLINK),
            0x1_0000_0006 => Some(Self::OPENDIR),
            0x1_0000_0007 => Some(Self::READDIR),
            0x1_0000_0008 => Some(Self::MKDIR),
            0x1_0000_0009 => Some(Self::RMDIR),
            0x2_0000_0000 => Some(Self::VM_OPEN),
            0x2_0000_0001 => Some(Self::VM_CAPABILITIES),
            0x2_0000_0002 => Some(Self::VCPU_OPEN),
            0x2_0000_0003 => Some(Self::VCPU_RUN),
            0x2_0000_0004 => Some(Self::VM_SET_MSR_FILTER),
            0x2_0000_0005 => Some(Self::VM_MEMORY),
            0x2_0000_0006 => Some(Self::IO_EVENT_CREATE),
            0x2_0000_0007 => Some(Self::MMIO_EVENT_CREATE),
            0x2_0000_0008 => Some(Self::IRQ_CREATE),
            0x2_0000_0009 => Some(Self::IRQ_SIGNAL),
            0x2_0000_000a => Some(Self::DEVICE_REPLY),
            0x3_0000_0000 => Some(Self::CAPABILITIES),
            _ => None,
        }
    }

    /// The member's value.
    pub const fn raw(self) -> u64 {
        self as u64
    }

    /// The member's name as the spec spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::EXIT => "EXIT",
            Self::MMAP => "MMAP",
            Self::MUNMAP => "MUNMAP",
            Self::MRESIZE => "MRESIZE",
            Self::EXEC => "EXEC",
            Self::WAIT => "WAIT",
            Self::CLOSE => "CLOSE",
            Self::THREAD_CREATE => "THREAD_CREATE",
            Self::THREAD_EXIT => "THREAD_EXIT",
            Self::JOIN => "JOIN",
            Self::FUTEX_WAIT => "FUTEX_WAIT",
            Self::FUTEX_WAKE => "FUTEX_WAKE",
            Self::PROCESS_OPEN => "PROCESS_OPEN",
            Self::EVENT_CREATE => "EVENT_CREATE",
            Self::WAIT_MANY => "WAIT_MANY",
            Self::CLOCK => "CLOCK",
            Self::SLEEP => "SLEEP",
            Self::CHANNEL_CREATE => "CHANNEL_CREATE",
            Self::SEND => "SEND",
            Self::RECV => "RECV",
            Self::DUPLICATE => "DUPLICATE",
            Self::REPLACE => "REPLACE",
            Self::EXEC_HANDLES => "EXEC_HANDLES",
            Self::BATCH => "BATCH",
            Self::CHANNEL_CALL => "CHANNEL_CALL",
            Self::OPEN => "OPEN",
            Self::READ => "READ",
            Self::WRITE => "WRITE",
            Self::SEEK => "SEEK",
            Self::TRUNCATE => "TRUNCATE",
            Self::UNLINK => "UNLINK",
            Self::OPENDIR => "OPENDIR",
            Self::READDIR => "READDIR",
            Self::MKDIR => "MKDIR",
            Self::RMDIR => "RMDIR",
            Self::VM_OPEN => "VM_OPEN",
            Self::VM_CAPABILITIES => "VM_CAPABILITIES",
            Self::VCPU_OPEN => "VCPU_OPEN",
            Self::VCPU_RUN => "VCPU_RUN",
            Self::VM_SET_MSR_FILTER => "VM_SET_MSR_FILTER",
            Self::VM_MEMORY => "VM_MEMORY",
            Self::IO_EVENT_CREATE => "IO_EVENT_CREATE",
            Self::MMIO_EVENT_CREATE => "MMIO_EVENT_CREATE",
            Self::IRQ_CREATE => "IRQ_CREATE",
            Self::IRQ_SIGNAL => "IRQ_SIGNAL",
            Self::DEVICE_REPLY => "DEVICE_REPLY",
            Self::CAPABILITIES => "CAPABILITIES",
        }
    }
}

/// Indices accepted by CAPABILITIES (class 3, index 0).
///
/// copra adds no index of its own yet; an addition would take the next free index
/// (upstream's stay as they are) and count in COUNT like upstream's.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// the number of capability values after index 0 (upstream's meaning: 2 today)
    COUNT = 0,
    /// bit n set: guest VM n exists and has not been released (VM_OPEN(n))
    VM_BITMAP = 1,
    /// platform feature bitmap; bits 2:0 are the platform type
    FEATURES = 2,
}

impl Capability {
    /// Every member, in declaration order.
    pub const ALL: [Self; 3] = [
        Self::COUNT,
        Self::VM_BITMAP,
        Self::FEATURES,
    ];

    /// The member whose value is `value`, if any.
    pub const fn from_raw(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::COUNT),
            1 => Some(Self::VM_BITMAP),
            2 => Some(Self::FEATURES),
            _ => None,
        }
    }

    /// The member's value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The member's name as the spec spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::COUNT => "COUNT",
            Self::VM_BITMAP => "VM_BITMAP",
            Self::FEATURES => "FEATURES",
        }
    }
}

/// Bits 2:0 of Capability.FEATURES (upstream: 0 native, 1 SNP, 2 TDX partitioning).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlatformType {
    NATIVE = 0,
    SNP = 1,
    TDX = 2,
    /// copra: the SVSM architecture emulated on ordinary KVM
    COPRA_KVM = 3,
}

impl PlatformType {
    /// Every member, in declaration order.
    pub const ALL: [Self; 4] = [
        Self::NATIVE,
        Self::SNP,
        Self::TDX,
        Self::COPRA_KVM,
    ];

    /// The member whose value is `value`, if any.
    pub const fn from_raw(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::NATIVE),
            1 => Some(Self::SNP),
            2 => Some(Self::TDX),
            3 => Some(Self::COPRA_KVM),
            _ => None,
        }
    }

    /// The member's value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The member's name as the spec spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NATIVE => "NATIVE",
            Self::SNP => "SNP",
            Self::TDX => "TDX",
            Self::COPRA_KVM => "COPRA_KVM",
        }
    }
}

/// Indices accepted by VM_CAPABILITIES (class 2, index 1).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmCap {
    /// the number of values after index 0
    COUNT = 0,
    /// vCPUs of the VM (VCPU_OPEN takes 0 to VCPUS - 1)
    VCPUS = 1,
    /// bytes of guest RAM: guest-physical [MEMORY_BASE, + MEMORY_SIZE)
    MEMORY_SIZE = 2,
    /// the guest-physical address of RAM's first byte (0 on copra)
    MEMORY_BASE = 3,
    /// VmFeature bits
    FEATURES = 4,
}

impl VmCap {
    /// Every member, in declaration order.
    pub const ALL: [Self; 5] = [
        Self::COUNT,
        Self::VCPUS,
        Self::MEMORY_SIZE,
        Self::MEMORY_BASE,
        Self::FEATURES,
    ];

    /// The member whose value is `value`, if any.
    pub const fn from_raw(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::COUNT),
            1 => Some(Self::VCPUS),
            2 => Some(Self::MEMORY_SIZE),
            3 => Some(Self::MEMORY_BASE),
            4 => Some(Self::FEATURES),
            _ => None,
        }
    }

    /// The member's value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The member's name as the spec spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::COUNT => "COUNT",
            Self::VCPUS => "VCPUS",
            Self::MEMORY_SIZE => "MEMORY_SIZE",
            Self::MEMORY_BASE => "MEMORY_BASE",
            Self::FEATURES => "FEATURES",
        }
    }
}

/// Bits of VM_CAPABILITIES(vm, VmCap.FEATURES).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmFeature(u64);

impl VmFeature {
    /// the kernel answers the x2APIC MSRs, APIC_BASE and TSC_DEADLINE
    pub const KERNEL_X2APIC: Self = Self(0x1);
    /// VM_SET_MSR_FILTER claims MSRs for user mode
    pub const MSR_FILTER: Self = Self(0x2);
    /// the kernel was loaded at boot; vCPU 0 starts at its PVH entry
    pub const PVH_BOOT: Self = Self(0x4);
    /// No bit set.
    pub const EMPTY: Self = Self(0);
    /// Every defined bit.
    pub const ALL: Self = Self(0x7);

    /// The raw bits, as passed in a syscall register.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Any bits, defined or not (hostile tests pass undefined ones on purpose).
    pub const fn from_bits_retain(bits: u64) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits set in either.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::ops::BitOr for VmFeature {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl core::ops::BitOrAssign for VmFeature {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

/// RunPage.exit_reason: why VCPU_RUN returned (the payload's layout follows it).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VcpuExit {
    /// no exit yet (the page was just mapped)
    NONE = 0,
    /// port I/O: VcpuIo
    IO = 1,
    /// an access to guest-physical memory outside RAM: VcpuMmio
    MMIO = 2,
    /// RDMSR of an MSR user mode claimed: VcpuMsr, answer in data or error
    MSR_READ = 3,
    /// WRMSR of an MSR user mode claimed: VcpuMsr, answer error
    MSR_WRITE = 4,
    /// CPUID (hardware that traps it; KVM answers CPUID itself): VcpuCpuid
    CPUID = 5,
    /// HLT: the vCPU waits for an interrupt; VCPU_RUN resumes after it
    HLT = 6,
    /// a triple fault: the vCPU is dead, every VCPU_RUN reports it again
    SHUTDOWN = 7,
    /// an instruction neither KVM nor copra can run: VcpuFailure
    EMULATION_FAILURE = 8,
    /// KVM stopped the vCPU (failed entry, internal error): VcpuFailure
    INTERNAL_ERROR = 9,
    /// a device model's event went away with this access unanswered: the guest got all ones (a read) and goes on; VcpuIo or VcpuMmio describes the access; no answer
    DEVICE_GONE = 10,
}

impl VcpuExit {
    /// Every member, in declaration order.
    pub const ALL: [Self; 11] = [
        Self::NONE,
        Self::IO,
        Self::MMIO,
        Self::MSR_READ,
        Self::MSR_WRITE,
        Self::CPUID,
        Self::HLT,
        Self::SHUTDOWN,
        Self::EMULATION_FAILURE,
        Self::INTERNAL_ERROR,
        Self::DEVICE_GONE,
    ];

    /// The member whose value is `value`, if any.
    pub const fn from_raw(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::NONE),
            1 => Some(Self::IO),
            2 => Some(Self::MMIO),
            3 => Some(Self::MSR_READ),
            4 => Some(Self::MSR_WRITE),
            5 => Some(Self::CPUID),
            6 => Some(Self::HLT),
            7 => Some(Self::SHUTDOWN),
            8 => Some(Self::EMULATION_FAILURE),
            9 => Some(Self::INTERNAL_ERROR),
            10 => Some(Self::DEVICE_GONE),
            _ => None,
        }
    }

    /// The member's value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The member's name as the spec spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NONE => "NONE",
            Self::IO => "IO",
            Self::MMIO => "MMIO",
            Self::MSR_READ => "MSR_READ",
            Self::MSR_WRITE => "MSR_WRITE",
            Self::CPUID => "CPUID",
            Self::HLT => "HLT",
            Self::SHUTDOWN => "SHUTDOWN",
            Self::EMULATION_FAILURE => "EMULATION_FAILURE",
            Self::INTERNAL_ERROR => "INTERNAL_ERROR",
            Self::DEVICE_GONE => "DEVICE_GONE",
        }
    }
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoDirection {
    IN = 0,
    OUT = 1,
}

impl IoDirection {
    /// Every member, in declaration order.
    pub const ALL: [Self; 2] = [
        Self::IN,
        Self::OUT,
    ];

    /// The member whose value is `value`, if any.
    pub const fn from_raw(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::IN),
            1 => Some(Self::OUT),
            _ => None,
        }
    }

    /// The member's value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The member's name as the spec spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::IN => "IN",
            Self::OUT => "OUT",
        }
    }
}

/// MsrRange.flags: which accesses of the range's MSRs come to user mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MsrFilterFlag(u64);

impl MsrFilterFlag {
    pub const READ: Self = Self(0x1);
    pub const WRITE: Self = Self(0x2);
    /// No bit set.
    pub const EMPTY: Self = Self(0);
    /// Every defined bit.
    pub const ALL: Self = Self(0x3);

    /// The raw bits, as passed in a syscall register.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Any bits, defined or not (hostile tests pass undefined ones on purpose).
    pub const fn from_bits_retain(bits: u64) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits set in either.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::ops::BitOr for MsrFilterFlag {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl core::ops::BitOrAssign for MsrFilterFlag {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

/// IRQ_CREATE's trigger mode: edge (0) or level (resampled at the guest's EOI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IrqFlag(u64);

impl IrqFlag {
    pub const EDGE: Self = Self(0x0);
    pub const LEVEL: Self = Self(0x1);
    /// No bit set.
    pub const EMPTY: Self = Self(0);
    /// Every defined bit.
    pub const ALL: Self = Self(0x1);

    /// The raw bits, as passed in a syscall register.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Any bits, defined or not (hostile tests pass undefined ones on purpose).
    pub const fn from_bits_retain(bits: u64) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits set in either.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::ops::BitOr for IrqFlag {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl core::ops::BitOrAssign for IrqFlag {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FileMode(u64);

impl FileMode {
    pub const READ: Self = Self(0x1);
    pub const WRITE: Self = Self(0x2);
    pub const APPEND: Self = Self(0x4);
    pub const TRUNC: Self = Self(0x8);
    /// No bit set.
    pub const EMPTY: Self = Self(0);
    /// Every defined bit.
    pub const ALL: Self = Self(0xf);

    /// The raw bits, as passed in a syscall register.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Any bits, defined or not (hostile tests pass undefined ones on purpose).
    pub const fn from_bits_retain(bits: u64) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits set in either.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::ops::BitOr for FileMode {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl core::ops::BitOrAssign for FileMode {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FileFlag(u64);

impl FileFlag {
    pub const CREATE: Self = Self(0x1);
    /// No bit set.
    pub const EMPTY: Self = Self(0);
    /// Every defined bit.
    pub const ALL: Self = Self(0x1);

    /// The raw bits, as passed in a syscall register.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Any bits, defined or not (hostile tests pass undefined ones on purpose).
    pub const fn from_bits_retain(bits: u64) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits set in either.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::ops::BitOr for FileFlag {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl core::ops::BitOrAssign for FileFlag {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeekMode {
    ABSOLUTE = 0,
    RELATIVE = 1,
    END = 2,
}

impl SeekMode {
    /// Every member, in declaration order.
    pub const ALL: [Self; 3] = [
        Self::ABSOLUTE,
        Self::RELATIVE,
        Self::END,
    ];

    /// The member whose value is `value`, if any.
    pub const fn from_raw(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::ABSOLUTE),
            1 => Some(Self::RELATIVE),
            2 => Some(Self::END),
            _ => None,
        }
    }

    /// The member's value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The member's name as the spec spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ABSOLUTE => "ABSOLUTE",
            Self::RELATIVE => "RELATIVE",
            Self::END => "END",
        }
    }
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    FILE = 0,
    DIRECTORY = 1,
}

impl FileType {
    /// Every member, in declaration order.
    pub const ALL: [Self; 2] = [
        Self::FILE,
        Self::DIRECTORY,
    ];

    /// The member whose value is `value`, if any.
    pub const fn from_raw(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::FILE),
            1 => Some(Self::DIRECTORY),
            _ => None,
        }
    }

    /// The member's value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The member's name as the spec spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::FILE => "FILE",
            Self::DIRECTORY => "DIRECTORY",
        }
    }
}

/// MMAP flags (upstream's draft values; ANONYMOUS replaces "handle 0 means anonymous").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MapFlag(u64);

impl MapFlag {
    pub const READ: Self = Self(0x1);
    pub const WRITE: Self = Self(0x2);
    pub const EXEC: Self = Self(0x4);
    pub const PRIVATE: Self = Self(0x8);
    pub const ANONYMOUS: Self = Self(0x10);
    pub const FIXED: Self = Self(0x20);
    /// No bit set.
    pub const EMPTY: Self = Self(0);
    /// Every defined bit.
    pub const ALL: Self = Self(0x3f);

    /// The raw bits, as passed in a syscall register.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Any bits, defined or not (hostile tests pass undefined ones on purpose).
    pub const fn from_bits_retain(bits: u64) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits set in either.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::ops::BitOr for MapFlag {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl core::ops::BitOrAssign for MapFlag {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

/// Observable states of kernel objects, for WAIT_MANY (each kind raises some).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Signal(u64);

impl Signal {
    /// a thread or process has ended (for good)
    pub const ENDED: Self = Self(0x1);
    /// an event's counter is non-zero: a READ would not block; a channel endpoint's queue holds a message: a RECV would not block; a VCPU has an exit waiting for user mode's answer
    pub const READABLE: Self = Self(0x2);
    /// an event's counter is below EVENT_MAX: a WRITE of 1 would succeed; a channel endpoint's peer is open and has room in its queue: a SEND would not block
    pub const WRITABLE: Self = Self(0x4);
    /// a channel endpoint's peer is closed (its queue may still hold messages)
    pub const PEER_CLOSED: Self = Self(0x8);
    /// No bit set.
    pub const EMPTY: Self = Self(0);
    /// Every defined bit.
    pub const ALL: Self = Self(0xf);

    /// The raw bits, as passed in a syscall register.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Any bits, defined or not (hostile tests pass undefined ones on purpose).
    pub const fn from_bits_retain(bits: u64) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits set in either.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::ops::BitOr for Signal {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl core::ops::BitOrAssign for Signal {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

/// The rights a handle grants (DUPLICATE and REPLACE take them; only ever reduced).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Right(u64);

impl Right {
    /// READ, READDIR, RECV
    pub const READ: Self = Self(0x1);
    /// WRITE, TRUNCATE, SEND
    pub const WRITE: Self = Self(0x2);
    /// MMAP of the object
    pub const MAP: Self = Self(0x4);
    /// WAIT_MANY on the object's signals, JOIN
    pub const WAIT: Self = Self(0x8);
    /// the handle may be moved: SEND, EXEC_HANDLES
    pub const TRANSFER: Self = Self(0x10);
    /// DUPLICATE may make another handle on the object
    pub const DUPLICATE: Self = Self(0x20);
    /// No bit set.
    pub const EMPTY: Self = Self(0);
    /// Every defined bit.
    pub const ALL: Self = Self(0x3f);

    /// The raw bits, as passed in a syscall register.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Any bits, defined or not (hostile tests pass undefined ones on purpose).
    pub const fn from_bits_retain(bits: u64) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits set in either.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::ops::BitOr for Right {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl core::ops::BitOrAssign for Right {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

/// SEND's and RECV's flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ChannelFlag(u64);

impl ChannelFlag {
    /// wait while the peer's queue is full (SEND) or the own queue empty (RECV)
    pub const BLOCK: Self = Self(0x1);
    /// No bit set.
    pub const EMPTY: Self = Self(0);
    /// Every defined bit.
    pub const ALL: Self = Self(0x1);

    /// The raw bits, as passed in a syscall register.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Any bits, defined or not (hostile tests pass undefined ones on purpose).
    pub const fn from_bits_retain(bits: u64) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits set in either.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::ops::BitOr for ChannelFlag {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl core::ops::BitOrAssign for ChannelFlag {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

/// EVENT_CREATE's flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EventFlag(u64);

impl EventFlag {
    /// READ of a zero counter answers EAGAIN instead of blocking
    pub const NONBLOCK: Self = Self(0x1);
    /// No bit set.
    pub const EMPTY: Self = Self(0);
    /// Every defined bit.
    pub const ALL: Self = Self(0x1);

    /// The raw bits, as passed in a syscall register.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Any bits, defined or not (hostile tests pass undefined ones on purpose).
    pub const fn from_bits_retain(bits: u64) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits set in either.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::ops::BitOr for EventFlag {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl core::ops::BitOrAssign for EventFlag {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

/// BATCH's flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BatchFlag(u64);

impl BatchFlag {
    /// stop after the first record whose result is an error (it is written back too)
    pub const STOP_ON_ERROR: Self = Self(0x1);
    /// No bit set.
    pub const EMPTY: Self = Self(0);
    /// Every defined bit.
    pub const ALL: Self = Self(0x1);

    /// The raw bits, as passed in a syscall register.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Any bits, defined or not (hostile tests pass undefined ones on purpose).
    pub const fn from_bits_retain(bits: u64) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits set in either.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::ops::BitOr for BatchFlag {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl core::ops::BitOrAssign for BatchFlag {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

/// How user mode enters the kernel. Both reach the same dispatcher with the same registers.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    /// ``int 0x80`` (CD 80): upstream's entry, through the IDT gate or a #UD trap
    INT80 = 0,
    /// ``out DOORBELL_PORT, al``: copra's fast path, the TSS I/O bitmap allows it
    DOORBELL = 1,
}

impl Entry {
    /// Every member, in declaration order.
    pub const ALL: [Self; 2] = [
        Self::INT80,
        Self::DOORBELL,
    ];

    /// The member whose value is `value`, if any.
    pub const fn from_raw(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::INT80),
            1 => Some(Self::DOORBELL),
            _ => None,
        }
    }

    /// The member's value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The member's name as the spec spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::INT80 => "INT80",
            Self::DOORBELL => "DOORBELL",
        }
    }
}

pub const ARG_REGISTERS: [&str; 5] = ["rdi", "rsi", "r8", "r9", "r10"];
pub const RESULT_REGISTER: &str = "rax";
pub const CLOBBERED_REGISTERS: [&str; 2] = ["rcx", "r11"];
/// The single I/O port user mode may write; the write is a syscall.
pub const DOORBELL_PORT: u64 = 0xe0;
/// The interrupt vector of the upstream entry.
pub const SYSCALL_VECTOR: u64 = 0x80;
/// Errors are returned as -errno; any rax above this value (as u64) is an error.
pub const ERROR_THRESHOLD: u64 = 0xffff_ffff_ffff_f000;
pub const PAGE_SIZE: u64 = 4096;
/// bytes including the terminating NUL
pub const PATH_MAX: u64 = 4096;
/// bytes of one path component
pub const NAME_MAX: u64 = 255;
/// every task's log/stdout
pub const HANDLE_LOG: u64 = 0;
/// Every line of the log (each task's, prefix included, and the kernel's) is also appended to this RAM-fs file, created at boot before the archive is unpacked (upstream's ``Log/logfile``); programs may OPEN and READ it.
pub const LOG_FILE_PATH: &str = "/Log/logfile";
/// copra keeps the log file at most this many bytes; later lines reach the console only.
pub const LOG_FILE_MAX: u64 = 0x10_0000;
/// default per-process limit on open handles (EMFILE beyond it); an image configuration may set another (``limits.handles``, docs/images.md)
pub const MAX_HANDLES: u64 = 1024;
/// User address space: [USER_START, USER_END), upstream's [0, 2^47) less what copra keeps unmapped: page 0 (a NULL pointer faults) and the top page below 2^47. Program segments may lie anywhere in [USER_START, USER_MAP_END). Everything above is the kernel's.
pub const USER_START: u64 = 0x1000;
pub const USER_END: u64 = 0x7fff_ffff_f000;
pub const USER_STACK_SIZE: u64 = 0x1_0000;
/// the stack occupies [USER_STACK_TOP - USER_STACK_SIZE, USER_STACK_TOP)
pub const USER_STACK_TOP: u64 = 0x7fff_ffff_f000;
pub const USER_INITIAL_RSP: u64 = 0x7fff_ffff_eff8;
pub const USER_INITIAL_RFLAGS: u64 = 0x202;
/// Where MMAP places mappings when no hint is given (searching upward).
pub const MMAP_BASE: u64 = 0x1000_0000_0000;
/// One unmapped guard page below the stack: an overflow faults instead of running into a mapping. Program segments and MMAP both end at or below USER_MAP_END.
pub const USER_STACK_GUARD: u64 = 4096;
pub const USER_MAP_END: u64 = 0x7fff_fffe_e000;
/// Thread-local storage (x86-64 psABI variant II): a thread's FS base points at its thread control block (TCB) of TLS_TCB_SIZE bytes, the TLS block (the PT_TLS template: .tdata copied, .tbss zeroed) lies just below it. Word 0 of the TCB points to itself (%fs:0), word 1 holds TLS_TCB_MAGIC, the rest is zero and reserved. EXEC gives the first thread such a block (docs/abi.md); libcopra builds one for each thread it spawns.
pub const TLS_TCB_SIZE: u64 = 64;
/// "copraTCB", little-endian
pub const TLS_TCB_MAGIC: u64 = 0x4243_5461_7270_6f63;
/// The timeout (FUTEX_WAIT, WAIT_MANY) that means "no timeout".
pub const TIMEOUT_NEVER: u64 = 0xffff_ffff_ffff_ffff;
/// The most (handle, signals) items one WAIT_MANY takes.
pub const WAIT_MANY_MAX: u64 = 64;
/// The most records one BATCH runs.
pub const BATCH_MAX: u64 = 64;
/// The largest value an event's counter holds (eventfd's); WRITE past it is EOVERFLOW.
pub const EVENT_MAX: u64 = 0xffff_ffff_ffff_fffe;
/// DUPLICATE's rights argument that keeps the rights of the original handle.
pub const RIGHTS_SAME: u64 = 0xffff_ffff;
/// The most bytes one channel message carries.
pub const CHANNEL_MAX_BYTES: u64 = 0x1_0000;
/// The most handles one channel message (or one EXEC_HANDLES) moves.
pub const CHANNEL_MAX_HANDLES: u64 = 64;
/// The most messages queued towards one endpoint; SEND beyond waits or answers EAGAIN.
pub const CHANNEL_QUEUE_MAX: u64 = 64;
/// Exit status packing, as upstream: Exited(c) -> c << 16 with c the low 16 bits of EXIT's argument; killed by a CPU exception -> (vector << 8) | 1.
pub const EXIT_STATUS_SHIFT: u64 = 16;
pub const KILLED_BY_EXCEPTION: u64 = 1;
/// The run page's layout version (RunPage.version); a layout that grows gets a new one.
pub const RUN_PAGE_VERSION: u64 = 1;
/// Where the exit payload (one of the Vcpu* structures, by exit_reason) starts in the run page.
pub const RUN_PAGE_PAYLOAD: u64 = 16;
/// Bytes the payload area holds.
pub const RUN_PAGE_PAYLOAD_SIZE: u64 = 64;
/// Where a port access's data lies in the run page, and how many bytes it holds at most (a longer string access comes in several exits of at most this many bytes).
pub const RUN_PAGE_IO_DATA: u64 = 2048;
pub const RUN_PAGE_IO_DATA_SIZE: u64 = 2048;
/// The guest registers in RunPage.regs, in this order (KVM's struct kvm_regs).
pub const GUEST_REGISTERS: [&str; 18] = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags"];
/// RunPage.regs_dirty: VCPU_RUN loads the guest's registers from RunPage.regs first.
pub const REGS_DIRTY: u64 = 1;
/// The most ranges VM_SET_MSR_FILTER takes, and MSRs per range.
pub const MSR_FILTER_MAX_RANGES: u64 = 16;
pub const MSR_RANGE_MAX_MSRS: u64 = 0x3000;
/// Where a guest's RAM appears in the SVSM's physical address space (guest n at GUEST_RAM_SVSM_BASE + n * GUEST_RAM_SVSM_STRIDE): MMAP of VM_MEMORY maps those frames.
pub const GUEST_RAM_SVSM_BASE: u64 = 0x4_0000_0000;
pub const GUEST_RAM_SVSM_STRIDE: u64 = 0x1_0000_0000;

/// One entry filled by READDIR (upstream's layout).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DirEnt {
    /// NUL-terminated UTF-8, cut at a character boundary (255 B)
    pub name: [u8; 256],
    /// FileType
    pub file_type: u8,
    /// zero
    pub _pad: [u8; 7],
    /// bytes; 0 for directories
    pub size: u64,
}

impl DirEnt {
    /// Size in bytes, as declared in the spec.
    pub const SIZE: usize = 272;

    /// Every byte zero.
    pub const fn zeroed() -> Self {
        Self {
            name: [0; 256],
            file_type: 0,
            _pad: [0; 7],
            size: 0,
        }
    }
}

const _: () = assert!(core::mem::size_of::<DirEnt>() == 272);
const _: () = assert!(core::mem::align_of::<DirEnt>() == 8);
const _: () = assert!(core::mem::offset_of!(DirEnt, name) == 0);
const _: () = assert!(core::mem::offset_of!(DirEnt, file_type) == 256);
const _: () = assert!(core::mem::offset_of!(DirEnt, _pad) == 257);
const _: () = assert!(core::mem::offset_of!(DirEnt, size) == 264);

/// The user library's heap statistics (libcopra `heap::stats`, C `copra_heap_stats`).
///
/// Not a kernel structure: it passes between libcopra and a C program linked with it,
/// and is declared here so that both languages take one layout.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// bytes in live blocks, counted at their usable size
    pub in_use: u64,
    /// the most in_use has been
    pub peak_in_use: u64,
    /// bytes the heap holds from the kernel, its tables included
    pub mapped: u64,
    /// the most mapped has been
    pub peak_mapped: u64,
    /// of mapped: empty slabs, freed large blocks kept for reuse
    pub retained: u64,
    /// of mapped: the heap's own tables
    pub metadata: u64,
    /// blocks handed out and not freed
    pub live_blocks: u64,
    /// blocks handed out since the start
    pub allocations: u64,
    /// blocks given back since the start
    pub frees: u64,
    /// MMAP calls the heap made
    pub maps: u64,
    /// MUNMAP calls the heap made
    pub unmaps: u64,
    /// MRESIZE calls the heap made
    pub resizes: u64,
    /// allocations that found no memory
    pub failures: u64,
}

impl HeapStats {
    /// Size in bytes, as declared in the spec.
    pub const SIZE: usize = 104;

    /// Every byte zero.
    pub const fn zeroed() -> Self {
        Self {
            in_use: 0,
            peak_in_use: 0,
            mapped: 0,
            peak_mapped: 0,
            retained: 0,
            metadata: 0,
            live_blocks: 0,
            allocations: 0,
            frees: 0,
            maps: 0,
            unmaps: 0,
            resizes: 0,
            failures: 0,
        }
    }
}

const _: () = assert!(core::mem::size_of::<HeapStats>() == 104);
const _: () = assert!(core::mem::align_of::<HeapStats>() == 8);
const _: () = assert!(core::mem::offset_of!(HeapStats, in_use) == 0);
const _: () = assert!(core::mem::offset_of!(HeapStats, peak_in_use) == 8);
const _: () = assert!(core::mem::offset_of!(HeapStats, mapped) == 16);
const _: () = assert!(core::mem::offset_of!(HeapStats, peak_mapped) == 24);
const _: () = assert!(core::mem::offset_of!(HeapStats, retained) == 32);
const _: () = assert!(core::mem::offset_of!(HeapStats, metadata) == 40);
const _: () = assert!(core::mem::offset_of!(HeapStats, live_blocks) == 48);
const _: () = assert!(core::mem::offset_of!(HeapStats, allocations) == 56);
const _: () = assert!(core::mem::offset_of!(HeapStats, frees) == 64);
const _: () = assert!(core::mem::offset_of!(HeapStats, maps) == 72);
const _: () = assert!(core::mem::offset_of!(HeapStats, unmaps) == 80);
const _: () = assert!(core::mem::offset_of!(HeapStats, resizes) == 88);
const _: () = assert!(core::mem::offset_of!(HeapStats, failures) == 96);

/// One (handle, signals) pair of WAIT_MANY's array.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WaitItem {
    /// a thread, process, event or channel endpoint handle with the WAIT right
    pub handle: u32,
    /// the Signal bits waited for (non-zero)
    pub signals: u32,
    /// written by WAIT_MANY: those of them raised
    pub ready: u32,
    /// zero
    pub _pad: u32,
}

impl WaitItem {
    /// Size in bytes, as declared in the spec.
    pub const SIZE: usize = 16;

    /// Every byte zero.
    pub const fn zeroed() -> Self {
        Self {
            handle: 0,
            signals: 0,
            ready: 0,
            _pad: 0,
        }
    }
}

const _: () = assert!(core::mem::size_of::<WaitItem>() == 16);
const _: () = assert!(core::mem::align_of::<WaitItem>() == 4);
const _: () = assert!(core::mem::offset_of!(WaitItem, handle) == 0);
const _: () = assert!(core::mem::offset_of!(WaitItem, signals) == 4);
const _: () = assert!(core::mem::offset_of!(WaitItem, ready) == 8);
const _: () = assert!(core::mem::offset_of!(WaitItem, _pad) == 12);

/// One syscall of BATCH's array.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BatchRecord {
    /// the syscall number, as in rax
    pub number: u64,
    /// its arguments, as in rdi, rsi, r8, r9, r10
    pub args: [u64; 5],
    /// the caller's own; the kernel never reads or changes it
    pub user_data: u64,
    /// written by BATCH: what rax would hold (-errno on error)
    pub result: i64,
}

impl BatchRecord {
    /// Size in bytes, as declared in the spec.
    pub const SIZE: usize = 64;

    /// Every byte zero.
    pub const fn zeroed() -> Self {
        Self {
            number: 0,
            args: [0; 5],
            user_data: 0,
            result: 0,
        }
    }
}

const _: () = assert!(core::mem::size_of::<BatchRecord>() == 64);
const _: () = assert!(core::mem::align_of::<BatchRecord>() == 8);
const _: () = assert!(core::mem::offset_of!(BatchRecord, number) == 0);
const _: () = assert!(core::mem::offset_of!(BatchRecord, args) == 8);
const _: () = assert!(core::mem::offset_of!(BatchRecord, user_data) == 48);
const _: () = assert!(core::mem::offset_of!(BatchRecord, result) == 56);

/// What SEND sends and RECV receives: bytes and handles, each with its length.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChannelMessage {
    /// address of the bytes (SEND: read from; RECV: written to)
    pub data: u64,
    /// address of a u32 array of handle ids (SEND: moved out; RECV: the new ids written)
    pub handles: u64,
    /// SEND: bytes to send; RECV: the buffer's capacity in, the message's bytes out (also on EMSGSIZE)
    pub data_len: u32,
    /// SEND: handles to move; RECV: the array's capacity in, the message's handles out (also on EMSGSIZE)
    pub handle_count: u32,
}

impl ChannelMessage {
    /// Size in bytes, as declared in the spec.
    pub const SIZE: usize = 24;

    /// Every byte zero.
    pub const fn zeroed() -> Self {
        Self {
            data: 0,
            handles: 0,
            data_len: 0,
            handle_count: 0,
        }
    }
}

const _: () = assert!(core::mem::size_of::<ChannelMessage>() == 24);
const _: () = assert!(core::mem::align_of::<ChannelMessage>() == 8);
const _: () = assert!(core::mem::offset_of!(ChannelMessage, data) == 0);
const _: () = assert!(core::mem::offset_of!(ChannelMessage, handles) == 8);
const _: () = assert!(core::mem::offset_of!(ChannelMessage, data_len) == 16);
const _: () = assert!(core::mem::offset_of!(ChannelMessage, handle_count) == 20);

/// The page MMAP of a VCPU handle maps (shared by kernel and user mode; docs/abi.md).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RunPage {
    /// kernel, at VCPU_OPEN: RUN_PAGE_VERSION
    pub version: u32,
    /// kernel, when VCPU_RUN returns 0: a VcpuExit
    pub exit_reason: u32,
    /// user: REGS_DIRTY to load regs at the next VCPU_RUN; kernel clears it; other values are EINVAL
    pub regs_dirty: u32,
    /// zero
    pub _pad: u32,
    /// the exit's data: the Vcpu* structure of exit_reason
    pub payload: [u8; 64],
    /// kernel, at every return: the guest's GUEST_REGISTERS
    pub regs: [u64; 18],
    /// zero; later versions grow into it
    pub _reserved: [u8; 1824],
    /// VcpuIo's data: kernel (OUT) or user (IN)
    pub io_data: [u8; 2048],
}

impl RunPage {
    /// Size in bytes, as declared in the spec.
    pub const SIZE: usize = 4096;

    /// Every byte zero.
    pub const fn zeroed() -> Self {
        Self {
            version: 0,
            exit_reason: 0,
            regs_dirty: 0,
            _pad: 0,
            payload: [0; 64],
            regs: [0; 18],
            _reserved: [0; 1824],
            io_data: [0; 2048],
        }
    }
}

const _: () = assert!(core::mem::size_of::<RunPage>() == 4096);
const _: () = assert!(core::mem::align_of::<RunPage>() == 8);
const _: () = assert!(core::mem::offset_of!(RunPage, version) == 0);
const _: () = assert!(core::mem::offset_of!(RunPage, exit_reason) == 4);
const _: () = assert!(core::mem::offset_of!(RunPage, regs_dirty) == 8);
const _: () = assert!(core::mem::offset_of!(RunPage, _pad) == 12);
const _: () = assert!(core::mem::offset_of!(RunPage, payload) == 16);
const _: () = assert!(core::mem::offset_of!(RunPage, regs) == 80);
const _: () = assert!(core::mem::offset_of!(RunPage, _reserved) == 224);
const _: () = assert!(core::mem::offset_of!(RunPage, io_data) == 2048);

/// The payload of VcpuExit.IO. OUT: io_data holds the items; IN: user mode writes them.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VcpuIo {
    /// kernel
    pub port: u16,
    /// kernel: bytes per item, 1, 2 or 4
    pub size: u8,
    /// kernel: IoDirection
    pub direction: u8,
    /// kernel: items in io_data (size * count bytes)
    pub count: u32,
    /// zero
    pub _reserved: [u8; 56],
}

impl VcpuIo {
    /// Size in bytes, as declared in the spec.
    pub const SIZE: usize = 64;

    /// Every byte zero.
    pub const fn zeroed() -> Self {
        Self {
            port: 0,
            size: 0,
            direction: 0,
            count: 0,
            _reserved: [0; 56],
        }
    }
}

const _: () = assert!(core::mem::size_of::<VcpuIo>() == 64);
const _: () = assert!(core::mem::align_of::<VcpuIo>() == 4);
const _: () = assert!(core::mem::offset_of!(VcpuIo, port) == 0);
const _: () = assert!(core::mem::offset_of!(VcpuIo, size) == 2);
const _: () = assert!(core::mem::offset_of!(VcpuIo, direction) == 3);
const _: () = assert!(core::mem::offset_of!(VcpuIo, count) == 4);
const _: () = assert!(core::mem::offset_of!(VcpuIo, _reserved) == 8);

/// The payload of VcpuExit.MMIO.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VcpuMmio {
    /// kernel: guest-physical
    pub address: u64,
    /// kernel: 1 to 8 bytes
    pub length: u32,
    /// kernel
    pub is_write: u8,
    /// zero
    pub _pad: [u8; 3],
    /// kernel (write) or user (read): little-endian, length bytes
    pub data: u64,
    /// zero
    pub _reserved: [u8; 40],
}

impl VcpuMmio {
    /// Size in bytes, as declared in the spec.
    pub const SIZE: usize = 64;

    /// Every byte zero.
    pub const fn zeroed() -> Self {
        Self {
            address: 0,
            length: 0,
            is_write: 0,
            _pad: [0; 3],
            data: 0,
            _reserved: [0; 40],
        }
    }
}

const _: () = assert!(core::mem::size_of::<VcpuMmio>() == 64);
const _: () = assert!(core::mem::align_of::<VcpuMmio>() == 8);
const _: () = assert!(core::mem::offset_of!(VcpuMmio, address) == 0);
const _: () = assert!(core::mem::offset_of!(VcpuMmio, length) == 8);
const _: () = assert!(core::mem::offset_of!(VcpuMmio, is_write) == 12);
const _: () = assert!(core::mem::offset_of!(VcpuMmio, _pad) == 13);
const _: () = assert!(core::mem::offset_of!(VcpuMmio, data) == 16);
const _: () = assert!(core::mem::offset_of!(VcpuMmio, _reserved) == 24);

/// The payload of VcpuExit.MSR_READ and MSR_WRITE.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VcpuMsr {
    /// kernel: the MSR (ECX)
    pub index: u32,
    /// user: 1 injects #GP instead of completing; 0 or 1 only
    pub error: u8,
    /// zero
    pub _pad: [u8; 3],
    /// kernel (MSR_WRITE: the value) or user (MSR_READ: the answer)
    pub data: u64,
    /// zero
    pub _reserved: [u8; 48],
}

impl VcpuMsr {
    /// Size in bytes, as declared in the spec.
    pub const SIZE: usize = 64;

    /// Every byte zero.
    pub const fn zeroed() -> Self {
        Self {
            index: 0,
            error: 0,
            _pad: [0; 3],
            data: 0,
            _reserved: [0; 48],
        }
    }
}

const _: () = assert!(core::mem::size_of::<VcpuMsr>() == 64);
const _: () = assert!(core::mem::align_of::<VcpuMsr>() == 8);
const _: () = assert!(core::mem::offset_of!(VcpuMsr, index) == 0);
const _: () = assert!(core::mem::offset_of!(VcpuMsr, error) == 4);
const _: () = assert!(core::mem::offset_of!(VcpuMsr, _pad) == 5);
const _: () = assert!(core::mem::offset_of!(VcpuMsr, data) == 8);
const _: () = assert!(core::mem::offset_of!(VcpuMsr, _reserved) == 16);

/// The payload of VcpuExit.CPUID.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VcpuCpuid {
    /// kernel (EAX)
    pub leaf: u32,
    /// kernel (ECX)
    pub subleaf: u32,
    /// user: the answer
    pub eax: u32,
    /// user
    pub ebx: u32,
    /// user
    pub ecx: u32,
    /// user
    pub edx: u32,
    /// zero
    pub _reserved: [u8; 40],
}

impl VcpuCpuid {
    /// Size in bytes, as declared in the spec.
    pub const SIZE: usize = 64;

    /// Every byte zero.
    pub const fn zeroed() -> Self {
        Self {
            leaf: 0,
            subleaf: 0,
            eax: 0,
            ebx: 0,
            ecx: 0,
            edx: 0,
            _reserved: [0; 40],
        }
    }
}

const _: () = assert!(core::mem::size_of::<VcpuCpuid>() == 64);
const _: () = assert!(core::mem::align_of::<VcpuCpuid>() == 4);
const _: () = assert!(core::mem::offset_of!(VcpuCpuid, leaf) == 0);
const _: () = assert!(core::mem::offset_of!(VcpuCpuid, subleaf) == 4);
const _: () = assert!(core::mem::offset_of!(VcpuCpuid, eax) == 8);
const _: () = assert!(core::mem::offset_of!(VcpuCpuid, ebx) == 12);
const _: () = assert!(core::mem::offset_of!(VcpuCpuid, ecx) == 16);
const _: () = assert!(core::mem::offset_of!(VcpuCpuid, edx) == 20);
const _: () = assert!(core::mem::offset_of!(VcpuCpuid, _reserved) == 24);

/// The payload of VcpuExit.EMULATION_FAILURE and INTERNAL_ERROR.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VcpuFailure {
    /// kernel: KVM's suberror, or the hardware entry-failure reason
    pub code: u32,
    /// kernel: bytes of insn that are valid (0 to 15)
    pub insn_length: u32,
    /// kernel: the instruction's bytes
    pub insn: [u8; 16],
    /// zero
    pub _reserved: [u8; 40],
}

impl VcpuFailure {
    /// Size in bytes, as declared in the spec.
    pub const SIZE: usize = 64;

    /// Every byte zero.
    pub const fn zeroed() -> Self {
        Self {
            code: 0,
            insn_length: 0,
            insn: [0; 16],
            _reserved: [0; 40],
        }
    }
}

const _: () = assert!(core::mem::size_of::<VcpuFailure>() == 64);
const _: () = assert!(core::mem::align_of::<VcpuFailure>() == 4);
const _: () = assert!(core::mem::offset_of!(VcpuFailure, code) == 0);
const _: () = assert!(core::mem::offset_of!(VcpuFailure, insn_length) == 4);
const _: () = assert!(core::mem::offset_of!(VcpuFailure, insn) == 8);
const _: () = assert!(core::mem::offset_of!(VcpuFailure, _reserved) == 24);

/// One range of VM_SET_MSR_FILTER's array.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MsrRange {
    /// MsrFilterFlag: the accesses claimed
    pub flags: u32,
    /// the first MSR of the range
    pub base: u32,
    /// MSRs in the range, 1 to MSR_RANGE_MAX_MSRS
    pub count: u32,
    /// zero
    pub _pad: u32,
    /// user address of (count + 7) / 8 bytes: bit i claims base + i
    pub bitmap: u64,
}

impl MsrRange {
    /// Size in bytes, as declared in the spec.
    pub const SIZE: usize = 24;

    /// Every byte zero.
    pub const fn zeroed() -> Self {
        Self {
            flags: 0,
            base: 0,
            count: 0,
            _pad: 0,
            bitmap: 0,
        }
    }
}

const _: () = assert!(core::mem::size_of::<MsrRange>() == 24);
const _: () = assert!(core::mem::align_of::<MsrRange>() == 8);
const _: () = assert!(core::mem::offset_of!(MsrRange, flags) == 0);
const _: () = assert!(core::mem::offset_of!(MsrRange, base) == 4);
const _: () = assert!(core::mem::offset_of!(MsrRange, count) == 8);
const _: () = assert!(core::mem::offset_of!(MsrRange, _pad) == 12);
const _: () = assert!(core::mem::offset_of!(MsrRange, bitmap) == 16);

/// What READ of a device event takes: one guest access in the event's range.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DeviceAccess {
    /// the port (IO event) or guest-physical address (MMIO event)
    pub address: u64,
    /// the value written (a write), else 0; little-endian
    pub data: u64,
    /// bytes: 1, 2 or 4 (port), 1 to 8 (MMIO)
    pub size: u32,
    /// 1: OUT or a store; 0: IN or a load
    pub is_write: u8,
    /// zero
    pub _pad: [u8; 3],
    /// names the access in its DeviceAnswer
    pub seq: u32,
    /// the vCPU that made it
    pub vcpu: u32,
}

impl DeviceAccess {
    /// Size in bytes, as declared in the spec.
    pub const SIZE: usize = 32;

    /// Every byte zero.
    pub const fn zeroed() -> Self {
        Self {
            address: 0,
            data: 0,
            size: 0,
            is_write: 0,
            _pad: [0; 3],
            seq: 0,
            vcpu: 0,
        }
    }
}

const _: () = assert!(core::mem::size_of::<DeviceAccess>() == 32);
const _: () = assert!(core::mem::align_of::<DeviceAccess>() == 8);
const _: () = assert!(core::mem::offset_of!(DeviceAccess, address) == 0);
const _: () = assert!(core::mem::offset_of!(DeviceAccess, data) == 8);
const _: () = assert!(core::mem::offset_of!(DeviceAccess, size) == 16);
const _: () = assert!(core::mem::offset_of!(DeviceAccess, is_write) == 20);
const _: () = assert!(core::mem::offset_of!(DeviceAccess, _pad) == 21);
const _: () = assert!(core::mem::offset_of!(DeviceAccess, seq) == 24);
const _: () = assert!(core::mem::offset_of!(DeviceAccess, vcpu) == 28);

/// What WRITE of a device event gives: completes the access it names.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DeviceAnswer {
    /// the DeviceAccess.seq answered
    pub seq: u32,
    /// zero
    pub _pad: u32,
    /// a read's value (little-endian; size bytes used)
    pub data: u64,
}

impl DeviceAnswer {
    /// Size in bytes, as declared in the spec.
    pub const SIZE: usize = 16;

    /// Every byte zero.
    pub const fn zeroed() -> Self {
        Self {
            seq: 0,
            _pad: 0,
            data: 0,
        }
    }
}

const _: () = assert!(core::mem::size_of::<DeviceAnswer>() == 16);
const _: () = assert!(core::mem::align_of::<DeviceAnswer>() == 8);
const _: () = assert!(core::mem::offset_of!(DeviceAnswer, seq) == 0);
const _: () = assert!(core::mem::offset_of!(DeviceAnswer, _pad) == 4);
const _: () = assert!(core::mem::offset_of!(DeviceAnswer, data) == 8);
