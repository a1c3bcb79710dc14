"""KVM integration: the XSAVE binding on a real vCPU and a CPU's per-context vector state.

The user code is hand-assembled; each snippet's source is in the comment above it. On
PVM hosts CPL3 code runs under the host's XCR0, so AVX works there whatever the guest
enabled: these tests check what a process can actually reach, not what the guest's
control registers claim.
"""

from __future__ import annotations

import ctypes
import random
import struct
from collections.abc import Iterator

import pytest

from copra.abi.spec import USER_START, Entry
from copra.hw import kvm, x86
from copra.kernel.cpu import SyscallExit, UserContext
from copra.kernel.svsm_vm import SvsmVm, xsave_cpuid

STACK_TOP = USER_START + 0x10000

# mov dword [rsp-8], 0x7f80; ldmxcsr [rsp-8]; mov word [rsp-16], 0x0f7f; fldcw [rsp-16]
# mov rax, 0x1122334455667788; movq xmm1, rax; vinsertf128 ymm0, ymm0, xmm1, 1; out 0xe0, al
WRITE = bytes.fromhex("c74424f8807f00000fae5424f866c74424f07f0fd96c24f048b888776655443322"
                      "1166480f6ec8c4e37d18c101e6e0")
YMM0_HI = 0x1122_3344_5566_7788
MXCSR_ROUND_TO_ZERO = 0x7F80
FCW_ROUND_TO_ZERO = 0x0F7F
# vextractf128 xmm1, ymm0, 1; movq rax, xmm1; stmxcsr [rsp-8]; mov ebx, [rsp-8]
# fnstcw [rsp-16]; movzx ecx, word [rsp-16]; out 0xe0, al; jmp $
READ = bytes.fromhex("c4e37d19c10166480f7ec80fae5c24f88b5c24f8d97c24f00fb74c24f0e6e0ebfe")
# mov eax, 1; cpuid; mov esi, ecx; mov eax, 7; xor ecx, ecx; cpuid; mov edi, ebx
# xor eax, eax; xor edx, edx; test esi, 1 << 27 (OSXSAVE); jz 1f; xor ecx, ecx; xgetbv
# 1: out 0xe0, al; jmp $
CPUID = bytes.fromhex("b8010000000fa289ceb80700000031c90fa289df31c031d2f7c60000000874053"
                      "1c90f01d0e6e0ebfe")
# sub rsp, 128; and rsp, -64; mov rdi, rsp; mov ecx, 64; xor eax, eax; rep stosb
# mov byte [rsp], 1; mov word [rsp+16], 64; mov byte [rsp+48], 16 (palette 1, tmm0 16x64)
# ldtilecfg [rsp]; out 0xe0, al; jmp $
LDTILECFG = bytes.fromhex("4881ec800000004883e4c04889e7b94000000031c0f3aac604240166c744241040"
                          "00c644243010c4e278490424e6e0ebfe")
# sub rsp, 128; and rsp, -64; mov qword [rsp], -1; mov qword [rsp+16], -1; sttilecfg [rsp]
# mov rax, [rsp]; mov rbx, [rsp+16]; out 0xe0, al; jmp $
STTILECFG = bytes.fromhex("4881ec800000004883e4c048c70424ffffffff48c7442410ffffffffc4e2794904"
                          "24488b0424488b5c2410e6e0ebfe")


@pytest.fixture(scope="module")
def vm() -> Iterator[SvsmVm]:
    m = SvsmVm(32 << 20)
    yield m
    m.close()


def user_program(vm: SvsmVm, code: bytes) -> UserContext:
    return vm.bare_program(code, stack_top=STACK_TOP).context


def run_to_doorbell(vm: SvsmVm, ctx: UserContext) -> None:
    assert vm.cpus[0].enter(ctx) == SyscallExit(Entry.DOORBELL)


def avx_offset(vm: SvsmVm) -> int:
    """Where ymm0-15's upper halves sit in KVM's XSAVE buffer: CPUID 0xD.2 EBX (host)."""
    leaf = vm.kvm.supported_cpuid().find(0xD, x86.XFeature.AVX)
    assert leaf is not None and leaf.eax == 256
    return int(leaf.ebx)


