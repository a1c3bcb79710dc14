"""Run statistics: what ``copra run --stats`` prints, counted per CPU while the run goes.

The table is the kind ``kvm_stat`` and ``perf kvm stat`` give, for copra's kernel:
KVM exits per reason, exits as the kernel decoded them, syscalls per number (count,
errors, blocked dispatches, total and mean time in the kernel), faults per vector,
scheduling (context switches, preemptions, blocks), stop-the-world invalidations
(count and time), time per process and per vCPU, split into guest time (inside
KVM_RUN) and kernel time (Python handling exits while the thread is on the CPU), and
what KVM's own counters of the SVSM's VM and vCPUs moved by during the run (KVM_GET_STATS_FD:
the exits KVM handled itself, such as its shadow MMU's page faults, are only there).
docs/statistics.md explains every line.

Nothing is counted unless a ``RunStats`` is attached (``Kernel.attach_stats``): each
hook site on the exit path reads ``cpu.probe`` and does nothing more when it is None,
so a run without ``--stats`` pays one None check per exit (docs/performance.md has
the measurement). With a ``Trace`` (kernel/trace.py) the same hooks also record trace
events.

Invariants:
- a ``CpuProbe`` is written only by its CPU's host thread (the CPU loop, the exit
  handlers and syscall handlers running there): it needs no lock. ``RunStats.report``
  reads the probes after the run, once ``Kernel.serve`` has joined the CPU threads;
- a syscall is counted once, when it completes; a dispatch that blocks adds its time
  and counts in ``blocked``, and the dispatch that completes it counts the call. BATCH
  counts as one call and each record it runs counts as a call of its own number;
- a thread's time on a CPU (from ``on_cpu`` to ``off_cpu``) is its process's busy
  time; the part of it inside KVM_RUN is guest time, the rest kernel time;
- every time is host seconds of ``time.perf_counter``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Final

from copra.abi.spec import ERROR_THRESHOLD, Sys
from copra.hw.kvm import ExitReason
from copra.hw.x86 import Vector

if TYPE_CHECKING:
    from copra.kernel.thread import Thread
    from copra.kernel.trace import Trace

#: KVM_EXIT_* names by number, for the table and the trace.
KVM_EXIT_NAMES: Final = {value: name for name, value in vars(ExitReason).items()
                         if isinstance(value, int) and name.isupper()}

# Decoded exit kinds (``CpuProbe.exit``).
SYSCALL_DOORBELL: Final = "syscall via doorbell"
SYSCALL_INT80: Final = "syscall via int 0x80"
FAULT: Final = "CPU exception"
PREEMPTION: Final = "preemption (kick at a slice end)"
CPU_ERROR: Final = "CPU error"


def syscall_name(number: int) -> str:
    """``Sys``'s name for a number, or its hex value when the ABI has none."""
    try:
        return Sys(number).name
    except ValueError:
        return f"{number:#x}"


def sysno_text(number: int) -> str:
    """A syscall number as docs/abi.md writes it: class and index."""
    cls, index = number >> 32, number & 0xFFFF_FFFF
    return f"{cls}:{index:#04x}" if cls < 1 << 16 else f"{number:#x}"


def vector_name(vector: int) -> str:
    try:
        return f"#{Vector(vector).name}"
    except ValueError:
        return f"vector {vector}"


class SyscallTally:
    """One syscall number's counts on one CPU."""

    __slots__ = ("blocked", "count", "errors", "seconds")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.blocked = 0
        self.seconds = 0.0


