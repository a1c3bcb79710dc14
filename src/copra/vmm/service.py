"""The VMM interface: class 2 of the syscall table, registered with the kernel at boot.

``Vmm`` creates the guests of the boot configuration (vmm/vm.py) on the SVSM's VM and
registers its table (``TABLE``) with the kernel (``Kernel.register_class``), which
never imports this layer; CAPABILITIES' VM bitmap comes from ``Vmm.vm_bitmap``. Each
handler has the kernel's shape (kernel/syscalls/table.py): decode and validate every
argument, look the handle up with its kind and the row's rights, act, copy out.

Upstream named VM_OPEN(idx) and VM_CAPABILITIES(vm, idx) and proposed VCPU_OPEN, a run
page mapped from the VCPU handle and WAIT_FOR_EVENT (coconut-facts 4, 9.G); it never
numbered them. The numbers are copra's (docs/abi.md). copra runs a vCPU with VCPU_RUN
on the caller's thread instead of a WAIT_FOR_EVENT served by a per-CPU kernel thread:
that is what KVM_RUN does, and it costs no thread switch per exit (docs/vmm.md).

Rights: VM handles carry READ (VM_CAPABILITIES), WRITE (VCPU_OPEN, VM_SET_MSR_FILTER)
and MAP (VM_MEMORY); VCPU handles WRITE (VCPU_RUN), MAP (its run page) and WAIT
(WAIT_MANY: READABLE while an exit waits for user mode); guest-memory
handles READ, WRITE and MAP; IRQ handles READ (the resample count), WRITE (IRQ_SIGNAL,
WRITE) and WAIT (READABLE: a resample waits).

Locking: ``Vmm`` is immutable after boot; the objects lock themselves.
"""

from __future__ import annotations

import struct
import time

from copra.abi.spec import (
    MSR_FILTER_MAX_RANGES,
    MSR_RANGE,
    TIMEOUT_NEVER,
    Errno,
    IrqFlag,
    MsrFilterFlag,
    Sys,
    SyscallClass,
    VmCap,
    VmFeature,
)
from copra.hw.kvm import KvmRegs
from copra.kernel.boot import BootError, BootHook
from copra.kernel.errors import SyscallError
from copra.kernel.frames import OutOfMemory
from copra.kernel.handles import Rights
from copra.kernel.image import GuestImage, ImageError
from copra.kernel.kernel import Kernel
from copra.kernel.syscalls.table import Call, Status, SyscallSpec, table, u32
from copra.kernel.usermem import UserPtr, check_buffer, copy_in
from copra.vmm.device import DeviceEvent
from copra.vmm.irqobject import FIRST_VECTOR, IrqObject
from copra.vmm.msr import ClaimRange, MsrPolicy, PolicyError, check_range
from copra.vmm.vcpu import RunCaller, Vcpu
from copra.vmm.vm import MAX_GUESTS, GuestMemory, GuestSetupError, GuestSpec, GuestVm

_RANGE = struct.Struct("<IIIIQ")
assert _RANGE.size == MSR_RANGE.size
_FEATURES = VmFeature.KERNEL_X2APIC | VmFeature.MSR_FILTER | VmFeature.PVH_BOOT


class Vmm:
    """The guests of one boot and the kernel they are registered with."""

    def __init__(self, kernel: Kernel, specs: list[GuestSpec]) -> None:
        if len(specs) > MAX_GUESTS:
            raise GuestSetupError(f"{len(specs)} guests: at most {MAX_GUESTS}")
        self.kernel = kernel
        self.guests: list[GuestVm] = []
        try:
            for index, spec in enumerate(specs):
                self.guests.append(GuestVm(index, spec, kernel.vm))
        except BaseException:
            self.close()
            raise
        kernel.register_class(SyscallClass.VMM, TABLE, self, self.vm_bitmap)

    def vm_bitmap(self) -> int:
        return sum(1 << g.index for g in self.guests if g.available)

    def guest(self, index: int) -> GuestVm:
        if index >= len(self.guests):
            raise SyscallError(Errno.ENOTFOUND, f"no VM {index} (CAPABILITIES lists them)")
        return self.guests[index]

    def close(self) -> None:
        """Shutdown, after every process has ended: stop the guests, return their RAM."""
        for guest in self.guests:
            guest.close()


