"""One vCPU of the SVSM: its run page, the context loaded on it, exit decoding, kick.

A ``Cpu`` is the ring-0 half of one processor that copra's CPL3 code runs on. Its
structures in the kernel image are its own (kernel/layout.py): a TSS whose RSP0 is
its own kernel stack page and whose I/O bitmap allows only the doorbell; the entry
stubs and the IDT are shared.

How CPL3 reaches Python (docs/architecture.md has the measurements behind it):
- the doorbell ``out DOORBELL_PORT, al`` at CPL3 exits with KVM_EXIT_IO, RIP already
  past the instruction, no ring-0 code at all: the fast path;
- a CPU exception at CPL3 enters its ring-0 stub through the IDT; the stub's ``out``
  to the vector's private port exits to Python, which reads the hardware frame
  (error code, RIP, CS, RFLAGS, RSP, SS) from this CPU's kernel stack. On PVM hosts
  ``int 0x80`` arrives this way as #UD and is recognised by its bytes ``CD 80``; on
  VMX/SVM hosts it arrives through the DPL 3 gate at vector 0x80. The CPU reports
  the #UD; the kernel, which owns the process's memory, recognises the bytes.
- Python never returns through ring 0: it writes the user registers and the user
  segment registers back through KVM_CAP_SYNC_REGS, so a ring-0 stub runs exactly
  two instructions per exception (KVM emulates ring 0 on PVM hosts, slowly).

Per-context state: the general registers, the FS base and the whole XSAVE-managed
state (x87, SSE, AVX, AVX-512 and whatever else KVM's XSAVE set holds) belong to one
``UserContext``. ``load`` puts a context's registers on the vCPU; its XSAVE state goes
there lazily, only when its CPL3 code is about to run (``enter``), as Linux switches
FPU state only on the way back to user mode. A context that never ran gets
``x86.initial_xsave``. XCR0 is the same for every context (CPL3 cannot change it).
A thread that leaves its CPU is ``park``ed: registers stored at once, its XSAVE state
left in the vCPU until this CPU runs another context's CPL3 code or another CPU
``fetch``es it. So a thread that comes back to the same CPU costs no XSAVE ioctl, and
neither does a thread that is loaded only to finish a syscall and block again (a VMM
thread in VCPU_RUN woken by a device model's answer): its state is never needed on
the vCPU.

The XSAVE invariant (docs/architecture.md, "Per-process CPU state"): the vCPU's
XSAVE registers belong to ``_fpu_owner``, and they are that context's current state
exactly when ``owner.fpu_on is self``; ``_fpu_dirty`` says they are newer than
``owner.xsave``. Every KVM_RUN that may run CPL3 code of a context C happens in
``enter`` after ``_switch_fpu`` made C the owner (storing the previous owner's state
first if dirty), so no CPL3 code ever runs with another context's XSAVE state. The
other KVM_RUNs on an SVSM vCPU (``_complete_pending_io``, the zap stub) run no x87,
SSE or AVX instruction and leave the owner's state as it is. A context's current state
is in exactly one place: the vCPU of ``ctx.fpu_on`` when that CPU's owner is ctx and
dirty, else ``ctx.xsave`` (None: the initial state).

The loop: ``serve`` is this CPU's whole life on its host thread, a small state
machine over ``CpuState``::

    IDLE --pick--> KERNEL --enter--> GUEST --exit--> KERNEL --(thread goes on)--> GUEST
      ^  (no thread: the host thread         |             |
      |   blocks in the scheduler)           |             +--(thread left)--> IDLE
      +--------------------------------------+
    IDLE --(the run ends)--> STOPPED

GUEST is exactly "inside KVM_RUN or about to enter it": the stop-the-world
invalidation (kernel/svsm_vm.py) waits until no CPU is in it.

Kicks: ``kick`` makes the vCPU leave the guest: it sets ``kvm_run.immediate_exit``
(a KVM_RUN about to start returns at once) and, when the CPU is in GUEST, sends
KICK_SIGNAL to its host thread, whose KVM_RUN then returns EINTR (KVM refuses to run
with a signal pending). The signal needs a Python handler, which only the main thread
can install (``install_kick_handler``); the handler itself does nothing. Without it a
kick is ``immediate_exit`` only and takes effect at the thread's next exit. A kick
with ``preempt`` asks for a PreemptExit at the next clean CPL3 boundary; one without
(the stop-the-world invalidation) only makes the CPU pass the VM's gate again.

Ownership and locking: a ``Cpu`` is driven by one host thread (the one in ``serve``,
or the caller of ``enter``); the run page, the loaded context and the kernel stack
are touched only by it, except that another CPU's host thread may ``fetch`` a parked
context's state: ``_context_lock`` (class "cpu.context", taken with no other lock
held) guards the loaded context's bookkeeping and the vCPU's XSAVE state. ``state``
changes to and from GUEST under the VM's gate lock (class "vm.gate",
kernel/svsm_vm.py), which is also what makes a kick's signal safe:
it goes only to a CPU in GUEST, whose host thread is alive. ``kick`` with
``signal=False`` takes no lock and may be called from a signal handler.
"""