class CpuProbe:
    """What one CPU saw; written only by that CPU's host thread."""

    def __init__(self, index: int, trace: Trace | None) -> None:
        self.index = index
        self.trace = trace
        self.kvm_exits: Counter[int] = Counter()
        self.exits: Counter[str] = Counter()
        self.faults: Counter[int] = Counter()
        self.syscalls: dict[int, SyscallTally] = {}
        self.switches = 0
        self.preemptions = 0
        self.blocks = 0
        self.guest_seconds = 0.0
        self.busy_seconds = 0.0
        self.started = perf_counter()
        self.proc_guest: dict[int, float] = {}
        self.proc_busy: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._pid = 0
        self._tid = 0
        self._thread_name = ""
        self._on_at = 0.0
        self._last_tid: int | None = None
        self._run_at = 0.0
        #: Set by ``blocked`` during a dispatch; the dispatcher clears it before each.
        self.pending_block = False

    # --- scheduling (Kernel.pick, Cpu.serve) ----------------------------------------

    def on_cpu(self, thread: Thread) -> None:
        proc = thread.process
        self._pid, self._tid = proc.pid, thread.tid
        self.names[proc.pid] = proc.name
        self._on_at = perf_counter()
        if self._last_tid != thread.tid:
            self.switches += 1
            self._last_tid = thread.tid
        if self.trace is not None:
            self._thread_name = self.trace.name_thread(proc.pid, proc.name, thread.tid)

    def off_cpu(self) -> None:
        now = perf_counter()
        busy = now - self._on_at
        self.busy_seconds += busy
        self.proc_busy[self._pid] = self.proc_busy.get(self._pid, 0.0) + busy
        if self.trace is not None:
            self.trace.on_vcpu(self.index, self._thread_name, self._on_at, now,
                               self._pid, self._tid)

    # --- KVM_RUN (Cpu.enter) ------------------------------------------------------------

    def run_start(self) -> None:
        self._run_at = perf_counter()

    def run_end(self, reason: int) -> None:
        now = perf_counter()
        guest = now - self._run_at
        self.guest_seconds += guest
        self.proc_guest[self._pid] = self.proc_guest.get(self._pid, 0.0) + guest
        self.kvm_exits[reason] += 1
        if self.trace is not None:
            self.trace.guest_run(self.index, reason, self._run_at, now)

    # --- decoded exits (Kernel.handle, Kernel.dispatch) ----------------------------------

    def exit(self, kind: str) -> None:
        self.exits[kind] += 1

    def fault(self, vector: int, rip: int) -> None:
        self.exits[FAULT] += 1
        self.faults[vector] += 1
        if self.trace is not None:
            self.trace.fault(self._pid, self._tid, vector, rip, perf_counter())

    def preempted(self) -> None:
        self.preemptions += 1

    def blocked(self) -> None:
        """The syscall being dispatched blocks (``pending_block`` tells the dispatcher)."""
        self.blocks += 1
        self.pending_block = True

    def syscall(self, number: int, start: float, end: float, result: int | None,
                blocked: bool) -> None:
        """One dispatch of ``number`` from ``start`` to ``end``: it completed with
        ``result`` (rax; None when the thread ended in it) or ``blocked``."""
        tally = self.syscalls.get(number)
        if tally is None:
            tally = self.syscalls[number] = SyscallTally()
        tally.seconds += end - start
        if blocked:
            tally.blocked += 1
        else:
            tally.count += 1
            if result is not None and result >= ERROR_THRESHOLD:
                tally.errors += 1
        if self.trace is not None:
            self.trace.syscall(self._pid, self._tid, number, start, end, result, blocked)


# --- the report -------------------------------------------------------------------------


@dataclass(frozen=True)
class SyscallRow:
    number: int
    count: int
    errors: int
    blocked: int
    seconds: float

    @property
    def name(self) -> str:
        return syscall_name(self.number)


@dataclass(frozen=True)
class ProcessRow:
    pid: int
    name: str
    guest: float
    kernel: float


@dataclass(frozen=True)
class CpuRow:
    index: int
    guest: float
    kernel: float
    idle: float
    exits: int


