"""A guest: its own KVM VM with one memory slot and one vCPU, booted through PVH, run to its end.

``Guest`` creates the VM (KVM_CREATE_VM), backs guest-physical [0, memory) with one
memory slot, creates vCPU 0 with the CPUID KVM supports (KVM_GET_SUPPORTED_CPUID) and no
in-kernel irqchip (interrupts are injected from here with KVM_INTERRUPT), lays the kernel
out with ``pvh.boot_image`` and sets the PVH entry state. ``run`` then loops over KVM_RUN:
each exit is decoded into a plain value (``exits``) and handled here:

- port I/O goes to the ``PortBus``: COM1 (a 16550, ``uart``) at 0x3F8, whose output
  becomes console lines ``[name] text``, and QEMU's isa-debug-exit at 0xF4-0xF7, which
  ends the guest: status ``(value << 1) | 1``; every other port reads all ones;
- MMIO (guest-physical memory outside the slot) reads all ones and ignores writes;
- RDMSR/WRMSR of an MSR KVM does not know come here (KVM_CAP_X86_USER_SPACE_MSR) and
  are answered with #GP, which is what KVM itself would do: the place the MSR split of
  issue 10 will plug into;
- HLT: a queued interrupt is injected; with IF set and nothing queued the vCPU sleeps
  until ``interrupt``, the timeout or ``stop``; with IF clear nothing can ever wake it:
  the guest ends as ``HALTED``;
- an emulation failure (KVM_EXIT_INTERNAL_ERROR, suberror 1) is completed here when it
  is an instruction ``complete`` knows (IRET), else the guest ends as ``EMULATION_FAILURE``
  with the instruction bytes in ``GuestResult.detail``;
- a triple fault (KVM_EXIT_SHUTDOWN) ends it as ``TRIPLE_FAULT``.

Nothing a guest does raises out of ``run``: every way it can end is a ``GuestResult``;
only a VMM bug could raise. docs/guests.md has the whole picture.

Threads and locking: ``run`` is called by one host thread, which alone touches the vCPU,
its run page, the devices and guest memory while the guest runs. ``interrupt`` and
``stop`` may be called from any thread: they take ``_lock`` (which guards the queue of
interrupts, the stop flag and the running thread's id) and kick the vCPU out of KVM_RUN
by setting ``immediate_exit`` and sending ``KICK_SIGNAL`` to the running thread: the
SVSM's own CPUs' signal and no-op handler (kernel/cpu.py), so both kinds of vCPU share
one. The handler only the main thread can install (else the signal's default action
would end the process); ``run`` does so itself when called there.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from copra.hw import kvm
from copra.hw.kvm import KvmFpu
from copra.kernel.cpu import KICK_SIGNAL, install_kick_handler
from copra.vmm import exits, pvh
from copra.vmm.complete import Refused, complete, segment
from copra.vmm.ports import (
    COM1_PORT,
    COM1_SIZE,
    DEBUG_EXIT_PORT,
    DEBUG_EXIT_SIZE,
    ByteDevice,
    DebugExit,
    PortBus,
)
from copra.vmm.uart import LineConsole, Uart16550

#: KVM_SET_TSS_ADDR: three pages KVM needs on VMX hosts for real-mode emulation; above
#: guest RAM (MAX_MEMORY is 3 GiB) and out of the way, where QEMU puts them.
TSS_ADDR: Final = 0xFFFB_D000
#: How many bytes of the instruction an emulation-failure report shows.
INSN_BYTES: Final = 15
_RUN_STRUCT_SIZE: Final = ctypes.sizeof(kvm.KvmRun)  #: port data never lies inside it


class GuestError(Exception):
    """The guest could not be created: bad kernel, bad configuration, or KVM refused."""


class Outcome(Enum):
    EXITED = "exited through isa-debug-exit"
    TRIPLE_FAULT = "triple fault"
    HALTED = "halted with interrupts disabled"
    EMULATION_FAILURE = "an instruction neither KVM nor copra can run"
    ENTRY_FAILED = "VM entry failed"
    KVM_ERROR = "KVM stopped the guest"
    TIMED_OUT = "timed out"
    STOPPED = "stopped by the host"


@dataclass(frozen=True)
class GuestResult:
    outcome: Outcome
    exit_value: int | None = None  #: the value written to isa-debug-exit
    detail: str = ""
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> int | None:
        """The process exit status QEMU would give: ((value << 1) | 1) & 0xFF."""
        if self.exit_value is None:
            return None
        return ((self.exit_value << 1) | 1) & 0xFF

    def describe(self) -> str:
        text = self.outcome.value
        if self.exit_value is not None:
            text += f": value {self.exit_value:#x}, status {self.status}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True)
class GuestConfig:
    name: str
    kernel: bytes  #: the ELF image
    memory: int = 128 << 20  #: bytes
    cmdline: bytes = b""


class Guest:
    def __init__(self, config: GuestConfig, console: Callable[[str], None],
                 kvm_device: str = "/dev/kvm") -> None:
        try:
            kernel = pvh.parse_kernel(config.kernel)
            self.image = pvh.boot_image(kernel, config.memory, config.cmdline)
        except pvh.PvhError as e:
            raise GuestError(str(e)) from e
        self.name = config.name
        self.memory_size = config.memory
        self.console = LineConsole(config.name, console)
        self.uart = Uart16550(self.console.put)
        self.debug_exit = DebugExit()
        self.ports = PortBus()
        self.ports.add(COM1_PORT, COM1_SIZE, ByteDevice(self.uart))
        self.ports.add(DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, self.debug_exit)
        self.counters: dict[str, int] = {
            "exits": 0, "io": 0, "mmio": 0, "msr": 0, "hlt": 0, "injected": 0,
            "completed": 0, "kicks": 0,
        }
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: deque[int] = deque()
        self._stop_reason: Outcome | None = None
        self._thread_id: int | None = None
        self._ran = False
        try:
            self.kvm = kvm.Kvm(kvm_device)
        except (kvm.KvmError, OSError) as e:
            raise GuestError(str(e)) from e
        try:
            self._create()
        except OSError as e:
            self.close()
            raise GuestError(f"KVM refused to create the guest: {e.strerror or e}") from e

    # --- creation ---------------------------------------------------------------------

    def _create(self) -> None:
        self.vm = self.kvm.create_vm()
        if self.vm.check_extension(kvm.KVM_CAP_SET_TSS_ADDR) > 0:
            self.vm.set_tss_addr(TSS_ADDR)
        if self.vm.check_extension(kvm.KVM_CAP_X86_USER_SPACE_MSR) > 0:
            self.vm.enable_cap(kvm.KVM_CAP_X86_USER_SPACE_MSR,
                               kvm.KVM_MSR_EXIT_REASON_UNKNOWN | kvm.KVM_MSR_EXIT_REASON_INVAL)
        self.memory = self.vm.add_memory(0, self.memory_size)
        for chunk in self.image.chunks:
            self.memory[chunk.addr:chunk.addr + len(chunk.data)] = chunk.data
            # the rest of a chunk (a kernel's bss) is fresh anonymous memory: zeros
        self.vcpu = self.vm.create_vcpu()
        self.run_page = self.vcpu.run_page
        self._run_area = self.vcpu.run_area
        self.vcpu.set_cpuid(self.kvm.supported_cpuid())
        enter_pvh(self.vcpu, self.image)

    # --- other threads ------------------------------------------------------------------

    def interrupt(self, vector: int) -> None:
        """Queue external interrupt ``vector`` (32-255) for the guest (any thread)."""
        if not 32 <= vector <= 255:
            raise ValueError(f"vector {vector}: external interrupts use 32-255")
        with self._lock:
            self._pending.append(vector)
            self._wake.notify()
        self._kick()

    def stop(self, outcome: Outcome = Outcome.STOPPED) -> None:
        """End ``run`` as soon as the vCPU is out of KVM_RUN (any thread)."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = outcome
            self._wake.notify()
        self._kick()

    def _kick(self) -> None:
        run_page = getattr(self, "run_page", None)
        if run_page is None:  # closed
            return
        run_page.immediate_exit = 1
        # Under the lock: the running thread clears _thread_id under it before it leaves
        # run, so the thread signalled here is alive.
        with self._lock:
            thread_id = self._thread_id
            if thread_id is not None and thread_id != threading.get_ident():
                self.counters["kicks"] += 1
                signal.pthread_kill(thread_id, KICK_SIGNAL)

    # --- the vCPU thread ------------------------------------------------------------------

    def run(self, timeout: float | None = None) -> GuestResult:
        """Run the guest until it ends (or ``timeout`` seconds pass); once per guest."""
        if self._ran:
            raise GuestError(f"guest {self.name} has already run")
        if not install_kick_handler():
            raise GuestError("call install_kick_handler() from the main thread first: "
                             "a guest running on another thread is kicked with a signal")
        self._ran = True
        timer = threading.Timer(timeout, self.stop, (Outcome.TIMED_OUT,)) if timeout else None
        with self._lock:
            self._thread_id = threading.get_ident()
        try:
            if timer is not None:
                timer.daemon = True
                timer.start()
            result = self._loop()
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                self._thread_id = None
            self.console.flush()
        counters = dict(self.counters, unclaimed_port_reads=self.ports.unclaimed_reads,
                        unclaimed_port_writes=self.ports.unclaimed_writes,
                        console_bytes=self.console.bytes)
        return GuestResult(result.outcome, result.exit_value, result.detail, counters)

    def _loop(self) -> GuestResult:
        run = self.run_page
        vcpu = self.vcpu
        counters = self.counters
        while True:
            if self._stop_reason is not None:
                return GuestResult(self._stop_reason)
            if self._pending:
                self._inject()
            try:
                reason = vcpu.run()
            except InterruptedError:
                reason = kvm.ExitReason.INTR
            except OSError as e:
                return GuestResult(Outcome.KVM_ERROR, detail=f"KVM_RUN failed: {e.strerror or e}")
            counters["exits"] += 1
            try:
                result = self._handle(exits.decode(run, reason))
            except OSError as e:  # a register ioctl KVM refused: end this guest, not copra
                return GuestResult(Outcome.KVM_ERROR, detail=f"KVM refused: {e.strerror or e}")
            if result is not None:
                return result

    def _handle(self, ex: exits.Exit) -> GuestResult | None:
        """Answer one exit; a result ends the guest."""
        run = self.run_page
        counters = self.counters
        if isinstance(ex, exits.IoExit):
            self._port_io(ex)
            if self.debug_exit.value is not None:
                return GuestResult(Outcome.EXITED, self.debug_exit.value)
        elif isinstance(ex, exits.InterruptedExit):
            run.immediate_exit = 0
        elif isinstance(ex, exits.IrqWindowExit):
            pass  # the top of the loop injects
        elif isinstance(ex, exits.HltExit):
            counters["hlt"] += 1
            if not self._wait_for_interrupt():
                return GuestResult(Outcome.HALTED, detail=f"at {self._rip():#x}")
        elif isinstance(ex, exits.MmioExit):
            counters["mmio"] += 1
            if not ex.is_write:
                ctypes.memset(ctypes.addressof(run.exit.mmio.data), 0xFF, 8)
        elif isinstance(ex, exits.MsrExit):
            counters["msr"] += 1
            run.exit.msr.error = 1  # #GP: nothing claims it (KVM's own answer)
        elif isinstance(ex, exits.InternalError):
            return self._internal_error(ex)
        elif isinstance(ex, exits.ShutdownExit):
            return GuestResult(Outcome.TRIPLE_FAULT, detail=f"at {self._rip():#x}")
        elif isinstance(ex, exits.FailEntryExit):
            return GuestResult(Outcome.ENTRY_FAILED,
                               detail=f"hardware reason {ex.hardware_reason:#x}")
        else:
            return GuestResult(Outcome.KVM_ERROR, detail=f"unexpected exit {ex}")
        return None

    def _port_io(self, ex: exits.IoExit) -> None:
        self.counters["io"] += 1
        area = self._run_area
        size = ex.size if ex.size in (1, 2, 4) else 1
        start = ex.data_offset
        end = start + ex.count * size
        if start < _RUN_STRUCT_SIZE or end > len(area):
            return  # KVM never reports this; nothing to answer
        port = ex.port
        if ex.is_write:
            for i in range(start, end, size):
                self.ports.write(port, size, int.from_bytes(area[i:i + size], "little"))
        else:
            for i in range(start, end, size):
                area[i:i + size] = self.ports.read(port, size).to_bytes(size, "little")

    def _inject(self) -> None:
        run = self.run_page
        if run.ready_for_interrupt_injection and run.if_flag:
            with self._lock:
                vector = self._pending.popleft()
            self.vcpu.interrupt(vector)
            self.counters["injected"] += 1
        run.request_interrupt_window = 1 if self._pending else 0

    def _wait_for_interrupt(self) -> bool:
        """After HLT: whether something can still wake the vCPU (then it has been)."""
        if not self.vcpu.get_regs().rflags & (1 << 9):
            return False
        with self._lock:
            while not self._pending and self._stop_reason is None:
                self._wake.wait()
        return True

    def _internal_error(self, ex: exits.InternalError) -> GuestResult | None:
        regs = self.vcpu.get_regs()
        sregs = self.vcpu.get_sregs()
        insn = (exits.emulation_insn_bytes(ex)
                or self._read_linear(sregs.cs.base + regs.rip, INSN_BYTES, sregs) or b"")
        if ex.suberror == kvm.KVM_INTERNAL_ERROR_EMULATION:
            try:
                complete(insn, regs, sregs, self._read_physical)
            except Refused as e:
                return GuestResult(Outcome.EMULATION_FAILURE,
                                   detail=f"at {regs.rip:#x}, bytes {insn.hex(' ')}: {e}")
            self.vcpu.set_regs(regs)
            self.vcpu.set_sregs(sregs)
            self.counters["completed"] += 1
            return None
        data = " ".join(f"{d:#x}" for d in ex.data)
        return GuestResult(Outcome.KVM_ERROR,
                           detail=f"internal error, suberror {ex.suberror} [{data}] "
                                  f"at {regs.rip:#x}, bytes {insn.hex(' ')}")

    def _rip(self) -> int:
        return int(self.vcpu.get_regs().rip)

    def _read_physical(self, address: int, size: int) -> bytes | None:
        if address < 0 or address + size > self.memory_size:
            return None
        return bytes(self.memory[address:address + size])

    def _read_linear(self, address: int, size: int, sregs: kvm.KvmSregs) -> bytes | None:
        """Guest memory at a linear address, while paging is off (else None)."""
        if sregs.cr0 & (1 << 31):
            return None
        address &= 0xFFFF_FFFF
        return self._read_physical(address, max(0, min(size, self.memory_size - address)))

    def close(self) -> None:
        """Release the VM, its memory and /dev/kvm (idempotent)."""
        for name in ("run_page", "_run_area", "memory"):  # mmaps and views the VM closes
            if hasattr(self, name):
                delattr(self, name)
        vm = getattr(self, "vm", None)
        if vm is not None:
            vm.close()
            del self.vm
        self.kvm.close()

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def enter_pvh(vcpu: kvm.Vcpu, image: pvh.BootImage) -> None:
    """Put ``vcpu`` in the PVH entry state of ``image`` (docs/guests.md, "The entry
    state"): 32-bit protected mode, paging off, the boot GDT's flat segments and busy
    TSS, ebx = the start info, x87/SSE in their reset state."""
    vcpu.set_fpu(KvmFpu.initial())
    sregs = vcpu.get_sregs()
    gdt = image.gdt
    sregs.cs = segment(pvh.SEL_CODE, gdt[pvh.SEL_CODE >> 3])
    data = segment(pvh.SEL_DATA, gdt[pvh.SEL_DATA >> 3])
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data
    sregs.tr = segment(pvh.SEL_TSS, gdt[pvh.SEL_TSS >> 3])
    sregs.tr.type = gdt[pvh.SEL_TSS >> 3].type  # a TSS stays busy, not "accessed"
    sregs.gdt.base = image.gdt_base
    sregs.gdt.limit = 8 * len(gdt) - 1
    sregs.idt.base = 0
    sregs.idt.limit = 0
    sregs.cr0 = pvh.CR0_PE
    sregs.cr4 = 0
    sregs.efer = 0
    vcpu.set_sregs(sregs)
    regs = kvm.KvmRegs()
    regs.rip = image.entry
    regs.rbx = image.start_info
    regs.rflags = pvh.EFLAGS_FIXED
    vcpu.set_regs(regs)


def run_guest(config: GuestConfig, console: Callable[[str], None], timeout: float | None = None,
              kvm_device: str = "/dev/kvm") -> GuestResult:
    """Create, run and close one guest."""
    with Guest(config, console, kvm_device) as guest:
        return guest.run(timeout)

