"""KVM integration: CPL3 entry, the syscall registers and every exception path of a CPU."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from copra.abi.spec import DOORBELL_PORT, PAGE_SIZE, USER_START, Entry
from copra.hw import kvm, x86
from copra.kernel.cpu import (
    TRAP_HOLDS,
    Cpu,
    CpuError,
    FaultExit,
    PreemptExit,
    SyscallExit,
    UserContext,
)
from copra.kernel.frames import FrameOwner
from copra.kernel.layout import KERNEL_BASE
from copra.kernel.pagetable import AddressSpace
from copra.kernel.svsm_vm import SvsmVm

CODE = USER_START
STACK_TOP = USER_START + 0x10000


@pytest.fixture(scope="module")
def vm() -> Iterator[SvsmVm]:
    m = SvsmVm(32 << 20)
    yield m
    m.close()


@pytest.fixture
def cpu(vm: SvsmVm) -> Cpu:
    return vm.cpus[0]


def user_program(vm: SvsmVm, code: bytes) -> UserContext:
    return vm.bare_program(code, at=CODE, stack_top=STACK_TOP).context


def test_doorbell_exits_with_cpl3_registers(vm: SvsmVm, cpu: Cpu) -> None:
    ctx = user_program(vm, bytes([0xE6, DOORBELL_PORT]) + b"\xeb\xfe")
    ctx.regs.rax, ctx.regs.rdi, ctx.regs.rsi = 0x3_0000_0000, 11, 22
    ctx.regs.r8, ctx.regs.r9, ctx.regs.r10 = 33, 44, 55
    ex = cpu.enter(ctx)
    assert ex == SyscallExit(Entry.DOORBELL)
    r = cpu.regs
    assert (r.rax, r.rdi, r.rsi, r.r8, r.r9, r.r10) == (0x3_0000_0000, 11, 22, 33, 44, 55)
    # PVM reports RIP past the `out`; VMX/SVM report it at the `out` and skip it on
    # re-entry (the CPU completes it before a context switch).
    assert r.rip in (CODE, CODE + 2)
    assert cpu.run_page.s.sregs.cs.selector & 3 == 3


def test_kvm_statistics_count_the_exits_of_a_cpu(vm: SvsmVm, cpu: Cpu) -> None:
    """KVM_GET_STATS_FD (hw/kvm.py ``read_stats``): the vCPU's exit counter moves with
    every doorbell, and the VM's statistics read too."""
    ctx = user_program(vm, bytes([0x50, 0x58, 0xE6, DOORBELL_PORT, 0xEB, 0xFA]))
    before = cpu.vcpu.stats()
    for _ in range(3):
        assert cpu.enter(ctx) == SyscallExit(Entry.DOORBELL)
    after = cpu.vcpu.stats()
    assert after["exits"] - before["exits"] >= 3
    assert all(isinstance(v, int) and v >= 0 for v in after.values())
    assert set(before) == set(after)
    assert kvm.read_stats(vm.kvm_vm.fd)  # the VM's own counters (memory, MMU)


def test_int80_is_reported_as_ud_or_gate_with_user_frame(vm: SvsmVm, cpu: Cpu) -> None:
    ctx = user_program(vm, b"\xcd\x80\xeb\xfe")
    ex = cpu.enter(ctx)
    # PVM delivers int 0x80 from CPL3 as #UD at the instruction; VMX/SVM use the gate.
    assert ex in (SyscallExit(Entry.INT80), FaultExit(x86.Vector.UD, 0, CODE, 0))
    assert cpu.regs.rsp == STACK_TOP - 8


def test_result_written_to_rax_reaches_user_mode(vm: SvsmVm, cpu: Cpu) -> None:
    # out; mov rdi, rax; out; jmp $
    code = bytes([0xE6, DOORBELL_PORT, 0x48, 0x89, 0xC7, 0xE6, DOORBELL_PORT, 0xEB, 0xFE])
    ctx = user_program(vm, code)
    assert isinstance(cpu.enter(ctx), SyscallExit)
    cpu.regs.rax = 0xFFFF_FFFF_FFFF_FFFB
    cpu.mark_regs_dirty()
    assert isinstance(cpu.enter(ctx), SyscallExit)
    assert cpu.regs.rdi == 0xFFFF_FFFF_FFFF_FFFB