@dataclass(frozen=True)
class StatsReport:
    """A run's statistics, merged over its CPUs (``format_report`` prints it)."""

    seconds: float  #: wall time from attaching the probes to the report
    kvm_exits: dict[str, int] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)
    syscalls: tuple[SyscallRow, ...] = ()
    faults: dict[str, int] = field(default_factory=dict)
    switches: int = 0
    preemptions: int = 0
    blocks: int = 0
    invalidations: int = 0
    invalidation_seconds: float = 0.0
    processes: tuple[ProcessRow, ...] = ()
    cpus: tuple[CpuRow, ...] = ()
    #: How much each of KVM's own counters moved (those that did): the SVSM's vCPUs'
    #: summed, the VM's named ``vm.*`` (``SvsmVm.kvm_counters``); None where KVM keeps
    #: no binary statistics.
    kvm_counters: dict[str, int] | None = None

    def syscall_count(self, name: str) -> int:
        return sum(row.count for row in self.syscalls if row.name == name)


class RunStats:
    """The statistics of one run: a probe per CPU, merged into a ``StatsReport``."""

    def __init__(self, trace: Trace | None = None) -> None:
        self.trace = trace
        self.probes: list[CpuProbe] = []
        self._invalidations_at_start = 0
        self._invalidation_seconds_at_start = 0.0
        self._kvm_counters_at_start: dict[str, int] | None = None

    def make_probes(self, cpus: int, invalidations: int, invalidation_seconds: float,
                    kvm_counters: dict[str, int] | None = None) -> list[CpuProbe]:
        """A probe per CPU, counting from now; the VM's invalidation counters and KVM's
        own counters as they stand now (the report shows the run's share)."""
        self.probes = [CpuProbe(i, self.trace) for i in range(cpus)]
        self._invalidations_at_start = invalidations
        self._invalidation_seconds_at_start = invalidation_seconds
        self._kvm_counters_at_start = kvm_counters
        return self.probes

    def report(self, invalidations: int, invalidation_seconds: float,
               kvm_counters: dict[str, int] | None = None) -> StatsReport:
        """The merged counts (after the run: the CPU threads have stopped)."""
        now = perf_counter()
        start = min((p.started for p in self.probes), default=now)
        kvm_exits: Counter[str] = Counter()
        exits: Counter[str] = Counter()
        faults: Counter[str] = Counter()
        syscalls: dict[int, list[float]] = {}
        proc_guest: dict[int, float] = {}
        proc_busy: dict[int, float] = {}
        names: dict[int, str] = {}
        cpus = []
        for p in self.probes:
            for reason, n in p.kvm_exits.items():
                kvm_exits[KVM_EXIT_NAMES.get(reason, str(reason))] += n
            exits.update(p.exits)
            for vector, n in p.faults.items():
                faults[vector_name(vector)] += n
            for number, t in p.syscalls.items():
                row = syscalls.setdefault(number, [0, 0, 0, 0.0])
                row[0] += t.count
                row[1] += t.errors
                row[2] += t.blocked
                row[3] += t.seconds
            for pid, secs in p.proc_guest.items():
                proc_guest[pid] = proc_guest.get(pid, 0.0) + secs
            for pid, secs in p.proc_busy.items():
                proc_busy[pid] = proc_busy.get(pid, 0.0) + secs
            names.update(p.names)
            wall = now - p.started
            cpus.append(CpuRow(p.index, p.guest_seconds, p.busy_seconds - p.guest_seconds,
                               max(0.0, wall - p.busy_seconds), sum(p.kvm_exits.values())))
        return StatsReport(
            seconds=now - start,
            kvm_exits=dict(kvm_exits.most_common()),
            exits=dict(exits.most_common()),
            syscalls=tuple(sorted(
                (SyscallRow(n, int(r[0]), int(r[1]), int(r[2]), r[3])
                 for n, r in syscalls.items()), key=lambda r: (-r.count, r.number))),
            faults=dict(faults.most_common()),
            switches=sum(p.switches for p in self.probes),
            preemptions=sum(p.preemptions for p in self.probes),
            blocks=sum(p.blocks for p in self.probes),
            invalidations=invalidations - self._invalidations_at_start,
            invalidation_seconds=invalidation_seconds - self._invalidation_seconds_at_start,
            processes=tuple(ProcessRow(pid, names.get(pid, "?"), proc_guest.get(pid, 0.0),
                                       proc_busy[pid] - proc_guest.get(pid, 0.0))
                            for pid in sorted(proc_busy)),
            cpus=tuple(cpus),
            kvm_counters=_moved(self._kvm_counters_at_start, kvm_counters),
        )