from __future__ import annotations

import ctypes
import signal
import struct
import threading
from dataclasses import dataclass, field
from enum import Enum
from types import FrameType
from typing import TYPE_CHECKING, Final, Protocol

from copra.abi.spec import DOORBELL_PORT, SYSCALL_VECTOR, USER_END, USER_INITIAL_RFLAGS, Entry
from copra.hw import kvm, x86
from copra.hw.kvm import ExitReason, KvmRegs, KvmSegment, KvmSregs
from copra.kernel import layout, lockdep, wakeq
from copra.kernel.layout import KERNEL_BASE

if TYPE_CHECKING:
    from copra.kernel.stats import CpuProbe
    from copra.kernel.svsm_vm import SvsmVm

FRAME_WORDS: Final = struct.Struct("<6Q")  # error, rip, cs, rflags, rsp, ss

# Byte offsets in struct kvm_vcpu_events (api.rst 4.31, KVM_GET_VCPU_EVENTS).
_EV_EXCEPTION_INJECTED: Final = 0
_EV_EXCEPTION_PENDING: Final = 3
_EV_INTERRUPT_INJECTED: Final = 8
_EV_NMI_INJECTED: Final = 12

_CR0 = x86.CR0_PE | x86.CR0_MP | x86.CR0_ET | x86.CR0_NE | x86.CR0_WP | x86.CR0_PG
_CR4 = x86.CR4_PAE | x86.CR4_OSFXSR | x86.CR4_OSXMMEXCPT | x86.CR4_OSXSAVE
_EFER = x86.EFER_LME | x86.EFER_LMA | x86.EFER_NXE


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
    """The CPU was kicked (time slice, stop, invalidation) at a clean CPL3 boundary."""


@dataclass(frozen=True, slots=True)
class CpuError:
    """The vCPU stopped in a way no user action explains by itself (emulation gap, ...)."""

    reason: str


Exit = SyscallExit | FaultExit | PreemptExit | CpuError
# The exits that carry no data are shared values: no allocation on the syscall path.
_DOORBELL = SyscallExit(Entry.DOORBELL)
_INT80 = SyscallExit(Entry.INT80)
_PREEMPT = PreemptExit()


@dataclass(eq=False)
class UserContext:
    """The CPU state of one user thread while it is not on a vCPU."""

    cr3: int
    regs: KvmRegs = field(default_factory=KvmRegs)
    #: The XSAVE-managed state, saved into a buffer allocated at the first save;
    #: None until then (the context starts from the initial state).
    xsave: ctypes.Array[ctypes.c_uint8] | None = None
    #: The FS segment base (thread-local storage), loaded with the context.
    fs_base: int = 0
    #: The CPU whose vCPU last had this context loaded (its registers are still there
    #: if that CPU loaded nothing since): a load on the same CPU is then free.
    loaded_on: Cpu | None = None
    #: The CPU whose vCPU's XSAVE registers last took this context's state (from
    #: ``xsave`` or by running it); they still hold it while that CPU's ``_fpu_owner``
    #: is this context. None: only ``xsave`` holds it.
    fpu_on: Cpu | None = None
    #: ``regs`` as bytes: saving and loading copy through it (a memoryview copy runs
    #: in C with the GIL held; ``ctypes.memmove`` is a foreign call, ten times dearer).
    #: So ``regs`` is changed in place, never replaced.
    regs_bytes: memoryview = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.regs_bytes = memoryview(self.regs).cast("B")

    @classmethod
    def initial(cls, cr3: int, rip: int, rsp: int) -> UserContext:
        ctx = cls(cr3)
        ctx.regs.rip = rip
        ctx.regs.rsp = rsp
        ctx.regs.rflags = USER_INITIAL_RFLAGS
        return ctx


class CpuState(Enum):
    IDLE = "idle"  #: no thread: the host thread waits in the scheduler
    KERNEL = "kernel"  #: Python is handling an exit or switching threads
    GUEST = "guest"  #: inside KVM_RUN (or about to enter it)
    STOPPED = "stopped"  #: ``serve`` has returned


class Runnable(Protocol):
    """What ``serve`` runs: a thread of the kernel's (kernel/thread.py)."""

    @property
    def context(self) -> UserContext: ...


class Kickable(Protocol):
    """Something a CPU's host thread runs inside a syscall (a guest vCPU, VCPU_RUN)
    that a kick of the CPU must interrupt too."""

    def kick(self, signal_it: bool) -> None: ...


class Next(Enum):
    """What the kernel tells the CPU loop after an exit."""

    GO_ON = "go on"  #: enter the same thread again
    LEAVE = "leave"  #: the thread left this CPU (blocked, ended, preempted): pick anew


