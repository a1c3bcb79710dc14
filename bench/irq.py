"""Benchmark: interrupts from IRQ objects and the x2APIC timer into a guest, as ratios to
the CPL3 floor of the same run.

Rows (the guest is user/guests/irqtest.S, its handler's first instruction an
``out %al, $0x80``; the VMM and device model is the shipped ``irq-test`` program in its
``bench`` mode, on two SVSM CPUs):

- CPL3 floor: bare ``KVM_RUN`` round trips of a CPL3 ``out`` to the doorbell in the
  SVSM's VM (bench/syscall_roundtrip.py's floor): the cheapest way user code leaves;
- signal -> handler, guest halted: from the kernel's dispatch of the model's IRQ_SIGNAL
  to the exit of the handler's first instruction, the guest sleeping in HLT (its vCPU
  thread blocked in VCPU_RUN: woken, scheduled, the vector injected) (target <= 2x);
- signal -> handler, guest running at CPL3: the same with the guest spinning in its
  own user mode (run natively on PVM hosts) inside KVM_RUN on the other SVSM CPU
  (kicked out, the vector injected at once, the handler entered through the TSS);
- signal -> handler, guest running at CPL0: spinning in kernel mode, which PVM runs in
  KVM's instruction emulator;
- timer interrupts per second: the guest's periodic APIC timer programmed for the
  given period, 1000 interrupts taken by a handler that only counts, EOIs and returns
  (IRET), timed at their injections (the host timer wakes at most every 50 µs:
  docs/apic.md).

Wall time (``time.perf_counter_ns``): the latency crosses host threads. Each latency row
is the median of its signals; the floor and the rows are interleaved over three rounds.
Timings are never tests.

Usage: python bench/irq.py [N]   (default 300 signals per round)
"""

from __future__ import annotations

import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import syscall_roundtrip
from copra.abi.spec import Sys
from copra.hw.kvm import ExitReason, KvmRun
from copra.kernel import packit
from copra.kernel.cpu import Cpu
from copra.kernel.image import packaged_program
from copra.kernel.kernel import Kernel
from copra.kernel.thread import Thread
from copra.vmm.service import Vmm
from copra.vmm.vcpu import GuestCpu, Pending
from copra.vmm.vm import GuestSpec
from guest_exits import kernels
from harness import serve_observed
from syscall_roundtrip import floor as cpl3_floor

clock = time.perf_counter_ns
ROUNDS = 3
HANDLER_PORT = 0x80


def stamps(guest: bytes, conf: str) -> tuple[list[int], list[int], list[int]]:
    """(IRQ_SIGNAL dispatch times, handler first-instruction exit times, injection
    times) of one run."""
    signals: list[int] = []
    handlers: list[int] = []
    injections: list[int] = []
    archive = packit.encode([
        packit.PackItEntry("/init", packaged_program("irq-test")),
        packit.PackItEntry("/etc/irq-test.conf", conf.encode()),
    ])

    def observe(cpu: Cpu, thread: Thread) -> None:
        if cpu.regs.rax == Sys.IRQ_SIGNAL:
            signals.append(clock())

    def hook(gcpu: GuestCpu) -> None:
        exit_of = gcpu._exit

        def timed(reason: int) -> Pending | None:
            if reason == ExitReason.IO and gcpu.run_page.exit.io.port == HANDLER_PORT:
                handlers.append(clock())
            return exit_of(reason)

        gcpu._exit = timed  # type: ignore[method-assign]
        deliver = gcpu.irq._deliver

        def injected(run: KvmRun, vector: int) -> None:
            injections.append(clock())
            deliver(run, vector)

        gcpu.irq._deliver = injected  # type: ignore[method-assign]

    def prepare(kernel: Kernel) -> Callable[[], None]:
        vmm = Vmm(kernel, [GuestSpec("irqtest", guest, 4 << 20)])
        hook(vmm.guests[0].cpus[0])
        return vmm.close

    serve_observed(archive, observe, f"irq-test {conf}", cpus=2, prepare=prepare)
    return signals, handlers, injections


def latencies(signals: list[int], handlers: list[int]) -> list[float]:
    """ns from each signal to the first handler exit after it."""
    out, h = [], 0
    for s in signals:
        while h < len(handlers) and handlers[h] < s:
            h += 1
        if h == len(handlers):
            break
        out.append(float(handlers[h] - s))
    return out


def main() -> None:
    syscall_roundtrip.clock = time.perf_counter
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    periods = (100_000, 50_000, 20_000)
    with tempfile.TemporaryDirectory() as tmp:
        guest = kernels(Path(tmp))["irqtest"]
        samples: dict[str, list[float]] = {}
        for _ in range(ROUNDS):
            samples.setdefault("cpl3", []).append(cpl3_floor(10000) * 1e9)
            for mode in ("halt", "user", "spin"):
                signals, handlers, _ = stamps(guest, f"bench {mode} {n}")
                lat = latencies(signals, handlers)
                samples.setdefault(mode, []).append(statistics.median(lat))
            for period in periods:
                _, _, ticks = stamps(guest, f"bench timer 0 {period}")
                rate = (len(ticks) - 1) / ((ticks[-1] - ticks[0]) / 1e9)
                samples.setdefault(f"timer {period}", []).append(rate)
        rows = {key: statistics.median(values) for key, values in samples.items()}
    cpl3 = rows["cpl3"]
    print(f"# irq, {platform.node()}, Python {platform.python_version()}, N={n}, wall time")
    print(f"{'row':<34} {'value':>10} {'ratio':>7}  to")
    print(f"{'CPL3 floor (ns)':<34} {cpl3:>10.0f} {1:>7.2f}  CPL3 floor")
    for mode, what in (("halt", "halted"), ("user", "running CPL3"), ("spin", "running CPL0")):
        print(f"{'signal -> handler, ' + what + ' (ns)':<34} {rows[mode]:>10.0f} "
              f"{rows[mode] / cpl3:>7.2f}  CPL3 floor (target <= 2)")
    for period in periods:
        asked = 1e9 / period
        print(f"{f'timer every {period // 1000} us (irq/s)':<34} {rows[f'timer {period}']:>10.0f} "
              f"{rows[f'timer {period}'] / asked:>7.2f}  of {asked:.0f}/s asked")


if __name__ == "__main__":
    main()