def boot_stages(guests: tuple[GuestImage, ...]) -> tuple[BootHook, BootHook]:
    """The boot stages that create the guests before /init starts (as a Vmm registered
    with the kernel) and stop them and return their RAM after the run."""
    made: list[Vmm] = []

    def create(kernel: Kernel) -> None:
        try:
            specs = [GuestSpec(g.label, g.load(), g.memory << 20, g.cpus, g.cmdline.encode())
                     for g in guests]
            made.append(Vmm(kernel, specs))
        except (ImageError, GuestSetupError) as e:
            raise BootError(str(e)) from e
        except OSError as e:
            raise BootError(f"KVM refused a guest VM: {e.strerror or e}") from e
        publish_names(kernel, made[0].guests)
        publish_clock(kernel)
        for g in made[0].guests:
            kernel.log(f"guest VM {g.index} ({g.name}): {g.memory_size >> 20} MiB, "
                       f"{len(g.cpus)} vCPU{'s' if len(g.cpus) > 1 else ''}, kernel loaded; "
                       f"VM_OPEN({g.index}) hands it to a VMM")

    def close(kernel: Kernel) -> None:
        for vmm in made:
            vmm.close()
        made.clear()

    return create, close


#: The guests' names, line n naming VM n: the vmm service prefixes console lines with them.
GUEST_NAMES_PATH = "/etc/guests"


#: The wall clock for the guests' RTCs: ``UNIX_NS MONO_NS``, the host's UTC time in ns
#: since the epoch at the kernel's monotonic clock (CLOCK) MONO_NS. User mode has no
#: wall-clock syscall; this anchor and CLOCK give one (docs/vmm.md, "The RTC").
CLOCK_PATH = "/etc/clock"


def _publish(kernel: Kernel, path: str, text: str) -> None:
    """Write ``path`` into the RAM fs (left alone if the archive has one)."""
    fs = kernel.fs
    try:
        fs.lookup_dir("/etc")
    except SyscallError:
        fs.mkdir("/etc")
    try:
        file = fs.create(path)
    except SyscallError:
        return
    file.write(0, text.encode())


def publish_names(kernel: Kernel, guests: list[GuestVm]) -> None:
    """Write ``GUEST_NAMES_PATH`` (left alone if the archive has one)."""
    _publish(kernel, GUEST_NAMES_PATH, "".join(f"{g.name}\n" for g in guests))


def publish_clock(kernel: Kernel) -> None:
    """Write ``CLOCK_PATH`` (left alone if the archive has one, which then fixes the
    guests' wall clock: one number, UNIX_NS, holds at the RTC model's start)."""
    _publish(kernel, CLOCK_PATH, f"{time.time_ns()} {time.monotonic_ns()}\n")


def _vmm(c: Call) -> Vmm:
    vmm = c.kernel.context_of(SyscallClass.VMM)
    if not isinstance(vmm, Vmm):
        raise SyscallError(Errno.ENOSYS, "this boot has no VMM")
    return vmm


def sys_vm_open(c: Call, r: KvmRegs) -> int:
    index = u32(r.rdi)
    guest = _vmm(c).guest(index)
    p = c.process
    p.handles.check_room()
    guest.open()
    try:
        return p.handles.install(guest, Rights.READ | Rights.WRITE | Rights.MAP
                                 | Rights.MOVABLE)
    except BaseException:
        guest.unopen()
        raise


def sys_vm_capabilities(c: Call, r: KvmRegs) -> int:
    index = u32(r.rsi)
    guest = c.handle(u32(r.rdi), GuestVm)
    if index == VmCap.COUNT:
        return len(VmCap) - 1
    if index == VmCap.VCPUS:
        return len(guest.cpus)
    if index == VmCap.MEMORY_SIZE:
        return guest.memory_size
    if index == VmCap.MEMORY_BASE:
        return 0
    if index == VmCap.FEATURES:
        return int(_FEATURES)
    raise SyscallError(Errno.ENOTFOUND, f"no VM capability index {index}")