class CpuDriver(Protocol):
    """The kernel side of ``Cpu.serve``: the scheduler and the exit handlers."""

    def pick(self, cpu: Cpu) -> Runnable | None:
        """The next thread for ``cpu``, blocking while there is none; None to stop."""
        ...

    def resume(self, cpu: Cpu, thread: Runnable) -> Next:
        """``thread`` was picked and is loaded: finish what it was doing (a syscall
        it blocked in) before it runs."""
        ...

    def handle(self, cpu: Cpu, thread: Runnable, ex: Exit) -> Next: ...


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


#: The signal that interrupts a CPU's KVM_RUN (sent to that CPU's host thread).
KICK_SIGNAL: Final = signal.SIGUSR1


def _on_kick(_signum: int, _frame: FrameType | None) -> None:
    """The kick signal's Python handler: nothing to do, the EINTR was the point."""


def install_kick_handler() -> bool:
    """Install the kick signal's handler if this is the main thread (once for the
    process); whether kicks can use the signal now."""
    if signal.getsignal(KICK_SIGNAL) is _on_kick:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(KICK_SIGNAL, _on_kick)
    return True


_PORT_VECTOR: Final = layout.port_vectors()
_RFLAGS_TF: Final = 1 << 8
_TRAP_OPCODES: Final = frozenset({0xCC, 0xF1})  # int3, int1
#: Kicks in a row held at one RIP after a trap-like byte before it is preempted anyway.
TRAP_HOLDS: Final = 8
_U64: Final = (1 << 64) - 1
_STUB_EXIT_RIP: Final = layout.stub_exit_rips()
_ZAP_ENTRY: Final = struct.Struct("<3Q")
_ZAP_EXIT_RIP: Final = layout.zap_exit_rip()
_WINDOW_FLAGS: Final = x86.PTE_P | x86.PTE_W | x86.PTE_NX
#: Cleared entries of one page table beyond which ``zap`` drops the table's whole
#: shadow page (one write) instead of each entry (one write each, ~1.3 us apiece on
#: PVM); the price is that the table's other pages fault into KVM once more (~4 us
#: each, only those touched again). docs/performance.md, "MUNMAP".
ZAP_WHOLE_TABLE_AT: Final = 32