def cpl3_cpuid(vm: SvsmVm) -> tuple[int, int, int]:
    """CPUID.1:ECX, CPUID.7.0:EBX and XCR0 (0 unless OSXSAVE) as a process sees them."""
    run_to_doorbell(vm, user_program(vm, CPUID))
    r = vm.cpus[0].regs
    return r.rsi & 0xFFFF_FFFF, r.rdi & 0xFFFF_FFFF, (r.rdx << 32) | (r.rax & 0xFFFF_FFFF)


def test_xsave_buffer_is_as_large_as_kvm_says(vm: SvsmVm) -> None:
    vcpu = vm.cpus[0].vcpu
    assert vcpu.xsave_size == max(kvm.KVM_XSAVE_SIZE, vcpu.vm.check_extension(kvm.KVM_CAP_XSAVE2))
    assert ctypes.sizeof(vcpu.new_xsave()) == vcpu.xsave_size


def test_xsave_buffer_of_wrong_size_is_refused(vm: SvsmVm) -> None:
    short = (ctypes.c_uint8 * (vm.cpus[0].vcpu.xsave_size - 1))()
    with pytest.raises(ValueError, match="XSAVE buffer"):
        vm.cpus[0].vcpu.set_xsave(short)
    with pytest.raises(ValueError, match="XSAVE buffer"):
        vm.cpus[0].vcpu.get_xsave(short)


def test_get_xsave_shows_ymm_upper_half_written_at_cpl3(vm: SvsmVm) -> None:
    ctx = user_program(vm, WRITE + READ)
    run_to_doorbell(vm, ctx)
    area = vm.cpus[0].vcpu.new_xsave()
    vm.cpus[0].vcpu.get_xsave(area)
    xstate_bv = struct.unpack_from("<Q", area, x86.XSAVE_XSTATE_BV_OFFSET)[0]
    assert xstate_bv & (1 << x86.XFeature.AVX)
    assert struct.unpack_from("<Q", area, avx_offset(vm))[0] == YMM0_HI
    assert struct.unpack_from("<I", area, x86.XSAVE_MXCSR_OFFSET)[0] == MXCSR_ROUND_TO_ZERO


def test_set_xsave_round_trip_reaches_cpl3(vm: SvsmVm) -> None:
    ctx = user_program(vm, WRITE + READ)
    run_to_doorbell(vm, ctx)
    area = vm.cpus[0].vcpu.new_xsave()
    vm.cpus[0].vcpu.get_xsave(area)
    struct.pack_into("<Q", area, avx_offset(vm), 0xCAFE_F00D_0BAD_BEEF)
    vm.cpus[0].vcpu.set_xsave(area)
    again = vm.cpus[0].vcpu.new_xsave()
    vm.cpus[0].vcpu.get_xsave(again)
    assert bytes(again[:x86.XSAVE_LEGACY_AND_HEADER]) == bytes(area[:x86.XSAVE_LEGACY_AND_HEADER])
    assert struct.unpack_from("<Q", again, avx_offset(vm))[0] == 0xCAFE_F00D_0BAD_BEEF
    run_to_doorbell(vm, ctx)  # READ: the process sees what KVM_SET_XSAVE loaded
    assert vm.cpus[0].regs.rax == 0xCAFE_F00D_0BAD_BEEF
    assert vm.cpus[0].regs.rbx == MXCSR_ROUND_TO_ZERO


def test_guest_xcr0_is_every_component_kvm_supports(vm: SvsmVm) -> None:
    leaf = vm.kvm.supported_cpuid().find(0xD, 0)
    assert leaf is not None
    assert vm.cpus[0].vcpu.get_xcr0() == vm.xcr0 == leaf.eax | (leaf.edx << 32)


