"""Benchmark: guest exits through copra's VMM interface, as ratios to floors of the same run.

Rows (ns per exit; the guest is user/guests/vmmtest.S at CPL0, emulated by KVM on PVM
hosts; the VMM is the shipped `vmm-test` program in its `bench N` mode):

- CPL3 floor: bare ``KVM_RUN`` round trips of a CPL3 ``out`` to the doorbell in the
  SVSM's VM (bench/syscall_roundtrip.py's floor): the cheapest way user code leaves;
- syscall: a CLOCK syscall from the VMM process through the whole kernel (its own loop);
- guest MSR floor: bare ``KVM_RUN`` round trips of the guest's RDMSR of an unknown MSR
  answered straight in kvm_run (a Python loop, no decoding): the cheapest guest MSR exit;
- forwarded RDMSR: the guest's RDMSR of an MSR the VMM claimed, reported in the run
  page, answered by the VMM, completed by the next VCPU_RUN (target <= 2x the CPL3 floor);
- kernel-owned RDMSR: the guest's RDMSR of the x2APIC version register, answered by the
  kernel's x2APIC inside one VCPU_RUN (target <= 1.3x the guest MSR floor);
- forwarded OUT: a guest port write reported to the VMM through the run page;
- device OUT: a guest port write served by a device model through an IO event (READ
  takes it, WRITE answers it; the model is a thread of the VMM's process here, on the
  same SVSM CPU: moving the event to a process of its own needs the channels), never
  seen by the VMM (target <= 3x the CPL3 floor);
- device OUT, DEVICE_REPLY: the same model answering each access and taking the next
  in one DEVICE_REPLY call.

Every row is CPU time of the host thread that runs it (``time.thread_time``: the
vCPU's guest time and the VMM's user time included), the copra rows taken at the
kernel's dispatch of the CLOCK calls that bracket each of vmm-test's loops. Every row
is the median of three rounds, the floors and the copra rows interleaved, so that the
load of a shared machine weighs on both alike. Timings are never tests.

Usage: python bench/vmm_exits.py [N]   (default 2000)
"""

from __future__ import annotations

import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import syscall_roundtrip
from copra.abi.spec import Sys
from copra.hw import kvm
from copra.kernel import packit
from copra.kernel.boot import make_kernel
from copra.kernel.cpu import Cpu, Next
from copra.kernel.image import packaged_program
from copra.kernel.svsm_vm import SvsmVm
from copra.kernel.thread import Thread
from copra.vmm.guest import Guest, GuestConfig
from copra.vmm.service import Vmm
from copra.vmm.vm import GuestSpec
from guest_exits import kernels
from syscall_roundtrip import floor as cpl3_floor

#: CPU time of the calling thread (guest time included): steadier than wall time on
#: a shared machine, where a thread also waits for a core. Every row uses it.
clock = time.thread_time

MEMORY = 4 << 20
ROUNDS = 3


def guest_msr_floor(kernel: bytes, n: int) -> float:
    """Seconds per bare KVM_RUN of the vmmtest guest's RDMSR loop (mode 1), each exit
    answered in kvm_run directly."""
    with Guest(GuestConfig("floor", kernel, MEMORY), lambda _line: None) as guest:
        regs = guest.vcpu.get_regs()
        regs.rsi, regs.rdi = 1, n + 100
        guest.vcpu.set_regs(regs)
        run, page = guest.vcpu.run, guest.run_page
        while run() != kvm.ExitReason.X86_RDMSR:  # past the console set-up
            pass
        msr = page.exit.msr
        for _ in range(50):
            msr.error, msr.data = 0, 1
            run()
        start = clock()
        for _ in range(n):
            msr.error, msr.data = 0, 1
            run()
        return (clock() - start) / n