def _moved(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, int] | None:
    """The counters that moved from ``before`` to ``after``, by name."""
    if before is None or after is None:
        return None
    return {name: value - before.get(name, 0) for name, value in sorted(after.items())
            if value != before.get(name, 0)}


# --- the table --------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def _table(title: str, header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """A left-aligned first column and right-aligned others, as kvm_stat prints."""
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    out = [title]
    for row in cells:
        first = row[0].ljust(widths[0])
        rest = "".join(f"  {cell.rjust(w)}" for cell, w in zip(row[1:], widths[1:], strict=True))
        out.append(f"  {first}{rest}".rstrip())
    return out


def format_report(report: StatsReport) -> str:
    """The table ``copra run --stats`` prints at the end of a run."""
    cpus = len(report.cpus)
    lines = [f"copra run statistics: {report.seconds:.3f} s on {cpus} vCPU"
             f"{'s' if cpus != 1 else ''}", ""]
    total = sum(report.kvm_exits.values())
    lines += _table("KVM exits (KVM_RUN returns)", ("reason", "count", "%"),
                    [(name, str(n), f"{100 * n / total:.1f}")
                     for name, n in report.kvm_exits.items()] + [("total", str(total), "")])
    lines.append("")
    lines += _table("exits the kernel handled", ("kind", "count"),
                    [(kind, str(n)) for kind, n in report.exits.items()])
    lines.append("")
    lines += _table("syscalls", ("name", "number", "count", "errors", "blocked", "total ms",
                                 "mean us"),
                    [(r.name, sysno_text(r.number), str(r.count), str(r.errors), str(r.blocked),
                      _ms(r.seconds), _us(r.seconds / r.count) if r.count else "-")
                     for r in report.syscalls])
    lines.append("")
    lines += _table("faults (CPU exceptions of user code)", ("vector", "count"),
                    [(name, str(n)) for name, n in report.faults.items()] or [("none", "0")])
    lines.append("")
    lines += _table("scheduling", ("event", "count"), [
        ("context switches", str(report.switches)),
        ("preemptions", str(report.preemptions)),
        ("blocks (a syscall waits)", str(report.blocks)),
    ])
    lines.append("")
    mean = report.invalidation_seconds / report.invalidations if report.invalidations else 0.0
    lines += _table("invalidations (stop-the-world)", ("count", "total ms", "mean ms"),
                    [(str(report.invalidations), _ms(report.invalidation_seconds), _ms(mean))])
    lines.append("")
    lines += _table("time per process (on a vCPU)", ("name", "pid", "guest ms", "kernel ms"),
                    [(p.name, str(p.pid), _ms(p.guest), _ms(p.kernel))
                     for p in report.processes])
    lines.append("")
    lines += _table("time per vCPU", ("vCPU", "guest ms", "kernel ms", "idle ms", "exits"),
                    [(str(c.index), _ms(c.guest), _ms(c.kernel), _ms(c.idle), str(c.exits))
                     for c in report.cpus])
    lines.append("")
    title = "KVM's own counters of the SVSM's VM and vCPUs (KVM_GET_STATS_FD), the run's part"
    if report.kvm_counters is None:
        lines += [title, "  not kept by this host's KVM (Linux 5.14 and later keep them)"]
    else:
        lines += _table(title, ("counter", "count"),
                        [(name, str(n)) for name, n in report.kvm_counters.items()]
                        or [("none moved", "0")])
    return "\n".join(lines)