def test_new_context_starts_with_initial_vector_state(vm: SvsmVm) -> None:
    writer = user_program(vm, WRITE + READ)
    run_to_doorbell(vm, writer)
    fresh = user_program(vm, READ)
    run_to_doorbell(vm, fresh)
    r = vm.cpus[0].regs
    assert (r.rax, r.rbx, r.rcx) == (0, x86.MXCSR_INITIAL, x86.FCW_INITIAL)


def test_vector_state_survives_a_switch_to_another_context(vm: SvsmVm) -> None:
    writer = user_program(vm, WRITE + READ)
    run_to_doorbell(vm, writer)
    other = user_program(vm, WRITE)  # writes the same registers, then stops
    run_to_doorbell(vm, other)
    area = vm.cpus[0].vcpu.new_xsave()
    vm.cpus[0].vcpu.get_xsave(area)
    struct.pack_into("<Q", area, avx_offset(vm), 0x5A5A)
    vm.cpus[0].vcpu.set_xsave(area)  # scribble on `other`'s ymm0 while it is loaded
    run_to_doorbell(vm, writer)
    r = vm.cpus[0].regs
    assert (r.rax, r.rbx, r.rcx) == (YMM0_HI, MXCSR_ROUND_TO_ZERO, FCW_ROUND_TO_ZERO)


def test_cpl3_cpuid_says_what_the_xsave_state_allows(vm: SvsmVm) -> None:
    ecx1, ebx7, xcr0 = cpl3_cpuid(vm)
    assert ecx1 & x86.CPUID1_ECX_OSXSAVE, "CR4.OSXSAVE is on: CPUID must say so"
    # Whatever XCR0 the process sees (the host's, on PVM), every component copra
    # keeps per context is in it, and CPUID's AVX and AVX-512F follow those components.
    assert xcr0 & vm.xcr0 == vm.xcr0
    if vm.xcr0 & (1 << x86.XFeature.AVX):
        assert ecx1 & x86.CPUID1_ECX_AVX
    if vm.xcr0 & x86.XCR0_AVX512 == x86.XCR0_AVX512:
        assert ebx7 & x86.CPUID7_EBX_AVX512F


def test_vcpu_cpuid_table_agrees_with_xcr0(vm: SvsmVm) -> None:
    cpuid = vm.kvm.supported_cpuid()
    xcr0 = xsave_cpuid(cpuid)
    leaf1, leaf7 = cpuid.find(1), cpuid.find(7, 0)
    assert leaf1 is not None and leaf7 is not None
    assert leaf1.ecx & x86.CPUID1_ECX_XSAVE
    assert bool(leaf1.ecx & x86.CPUID1_ECX_AVX) == bool(xcr0 & (1 << x86.XFeature.AVX))
    assert bool(leaf7.ebx & x86.CPUID7_EBX_AVX512F) == (xcr0 & x86.XCR0_AVX512 == x86.XCR0_AVX512)


def test_amx_tile_configuration_does_not_cross_contexts(vm: SvsmVm) -> None:
    _, _, xcr0 = cpl3_cpuid(vm)
    if not xcr0 & (1 << x86.XFeature.XTILECFG):
        pytest.skip("AMX tile state is not enabled for CPL3 on this host")
    # On PVM hosts a process can configure AMX tiles although CPUID does not offer
    # AMX and KVM's XSAVE buffer cannot hold the state; KVM_SET_XSAVE resets it.
    run_to_doorbell(vm, user_program(vm, LDTILECFG))
    run_to_doorbell(vm, user_program(vm, STTILECFG))
    assert (vm.cpus[0].regs.rax, vm.cpus[0].regs.rbx) == (0, 0)


def test_parked_context_loaded_on_another_cpu_brings_its_vector_state() -> None:
    # A thread leaves CPU 0 parked (its XSAVE state still in CPU 0's vCPU); CPU 1 loads
    # it and must read what it wrote, after CPU 0 has moved on to another context.
    m = SvsmVm(32 << 20, cpus=2)
    try:
        writer = user_program(m, WRITE + READ)
        first, second = m.cpus
        assert first.enter(writer) == SyscallExit(Entry.DOORBELL)
        first.park()
        assert second.enter(writer) == SyscallExit(Entry.DOORBELL)  # runs READ
        assert second.regs.rax == YMM0_HI and second.regs.rbx & 0xFFFF == MXCSR_ROUND_TO_ZERO
        first.load(user_program(m, b"\xeb\xfe"))  # nothing of the writer's may be saved now
        second.park()
        first.load(writer)
        assert writer.xsave is not None
    finally:
        m.close()