def sys_vcpu_open(c: Call, r: KvmRegs) -> int:
    index = u32(r.rsi)
    guest = c.handle(u32(r.rdi), GuestVm)
    if index >= len(guest.cpus):
        raise SyscallError(Errno.ENOTFOUND, f"VM {guest.index} has {len(guest.cpus)} vCPUs")
    cpu = guest.cpus[index]
    p = c.process
    p.handles.check_room()
    with cpu.lock:
        if cpu.dead:
            raise SyscallError(Errno.ENOTFOUND, "the VM was released")
        if cpu.opened:
            raise SyscallError(Errno.EBUSY, f"vCPU {index} is open already (VCPUs are "
                                            "exclusive)")
        cpu.opened = True
    try:
        vcpu = Vcpu(cpu, _vmm(c).kernel.vm.frames)
    except BaseException as e:
        with cpu.lock:
            cpu.opened = False
        if isinstance(e, OutOfMemory):
            raise SyscallError(Errno.ENOMEM, "no frame for the run page") from e
        if isinstance(e, OSError):  # released meanwhile: its KVM vCPU is closed
            raise SyscallError(Errno.ENOTFOUND, "the VM was released") from e
        raise
    return p.handles.install(vcpu, Rights.WRITE | Rights.MAP | Rights.WAIT | Rights.MOVABLE)


def sys_vcpu_run(c: Call, r: KvmRegs) -> int:
    timeout = r.rsi
    vcpu = c.handle(u32(r.rdi), Vcpu)
    kernel = _vmm(c).kernel
    thread = c.thread
    if not thread.resumed:
        thread.deadline = None if timeout == TIMEOUT_NEVER else time.monotonic() + timeout / 1e9
    cpu_index = thread.cpu
    if cpu_index is None:
        raise SyscallError(Errno.UNKNOWN, "VCPU_RUN from a thread on no CPU")
    caller = RunCaller(thread, kernel.vm.cpus[cpu_index], kernel.sched, thread.deadline,
                       kernel.wait_for, kernel.stop_requested)
    return vcpu.cpu.run(vcpu.page, caller)


def sys_vm_set_msr_filter(c: Call, r: KvmRegs) -> int:
    ranges_at, count = UserPtr(r.rsi), r.r8
    if count > MSR_FILTER_MAX_RANGES:
        raise SyscallError(Errno.EINVAL, f"{count} ranges: at most {MSR_FILTER_MAX_RANGES}")
    guest = c.handle(u32(r.rdi), GuestVm)
    p = c.process
    claims: list[ClaimRange] = []
    with p.mem_lock:
        size = count * _RANGE.size
        raw = b""
        if count:
            check_buffer(p.space, ranges_at, size, write=False, usable=size)
            raw = copy_in(p.space, ranges_at, size)
        for i in range(count):
            flags, base, n, pad, bitmap_at = _RANGE.unpack_from(raw, i * _RANGE.size)
            try:
                check_range(flags, base, n)
            except PolicyError as e:
                raise SyscallError(Errno.EINVAL, f"range {i}: {e}") from e
            if pad:
                raise SyscallError(Errno.EINVAL, f"range {i}: padding is not zero")
            nbytes = (n + 7) // 8
            check_buffer(p.space, UserPtr(bitmap_at), nbytes, write=False, usable=nbytes)
            bitmap = bytearray(copy_in(p.space, UserPtr(bitmap_at), nbytes))
            if n % 8:
                bitmap[-1] &= (1 << (n % 8)) - 1  # bits past count claim nothing
            claims.append(ClaimRange(MsrFilterFlag(flags), base, bytes(bitmap)))
    try:
        policy = MsrPolicy(tuple(claims))
    except PolicyError as e:
        raise SyscallError(Errno.EINVAL, str(e)) from e
    guest.set_policy(policy)
    return 0


