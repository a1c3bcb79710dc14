"""Benchmark: what this host's KVM and scheduler cost before copra runs a line, and the
lowest ratio each cross-vCPU target of the issues could reach here.

Everything below is measured in one run with no kernel code in it: bare vCPUs of an
``SvsmVm`` driven by this process's threads, the primitive an idle CPU sleeps on
(kernel/wakeq.py's ``IdleWait``), and raw ioctls.

- exit floor: one bare ``KVM_RUN`` round trip of a CPL3 ``out`` (the ratio unit of the
  targets, bench/smp_throughput.py);
- vCPU ioctl: ``KVM_GET_REGS`` on a vCPU this thread runs (every vCPU ioctl loads and
  puts the vCPU; ``KVM_SET_XSAVE``/``KVM_GET_XSAVE2`` cost about as much);
- XSAVE switch: ``KVM_GET_XSAVE2`` + ``KVM_SET_XSAVE``, what putting another context's
  FPU state on a vCPU costs (kernel/cpu.py);
- post and wake: a thread posts an ``IdleWait`` another thread sleeps on after 1 ms of
  idling (as an idle CPU does), then goes on running its own vCPU (as a waking CPU
  does); how long the post call takes the poster, and how long until the sleeper runs;
- hand-off floor: two threads, each driving its own vCPU, pass a token (wait, one exit,
  post the other): one exit plus a wake-up (``smp_throughput.handoff_floor``);
- first entry of a new address space: a fresh set of page tables shaped like a
  ``hello`` process's (a code page at 0x400000, a stack page at the top of the user
  half), entered for the first time: its CPL3 code pushes on the stack and leaves with
  an ``out``. KVM's shadow MMU (PVM hosts have no nested paging) takes a page fault for
  the code and one for the stack; the row is how much longer that first ``KVM_RUN``
  takes than the same context's later ones, i.e. what the platform charges for the
  first exit of every new process (``first_entry_extra``).

From these, lower bounds with no Python of copra's at all:

- an event wake-up on two vCPUs (issue 8, target <= 2x): one hand-off;
- a CHANNEL_CALL round trip (issue 9, target <= 2.5x): on two vCPUs two hand-offs; on
  one vCPU two exits and two XSAVE switches;
- signal -> handler with the guest halted (issue 11, target <= 2x): one hand-off (the
  sleeping VCPU_RUN thread is woken and enters the guest, which exits at the handler's
  first instruction);
- a process's life cycle against its own exits (issue 8, target <= 1.3x): the ``hello``
  child's 11 exits, its first one at the price of a new address space's first entry.

The hand-off holds more than an exit plus the post and the wake measured alone: a
vCPU entered by a thread that has just slept runs its round trip slower than a hot
one, and that is in the hand-off as it is in every cross-vCPU wake-up of the kernel.

Usage: python bench/platform_floors.py [N]   (prints a table; timings are never tests)
"""

from __future__ import annotations

import fcntl
import platform
import statistics
import sys
import threading
import time

from copra.abi.spec import DOORBELL_PORT, PAGE_SIZE, USER_STACK_TOP
from copra.hw import kvm
from copra.kernel.svsm_vm import SvsmVm
from copra.kernel.wakeq import IdleWait
from smp_throughput import _loaded, floors, handoff_floor

ns = time.perf_counter_ns


def ioctl_costs(n: int) -> tuple[float, float]:
    """(seconds per KVM_GET_REGS, seconds per KVM_GET_XSAVE2 + KVM_SET_XSAVE)."""
    vm = SvsmVm(16 << 20, cpus=1)
    try:
        cpu = vm.cpus[0]
        _loaded(vm, cpu)
        vcpu = cpu.vcpu
        fcntl.ioctl(vcpu.fd, kvm.KVM_RUN, 0)
        regs = []
        for _ in range(n):
            start = ns()
            vcpu.get_regs()
            regs.append(ns() - start)
        buffer = vcpu.new_xsave()
        switches = []
        for _ in range(n):
            start = ns()
            vcpu.get_xsave(buffer)
            vcpu.set_xsave(buffer)
            switches.append(ns() - start)
        return statistics.median(regs) / 1e9, statistics.median(switches) / 1e9
    finally:
        vm.close()


def post_and_wake(n: int) -> tuple[float, float]:
    """(seconds a post takes its caller, seconds from the post to the sleeper running),
    medians. The sleeper idles 1 ms before each post, as an idle CPU's thread does;
    the poster goes on running its vCPU after the post, as a waking CPU does (a poster
    that went to sleep instead would let the host run the sleeper on its core)."""
    vm = SvsmVm(16 << 20, cpus=1)
    try:
        cpu = vm.cpus[0]
        _loaded(vm, cpu)
        fd, request = cpu.vcpu.fd, kvm.KVM_RUN
        idle, done = IdleWait(), threading.Event()
        posted_at = [0]
        wakes: list[int] = []

        def sleeper() -> None:
            for _ in range(n):
                idle.wait()
                wakes.append(ns() - posted_at[0])
                done.set()

        thread = threading.Thread(target=sleeper)
        thread.start()
        calls = []
        for _ in range(n):
            done.clear()
            time.sleep(0.001)
            posted_at[0] = start = ns()
            idle.post()
            calls.append(ns() - start)
            while not done.is_set():
                fcntl.ioctl(fd, request, 0)  # busy in the guest, the GIL released
        thread.join()
        return statistics.median(calls) / 1e9, statistics.median(wakes) / 1e9
    finally:
        vm.close()


