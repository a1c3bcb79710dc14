"""A guest VM as a kernel object (``GuestVm``), and its RAM as one (``GuestMemory``).

Guests are made at boot, one KVM VM each, from the boot configuration (``GuestSpec``:
``copra run --guest``, the image configuration's ``guests``): the kernel is loaded
through its PVH entry (vmm/pvh.py), vCPU 0 is put in the PVH entry state (vmm/guest.py's
``enter_pvh``), every vCPU gets KVM's supported CPUID, KVM_CAP_SYNC_REGS and an x2APIC
model (vmm/x2apic.py), and the VM gets user-space MSR exits (INVAL, UNKNOWN, FILTER)
with the filter of vmm/msr.py. No in-kernel irqchip (docs/apic.md says why).

Guest RAM is one anonymous host mapping registered twice without a copy: as the guest
VM's memory slot at guest-physical 0, and as a slot of the SVSM's own VM at
``GUEST_RAM_SVSM_BASE + n * GUEST_RAM_SVSM_STRIDE``, a foreign range of the frame
allocator (kernel/frames.py). MMAP of a VM_MEMORY handle maps those SVSM frames into the
process: the VMM and its device models then read and write the guest's memory with
plain loads and stores. The RAM stays registered until the kernel shuts down (the
guest is stopped earlier, when its VM is released): a mapping never outlives it.

Invariants:
- ``state`` goes AVAILABLE -> OPEN (VM_OPEN, at most once: exclusive system-wide)
  -> RELEASED (its handle went: the vCPUs are stopped and closed) and never back;
  CAPABILITIES' VM bitmap lists the AVAILABLE and OPEN ones;
- at most one handle refers to an OPEN VM (exclusive; moves keep it at one);
- ``policy`` (the claimed MSRs) is the one KVM's filter was last set from; every
  GuestCpu reads the same policy object.

Locking: ``lock`` (class "vmm.vm", right after "tasks": release runs under the tasks
lock when a process ends) guards ``state`` and ``policy``; the GuestCpus lock
themselves (vmm/vcpu.py).
"""

from __future__ import annotations

import contextlib
import mmap
import time
from dataclasses import dataclass
from enum import Enum
from typing import Final

from copra.abi.spec import GUEST_RAM_SVSM_BASE, GUEST_RAM_SVSM_STRIDE, PAGE_SIZE, Errno
from copra.hw import kvm
from copra.kernel import lockdep
from copra.kernel.errors import SyscallError
from copra.kernel.objects import KernelObject, MappableObject, ObjectKind
from copra.kernel.svsm_vm import SvsmVm
from copra.vmm import pvh
from copra.vmm.device import DeviceRouter
from copra.vmm.guest import TSS_ADDR, enter_pvh
from copra.vmm.msr import MsrPolicy
from copra.vmm.vcpu import GuestCpu
from copra.vmm.x2apic import ApicBus

#: The most vCPUs a guest may have here (KVM allows far more; the APIC ids are 0..N-1).
MAX_GUEST_CPUS: Final = 64
#: The most guests a boot may create (bits of CAPABILITIES' VM bitmap).
MAX_GUESTS: Final = 16


class GuestSetupError(Exception):
    """A guest of the boot configuration cannot be created (the message says why)."""


@dataclass(frozen=True)
class GuestSpec:
    name: str
    kernel: bytes  #: a PVH ELF image
    memory: int = 64 << 20  #: bytes
    cpus: int = 1
    cmdline: bytes = b""


class VmState(Enum):
    AVAILABLE = "available"
    OPEN = "open"
    RELEASED = "released"


class GuestMemory(MappableObject):
    """The RAM of one guest: page i is guest-physical i * 4 KiB, shared, never copied."""

    kind = ObjectKind.GUEST_MEMORY

    def __init__(self, svsm_base: int, size: int) -> None:
        super().__init__()
        self.svsm_base = svsm_base
        self.size = size

    def map_pages(self, first: int, pages: int, writable: bool) -> list[int]:
        if (first + pages) * PAGE_SIZE > self.size:
            raise SyscallError(Errno.EINVAL, f"pages {first}..{first + pages} pass the "
                                             f"guest's {self.size >> 12} pages of RAM")
        base = self.svsm_base + first * PAGE_SIZE
        return [base + i * PAGE_SIZE for i in range(pages)]