def _event_create(c: Call, r: KvmRegs, is_mmio: bool) -> int:
    base, size = r.rsi, r.r8
    guest = c.handle(u32(r.rdi), GuestVm)
    if not guest.available:
        raise SyscallError(Errno.ENOTFOUND, "the VM was released")
    p = c.process
    p.handles.check_room()
    event = guest.devices.create(is_mmio, base, size)
    try:
        return p.handles.install(event, Rights.READ | Rights.WRITE | Rights.WAIT
                                     | Rights.MOVABLE)
    except BaseException:
        event.on_close()  # never held: unroute it
        raise


def sys_io_event_create(c: Call, r: KvmRegs) -> int:
    return _event_create(c, r, is_mmio=False)


def sys_mmio_event_create(c: Call, r: KvmRegs) -> int:
    return _event_create(c, r, is_mmio=True)


def sys_irq_create(c: Call, r: KvmRegs) -> int:
    apic_id, vector, flags = r.rsi, r.r8, r.r9
    guest = c.handle(u32(r.rdi), GuestVm)
    if flags & ~int(IrqFlag.LEVEL):
        raise SyscallError(Errno.EINVAL, f"IRQ flags {flags:#x}: only LEVEL (1) is defined")
    if not FIRST_VECTOR <= vector <= 0xFF:
        raise SyscallError(Errno.EINVAL, f"vector {vector}: fixed interrupts use 16-255")
    if apic_id >= len(guest.cpus):
        raise SyscallError(Errno.ENOTFOUND, f"VM {guest.index} has no APIC id {apic_id} "
                                            f"(ids are 0-{len(guest.cpus) - 1})")
    if not guest.available:
        raise SyscallError(Errno.ENOTFOUND, "the VM was released")
    p = c.process
    p.handles.check_room()
    irq = IrqObject(guest, guest.cpus[apic_id].irq, vector, bool(flags & IrqFlag.LEVEL))
    try:
        return p.handles.install(irq, Rights.READ | Rights.WRITE | Rights.WAIT
                                 | Rights.MOVABLE)
    except BaseException:
        irq.on_close()
        raise


def sys_irq_signal(c: Call, r: KvmRegs) -> int:
    c.handle(u32(r.rdi), IrqObject).signal()
    return 0
def sys_device_reply(c: Call, r: KvmRegs) -> int:
    event = c.handle(u32(r.rdi), DeviceEvent)
    return event.reply(c, UserPtr(r.rsi), UserPtr(r.r8))


def sys_vm_memory(c: Call, r: KvmRegs) -> int:
    guest = c.handle(u32(r.rdi), GuestVm)
    memory: GuestMemory = guest.memory
    p = c.process
    return p.handles.install(memory, Rights.READ | Rights.WRITE | Rights.MAP
                                 | Rights.MOVABLE)


TABLE = table((
    SyscallSpec(Sys.VM_OPEN, sys_vm_open, Status.COPRA),
    SyscallSpec(Sys.VM_CAPABILITIES, sys_vm_capabilities, Status.COPRA, Rights.READ),
    SyscallSpec(Sys.VCPU_OPEN, sys_vcpu_open, Status.COPRA, Rights.WRITE),
    SyscallSpec(Sys.VCPU_RUN, sys_vcpu_run, Status.COPRA, Rights.WRITE),
    SyscallSpec(Sys.VM_SET_MSR_FILTER, sys_vm_set_msr_filter, Status.COPRA, Rights.WRITE),
    SyscallSpec(Sys.VM_MEMORY, sys_vm_memory, Status.COPRA, Rights.MAP),
    SyscallSpec(Sys.IO_EVENT_CREATE, sys_io_event_create, Status.COPRA, Rights.WRITE),
    SyscallSpec(Sys.MMIO_EVENT_CREATE, sys_mmio_event_create, Status.COPRA, Rights.WRITE),
    SyscallSpec(Sys.IRQ_CREATE, sys_irq_create, Status.COPRA, Rights.WRITE),
    SyscallSpec(Sys.IRQ_SIGNAL, sys_irq_signal, Status.COPRA, Rights.WRITE),
    SyscallSpec(Sys.DEVICE_REPLY, sys_device_reply, Status.COPRA, Rights.READ | Rights.WRITE),
))