@pytest.mark.parametrize(
    ("code", "vector"),
    [
        (b"\x0f\x0b", x86.Vector.UD),  # ud2
        (b"\x31\xc9\xf7\xf1", x86.Vector.DE),  # xor ecx, ecx; div ecx
        (b"\xf4", x86.Vector.GP),  # hlt at CPL3
        (b"\xfa", x86.Vector.GP),  # cli at CPL3 (IOPL 0)
        (b"\xcc", x86.Vector.BP),  # int3
        (b"\xe6\x70", x86.Vector.GP),  # out to a port the I/O bitmap denies
        (bytes([0xE4, DOORBELL_PORT]), x86.Vector.GP),  # in al, 0xE0: only `out` rings
        (bytes([0xE7, DOORBELL_PORT]), x86.Vector.GP),  # out 0xE0, eax: only a byte rings
        # pushfq; or qword [rsp], 0x100 (TF); popfq; nop: single-step trap
        (bytes.fromhex("9c48810c24000100009d9090"), x86.Vector.DB),
        # ldmxcsr with divide-by-zero unmasked; divss by 0.0: SIMD exception
        (bytes.fromhex("4883ec10c70424801d00000fae14240f57c9b80000803f660f6ec0f30f5ec190"),
         x86.Vector.XM),
        # fninit; fldcw with ZE unmasked; fld1; fldz; fdivp; fwait: x87 exception
        (bytes.fromhex("dbe34883ec1066c704247b03d92c24d9e8d9eedef99b90"), x86.Vector.MF),
    ],
    ids=["ud2", "div0", "hlt", "cli", "int3", "out-denied-port", "in-doorbell", "out-doorbell-32",
         "single-step", "simd", "x87"],
)
def test_user_exception_reaches_kernel_with_vector(vm: SvsmVm, cpu: Cpu, code: bytes,
                                                   vector: int) -> None:
    ex = cpu.enter(user_program(vm, code))
    assert isinstance(ex, FaultExit)
    assert ex.vector == vector


def test_write_to_kernel_half_is_page_fault_with_address(vm: SvsmVm, cpu: Cpu) -> None:
    target = KERNEL_BASE + 0x1000  # the GDT page: mapped, supervisor-only
    code = b"\x48\xb8" + struct.pack("<Q", target) + b"\xc6\x00\x01"  # mov rax, imm; mov [rax], 1
    ex = cpu.enter(user_program(vm, code))
    assert isinstance(ex, FaultExit)
    assert ex.vector == x86.Vector.PF
    assert ex.address == target
    assert ex.error_code & (x86.PF_PRESENT | x86.PF_WRITE | x86.PF_USER) == (
        x86.PF_PRESENT | x86.PF_WRITE | x86.PF_USER)


def test_read_of_unmapped_user_page_is_page_fault(vm: SvsmVm, cpu: Cpu) -> None:
    code = b"\x48\xb8" + struct.pack("<Q", 0xDEAD0000) + b"\x8a\x00"  # mov al, [rax]
    ex = cpu.enter(user_program(vm, code))
    assert isinstance(ex, FaultExit)
    assert (ex.vector, ex.address, ex.error_code & x86.PF_PRESENT) == (x86.Vector.PF, 0xDEAD0000, 0)


def test_execute_of_nx_stack_is_page_fault(vm: SvsmVm, cpu: Cpu) -> None:
    code = b"\x48\xb8" + struct.pack("<Q", STACK_TOP - PAGE_SIZE) + b"\xff\xe0"  # jmp rax
    ex = cpu.enter(user_program(vm, code))
    assert isinstance(ex, FaultExit)
    assert ex.vector == x86.Vector.PF
    assert ex.error_code & x86.PF_FETCH


def test_non_canonical_access_is_general_protection(vm: SvsmVm, cpu: Cpu) -> None:
    code = b"\x48\xb8" + struct.pack("<Q", 0x0000_8000_0000_0000) + b"\x8a\x00"
    ex = cpu.enter(user_program(vm, code))
    assert isinstance(ex, FaultExit)
    assert ex.vector == x86.Vector.GP


def test_sse_state_is_private_to_each_context(vm: SvsmVm, cpu: Cpu) -> None:
    # movq xmm0, rdi; out; movq rax, xmm0; out
    code = b"\x66\x48\x0f\x6e\xc7" + bytes([0xE6, DOORBELL_PORT]) + \
        b"\x66\x48\x0f\x7e\xc0" + bytes([0xE6, DOORBELL_PORT]) + b"\xeb\xfe"
    a, b = user_program(vm, code), user_program(vm, code)
    a.regs.rdi, b.regs.rdi = 0xAAAA, 0xBBBB
    assert isinstance(cpu.enter(a), SyscallExit)
    assert isinstance(cpu.enter(b), SyscallExit)
    assert isinstance(cpu.enter(a), SyscallExit)
    assert cpu.regs.rax == 0xAAAA
    assert isinstance(cpu.enter(b), SyscallExit)
    assert cpu.regs.rax == 0xBBBB