class Cpu:
    """One vCPU of the SVSM VM and the user context loaded on it."""

    def __init__(self, vm: SvsmVm, index: int) -> None:
        self.vm = vm
        self.index = index
        self.vcpu = vm.kvm_vm.create_vcpu()
        self.vcpu.set_cpuid(vm.cpuid)
        # EFER.SCE is clear, so SYSCALL is #UD on VMX/SVM hosts; PVM hosts jump to
        # LSTAR at CPL3 regardless. Point it at the kernel half's unmapped first page:
        # the jump faults there and the kernel reports the SYSCALL (kernel.py).
        self.vcpu.set_msrs({x86.MSR_LSTAR: layout.SYSCALL_LANDING})
        self.vcpu.set_xcr0(vm.xcr0)
        self._initial_xsave = self.vcpu.new_xsave()
        ctypes.memmove(self._initial_xsave, x86.initial_xsave(self.vcpu.xsave_size),
                       self.vcpu.xsave_size)
        self._sregs = self._sregs_template(self.vcpu.get_sregs())
        self._sregs_bytes = memoryview(self._sregs).cast("B")
        self._ring0_sregs = KvmSregs()
        ctypes.memmove(ctypes.addressof(self._ring0_sregs), ctypes.addressof(self._sregs),
                       ctypes.sizeof(KvmSregs))
        _set_segment(self._ring0_sregs.cs, x86.SEL_KERNEL_CODE, code=True, dpl=0)
        for seg in (self._ring0_sregs.ds, self._ring0_sregs.es, self._ring0_sregs.ss):
            _set_segment(seg, x86.SEL_KERNEL_DATA, code=False, dpl=0)
        self._saved_regs = KvmRegs()  # the user registers while the zap stub runs
        self.vcpu.enable_sync_regs()
        self.vcpu.run_page.kvm_valid_regs |= kvm.KVM_SYNC_X86_EVENTS  # read, never written
        self.run_page = self.vcpu.run_page
        self._loaded: UserContext | None = None
        self._unsaved = False  # the loaded context's registers changed since saved
        #: The context whose XSAVE state the vCPU's registers hold (its current state
        #: while ``owner.fpu_on is self``); may differ from ``_loaded``.
        self._fpu_owner: UserContext | None = None
        #: The owner's CPL3 code ran since its state was set or stored: the vCPU's copy
        #: is newer than ``owner.xsave``, which must be stored before it is dropped.
        self._fpu_dirty = False
        #: Guards ``_loaded``, ``_unsaved``, ``_fpu_owner``, ``_fpu_dirty`` and the
        #: vCPU's XSAVE state against ``fetch`` from another CPU's host thread (class
        #: "cpu.context").
        self._context_lock = lockdep.lock("cpu.context")
        self._run_regs = self.run_page.s.regs
        self._run_sregs = self.run_page.s.sregs
        self._run_regs_bytes = memoryview(self._run_regs).cast("B")
        self._run_sregs_bytes = memoryview(self._run_sregs).cast("B")
        self._io = self.run_page.exit.io  # views into the run page, made once
        self._events = self.run_page.s.events.raw
        self._cs = self._run_sregs.cs
        self._stack_lo = KERNEL_BASE + layout.kstack_pa(index)
        self._stack_hi = KERNEL_BASE + layout.kstack_top_pa(index)
        self.state = CpuState.KERNEL
        #: The host thread in (or last in) KVM_RUN on this vCPU: where kicks go.
        self.host_thread: int | None = None
        #: A kick asked for a preemption: the next clean CPL3 boundary reports it.
        self.preempt_requested = False
        #: Whether a kick may send KICK_SIGNAL (``install_kick_handler`` succeeded).
        self.signal_kicks = False
        self.exits = 0
        self.ring0_preemptions = 0  # kicks that found the vCPU in an entry stub
        self.slot_gaps = 0  # accesses completed here while memory slot 0 was missing
        self.trap_holds = 0  # preemptions put off: the kick came right after a trap
        self.zaps = 0  # runs of the zap stub (``zap``)
        self._held_at: int | None = None  # the RIP of the kicks held in a row
        self._holds_here = 0
        self._io_pending = False  # the last exit was a port access KVM has yet to complete
        #: Statistics and trace hooks (kernel/stats.py), None unless a run asked for
        #: them: every hook site is a None check.
        self.probe: CpuProbe | None = None
        #: Syscalls that came in through each ``Entry``, counted by this CPU's host
        #: thread only; the kernel folds them into its counters when a run ends.
        self.entries = [0] * len(Entry)
        #: A guest vCPU this CPU's host thread runs inside a syscall (VCPU_RUN): kicks
        #: reach it too. Set and cleared by that host thread only.
        self.nested: Kickable | None = None
        #: KVM reports an ``out`` exit with RIP already past it (PVM hosts; the VM
        #: measures it at start, ``SvsmVm.probe_io_exits``): nothing is left to complete
        #: before the context leaves the vCPU.
        self.io_done_at_exit = False

    def _sregs_template(self, sregs: KvmSregs) -> KvmSregs:
        _set_segment(sregs.cs, x86.SEL_USER_CODE, code=True, dpl=3)
        for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
            _set_segment(seg, x86.SEL_USER_DATA, code=False, dpl=3)
        tr = sregs.tr
        tr.base, tr.limit = KERNEL_BASE + layout.tss_pa(self.index), layout.TSS_LIMIT
        tr.selector, tr.type = layout.tss_selector(self.index), 11
        tr.present, tr.dpl, tr.db, tr.s, tr.l, tr.g, tr.avl, tr.unusable = 1, 0, 0, 0, 0, 0, 0, 0
        sregs.ldt.unusable = 1
        sregs.gdt.base, sregs.gdt.limit = KERNEL_BASE + layout.GDT_PA, layout.GDT_SLOTS * 8 - 1
        sregs.idt.base, sregs.idt.limit = KERNEL_BASE + layout.IDT_PA, 256 * 16 - 1
        # UMIP where the CPU or KVM offers it: SGDT/SIDT/SLDT/STR/SMSW at CPL3 would
        # otherwise show user code where the kernel's structures are.
        sregs.cr0, sregs.efer = _CR0, _EFER
        sregs.cr4 = _CR4 | (x86.CR4_UMIP if self.vm.umip else 0)
        sregs.cr2 = 0
        return sregs

    # --- the loaded context -----------------------------------------------------------

    @property
    def regs(self) -> KvmRegs:
        """The registers of the context on the vCPU (valid between ``enter`` calls)."""
        return self._run_regs

    def mark_regs_dirty(self) -> None:
        self.run_page.kvm_dirty_regs |= kvm.KVM_SYNC_X86_REGS

    def _complete_pending_io(self) -> None:
        """Let KVM finish the port instruction of the last exit before its context is
        saved or replaced.

        KVM completes an I/O exit on the next KVM_RUN (api.rst 5, KVM_EXIT_IO). On PVM
        hosts RIP is already past the ``out`` at the exit; on VMX/SVM it still points
        at it and KVM skips it on re-entry, but only if the same RIP is loaded again. A
        KVM_RUN with ``immediate_exit`` set applies the pending completion (and any
        dirty registers) and returns at once with EINTR, without running the guest.
        Where RIP is past the ``out`` at the exit (``io_done_at_exit``) this is never
        needed: a context saved then resumes after the ``out`` wherever it is loaded,
        and the completion KVM still holds finds another RIP and does nothing.
        """
        self._io_pending = False
        self.run_page.immediate_exit = 1
        self._enter_guest()
        try:
            self.vcpu.run()
        except InterruptedError:
            pass
        finally:
            self._leave_guest()
            self.run_page.immediate_exit = 0

    def park(self) -> None:
        """The loaded context's thread leaves this CPU for a while (it blocks, or its
        slice ended): store its registers and FS base in it now, its XSAVE state only
        when that is needed: when this CPU runs another context's CPL3 code
        (``_switch_fpu``), or another CPU loads this one (``fetch``). A thread that
        comes back to this CPU with no other CPL3 code run here in between then costs
        no XSAVE ioctl at all."""
        with self._context_lock:
            self._save_registers()

    def save(self) -> None:
        """Store the loaded context's registers and FS base, and the XSAVE state the
        vCPU holds, in their contexts, so that any CPU may load them next. The context
        stays loaded here: loading it again on this CPU, with nothing loaded in
        between, costs nothing."""
        with self._context_lock:
            self._save_registers()
            self._store_fpu()

    def fetch(self, ctx: UserContext) -> None:
        """Another CPU is about to load ``ctx``: if this vCPU still holds its registers
        or its XSAVE state (``park``), store them in ctx and let go of them. Called
        from that CPU's host thread; this CPU's own thread is then busy elsewhere or
        idle (a context is loaded by the one CPU that picked its thread), and the
        context lock keeps it from loading or running another context meanwhile."""
        with self._context_lock:
            if self._loaded is ctx:
                self._save_registers()
                self._loaded = None
            if self._fpu_owner is ctx:
                self._store_fpu()
                self._fpu_owner = None
            if ctx.fpu_on is self:
                ctx.fpu_on = None

    def _save_registers(self) -> None:
        ctx = self._loaded
        if ctx is None or not self._unsaved:
            return
        if self._io_pending:
            self._complete_pending_io()
        ctx.regs_bytes[:] = self._run_regs_bytes
        ctx.fs_base = self._run_sregs.fs.base
        self._unsaved = False

    def _store_fpu(self) -> None:
        """With the context lock: copy the vCPU's XSAVE state into its owner if it is
        newer there (KVM_GET_XSAVE2); the owner stays the owner, now clean."""
        owner = self._fpu_owner
        if owner is not None and self._fpu_dirty:
            if owner.xsave is None:
                owner.xsave = self.vcpu.new_xsave()
            self.vcpu.get_xsave(owner.xsave)
        self._fpu_dirty = False

    def _switch_fpu(self, ctx: UserContext) -> None:
        """Make the vCPU's XSAVE registers hold ``ctx``'s current state before its CPL3
        code runs: store the previous owner's if dirty, set ctx's (KVM_SET_XSAVE).
        ``load`` has already fetched ctx's state from any other CPU that held it."""
        with self._context_lock:
            self._store_fpu()
            self.vcpu.set_xsave(ctx.xsave if ctx.xsave is not None else self._initial_xsave)
            self._fpu_owner = ctx
            ctx.fpu_on = self

    def load(self, ctx: UserContext) -> None:
        """Put ctx's registers on the vCPU without running it; its XSAVE state follows
        in ``enter``, if its CPL3 code runs at all."""
        if self._loaded is ctx and ctx.loaded_on is self:
            return
        with self._context_lock:
            self._save_registers()
        home, fpu_home = ctx.loaded_on, ctx.fpu_on
        if home is not None and home is not self:
            home.fetch(ctx)
        if fpu_home is not None and fpu_home is not self and fpu_home is not home:
            fpu_home.fetch(ctx)
        with self._context_lock:
            self._run_regs_bytes[:] = ctx.regs_bytes
            self._sregs.cr3 = ctx.cr3
            self._sregs.fs.base = ctx.fs_base
            self._load_user_sregs()
            self._loaded = ctx
            ctx.loaded_on = self
            self._unsaved = True

    def _load_user_sregs(self) -> None:
        self._run_sregs_bytes[:] = self._sregs_bytes
        self.run_page.kvm_dirty_regs |= kvm.KVM_SYNC_X86_REGS | kvm.KVM_SYNC_X86_SREGS

    def forget(self, ctx: UserContext) -> None:
        """The context's thread is gone: never save into it again."""
        with self._context_lock:
            if self._loaded is ctx:
                self._loaded = None
                self._unsaved = False
                self._io_pending = False
            if self._fpu_owner is ctx:
                self._fpu_owner = None
                self._fpu_dirty = False
            if ctx.loaded_on is self:
                ctx.loaded_on = None
            if ctx.fpu_on is self:
                ctx.fpu_on = None

    # --- the loop -------------------------------------------------------------------------

    def serve(self, driver: CpuDriver) -> None:
        """This CPU's life: pick a thread, run it until it leaves, again, until the
        driver has nothing more (see the state machine in the module docstring)."""
        while True:
            self.state = CpuState.IDLE
            thread = driver.pick(self)
            if thread is None:
                self.state = CpuState.STOPPED
                return
            self.state = CpuState.KERNEL
            self.load(thread.context)
            step = driver.resume(self, thread)
            while step is Next.GO_ON:
                step = driver.handle(self, thread, self.enter(thread.context))
            if self.probe is not None:
                self.probe.off_cpu()

    # --- entering the guest -------------------------------------------------------------

    def _enter_guest(self) -> None:
        wakeq.flush()  # deferred wake-ups go out before this thread gives up the GIL
        self.host_thread = threading.get_ident()
        self.vm.gate.enter(self)

    def _leave_guest(self) -> None:
        self.vm.gate.leave(self)

    def enter(self, ctx: UserContext) -> Exit:
        """Run ctx at CPL3 until it needs the kernel.

        A kick that lands while the vCPU is inside a ring-0 stub (between taking an
        exception and the stub's ``out``; on PVM hosts KVM emulates those
        instructions, so the window is wide) is not reported: the stub runs on to its
        exit first. Reporting it would let the scheduler save a ring-0 RIP and RSP into
        the context and resume them later at CPL3, where the stub page faults."""
        self.load(ctx)
        if self._fpu_owner is not ctx or ctx.fpu_on is not self:
            self._switch_fpu(ctx)
        self._fpu_dirty = True  # its CPL3 code runs now
        self._io_pending = False  # this KVM_RUN completes it
        self._unsaved = True
        vcpu, run_page, probe = self.vcpu, self.run_page, self.probe
        while True:
            self._enter_guest()
            if probe is not None:
                probe.run_start()
            try:
                reason = vcpu.run()
            except InterruptedError:
                reason = ExitReason.INTR
            except OSError as e:  # KVM refused to run this state: end the process, not copra
                self._leave_guest()
                return CpuError(f"KVM_RUN failed: {e.strerror or e}")
            if probe is not None:
                probe.run_end(reason)
            self._leave_guest()
            if reason == ExitReason.MMIO and self._complete_slot_gap():
                continue
            if reason != ExitReason.INTR:
                break
            run_page.immediate_exit = 0
            if self._cs.selector & 3 and not self._event_in_flight():
                if not self.preempt_requested:
                    continue  # a kick to pass the gate (an invalidation), or a stray signal
                if not self._after_trap():
                    self.preempt_requested = False
                    return _PREEMPT
                self.trap_holds += 1  # the kick stays requested: the next exit reports it
                continue
            # The kick landed while the vCPU was in a ring-0 entry stub (on PVM hosts
            # KVM emulates them, so the window is wide), or with an exception on its
            # way there. The registers are the stub's, not the process's, and the
            # frame is half built on the kernel stack: finish the entry, which exits
            # within a few instructions, and switch only at a clean CPL3 boundary.
            self.ring0_preemptions += 1
        self.exits += 1
        if reason == ExitReason.IO:
            return self._decode_io()
        return self._decode_other(reason)

    def _complete_slot_gap(self) -> bool:
        """Complete an access KVM reported as MMIO although it lies in guest memory.

        An access while memory slot 0 is being re-added finds no slot and reaches
        user space as KVM_EXIT_MMIO. The gate keeps every CPU out of the guest during
        an invalidation, so this should never happen; should it, the access is not
        the process's fault: it is done here against guest memory (a read's data goes
        into the run page for KVM to finish the instruction with), as the CPU would
        have done, and counted in ``slot_gaps``. False for a real MMIO address."""
        mmio = self.run_page.exit.mmio
        addr, length = mmio.phys_addr, mmio.len
        memory = self.vm.memory
        if not 0 < length <= 8 or addr + length > memory.size:
            return False
        if mmio.is_write:
            memory.write(addr, bytes(mmio.data[:length]))
        else:
            mmio.data[:length] = list(memory.read(addr, length))
        self.slot_gaps += 1
        return True

    def _after_trap(self) -> bool:
        """``_trap_window``, at most TRAP_HOLDS kicks in a row at the same RIP: a thread
        that merely stops after a CC or F1 byte (``mov al, 0xCC; jmp $``) makes no exit
        of its own, and must not escape preemption by it."""
        rip = self._run_regs.rip
        if not self._trap_window():
            self._held_at = None
            return False
        if self._held_at != rip:
            self._held_at, self._holds_here = rip, 0
        self._holds_here += 1
        if self._holds_here > TRAP_HOLDS:
            self._held_at = None
            return False
        return True

    def _trap_window(self) -> bool:
        """Whether the kick may have stopped the vCPU between a trap-like instruction
        and the exception it raises: RIP just past ``int3`` (CC) or ``int1`` (F1), or
        single-stepping (TF).

        Measured on PVM hosts: a kick landing right after ``int3`` at CPL3 sometimes
        returns with the #BP in neither ``exception.injected`` nor ``.pending`` of the
        synced events, yet KVM still holds it: entering the same context again
        delivers it, loading another context loses it (the process then runs on past
        its ``int3``). Such a kick is therefore not reported until the next exit. A
        byte CC or F1 that merely ends the previous instruction only delays the
        preemption by one exit."""
        if self._run_regs.rflags & _RFLAGS_TF:
            return True
        ctx = self._loaded
        if ctx is None:
            return False
        byte = self._user_byte(ctx.cr3, (self._run_regs.rip - 1) & _U64)
        return byte is not None and byte in _TRAP_OPCODES

    def _user_byte(self, cr3: int, va: int) -> int | None:
        """The byte at user address ``va`` through the page tables at ``cr3``, or
        None where nothing user-readable is mapped (4 KiB pages: copra's only kind)."""
        if va >= USER_END:
            return None
        memory, table = self.vm.memory, cr3 & x86.PTE_ADDR_MASK
        for shift in (39, 30, 21, 12):
            entry = int.from_bytes(memory.read(table + ((va >> shift) & 511) * 8, 8), "little")
            if entry & (x86.PTE_P | x86.PTE_U) != x86.PTE_P | x86.PTE_U:
                return None
            table = entry & x86.PTE_ADDR_MASK
        return memory.read(table + (va & 0xFFF), 1)[0]

    def _event_in_flight(self) -> bool:
        """Whether KVM holds an exception or interrupt it has yet to deliver.

        A kick can stop KVM_RUN after an instruction at CPL3 raised an exception (on
        PVM hosts ``int 0x80`` becomes a #UD this way) but before KVM delivered it
        through the IDT: the registers still say CPL3, yet the event belongs to this
        context. Switching now would deliver it into the next thread.
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
                self._io_pending = not self.io_done_at_exit
                return FaultExit(x86.Vector.GP, 0, self._run_regs.rip, 0)
            self._io_pending = not self.io_done_at_exit
            return _DOORBELL
        if cpl != 0 or port not in _PORT_VECTOR:
            # PVM may deliver a CPL3 port access without consulting the I/O bitmap:
            # every port but the doorbell is a #GP as the bitmap says.
            return FaultExit(x86.Vector.GP, 0, self._run_regs.rip, 0)
        regs = self._run_regs
        if regs.rip != _STUB_EXIT_RIP[port]:
            return CpuError(f"ring-0 exit at unexpected rip {regs.rip:#x}")
        if not self._stack_lo <= regs.rsp <= self._stack_hi - FRAME_WORDS.size:
            return CpuError(f"ring-0 exit with rsp {regs.rsp:#x} outside CPU {self.index}'s "
                            "kernel stack")
        vector = _PORT_VECTOR[port]
        error, rip, cs, rflags, rsp, _ss = FRAME_WORDS.unpack_from(
            self.vm.memory.view, regs.rsp - KERNEL_BASE)
        if cs & 3 != 3:
            return CpuError(f"exception {vector} taken in ring 0 at {rip:#x}")
        regs.rip, regs.rsp, regs.rflags = rip, rsp, rflags
        address = sregs.cr2 if vector == x86.Vector.PF else 0
        self._sregs.fs.base = sregs.fs.base  # an exception leaves FS alone
        self._load_user_sregs()
        if vector == SYSCALL_VECTOR:
            return _INT80
        return FaultExit(vector, error, rip, address)

    def _decode_other(self, reason: int) -> Exit:
        run_page = self.run_page
        if reason == ExitReason.INTERNAL_ERROR:
            internal = run_page.exit.internal
            data = " ".join(f"{internal.data[i]:#x}" for i in range(min(internal.ndata, 16)))
            return CpuError(f"KVM internal error, suberror {internal.suberror} [{data}] "
                            f"at rip {self._run_regs.rip:#x}")
        if reason == ExitReason.SHUTDOWN:
            return CpuError("triple fault (KVM_EXIT_SHUTDOWN)")
        if reason == ExitReason.HLT:
            return CpuError(f"hlt reached at rip {self._run_regs.rip:#x}")
        if reason == ExitReason.FAIL_ENTRY:
            return CpuError(f"VM entry failed, reason {run_page.exit.hw_reason:#x}")
        if reason == ExitReason.MMIO:
            addr = run_page.exit.mmio.phys_addr
            return CpuError(f"access to unbacked guest memory {addr:#x}")
        return CpuError(f"unexpected KVM exit reason {reason}")

    # --- dropping translations ------------------------------------------------------------

    def zap(self, entries: list[int]) -> bool:
        """Make KVM forget what it derived from the page-table entries at these
        physical addresses, which the host has just cleared: on return no vCPU
        translates through them any more. False if the stub could not run (the caller
        then invalidates everything instead).

        Host writes to page tables are invisible to KVM's shadow MMU (PVM hosts), and
        neither INVLPG nor a CR3 reload helps: KVM write-protects the tables it
        shadows and believes its shadow pages, re-syncing only those the guest could
        write (measured: both leave the old translation in place). A *guest* write to
        such a table is what it watches: the zap stub (layout.zap_code) rewrites the
        entries from ring 0 on this vCPU, KVM's emulator reports the write to the
        shadow MMU, which drops the shadow entries (the whole shadow page of a table
        with more than ZAP_WHOLE_TABLE_AT of them) and flushes the TLB of every vCPU,
        waiting for those in guest mode. Shadow pages are per VM, so one CPU's zap
        serves them all. Runs on this CPU's host thread, between two entries of the
        loaded context, whose registers and segments it restores."""
        ctx = self._loaded
        if ctx is None or not entries:
            return ctx is not None
        tables: dict[int, list[int]] = {}
        for pa in entries:
            tables.setdefault(pa & ~0xFFF, []).append(pa & 0xFFF)
        window = layout.window_va(self.index)
        work: list[tuple[int, int, int]] = []
        for table, offsets in tables.items():
            pte = table | _WINDOW_FLAGS
            if len(offsets) > ZAP_WHOLE_TABLE_AT:
                work.append((pte, window, 0))
                continue
            offsets.sort()
            first = last = offsets[0]
            for offset in offsets[1:]:
                if offset != last + 8:
                    work.append((pte, window + first, (last - first) // 8 + 1))
                    first = offset
                last = offset
            work.append((pte, window + first, (last - first) // 8 + 1))
        step = layout.ZAP_LIST_ENTRIES
        return all(self._run_zap(work[i:i + step]) for i in range(0, len(work), step))

    def _run_zap(self, work: list[tuple[int, int, int]]) -> bool:
        view, list_pa = self.vm.memory.view, layout.kstack_pa(self.index)
        for i, item in enumerate(work):
            _ZAP_ENTRY.pack_into(view, list_pa + i * _ZAP_ENTRY.size, *item)
        if self._io_pending:
            self._complete_pending_io()
        regs, run_page = self._run_regs, self.run_page
        ctypes.memmove(ctypes.addressof(self._saved_regs), ctypes.addressof(regs),
                       ctypes.sizeof(KvmRegs))
        regs.rip = KERNEL_BASE + layout.ZAP_STUB_PA
        regs.rsp = self._stack_hi
        regs.rflags = 2
        regs.rsi, regs.rdx = KERNEL_BASE + list_pa, len(work)
        regs.rbx = layout.window_pte_va(self.index)
        self._ring0_sregs.cr3 = self._sregs.cr3
        ctypes.memmove(ctypes.addressof(self._run_sregs), ctypes.addressof(self._ring0_sregs),
                       ctypes.sizeof(KvmSregs))
        run_page.kvm_dirty_regs |= kvm.KVM_SYNC_X86_REGS | kvm.KVM_SYNC_X86_SREGS
        kicked = False
        try:
            while True:
                if run_page.immediate_exit:  # a kick: keep it for the user context
                    kicked, run_page.immediate_exit = True, 0
                self._enter_guest()
                try:
                    reason = self.vcpu.run()
                except InterruptedError:
                    continue  # the stub goes on where the kick stopped it
                except OSError:
                    return False
                finally:
                    self._leave_guest()
                break
            self.zaps += 1
            return (reason == ExitReason.IO and self._io.port == layout.ZAP_PORT
                    and regs.rip == _ZAP_EXIT_RIP)
        finally:
            ctypes.memmove(ctypes.addressof(regs), ctypes.addressof(self._saved_regs),
                           ctypes.sizeof(KvmRegs))
            self._load_user_sregs()
            if kicked:
                run_page.immediate_exit = 1

    # --- kicks ------------------------------------------------------------------------------

    def kick(self, preempt: bool = True, signal_it: bool = True) -> None:
        """Make the running (or next) KVM_RUN return at once; with ``preempt``, report a
        PreemptExit at the next clean CPL3 boundary. ``signal_it`` needs the caller to
        hold the VM's gate lock (``SvsmVm.kick``); without it no lock is taken."""
        if preempt:
            self.preempt_requested = True
        self.run_page.immediate_exit = 1
        if signal_it and self.signal_kicks and self.state is CpuState.GUEST \
                and self.host_thread is not None:
            signal.pthread_kill(self.host_thread, KICK_SIGNAL)
        nested = self.nested
        if nested is not None:
            nested.kick(signal_it and self.signal_kicks)

    def close(self) -> None:
        del self._run_regs, self._run_sregs, self._io, self._cs, self._events, self.run_page
        self.vcpu.close()