# start: movq rax, xmm0; out 0xe0, al; inc rdi; movq xmm0, rdi; out 0xe0, al; jmp start
REPORT_THEN_BUMP = bytes.fromhex("66480f7ec0e6e048ffc766480f6ec7e6e0ebed")


class _CountingVcpu:
    """The real vCPU, with its XSAVE ioctls counted."""

    def __init__(self, real: kvm.Vcpu) -> None:
        self.real, self.gets, self.sets = real, 0, 0

    def get_xsave(self, area: ctypes.Array[ctypes.c_uint8]) -> None:
        self.gets += 1
        self.real.get_xsave(area)

    def set_xsave(self, area: ctypes.Array[ctypes.c_uint8]) -> None:
        self.sets += 1
        self.real.set_xsave(area)

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def test_xmm_stays_private_when_contexts_switch_load_without_running_and_migrate() -> None:
    # Three contexts with different xmm0 contents on two CPUs, in a fixed pseudo-random
    # order: some steps run a context (it reports xmm0, then writes a new value), some
    # only load it and park it again, as a thread that is woken only to finish a
    # syscall and block again (its XSAVE state then never goes on the vCPU). Every
    # report must be the context's own last value, 0 before its first write.
    m = SvsmVm(32 << 20, cpus=2)
    try:
        contexts = [user_program(m, REPORT_THEN_BUMP) for _ in range(3)]
        expected = [0, 0, 0]
        for i, ctx in enumerate(contexts):
            ctx.regs.rdi = (i + 1) << 40
        where: list[int | None] = [None, None, None]
        rng = random.Random(20261130)
        for _ in range(150):
            i, c = rng.randrange(3), rng.randrange(2)
            ctx, cpu = contexts[i], m.cpus[c]
            if rng.random() < 0.4:
                cpu.load(ctx)  # loaded to finish a syscall: no CPL3 code runs
            else:
                assert cpu.enter(ctx) == SyscallExit(Entry.DOORBELL)
                assert cpu.regs.rax == expected[i], f"context {i} on CPU {c}"
                assert cpu.enter(ctx) == SyscallExit(Entry.DOORBELL)
                expected[i] = cpu.regs.rdi
            cpu.park()
            where[i] = c
        assert len(set(where)) == 2, "the schedule moved contexts between the CPUs"
    finally:
        m.close()


def test_context_loaded_only_to_block_again_costs_no_xsave_ioctl(vm: SvsmVm) -> None:
    # A device model and a VMM thread on one CPU: the model runs CPL3 code, the VMM
    # thread is loaded only to finish VCPU_RUN's wait and block again.
    cpu = vm.cpus[0]
    model, vmm = user_program(vm, REPORT_THEN_BUMP), user_program(vm, REPORT_THEN_BUMP)
    assert cpu.enter(vmm) == SyscallExit(Entry.DOORBELL)  # it ran once: its state is dirty
    cpu.park()
    counting = _CountingVcpu(cpu.vcpu)
    cpu.vcpu = counting  # type: ignore[assignment]
    try:
        assert cpu.enter(model) == SyscallExit(Entry.DOORBELL)
        cpu.park()
        assert (counting.gets, counting.sets) == (1, 1)  # the VMM's state out, the model's in
        for _ in range(3):
            cpu.load(vmm)
            cpu.park()
            assert cpu.enter(model) == SyscallExit(Entry.DOORBELL)
            cpu.park()
        assert (counting.gets, counting.sets) == (1, 1)
        assert cpu.enter(vmm) == SyscallExit(Entry.DOORBELL)  # its own state again
        assert (counting.gets, counting.sets) == (2, 2)
    finally:
        cpu.vcpu = counting.real