def copra_rows(guest_kernel: bytes, n: int) -> dict[str, float]:
    """ns per iteration of each of the vmm-test bench's loops, in CPU time of the SVSM
    CPU's host thread (guest and user time included), from the kernel's dispatches."""
    archive = packit.encode([
        packit.PackItEntry("/init", packaged_program("vmm-test")),
        packit.PackItEntry("/etc/vmm-test.conf", f"bench {n}".encode()),
    ])
    vm = SvsmVm(64 << 20, cpus=1)
    stamps: list[tuple[int, float]] = []
    try:
        lines: list[str] = []
        kernel, _ = make_kernel(vm, archive, lines.append)
        vmm = Vmm(kernel, [GuestSpec("bench", guest_kernel, MEMORY)])
        dispatch = kernel.dispatch

        def observed(cpu: Cpu, thread: Thread) -> Next:
            stamps.append((cpu.regs.rax, clock()))
            return dispatch(cpu, thread)

        kernel.dispatch = observed  # type: ignore[method-assign]
        result = kernel.serve(kernel.spawn("/init"))
        vmm.close()
        if result.status != 0 or not any("vmm-bench:" in line for line in lines):
            raise SystemExit("vmm-test bench failed:\n" + "\n".join(lines))
    finally:
        vm.close()
    clocks = [t for number, t in stamps if number == Sys.CLOCK]
    floor = (clocks[n + 1] - clocks[0]) / (n + 1)
    phases = [(clocks[i + 1] - clocks[i]) / n for i in (n + 2, n + 4, n + 6, n + 8, n + 10)]
    return {"floor": floor * 1e9, "out": phases[0] * 1e9, "forwarded": phases[1] * 1e9,
            "kernel": phases[2] * 1e9, "device": phases[3] * 1e9, "reply": phases[4] * 1e9}


def main() -> None:
    syscall_roundtrip.clock = clock
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory() as tmp:
        guest = kernels(Path(tmp))["vmmtest"]
        samples: dict[str, list[float]] = {}
        for _ in range(ROUNDS):
            samples.setdefault("cpl3", []).append(cpl3_floor(10000) * 1e9)  # its clock: ours
            samples.setdefault("msr", []).append(guest_msr_floor(guest, n) * 1e9)
            for key, value in copra_rows(guest, n).items():
                samples.setdefault(key, []).append(value)
        cpl3, msr_floor = statistics.median(samples["cpl3"]), statistics.median(samples["msr"])
        rows = {key: statistics.median(values) for key, values in samples.items()}
    print(f"# vmm_exits, {platform.node()}, Python {platform.python_version()}, N={n}, "
          "CPU time")
    print(f"{'row':<24} {'ns/exit':>9} {'ratio':>7}  to")
    print(f"{'CPL3 floor':<24} {cpl3:>9.0f} {1:>7.2f}  CPL3 floor")
    print(f"{'syscall (CLOCK)':<24} {rows['floor']:>9.0f} {rows['floor'] / cpl3:>7.2f}  CPL3 floor")
    print(f"{'guest MSR floor':<24} {msr_floor:>9.0f} {1:>7.2f}  guest MSR floor")
    print(f"{'forwarded RDMSR':<24} {rows['forwarded']:>9.0f} "
          f"{rows['forwarded'] / cpl3:>7.2f}  CPL3 floor (target <= 2)")
    print(f"{'kernel-owned RDMSR':<24} {rows['kernel']:>9.0f} "
          f"{rows['kernel'] / msr_floor:>7.2f}  guest MSR floor (target <= 1.3)")
    print(f"{'forwarded OUT':<24} {rows['out']:>9.0f} {rows['out'] / cpl3:>7.2f}  CPL3 floor")
    print(f"{'device OUT, READ+WRITE':<24} {rows['device']:>9.0f} {rows['device'] / cpl3:>7.2f}  "
          "CPL3 floor (target <= 3)")
    print(f"{'device OUT, DEVICE_REPLY':<24} {rows['reply']:>9.0f} {rows['reply'] / cpl3:>7.2f}  "
          "CPL3 floor (target <= 3)")


if __name__ == "__main__":
    main()
