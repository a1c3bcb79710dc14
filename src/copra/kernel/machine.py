"""The SVSM machine: one KVM VM whose CPL3 runs copra's user processes.

Layout (guest-physical; the kernel half maps [0, KERNEL_REGION) at KERNEL_BASE, no U bit):

    0x1000  GDT             null, kernel code/data, user data/code (DPL 3), 64-bit TSS
    0x2000  IDT             256 gates; vectors 0-31 DPL 0, vector 0x80 DPL 3
    0x3000  TSS             RSP0, I/O bitmap allowing only spec.DOORBELL_PORT (3 pages)
    0x6000  entry stubs     one 16-byte stub per gate: [push 0]; out STUB_PORT(v), al; hlt
    0x8000  kernel stack    RSP0 for every exception taken at CPL3
    0x10000 kernel PDPT/PD/PT, then the frame allocator's pool

How CPL3 reaches Python (see docs/architecture.md for the measurements behind it):
- the doorbell ``out DOORBELL_PORT, al`` at CPL3 exits with KVM_EXIT_IO, RIP already
  past the instruction, no ring-0 code at all: the fast path;
- a CPU exception at CPL3 enters its ring-0 stub through the IDT; the stub's ``out``
  to the vector's private port exits to Python, which reads the hardware frame
  (error code, RIP, CS, RFLAGS, RSP, SS) from the kernel stack. On PVM hosts
  ``int 0x80`` arrives this way as #UD and is recognised by its bytes ``CD 80``; on
  VMX/SVM hosts it arrives through the DPL 3 gate at vector 0x80. The machine reports
  the #UD; the kernel, which owns the process's memory, recognises the bytes.
- Python never returns through ring 0: it writes the user registers and the user
  segment registers back through KVM_CAP_SYNC_REGS, so a ring-0 stub runs exactly
  two instructions per exception (KVM emulates ring 0 on PVM hosts, slowly).

Per-context state: the general registers and the whole XSAVE-managed state (x87,
SSE, AVX, AVX-512 and whatever else KVM's XSAVE set holds) belong to one
``UserContext``. A switch saves the outgoing context's state with KVM_GET_XSAVE(2)
and loads the incoming one's with KVM_SET_XSAVE; a context that never ran gets
``x86.initial_xsave``. XCR0 is the same for every context (CPL3 cannot change it),
so it is set once, to every component KVM supports, with CR4.OSXSAVE on and the
vCPU's CPUID saying so. On PVM hosts CPL3 code runs under the host's XCR0 whatever
the guest's says, so this is what keeps one process's vector registers from the
next; see docs/architecture.md for the measurements.

Ownership and locking: a ``Machine`` is driven by one host thread (the one that
called ``enter``); the kvm_run page and the kernel stack are touched only by it.
The frame allocator is shared with the rest of the kernel and locks itself.
"""

from __future__ import annotations

import ctypes
import signal
import struct
import threading
from dataclasses import dataclass, field
from types import FrameType
from typing import Final

from copra.abi.spec import DOORBELL_PORT, PAGE_SIZE, SYSCALL_VECTOR, USER_INITIAL_RFLAGS, Entry
from copra.hw import kvm, x86
from copra.hw.kvm import ExitReason, KvmCpuid2, KvmRegs, KvmSegment, KvmSregs
from copra.kernel.frames import FrameAllocator, PhysicalMemory

KERNEL_BASE: Final = 0xFFFF_FF80_0000_0000  # PML4 slot 511
KERNEL_PML4_SLOT: Final = 511
GDT_PA: Final = 0x1000
IDT_PA: Final = 0x2000
TSS_PA: Final = 0x3000
STUB_PA: Final = 0x6000
KSTACK_PA: Final = 0x8000
KSTACK_TOP_PA: Final = 0xA000
KERNEL_PDPT_PA: Final = 0x10000
KERNEL_PD_PA: Final = 0x11000
KERNEL_PT_PA: Final = 0x12000
KERNEL_REGION: Final = 0x13000  # frames below this are the kernel image
STUB_SIZE: Final = 16
EXCEPTION_PORT_BASE: Final = 0xA0  # stub of vector v (< 32) writes port 0xA0 + v
GATE80_PORT: Final = 0xDF
DEFAULT_MEMORY: Final = 256 << 20
#: MSR_LSTAR: the kernel half's first page, never mapped (a SYSCALL lands there on PVM).
SYSCALL_LANDING: Final = KERNEL_BASE
FRAME_WORDS: Final = struct.Struct("<6Q")  # error, rip, cs, rflags, rsp, ss