#: push rax; pop rax; out DOORBELL_PORT, al; jmp back to the push
_TOUCH_STACK = bytes([0x50, 0x58, 0xE6, DOORBELL_PORT, 0xEB, 0xFA])
_CODE_AT = 0x40_0000  # where upstream's link script puts a program's first segment


def first_entry_extra(n: int) -> tuple[float, float]:
    """(seconds the first KVM_RUN of a new address space takes beyond a later one,
    seconds of a later one), medians over ``n`` new address spaces on one vCPU (see
    the module docstring). Only the ``KVM_RUN`` ioctls are timed; every space gets
    frames never used before (nine each: two pages, seven tables), so none of KVM's
    translations can be left over."""
    vm = SvsmVm((16 << 20) + n * 9 * PAGE_SIZE, cpus=1)
    try:
        cpu = vm.cpus[0]
        vcpu = cpu.vcpu
        runs: list[int] = []
        plain = vcpu.run

        def timed() -> int:
            start = ns()
            try:
                return plain()
            finally:
                runs.append(ns() - start)

        vcpu.run = timed  # type: ignore[method-assign]
        firsts: list[int] = []
        laters: list[int] = []
        for _ in range(n):
            ctx = vm.bare_program(_TOUCH_STACK, at=_CODE_AT, stack_top=USER_STACK_TOP).context
            for i in range(3):
                del runs[:]
                cpu.enter(ctx)
                (firsts if i == 0 else laters).append(runs[0])
        later = statistics.median(laters)
        return (statistics.median(firsts) - later) / 1e9, later / 1e9
    finally:
        vm.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = 3
    rows: dict[str, list[float]] = {}
    for _ in range(rounds):
        one, _two = floors(n)
        regs, switch = ioctl_costs(n // 4)
        call, wake = post_and_wake(n // 10)
        first, _later = first_entry_extra(n // 20)
        for key, value in (("exit", 1 / one), ("ioctl", regs), ("xsave", switch),
                           ("post", call), ("wake", wake), ("handoff", handoff_floor(n // 4)),
                           ("first", first)):
            rows.setdefault(key, []).append(value)
    m = {key: statistics.median(values) for key, values in rows.items()}
    exit_s = m["exit"]
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, median of {rounds} rounds, wall time")
    print(f"{'what':<60} {'value':>9} {'ratio':>7}")
    for key, what in (("exit", "exit floor: bare KVM_RUN round trip, CPL3 out"),
                      ("ioctl", "vCPU ioctl: KVM_GET_REGS"),
                      ("xsave", "XSAVE switch: KVM_GET_XSAVE2 + KVM_SET_XSAVE"),
                      ("post", "post: the poster's call (IdleWait, sleeper idle 1 ms)"),
                      ("wake", "wake: from the post to the sleeper running"),
                      ("handoff", "hand-off floor: one exit + a host thread wake-up"),
                      ("first", "first entry of a new address space, beyond a later one")):
        print(f"{what:<60} {m[key] * 1e6:6.1f} us {m[key] / exit_s:7.2f}")
    print("lowest ratio each target could reach here, with no kernel code at all:")
    bounds = (  # (what, least time, in units of how many exits, target)
        ("event wake-up, two vCPUs (target <= 2x): one hand-off", m["handoff"], 1, 2.0),
        ("CHANNEL_CALL round trip, two vCPUs (target <= 2.5x): two hand-offs",
         2 * m["handoff"], 1, 2.5),
        ("CHANNEL_CALL round trip, one vCPU: two exits + two XSAVE switches",
         2 * exit_s + 2 * m["xsave"], 1, 2.5),
        ("signal -> handler, guest halted (target <= 2x): one hand-off", m["handoff"], 1,
         2.0),
        ("hello's life cycle against its 11 exits (target <= 1.3x): the first exit in a "
         "new address space", 11 * exit_s + m["first"], 11, 1.3),
    )
    for what, seconds, exits, target in bounds:
        ratio = seconds / (exits * exit_s)
        room = (target - ratio) * exits * exit_s * 1e6
        verdict = f"{room:5.1f} us left for the kernel" if room > 0 else "above the target"
        print(f"  {what:<72} {ratio:5.2f}x  {verdict}")

if __name__ == "__main__":
    main()