class GuestVm(KernelObject):
    kind = ObjectKind.VM
    exclusive = True

    def __init__(self, index: int, spec: GuestSpec, svsm: SvsmVm) -> None:
        super().__init__()
        if not 1 <= spec.cpus <= MAX_GUEST_CPUS:
            raise GuestSetupError(f"guest {spec.name}: {spec.cpus} vCPUs (1 to "
                                  f"{MAX_GUEST_CPUS})")
        try:
            image = pvh.boot_image(pvh.parse_kernel(spec.kernel), spec.memory, spec.cmdline)
        except pvh.PvhError as e:
            raise GuestSetupError(f"guest {spec.name}: {e}") from e
        self.index = index
        self.name = spec.name
        self.memory_size = spec.memory
        self.lock = lockdep.lock("vmm.vm")
        self.state = VmState.AVAILABLE
        self.policy = MsrPolicy()
        self._svsm = svsm
        self.svsm_base = GUEST_RAM_SVSM_BASE + index * GUEST_RAM_SVSM_STRIDE
        self.ram = mmap.mmap(-1, spec.memory, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._svsm_slot: kvm.MemorySlot | None = None
        self._view: memoryview | None = None
        self.vm: kvm.Vm | None = None
        self.cpus: list[GuestCpu] = []
        self.devices = DeviceRouter(spec.memory)
        try:
            self._create(image, spec.cpus)
        except BaseException as e:
            self.close()
            if isinstance(e, OSError):
                raise GuestSetupError(f"guest {spec.name}: KVM refused: "
                                      f"{e.strerror or e}") from e
            raise
        self.memory = GuestMemory(self.svsm_base, spec.memory)

    def _create(self, image: pvh.BootImage, cpus: int) -> None:
        host = self._svsm.kvm
        vm = self.vm = host.create_vm()
        if vm.check_extension(kvm.KVM_CAP_SET_TSS_ADDR) > 0:
            vm.set_tss_addr(TSS_ADDR)
        vm.enable_cap(kvm.KVM_CAP_X86_USER_SPACE_MSR,
                      kvm.KVM_MSR_EXIT_REASON_UNKNOWN | kvm.KVM_MSR_EXIT_REASON_INVAL
                      | kvm.KVM_MSR_EXIT_REASON_FILTER)
        vm.set_msr_filter(self.policy.kvm_ranges)
        vm.share_memory(0, self.ram)
        for chunk in image.chunks:
            self.ram[chunk.addr:chunk.addr + len(chunk.data)] = chunk.data
        self._svsm_slot = self._svsm.kvm_vm.share_memory(self.svsm_base, self.ram)
        self._svsm.frames.add_foreign(self.svsm_base, len(self.ram))
        cpuid = host.supported_cpuid()
        bus = ApicBus(time.monotonic_ns)
        view = self._view = memoryview(self.ram)
        for i in range(cpus):
            vcpu = vm.create_vcpu()
            vcpu.set_cpuid(cpuid)
            if i == 0:
                enter_pvh(vcpu, image)
            apic = bus.create(i, bsp=i == 0)
            self.cpus.append(GuestCpu(i, vcpu, apic, bus, view, started=i == 0,
                                      router=self.devices))

    @property
    def available(self) -> bool:
        return self.state is not VmState.RELEASED

    def open(self) -> None:
        """VM_OPEN's claim (the caller installs the handle; ``unopen`` if that fails)."""
        with self.lock:
            if self.state is VmState.OPEN:
                raise SyscallError(Errno.EBUSY, f"VM {self.index} ({self.name}) is open "
                                                "already (VMs are exclusive)")
            if self.state is VmState.RELEASED:
                raise SyscallError(Errno.ENOTFOUND, f"VM {self.index} was released")
            self.state = VmState.OPEN

    def unopen(self) -> None:
        with self.lock:
            self.state = VmState.AVAILABLE

    def set_policy(self, policy: MsrPolicy) -> None:
        with self.lock:
            if self.vm is None or self.state is VmState.RELEASED:
                raise SyscallError(Errno.ENOTFOUND, "the VM was released")
            self.vm.set_msr_filter(policy.kvm_ranges)
            self.policy = policy
            for cpu in self.cpus:
                cpu.policy = policy

    def on_close(self) -> None:
        """The last handle went: stop the guest for good (its RAM stays until shutdown)."""
        with self.lock:
            if self.state is VmState.RELEASED:
                return
            self.state = VmState.RELEASED
        self._stop()

    def _stop(self) -> None:
        self.devices.release()
        for cpu in self.cpus:
            cpu.release()
        if self.vm is not None:
            self.vm.close()
            self.vm = None

    def close(self) -> None:
        """Shutdown: the guest's VM, its slot in the SVSM's VM, its RAM (idempotent)."""
        self.state = VmState.RELEASED
        self._stop()
        if self._svsm_slot is not None:
            self._svsm.kvm_vm.remove_memory(self._svsm_slot)
            self._svsm.frames.remove_foreign(self.svsm_base)
            self._svsm_slot = None
        if self._view is not None:
            self._view.release()
            self._view = None
        if not self.ram.closed:
            with contextlib.suppress(BufferError):  # a view still exported: dies with it
                self.ram.close()