# Byte offsets in struct kvm_vcpu_events (api.rst 4.31, KVM_GET_VCPU_EVENTS).
_EV_EXCEPTION_INJECTED: Final = 0
_EV_EXCEPTION_PENDING: Final = 3
_EV_INTERRUPT_INJECTED: Final = 8
_EV_NMI_INJECTED: Final = 12

_CR0 = x86.CR0_PE | x86.CR0_MP | x86.CR0_ET | x86.CR0_NE | x86.CR0_WP | x86.CR0_PG
_CR4 = x86.CR4_PAE | x86.CR4_OSFXSR | x86.CR4_OSXMMEXCPT | x86.CR4_OSXSAVE
_EFER = x86.EFER_LME | x86.EFER_LMA | x86.EFER_NXE


def _stub_vectors() -> list[int]:
    return [*range(32), SYSCALL_VECTOR]


def _stub_port(vector: int) -> int:
    return GATE80_PORT if vector == SYSCALL_VECTOR else EXCEPTION_PORT_BASE + vector


def stub_code(vector: int) -> bytes:
    """The ring-0 entry stub of one vector: at most three instructions."""
    code = b"" if vector in x86.VECTORS_WITH_ERROR_CODE else b"\x6a\x00"  # push 0
    code += bytes((0xE6, _stub_port(vector)))  # out port, al
    code += b"\xf4"  # hlt: never reached, Python resumes at CPL3
    assert len(code) <= STUB_SIZE
    return code


# --- exits as plain data ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyscallExit:
    entry: Entry


@dataclass(frozen=True, slots=True)
class FaultExit:
    vector: int
    error_code: int
    rip: int
    address: int  # CR2 for #PF, else 0


@dataclass(frozen=True, slots=True)
class PreemptExit:
    """The time slice ended (timer signal) before the process exited to the kernel."""


@dataclass(frozen=True, slots=True)
class MachineError:
    """The VM stopped in a way no user action explains by itself (emulation gap, ...)."""

    reason: str


Exit = SyscallExit | FaultExit | PreemptExit | MachineError
# The exits that carry no data are shared values: no allocation on the syscall path.
_DOORBELL = SyscallExit(Entry.DOORBELL)
_INT80 = SyscallExit(Entry.INT80)
_PREEMPT = PreemptExit()


@dataclass
class UserContext:
    """The CPU state of one user thread while it is not on the vCPU."""

    cr3: int
    regs: KvmRegs = field(default_factory=KvmRegs)
    #: The XSAVE-managed state, saved on switch-out into a buffer allocated at the
    #: first one; None until then (the context starts from the initial state).
    xsave: ctypes.Array[ctypes.c_uint8] | None = None

    @classmethod
    def initial(cls, cr3: int, rip: int, rsp: int) -> UserContext:
        ctx = cls(cr3)
        ctx.regs.rip = rip
        ctx.regs.rsp = rsp
        ctx.regs.rflags = USER_INITIAL_RFLAGS
        return ctx


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


def _set_segment(seg: KvmSegment, selector: int, code: bool, dpl: int) -> None:
    seg.base = 0
    seg.limit = 0xFFFF_FFFF
    seg.selector = selector
    seg.type = 11 if code else 3
    seg.present = 1
    seg.dpl = dpl
    seg.db = 0 if code else 1
    seg.s = 1
    seg.l = 1 if code else 0
    seg.g = 1
    seg.avl = 0
    seg.unusable = 0