def test_cpu_error_is_plain_data() -> None:
    assert CpuError("x").reason == "x"


def test_remapped_page_shows_new_frame_after_invalidate(vm: SvsmVm, cpu: Cpu) -> None:
    # mov al, [0x401000]; out; jmp $  -- reads a data page, then rings the doorbell
    code = b"\x8a\x04\x25" + (USER_START + PAGE_SIZE).to_bytes(4, "little") + \
        bytes([0xE6, DOORBELL_PORT]) + b"\xeb\xfe"
    old = vm.frames.alloc(FrameOwner.USER)
    vm.memory.write(old, b"\x11")
    new = vm.frames.alloc(FrameOwner.USER)
    vm.memory.write(new, b"\x22")
    program = vm.bare_program(code)
    ctx_space, ctx = program.space, program.context
    ctx_space.map(USER_START + PAGE_SIZE, old, writable=False, executable=False)
    assert isinstance(cpu.enter(ctx), SyscallExit)
    assert cpu.regs.rax & 0xFF == 0x11
    ctx_space.unmap(USER_START + PAGE_SIZE)
    ctx_space.map(USER_START + PAGE_SIZE, new, writable=False, executable=False)
    vm.invalidate_mappings()
    cpu.regs.rip = USER_START
    cpu.mark_regs_dirty()
    assert isinstance(cpu.enter(ctx), SyscallExit)
    assert cpu.regs.rax & 0xFF == 0x22


class _TickInStub:
    """A vCPU whose first KVM_RUN is interrupted inside a ring-0 stub, the second at CPL3."""

    def __init__(self, cpu: Cpu) -> None:
        self.cpu, self.runs, self.real = cpu, 0, cpu.vcpu

    def __getattr__(self, name: str) -> object:  # the XSAVE ioctls go to the real vCPU
        return getattr(self.real, name)

    def run(self) -> int:
        self.runs += 1
        self.cpu._cs.selector = 0x08 if self.runs == 1 else 0x23
        raise InterruptedError


def test_tick_inside_a_ring0_stub_is_not_reported_until_the_stub_is_left(
        vm: SvsmVm, cpu: Cpu) -> None:
    ctx = user_program(vm, b"\xeb\xfe")
    cpu.load(ctx)
    cpu.preempt_requested = True  # as the timer's kick does
    before = cpu.ring0_preemptions
    real, fake = cpu.vcpu, _TickInStub(cpu)
    cpu.vcpu = fake  # type: ignore[assignment]
    try:
        ex = cpu.enter(ctx)
    finally:
        cpu.vcpu = real
    assert isinstance(ex, PreemptExit)
    assert fake.runs == 2 and cpu.ring0_preemptions == before + 1


def test_user_byte_reads_through_the_context_page_tables(vm: SvsmVm, cpu: Cpu) -> None:
    # What the trap check (Cpu._after_trap) reads: the byte before RIP, as CPL3 sees it.
    ctx = user_program(vm, b"\xf1\xcc\xeb\xfe")
    assert cpu._user_byte(ctx.cr3, CODE + 1) == 0xCC
    assert cpu._user_byte(ctx.cr3, CODE) == 0xF1
    assert cpu._user_byte(ctx.cr3, 0xDEAD0000) is None  # unmapped
    assert cpu._user_byte(ctx.cr3, KERNEL_BASE + 0x1000) is None  # not user memory


class _KickedAfterInt3:
    """A vCPU whose every KVM_RUN is interrupted at CPL3 with RIP right after a CC byte."""

    def __init__(self, cpu: Cpu, rip: int) -> None:
        self.cpu, self.rip, self.runs, self.real = cpu, rip, 0, cpu.vcpu

    def __getattr__(self, name: str) -> object:  # the XSAVE ioctls go to the real vCPU
        return getattr(self.real, name)

    def run(self) -> int:
        self.runs += 1
        self.cpu._cs.selector = 0x23
        self.cpu.regs.rip = self.rip
        raise InterruptedError


def test_kicks_after_int3_are_held_but_a_spinning_thread_is_preempted_after_a_bound(
        vm: SvsmVm, cpu: Cpu) -> None:
    # mov al, 0xCC; jmp $: the jmp follows a CC byte and never exits by itself.
    ctx = user_program(vm, b"\xb0\xcc\xeb\xfe")
    cpu.load(ctx)
    cpu.preempt_requested = True  # as the timer's kick does
    before = cpu.trap_holds
    real, fake = cpu.vcpu, _KickedAfterInt3(cpu, CODE + 2)
    cpu.vcpu = fake  # type: ignore[assignment]
    try:
        ex = cpu.enter(ctx)
    finally:
        cpu.vcpu = real
    assert isinstance(ex, PreemptExit)
    assert fake.runs == TRAP_HOLDS + 1
    assert cpu.trap_holds == before + TRAP_HOLDS


