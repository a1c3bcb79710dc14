"""The SVSM's VM: one KVM VM whose CPL3 runs copra's user processes, and its vCPUs.

VM-wide state lives here; each vCPU is a ``Cpu`` (kernel/cpu.py). The VM owns:
- guest memory, one anonymous host mapping handed to KVM as memory slot 0, and its
  frame allocator (kernel/frames.py), whose pool starts after the kernel image;
- the kernel image (kernel/layout.py): GDT with a TSS descriptor per CPU, IDT, entry
  stubs, a TSS and a kernel stack page per CPU, the kernel half's page tables;
- the CPUID table and XCR0 every vCPU gets (decided before the VM exists, so that a
  refusal closes /dev/kvm), and whether UMIP is on;
- the gate every CPU passes to enter the guest (``Gate``): it knows which CPUs are
  in guest mode, delivers kicks to them, and closes for a stop-the-world;
- invalidation: making KVM forget every translation it derived from copra's page
  tables (``invalidate_mappings``), with no CPU in guest mode meanwhile, and then
  freeing the frames that waited in quarantine for it (kernel/frames.py); or only
  those derived from some entries, from one CPU, the world running
  (``drop_translations``, a MUNMAP).

``bare_program`` builds a CPL3 program with no process around it (a code page and
maybe a stack page in an address space of its own): the probe at start, the
benchmarks' floors and the KVM tests run such programs.

Locking: construction and ``close`` run on one thread with no CPU running. The frame
allocator locks itself; the image is written once, before any vCPU runs. The gate's
lock (class "vm.gate") guards every CPU's GUEST state, the count of CPUs in guest
mode and the closed flag; only kicks (``Cpu.kick``) run under it.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from copra.abi.spec import DOORBELL_PORT, PAGE_SIZE, SYSCALL_VECTOR, USER_START, Entry
from copra.hw import kvm, x86
from copra.hw.kvm import KvmCpuid2
from copra.kernel import layout, lockdep, wakeq
from copra.kernel.cpu import Cpu, CpuState, SyscallExit, UserContext
from copra.kernel.frames import FrameAllocator, FrameOwner, PhysicalMemory
from copra.kernel.layout import KERNEL_BASE
from copra.kernel.pagetable import AddressSpace

DEFAULT_MEMORY: Final = 256 << 20


def xsave_cpuid(cpuid: KvmCpuid2) -> int:
    """Make ``cpuid`` tell the truth about the XSAVE state copra enables; return XCR0.

    XCR0 is every user component KVM supports (leaf 0xD.0 EDX:EAX): KVM_GET_XSAVE
    carries exactly those, so each is kept per context. Leaf 1 then says XSAVE and,
    iff AVX state is enabled, AVX; leaf 7.0 says AVX-512F iff its three components
    are. (PVM hosts report leaf 0xD but clear XSAVE and AVX in leaf 1, although CPL3
    code runs with them.) KVM derives OSXSAVE from CR4 itself.
    """
    leaf_d = cpuid.find(0xD, 0)
    if leaf_d is None:
        raise kvm.KvmError("KVM reports no CPUID leaf 0xD: copra needs XSAVE")
    xcr0 = leaf_d.eax | (leaf_d.edx << 32)
    if xcr0 & x86.XCR0_X87_SSE != x86.XCR0_X87_SSE:
        raise kvm.KvmError(f"KVM's XCR0 set {xcr0:#x} lacks x87 or SSE")
    leaf_1 = cpuid.find(1)
    if leaf_1 is not None:
        leaf_1.ecx |= x86.CPUID1_ECX_XSAVE
        if xcr0 & (1 << x86.XFeature.AVX):
            leaf_1.ecx |= x86.CPUID1_ECX_AVX
        else:
            leaf_1.ecx &= ~x86.CPUID1_ECX_AVX
    leaf_7 = cpuid.find(7, 0)
    if leaf_7 is not None:
        if xcr0 & x86.XCR0_AVX512 == x86.XCR0_AVX512:
            leaf_7.ebx |= x86.CPUID7_EBX_AVX512F
        else:
            leaf_7.ebx &= ~x86.CPUID7_EBX_AVX512F
    return xcr0


class Gate:
    """Which CPUs are in guest mode, and the stop-the-world that empties it.

    Invariants: ``in_guest`` is the number of CPUs whose state is GUEST; while
    ``closed``, no CPU enters (``enter`` waits), and ``close`` returns only once
    ``in_guest`` is 0. CPUs in the kernel (handling exits) go on meanwhile: they use
    no translation of KVM's.
    """

    def __init__(self) -> None:
        self.lock = lockdep.lock("vm.gate")
        self._cond = lockdep.condition(self.lock)
        self.in_guest = 0
        self.closed = False
        self.closings = 0

    def enter(self, cpu: Cpu) -> None:
        with self.lock:
            while self.closed:
                self._cond.wait()
            cpu.state = CpuState.GUEST
            self.in_guest += 1

    def leave(self, cpu: Cpu) -> None:
        with self.lock:
            cpu.state = CpuState.KERNEL
            self.in_guest -= 1
            if self.closed and not self.in_guest:
                self._cond.notify_all()

    def kick(self, cpus: list[Cpu], preempt: bool) -> None:
        """Kick every CPU of ``cpus`` that is not idle: a signal to those in guest
        mode, ``immediate_exit`` for the rest (they see it at their next entry)."""
        with self.lock:
            for cpu in cpus:
                if cpu.state is CpuState.GUEST or cpu.state is CpuState.KERNEL:
                    cpu.kick(preempt)

    def close(self, cpus: list[Cpu]) -> None:
        """Stop the world: kick every CPU out of the guest and keep them out."""
        wakeq.flush()  # a CPU's host thread may wait here (kernel/wakeq.py)
        with self.lock:
            while self.closed:  # another stop-the-world is under way
                self._cond.wait()
            self.closed = True
            self.closings += 1
            for cpu in cpus:
                if cpu.state is CpuState.GUEST:
                    cpu.kick(preempt=False)
            while self.in_guest:
                self._cond.wait()

    def open(self) -> None:
        with self.lock:
            self.closed = False
            self._cond.notify_all()


@dataclass(frozen=True)
class BareProgram:
    """A CPL3 program with no process around it (``SvsmVm.bare_program``)."""

    space: AddressSpace
    context: UserContext
    #: Its code and stack frames (the table frames are ``space``'s).
    pages: tuple[int, ...]


class SvsmVm:
    """The SVSM's KVM VM: memory, frames, kernel image, invalidation, and its CPUs."""

    def __init__(self, memory_size: int = DEFAULT_MEMORY, device: str = "/dev/kvm",
                 cpus: int = 1) -> None:
        if not 1 <= cpus <= layout.MAX_CPUS:
            raise ValueError(f"{cpus} CPUs: copra runs 1 to {layout.MAX_CPUS}")
        self.kvm = kvm.Kvm(device)
        try:
            if not self.kvm.check_extension(kvm.KVM_CAP_SYNC_REGS):
                raise kvm.KvmError("this KVM lacks KVM_CAP_SYNC_REGS (copra's exit path needs it)")
            for cap, name in ((kvm.KVM_CAP_XSAVE, "XSAVE"), (kvm.KVM_CAP_XCRS, "XCRS")):
                if not self.kvm.check_extension(cap):
                    raise kvm.KvmError(f"this KVM lacks KVM_CAP_{name} (copra keeps each "
                                       "process's vector registers with it)")
            self.cpuid = self.kvm.supported_cpuid()
            self.xcr0 = xsave_cpuid(self.cpuid)
            self.kvm_vm = self.kvm.create_vm()
            self._mmap = self.kvm_vm.add_memory(0, memory_size)
        except BaseException:
            self.kvm.close()
            raise
        self.memory = PhysicalMemory(memoryview(self._mmap))
        # Fresh anonymous memory: zero, and only the allocator's frames are written.
        self.frames = FrameAllocator(self.memory, layout.KERNEL_REGION, zeroed=True)
        self.frames.reclaim = self.invalidate_mappings
        self.invalidations = 0
        #: Host seconds the invalidations took, stop-the-world wait included.
        self.invalidation_seconds = 0.0
        #: Called with (start, end) of each invalidation (a run's trace), or None.
        self.on_invalidation: Callable[[float, float], None] | None = None
        self.zap_fallbacks = 0
        self.gate = Gate()
        self.cpus: list[Cpu] = []
        try:
            self._build_kernel_image()
            if self.kvm_vm.check_extension(kvm.KVM_CAP_DISABLE_QUIRKS2) \
                    & kvm.KVM_X86_QUIRK_FIX_HYPERCALL_INSN:
                # A VMMCALL on an Intel host (VMCALL on AMD) is then a #UD for the
                # process, not KVM rewriting the instruction in its read-only text page.
                # PVM hosts rewrite it regardless; the kernel reports that write fault
                # as the #UD.
                self.kvm_vm.enable_cap(kvm.KVM_CAP_DISABLE_QUIRKS2,
                                       kvm.KVM_X86_QUIRK_FIX_HYPERCALL_INSN)
            self.umip = any(e.function == 7 and e.index == 0 and e.ecx & x86.CPUID7_ECX_UMIP
                            for e in self.cpuid.entries[:self.cpuid.nent])
            for index in range(cpus):
                self.cpus.append(Cpu(self, index))
            self.io_done_at_exit = self.probe_io_exits()
            for cpu in self.cpus:
                cpu.io_done_at_exit = self.io_done_at_exit
        except BaseException:
            self.close()
            raise

    # --- construction ----------------------------------------------------------------

    def kernel_pml4_entries(self) -> dict[int, int]:
        """PML4 entries every address space shares: the kernel half, supervisor-only."""
        return {layout.KERNEL_PML4_SLOT: layout.KERNEL_PDPT_PA | x86.PTE_P | x86.PTE_W}

    def _w64(self, pa: int, value: int) -> None:
        struct.pack_into("<Q", self.memory.view, pa, value)

    def _build_kernel_image(self) -> None:
        # Kernel half: KERNEL_BASE + pa -> pa for the kernel image, supervisor, no U.
        self._w64(layout.KERNEL_PDPT_PA, layout.KERNEL_PD_PA | x86.PTE_P | x86.PTE_W)
        self._w64(layout.KERNEL_PD_PA, layout.KERNEL_PT_PA | x86.PTE_P | x86.PTE_W)
        stacks = {layout.kstack_pa(cpu) for cpu in range(layout.MAX_CPUS)}
        for pa in range(PAGE_SIZE, layout.KERNEL_REGION, PAGE_SIZE):  # the null page stays out
            flags = x86.PTE_P | x86.PTE_G
            if pa in stacks or pa == layout.KERNEL_PT_PA:  # the PT: for the windows
                flags |= x86.PTE_W | x86.PTE_NX
            elif pa != layout.STUB_PA:
                flags |= x86.PTE_NX
            self._w64(layout.KERNEL_PT_PA + (pa // PAGE_SIZE) * 8, pa | flags)
        gdt = [0, x86.DESC_KERNEL_CODE64, x86.DESC_KERNEL_DATA, x86.DESC_USER_DATA,
               x86.DESC_USER_CODE64]
        bitmap = x86.io_bitmap(frozenset({DOORBELL_PORT}))
        for cpu in range(layout.MAX_CPUS):
            tss = layout.tss_pa(cpu)
            gdt += x86.tss_descriptor(KERNEL_BASE + tss, layout.TSS_LIMIT)
            self._w64(tss + x86.TSS_RSP0_OFFSET, KERNEL_BASE + layout.kstack_top_pa(cpu))
            struct.pack_into("<H", self.memory.view, tss + x86.TSS_IOMAP_BASE_OFFSET,
                             x86.TSS_SIZE)
            self.memory.write(tss + x86.TSS_SIZE, bitmap)
        assert len(gdt) == layout.GDT_SLOTS
        for i, desc in enumerate(gdt):
            self._w64(layout.GDT_PA + i * 8, desc)
        for i, vector in enumerate(layout.stub_vectors()):
            addr = layout.STUB_PA + i * layout.STUB_SIZE
            self.memory.write(addr, layout.stub_code(vector))
            # int3 and int 0x80 may be used from CPL3 (int3 raises #BP, as on Linux);
            # every other vector's gate is DPL 0, so `int N` from user mode is a #GP.
            dpl = 3 if vector in (SYSCALL_VECTOR, x86.Vector.BP) else 0
            gate = x86.idt_gate(KERNEL_BASE + addr, x86.SEL_KERNEL_CODE, dpl)
            self.memory.write(layout.IDT_PA + vector * 16, gate)
        self.memory.write(layout.ZAP_STUB_PA, layout.zap_code())

    def bare_program(self, code: bytes, *, at: int = USER_START,
                     stack_top: int | None = None) -> BareProgram:
        """``code`` on a read-only page at ``at`` in an address space of its own and,
        with ``stack_top``, one writable stack page below it; the context starts at
        ``at`` with the stack pointer 8 bytes below ``stack_top`` (without a stack: at
        the page after the code, unmapped). Its frames stay out of the pool until the
        caller gives them back (after an invalidation, as the kernel does) or the VM
        closes. OutOfMemory when the pool runs dry."""
        space = AddressSpace(self.frames, self.kernel_pml4_entries())
        text = self.frames.alloc(FrameOwner.USER)
        self.memory.write(text, code)
        space.map(at, text, writable=False, executable=True)
        if stack_top is None:
            return BareProgram(space, UserContext.initial(space.pml4, at, at + PAGE_SIZE),
                               (text,))
        stack = self.frames.alloc(FrameOwner.USER)
        space.map(stack_top - PAGE_SIZE, stack, writable=True, executable=False)
        return BareProgram(space, UserContext.initial(space.pml4, at, stack_top - 8),
                           (text, stack))

    def probe_io_exits(self) -> bool:
        """Whether KVM reports a CPL3 ``out`` exit with RIP already past the instruction
        (PVM hosts do; VMX and SVM report it at the ``out`` and skip it on re-entry).
        Measured once, on CPU 0, with a two-instruction program; its frames go back to
        the pool after an invalidation, so the VM starts with nothing in quarantine."""
        cpu = self.cpus[0]
        program = self.bare_program(bytes((0xE6, DOORBELL_PORT, 0xEB, 0xFE)))  # out; jmp $
        try:
            past = cpu.enter(program.context) == SyscallExit(Entry.DOORBELL) \
                and cpu.regs.rip == USER_START + 2
            cpu.io_done_at_exit = False
            cpu._io_pending = True  # complete it either way: the vCPU starts clean
            cpu.save()
        finally:
            cpu.forget(program.context)
            self.frames.retire([*program.pages, *program.space.table_frames()])
            self.invalidate_mappings()
        return past

    # --- accounting ---------------------------------------------------------------------

    @property
    def exits(self) -> int:
        """Exits to the kernel on every CPU."""
        return sum(cpu.exits for cpu in self.cpus)

    def kvm_counters(self) -> dict[str, int] | None:
        """KVM's own counters: every vCPU's, summed (``Vcpu.stats``), and the VM's, their
        names prefixed with ``vm.`` (its MMU's work: shadow pages built and zapped, TLB
        flushes). None where KVM keeps no binary statistics."""
        total: dict[str, int] = {}
        try:
            for cpu in self.cpus:
                for name, value in cpu.vcpu.stats().items():
                    total[name] = total.get(name, 0) + value
            for name, value in kvm.read_stats(self.kvm_vm.fd).items():
                total[f"vm.{name}"] = value
        except kvm.KvmError:
            return None
        return total

    @property
    def ring0_preemptions(self) -> int:
        return sum(cpu.ring0_preemptions for cpu in self.cpus)

    # --- translations -------------------------------------------------------------------

    def invalidate_mappings(self) -> None:
        """Make KVM forget every translation it derived from copra's page tables.

        Call after a present page-table entry was removed or a page-table frame freed,
        before the frames are handed out again. copra writes page tables from the host,
        which KVM's shadow MMU (used on PVM hosts) does not see: it keeps shadow pages
        built from the old contents, and would go on translating through them. Deleting
        and re-adding the memory slot zaps every shadow page and flushes every TLB
        (api.rst 4.35); it costs about a millisecond, so it runs when
        the frame pool runs dry or a run ends, never on the syscall path (MUNMAP uses
        ``drop_translations``). Frames given up in the
        meantime (an ended process's, above all) wait in the allocator's quarantine,
        and each invalidation frees every one of them: one serves many exits.

        The slot is missing while it is re-added: a CPU in the guest then would fault
        on every access. So this is a stop-the-world: the gate closes, every CPU in
        the guest is kicked out and none enters until the slot is back.
        """
        start = time.perf_counter()
        self.gate.close(self.cpus)
        try:
            # Taken with the world stopped: every reference in it was retired before
            # this invalidation, so no translation to it survives the remap.
            batch = self.frames.take_quarantine()
            try:
                self.kvm_vm.remap_memory(0)
            except BaseException:
                self.frames.retire(batch)
                raise
            self.invalidations += 1
            end = time.perf_counter()
            self.invalidation_seconds += end - start  # under the closed gate: one writer
        finally:
            self.gate.open()
        if self.on_invalidation is not None:
            self.on_invalidation(start, end)
        self.frames.free_many(batch)

    def drop_translations(self, cpu: int, entries: list[int]) -> None:
        """Make every CPU forget the page-table entries at these physical addresses,
        just cleared by the host (a MUNMAP): the range faults at once everywhere, and
        the frames they mapped may be freed on return. CPU ``cpu`` (the caller's, with
        the caller's context loaded) runs the zap stub (``Cpu.zap``): no stop-the-world.
        Should the stub fail, everything is invalidated instead (counted in
        ``zap_fallbacks``)."""
        if entries and not self.cpus[cpu].zap(entries):
            self.zap_fallbacks += 1
            self.invalidate_mappings()

    def flush_quarantine(self) -> None:
        """Invalidate if frames wait in quarantine (the end of a run)."""
        if self.frames.quarantined:
            self.invalidate_mappings()

    def kick(self, preempt: bool = True) -> None:
        """Kick every busy CPU (the timer's tick; a stop)."""
        self.gate.kick(self.cpus, preempt)

    def kick_one(self, index: int) -> None:
        """Kick CPU ``index`` if it is busy (a thread of an ending process runs there)."""
        self.gate.kick([self.cpus[index]], preempt=True)

    def use_kick_signal(self, enabled: bool) -> None:
        for cpu in self.cpus:
            cpu.signal_kicks = enabled

    def close(self) -> None:
        for cpu in self.cpus:
            cpu.close()
        self.memory.view.release()
        self.kvm_vm.close()
        self.kvm.close()