class Machine:
    """The SVSM's VM, its kernel structures and one vCPU."""

    def __init__(self, memory_size: int = DEFAULT_MEMORY, device: str = "/dev/kvm") -> None:
        self.kvm = kvm.Kvm(device)
        try:
            if not self.kvm.check_extension(kvm.KVM_CAP_SYNC_REGS):
                raise kvm.KvmError("this KVM lacks KVM_CAP_SYNC_REGS (copra's exit path needs it)")
            for cap, name in ((kvm.KVM_CAP_XSAVE, "XSAVE"), (kvm.KVM_CAP_XCRS, "XCRS")):
                if not self.kvm.check_extension(cap):
                    raise kvm.KvmError(f"this KVM lacks KVM_CAP_{name} (copra keeps each "
                                       "process's vector registers with it)")
            cpuid = self.kvm.supported_cpuid()
            self.xcr0 = xsave_cpuid(cpuid)
            self.vm = self.kvm.create_vm()
            self._mmap = self.vm.add_memory(0, memory_size)
        except BaseException:
            self.kvm.close()
            raise
        self.memory = PhysicalMemory(memoryview(self._mmap))
        self.frames = FrameAllocator(self.memory, KERNEL_REGION)
        self._build_kernel_structures()
        if self.vm.check_extension(kvm.KVM_CAP_DISABLE_QUIRKS2) \
                & kvm.KVM_X86_QUIRK_FIX_HYPERCALL_INSN:
            # A VMMCALL on an Intel host (VMCALL on AMD) is then a #UD for the process,
            # not KVM rewriting the instruction in its read-only text page. PVM hosts
            # rewrite it regardless; the kernel reports that write fault as the #UD.
            self.vm.enable_cap(kvm.KVM_CAP_DISABLE_QUIRKS2,
                               kvm.KVM_X86_QUIRK_FIX_HYPERCALL_INSN)
        self.vcpu = self.vm.create_vcpu()
        self.vcpu.set_cpuid(cpuid)
        self.umip = any(e.function == 7 and e.index == 0 and e.ecx & x86.CPUID7_ECX_UMIP
                        for e in cpuid.entries[:cpuid.nent])
        # EFER.SCE is clear, so SYSCALL is #UD on VMX/SVM hosts; PVM hosts jump to
        # LSTAR at CPL3 regardless. Point it at the kernel half's unmapped first page:
        # the jump faults there and the kernel reports the SYSCALL (kernel.py).
        self.vcpu.set_msrs({x86.MSR_LSTAR: SYSCALL_LANDING})
        self.vcpu.set_xcr0(self.xcr0)
        self._initial_xsave = self.vcpu.new_xsave()
        ctypes.memmove(self._initial_xsave, x86.initial_xsave(self.vcpu.xsave_size),
                       self.vcpu.xsave_size)
        self._sregs = self._sregs_template(self.vcpu.get_sregs())
        self.vcpu.enable_sync_regs()
        self.vcpu.run_page.kvm_valid_regs |= kvm.KVM_SYNC_X86_EVENTS  # read, never written
        self.run = self.vcpu.run_page
        self._loaded: UserContext | None = None
        self._run_regs = self.run.s.regs
        self._run_sregs = self.run.s.sregs
        self._io = self.run.exit.io  # views into the kvm_run page, made once
        self._events = self.run.s.events.raw
        self._cs = self._run_sregs.cs
        self._stub_exit_rip = {
            _stub_port(v): KERNEL_BASE + STUB_PA + i * STUB_SIZE + len(stub_code(v)) - 1
            for i, v in enumerate(_stub_vectors())
        }
        self._port_vector = {_stub_port(v): v for v in _stub_vectors()}
        self.exits = 0
        self.invalidations = 0
        self.ring0_preemptions = 0  # ticks that found the vCPU in an entry stub
        self._io_pending = False  # the last exit was a port access KVM has yet to complete

    # --- construction ----------------------------------------------------------------

    def kernel_pml4_entries(self) -> dict[int, int]:
        """PML4 entries every address space shares: the kernel half, supervisor-only."""
        return {KERNEL_PML4_SLOT: KERNEL_PDPT_PA | x86.PTE_P | x86.PTE_W}

    def _w64(self, pa: int, value: int) -> None:
        struct.pack_into("<Q", self.memory.view, pa, value)

    def _build_kernel_structures(self) -> None:
        # Kernel half: KERNEL_BASE + pa -> pa for the kernel image, supervisor, no U.
        self._w64(KERNEL_PDPT_PA, KERNEL_PD_PA | x86.PTE_P | x86.PTE_W)
        self._w64(KERNEL_PD_PA, KERNEL_PT_PA | x86.PTE_P | x86.PTE_W)
        for pa in range(0, KERNEL_REGION, PAGE_SIZE):
            if pa == 0:
                continue  # keep the null page unmapped
            flags = x86.PTE_P | x86.PTE_G
            if pa >= KSTACK_PA and pa < KSTACK_TOP_PA:
                flags |= x86.PTE_W | x86.PTE_NX
            elif not STUB_PA <= pa < STUB_PA + PAGE_SIZE:
                flags |= x86.PTE_NX
            self._w64(KERNEL_PT_PA + (pa // PAGE_SIZE) * 8, pa | flags)
        gdt = [0, x86.DESC_KERNEL_CODE64, x86.DESC_KERNEL_DATA, x86.DESC_USER_DATA,
               x86.DESC_USER_CODE64]
        self.tss_limit = x86.TSS_SIZE + x86.IO_BITMAP_BYTES
        gdt += x86.tss_descriptor(KERNEL_BASE + TSS_PA, self.tss_limit)
        for i, desc in enumerate(gdt):
            self._w64(GDT_PA + i * 8, desc)
        self._w64(TSS_PA + x86.TSS_RSP0_OFFSET, KERNEL_BASE + KSTACK_TOP_PA)
        struct.pack_into("<H", self.memory.view, TSS_PA + x86.TSS_IOMAP_BASE_OFFSET, x86.TSS_SIZE)
        self.memory.write(TSS_PA + x86.TSS_SIZE, x86.io_bitmap(frozenset({DOORBELL_PORT})))
        for i, vector in enumerate(_stub_vectors()):
            addr = STUB_PA + i * STUB_SIZE
            self.memory.write(addr, stub_code(vector))
            # int3 and int 0x80 may be used from CPL3 (int3 raises #BP, as on Linux);
            # every other vector's gate is DPL 0, so `int N` from user mode is a #GP.
            dpl = 3 if vector in (SYSCALL_VECTOR, x86.Vector.BP) else 0
            gate = x86.idt_gate(KERNEL_BASE + addr, x86.SEL_KERNEL_CODE, dpl)
            self.memory.write(IDT_PA + vector * 16, gate)

    def _sregs_template(self, sregs: KvmSregs) -> KvmSregs:
        _set_segment(sregs.cs, x86.SEL_USER_CODE, code=True, dpl=3)
        for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
            _set_segment(seg, x86.SEL_USER_DATA, code=False, dpl=3)
        tr = sregs.tr
        tr.base, tr.limit = KERNEL_BASE + TSS_PA, self.tss_limit
        tr.selector, tr.type = x86.SEL_TSS, 11
        tr.present, tr.dpl, tr.db, tr.s, tr.l, tr.g, tr.avl, tr.unusable = 1, 0, 0, 0, 0, 0, 0, 0
        sregs.ldt.unusable = 1
        sregs.gdt.base, sregs.gdt.limit = KERNEL_BASE + GDT_PA, x86.GDT_ENTRIES * 8 - 1
        sregs.idt.base, sregs.idt.limit = KERNEL_BASE + IDT_PA, 256 * 16 - 1
        # UMIP where the CPU or KVM offers it: SGDT/SIDT/SLDT/STR/SMSW at CPL3 would
        # otherwise show user code where the kernel's structures are.
        sregs.cr0, sregs.efer = _CR0, _EFER
        sregs.cr4 = _CR4 | (x86.CR4_UMIP if self.umip else 0)
        sregs.cr2 = 0
        return sregs

    # --- running user code -------------------------------------------------------------

    @property
    def regs(self) -> KvmRegs:
        """The registers of the context on the vCPU (valid between ``enter`` calls)."""
        return self._run_regs

    def mark_regs_dirty(self) -> None:
        self.run.kvm_dirty_regs |= kvm.KVM_SYNC_X86_REGS

    def _complete_pending_io(self) -> None:
        """Let KVM finish the port instruction of the last exit before its context is
        saved or replaced.

        KVM completes an I/O exit on the next KVM_RUN (api.rst 5, KVM_EXIT_IO). On PVM
        hosts RIP is already past the ``out`` at the exit; on VMX/SVM it still points
        at it and KVM skips it on re-entry, but only if the same RIP is loaded again. A
        KVM_RUN with ``immediate_exit`` set applies the pending completion (and any
        dirty registers) and returns at once with EINTR, without running the guest.
        """
        self._io_pending = False
        self.run.immediate_exit = 1
        try:
            self.vcpu.run()
        except InterruptedError:
            pass
        finally:
            self.run.immediate_exit = 0

    def _switch_to(self, ctx: UserContext) -> None:
        old = self._loaded
        if self._io_pending and old is not None:
            self._complete_pending_io()
        if old is not None:
            ctypes.memmove(ctypes.addressof(old.regs), ctypes.addressof(self._run_regs),
                           ctypes.sizeof(KvmRegs))
            if old.xsave is None:
                old.xsave = self.vcpu.new_xsave()
            self.vcpu.get_xsave(old.xsave)
        ctypes.memmove(ctypes.addressof(self._run_regs), ctypes.addressof(ctx.regs),
                       ctypes.sizeof(KvmRegs))
        self.vcpu.set_xsave(ctx.xsave if ctx.xsave is not None else self._initial_xsave)
        self._sregs.cr3 = ctx.cr3
        self._load_user_sregs()
        self._loaded = ctx

    def _load_user_sregs(self) -> None:
        ctypes.memmove(ctypes.addressof(self._run_sregs), ctypes.addressof(self._sregs),
                       ctypes.sizeof(KvmSregs))
        self.run.kvm_dirty_regs |= kvm.KVM_SYNC_X86_REGS | kvm.KVM_SYNC_X86_SREGS

    def forget(self, ctx: UserContext) -> None:
        """The context's thread is gone: never save into it again."""
        if self._loaded is ctx:
            self._loaded = None
            self._io_pending = False

    def invalidate_mappings(self) -> None:
        """Make KVM forget every translation it derived from copra's page tables.

        Call after a present page-table entry was removed or a page-table frame freed,
        before the frames are handed out again. copra writes page tables from the host,
        which KVM's shadow MMU (used on PVM hosts) does not see: it keeps shadow pages
        built from the old contents, and would go on translating through them. Deleting
        and re-adding the memory slot zaps every shadow page and flushes every TLB
        (api.rst 4.35); it costs about a millisecond, so it runs on process exit and
        unmap only, never on the syscall path.
        """
        self.vm.remap_memory(0)
        self.invalidations += 1

    def load(self, ctx: UserContext) -> None:
        """Put ctx on the vCPU (its registers become ``regs``) without running it."""
        if self._loaded is not ctx:
            self._switch_to(ctx)

    def enter(self, ctx: UserContext) -> Exit:
        """Run ctx at CPL3 until it needs the kernel.

        A preemption tick that lands while the vCPU is inside a ring-0 stub (between
        taking an exception and the stub's ``out``; on PVM hosts KVM emulates those
        instructions, so the window is wide) is not reported: the stub runs on to its
        exit first. Reporting it would let the scheduler save a ring-0 RIP and RSP into
        the context and resume them later at CPL3, where the stub page faults."""
        if self._loaded is not ctx:
            self._switch_to(ctx)
        self._io_pending = False  # this KVM_RUN completes it
        while True:
            try:
                reason = self.vcpu.run()
            except InterruptedError:
                reason = ExitReason.INTR
            except OSError as e:  # KVM refused to run this state: end the process, not copra
                return MachineError(f"KVM_RUN failed: {e.strerror or e}")
            if reason != ExitReason.INTR:
                break
            self.run.immediate_exit = 0
            if self._cs.selector & 3 and not self._event_in_flight():
                return _PREEMPT
            # The tick landed while the vCPU was in a ring-0 entry stub (on PVM hosts
            # KVM emulates them, so the window is wide), or with an exception on its
            # way there. The registers are the stub's, not the process's, and the
            # frame is half built on the kernel stack: finish the entry, which exits
            # within a few instructions, and switch only at a clean CPL3 boundary.
            self.ring0_preemptions += 1
        self.exits += 1
        if reason == ExitReason.IO:
            return self._decode_io()
        return self._decode_other(reason)

    def _event_in_flight(self) -> bool:
        """Whether KVM holds an exception or interrupt it has yet to deliver.

        A tick can stop KVM_RUN after an instruction at CPL3 raised an exception (on
        PVM hosts ``int 0x80`` becomes a #UD this way) but before KVM delivered it
        through the IDT: the registers still say CPL3, yet the event belongs to this
        context. Switching now would deliver it into the next process.
        """
        events = self._events
        return bool(events[_EV_EXCEPTION_INJECTED] | events[_EV_EXCEPTION_PENDING]
                    | events[_EV_INTERRUPT_INJECTED] | events[_EV_NMI_INJECTED])

    def _decode_io(self) -> Exit:
        io = self._io
        port = io.port
        sregs = self._run_sregs
        cpl = self._cs.selector & 3
        if port == DOORBELL_PORT and cpl == 3:
            if io.direction != kvm.KVM_EXIT_IO_OUT or io.size != 1 or io.count != 1:
                # Only a one-byte OUT is the doorbell: `in` and wider forms are #GP, and
                # so is a string OUT KVM reports in a batch (count > 1). PVM reports a
                # string `outsb` one byte per exit: that rings once per byte (abi.md).
                self._io_pending = True
                return FaultExit(x86.Vector.GP, 0, self._run_regs.rip, 0)
            self._io_pending = True
            return _DOORBELL
        if cpl != 0 or port not in self._port_vector:
            # PVM may deliver a CPL3 port access without consulting the I/O bitmap:
            # every port but the doorbell is a #GP as the bitmap says.
            return FaultExit(x86.Vector.GP, 0, self._run_regs.rip, 0)
        regs = self._run_regs
        if regs.rip != self._stub_exit_rip[port]:
            return MachineError(f"ring-0 exit at unexpected rip {regs.rip:#x}")
        vector = self._port_vector[port]
        error, rip, cs, rflags, rsp, _ss = FRAME_WORDS.unpack_from(
            self.memory.view, regs.rsp - KERNEL_BASE)
        if cs & 3 != 3:
            return MachineError(f"exception {vector} taken in ring 0 at {rip:#x}")
        regs.rip, regs.rsp, regs.rflags = rip, rsp, rflags
        address = sregs.cr2 if vector == x86.Vector.PF else 0
        self._load_user_sregs()
        if vector == SYSCALL_VECTOR:
            return _INT80
        return FaultExit(vector, error, rip, address)

    def _decode_other(self, reason: int) -> Exit:
        if reason == ExitReason.INTERNAL_ERROR:
            internal = self.run.exit.internal
            data = " ".join(f"{internal.data[i]:#x}" for i in range(min(internal.ndata, 16)))
            return MachineError(f"KVM internal error, suberror {internal.suberror} [{data}] "
                                f"at rip {self._run_regs.rip:#x}")
        if reason == ExitReason.SHUTDOWN:
            return MachineError("triple fault (KVM_EXIT_SHUTDOWN)")
        if reason == ExitReason.HLT:
            return MachineError(f"hlt reached at rip {self._run_regs.rip:#x}")
        if reason == ExitReason.FAIL_ENTRY:
            return MachineError(f"VM entry failed, reason {self.run.exit.hw_reason:#x}")
        if reason == ExitReason.MMIO:
            addr = self.run.exit.mmio.phys_addr
            return MachineError(f"access to unbacked guest memory {addr:#x}")
        return MachineError(f"unexpected KVM exit reason {reason}")

    # --- preemption ----------------------------------------------------------------------

    def arm_timer(self, interval: float) -> bool:
        """Interrupt the vCPU every ``interval`` seconds; False if this thread cannot."""
        if threading.current_thread() is not threading.main_thread():
            return False
        run = self.run

        def on_alarm(_signum: int, _frame: FrameType | None) -> None:
            run.immediate_exit = 1

        self._old_handler = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, interval, interval)
        return True

    def kick(self) -> None:
        """Make the running (or next) KVM_RUN return at once (a signal handler may call
        it): the kernel gets the vCPU back at the next clean boundary, as on a tick."""
        self.run.immediate_exit = 1

    def disarm_timer(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            signal.signal(signal.SIGALRM, getattr(self, "_old_handler", signal.SIG_DFL))

    def close(self) -> None:
        self.disarm_timer()
        del self._run_regs, self._run_sregs, self._io, self._cs, self._events, self.run
        self.memory.view.release()
        self.vm.close()
        self.kvm.close()

