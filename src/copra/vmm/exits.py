"""A guest vCPU's exits as plain values, decoded from the kvm_run page.

One value per KVM exit a guest can cause (api.rst 5, "The kvm_run structure"); the run
loop in guest.py dispatches on their type, as crosvm's ``VcpuExit`` and Firecracker's
vcpu loop do. ``decode`` reads the page and nothing else: port data stays in the run
area (``IoExit.data_offset``) until the device that answers it reads or fills it.

Decoding never raises: a reason copra does not know becomes ``UnknownExit``.
Only the thread that runs the vCPU calls ``decode`` (the page is that thread's).
"""

from __future__ import annotations

from dataclasses import dataclass

from copra.hw.kvm import KVM_EXIT_IO_OUT, KVM_INTERNAL_ERROR_EMULATION, ExitReason, KvmRun


@dataclass(frozen=True, slots=True)
class IoExit:
    """IN/OUT (or INS/OUTS: ``count`` items of ``size`` bytes each)."""

    port: int
    size: int
    is_write: bool
    count: int
    data_offset: int  #: where the data is in the run area


@dataclass(frozen=True, slots=True)
class MmioExit:
    """An access to guest-physical memory no memory slot backs."""

    address: int
    length: int
    is_write: bool
    data: bytes  #: the bytes written (a write), else zeros


@dataclass(frozen=True, slots=True)
class MsrExit:
    """RDMSR/WRMSR that KVM handed to user space (KVM_CAP_X86_USER_SPACE_MSR)."""

    index: int
    is_write: bool
    data: int  #: the value written (a write)
    reason: int  #: KVM_MSR_EXIT_REASON_*


@dataclass(frozen=True, slots=True)
class HltExit:
    """HLT (no in-kernel irqchip: the VMM decides what wakes the vCPU)."""


@dataclass(frozen=True, slots=True)
class IrqWindowExit:
    """The guest can take an interrupt now (request_interrupt_window was set)."""


@dataclass(frozen=True, slots=True)
class ShutdownExit:
    """A triple fault: the processor has shut down."""


@dataclass(frozen=True, slots=True)
class InternalError:
    """KVM could not go on: suberror 1 is an instruction its emulator cannot run."""

    suberror: int
    data: tuple[int, ...]


#: kvm_run.emulation_failure.flags: insn_size and insn_bytes are valid (api.rst 5,
#: KVM_EXIT_INTERNAL_ERROR).
KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1


def emulation_insn_bytes(ex: InternalError) -> bytes:
    """The instruction bytes KVM fetched for an emulation failure, or b"" if it gave none.

    struct emulation_failure overlays the data words: data[0] is ``flags``, then one
    byte ``insn_size`` and 15 bytes of ``insn_bytes`` in data[1] and data[2].
    """
    if (ex.suberror != KVM_INTERNAL_ERROR_EMULATION or len(ex.data) < 3
            or not ex.data[0] & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES):
        return b""
    raw = ex.data[1].to_bytes(8, "little") + ex.data[2].to_bytes(8, "little")
    return raw[1:1 + min(raw[0], 15)]


@dataclass(frozen=True, slots=True)
class FailEntryExit:
    """VM entry failed (the vCPU state is invalid for the hardware)."""

    hardware_reason: int


@dataclass(frozen=True, slots=True)
class InterruptedExit:
    """KVM_RUN returned EINTR: a signal or ``immediate_exit`` kicked the vCPU out."""


@dataclass(frozen=True, slots=True)
class UnknownExit:
    reason: int


Exit = (IoExit | MmioExit | MsrExit | HltExit | IrqWindowExit | ShutdownExit | InternalError
        | FailEntryExit | InterruptedExit | UnknownExit)

_HLT = HltExit()
_IRQ_WINDOW = IrqWindowExit()
_SHUTDOWN = ShutdownExit()
INTERRUPTED = InterruptedExit()


def decode(run: KvmRun, reason: int) -> Exit:
    """The exit KVM reported with ``reason`` (kvm_run.exit_reason)."""
    if reason == ExitReason.IO:
        io = run.exit.io
        return IoExit(io.port, io.size, io.direction == KVM_EXIT_IO_OUT, io.count,
                      io.data_offset)
    if reason == ExitReason.HLT:
        return _HLT
    if reason == ExitReason.MMIO:
        mmio = run.exit.mmio
        length = min(int(mmio.len), 8)
        return MmioExit(mmio.phys_addr, length, bool(mmio.is_write),
                        bytes(mmio.data[:length]) if mmio.is_write else bytes(length))
    if reason in (ExitReason.X86_RDMSR, ExitReason.X86_WRMSR):
        msr = run.exit.msr
        return MsrExit(msr.index, reason == ExitReason.X86_WRMSR, msr.data, msr.reason)
    if reason == ExitReason.IRQ_WINDOW_OPEN:
        return _IRQ_WINDOW
    if reason == ExitReason.SHUTDOWN:
        return _SHUTDOWN
    if reason == ExitReason.INTERNAL_ERROR:
        internal = run.exit.internal
        ndata = min(int(internal.ndata), 16)
        return InternalError(internal.suberror, tuple(internal.data[i] for i in range(ndata)))
    if reason == ExitReason.FAIL_ENTRY:
        return FailEntryExit(run.exit.hw_reason)
    if reason == ExitReason.INTR:
        return INTERRUPTED
    return UnknownExit(reason)