@pytest.mark.parametrize("pages", [1, 40])  # entry by entry; the whole shadow table
def test_zap_on_one_cpu_drops_a_host_cleared_entry_on_another(pages: int) -> None:
    # CPU 1 reads a page; the host clears its entry and CPU 0 zaps it from ring 0 (no
    # slot re-registration): CPU 1 then faults there, and reads a frame mapped anew.
    vm = SvsmVm(32 << 20, cpus=2)
    try:
        reader, zapper = vm.cpus[1], vm.cpus[0]
        data = USER_START + PAGE_SIZE
        code = b"\x8a\x04\x25" + data.to_bytes(4, "little") + \
            bytes([0xE6, DOORBELL_PORT]) + b"\xeb\xfe"
        program = vm.bare_program(code)
        space, ctx = program.space, program.context
        old, new = (vm.frames.alloc(FrameOwner.USER) for _ in range(2))
        vm.memory.write(old, b"\x11")
        vm.memory.write(new, b"\x22")
        space.map(data, old, writable=False, executable=False)
        for i in range(1, pages):
            space.map(data + i * PAGE_SIZE, vm.frames.alloc(FrameOwner.USER), writable=False,
                      executable=False)
        assert isinstance(reader.enter(ctx), SyscallExit)
        assert reader.regs.rax & 0xFF == 0x11
        cleared: list[int] = []
        assert space.unmap(data, cleared) == old
        for i in range(1, pages):
            space.unmap(data + i * PAGE_SIZE, cleared)
        zapper.load(UserContext.initial(space.pml4, USER_START, data))
        invalidations = vm.invalidations
        assert zapper.zap(cleared)
        assert zapper.zaps == 1 and vm.invalidations == invalidations
        reader.regs.rip = USER_START
        reader.mark_regs_dirty()
        ex = reader.enter(ctx)
        assert isinstance(ex, FaultExit) and ex.vector == x86.Vector.PF and ex.address == data
        space.map(data, new, writable=False, executable=False)
        reader.regs.rip = USER_START
        reader.mark_regs_dirty()
        assert isinstance(reader.enter(ctx), SyscallExit)
        assert reader.regs.rax & 0xFF == 0x22
    finally:
        vm.close()


def test_context_saved_after_a_doorbell_resumes_past_it_on_another_cpu() -> None:
    # Whether or not the VM completes the exit's `out` before saving (it does not where
    # KVM reports RIP past it, vm.io_done_at_exit), the context runs on from after it
    # on the next CPU: the `out` is neither lost nor executed twice.
    vm = SvsmVm(32 << 20, cpus=2)
    try:
        code = bytes([0xE6, DOORBELL_PORT]) + b"\x48\xff\xc3" + \
            bytes([0xE6, DOORBELL_PORT]) + b"\xeb\xfe"  # out; inc rbx; out; jmp $
        ctx = user_program(vm, code)
        first, second = vm.cpus
        assert first.enter(ctx) == SyscallExit(Entry.DOORBELL)
        first.save()
        other = user_program(vm, b"\xeb\xfe")
        first.load(other)  # the first CPU moves on to another context
        assert second.enter(ctx) == SyscallExit(Entry.DOORBELL)
        assert second.regs.rbx == 1
        assert second.regs.rip in (CODE + 5, CODE + 7)  # at or past the second `out`
    finally:
        vm.close()


def test_drop_translations_without_a_loaded_context_falls_back_to_invalidating() -> None:
    # The zap needs the caller's context on the CPU (its CR3); without one the VM
    # stops the world instead, so the entries are dropped all the same.
    vm = SvsmVm(16 << 20)
    try:
        before = vm.invalidations
        vm.drop_translations(0, [cleared_entry(vm)])
        assert vm.zap_fallbacks == 1 and vm.invalidations == before + 1
        vm.drop_translations(0, [])  # nothing to drop: nothing happens
        assert vm.zap_fallbacks == 1 and vm.invalidations == before + 1
    finally:
        vm.close()


def cleared_entry(vm: SvsmVm) -> int:
    """The physical address of a leaf entry of a fresh address space (cleared)."""
    space = AddressSpace(vm.frames, vm.kernel_pml4_entries())
    space.map(CODE, vm.frames.alloc(FrameOwner.USER), writable=False, executable=False)
    cleared: list[int] = []
    space.unmap(CODE, cleared)
    return cleared[0]
