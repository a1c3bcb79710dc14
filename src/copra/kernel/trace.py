"""A run's trace in the Chrome / Perfetto trace-event JSON format (``copra run --trace``).

The file is one JSON object whose ``traceEvents`` array ui.perfetto.dev and
chrome://tracing open (the "JSON Object Format" of Google's Trace Event Format
document): every event has ``ph`` (phase), ``name``, ``cat``, ``pid``, ``tid`` and
``ts`` in microseconds; complete events (``ph`` "X") add ``dur``, instant events
(``ph`` "i") add ``s`` (scope, "t": the thread). Metadata events (``ph`` "M") name the
processes and threads. What is recorded (docs/statistics.md):

- per copra thread (``pid`` = task id, ``tid`` = thread id): each syscall as an "X"
  slice named after it, with the number and the result (or "blocked") in ``args``;
  each CPU exception as an "i" event;
- per vCPU, as the threads of a pseudo-process ``VCPU_PID`` ("copra vCPUs", ``tid``
  = ``VCPU_TID_BASE`` + index): the threads it ran ("X" slices named after the
  thread), and within them every KVM_RUN as an "X" slice named after the exit reason
  it returned with ("guest, exit IO");
- the stop-the-world invalidations as "X" slices on that pseudo-process's own track.

Bounded: at most ``limit`` events are kept (``DEFAULT_TRACE_EVENTS`` unless told),
the first ones of the run; later events are counted in ``dropped`` and the file says
how many in ``otherData`` (``copra run`` also prints it). About 150 bytes of host
memory per kept event.

Invariants: ``ts`` counts from the trace's creation (``origin``); events are kept in
the order they were recorded per host thread (the JSON format needs no global order).

Locking: recording happens on the CPU threads; each event claims a sequence number
from an ``itertools.count`` (atomic under the interpreter lock) and only the first
``limit`` numbers append, so the bound holds exactly with several CPUs. Past the
limit, each host thread counts what it dropped under its own key of ``_drops`` (no
key has two writers). Names are dict stores, atomic. ``write`` runs after the run.
"""

from __future__ import annotations

import itertools
import json
import threading
from time import perf_counter
from typing import IO, Any, Final

from copra.kernel.stats import KVM_EXIT_NAMES, syscall_name, vector_name

#: Events a trace keeps unless told otherwise (~30 MB of host memory).
DEFAULT_TRACE_EVENTS: Final = 200_000
#: The pseudo-process whose threads are the vCPUs: pid 1, which copra reserves for the
#: kernel (upstream's initial kernel task); no user task has it. Not 0: Perfetto
#: treats pid 0 as Linux's idle task.
VCPU_PID: Final = 1
#: vCPU i is thread VCPU_TID_BASE + i of VCPU_PID (apart from every copra thread id).
VCPU_TID_BASE: Final = 1_000_000
#: The track of the stop-the-world invalidations, in VCPU_PID.
INVALIDATION_TID: Final = VCPU_TID_BASE - 1

# An event as kept: phase, name, category, pid, tid, ts (s), dur (s), args.
_Event = tuple[str, str, str, int, int, float, float, dict[str, Any] | None]


class Trace:
    """A bounded buffer of trace events and the JSON writer."""

    def __init__(self, limit: int = DEFAULT_TRACE_EVENTS) -> None:
        if limit < 0:
            raise ValueError(f"trace limit {limit} is negative")
        self.limit = limit
        self.origin = perf_counter()
        self.events: list[_Event] = []
        self._seq = itertools.count()
        self._drops: dict[int, int] = {}  # host thread -> events it dropped
        self._processes: dict[int, str] = {VCPU_PID: "copra vCPUs"}
        self._threads: dict[tuple[int, int], str] = {
            (VCPU_PID, INVALIDATION_TID): "invalidations (stop-the-world)"}

    @property
    def dropped(self) -> int:
        """Events not kept because the limit was reached."""
        return sum(self._drops.values())

    def record(self, event: _Event) -> None:
        if next(self._seq) < self.limit:
            self.events.append(event)
        else:
            me = threading.get_ident()
            self._drops[me] = self._drops.get(me, 0) + 1

    # --- what the hooks record (kernel/stats.py's CpuProbe calls these) -------------------

    def name_thread(self, pid: int, process: str, tid: int) -> str:
        """Remember the names of a copra thread's track; the name of its vCPU slices."""
        name = f"{process} ({pid}) thread {tid}"
        self._processes[pid] = f"{process} ({pid})"
        self._threads[(pid, tid)] = f"thread {tid}"
        return name

    def on_vcpu(self, cpu: int, name: str, start: float, end: float, pid: int,
                tid: int) -> None:
        tid_v = VCPU_TID_BASE + cpu
        self._threads.setdefault((VCPU_PID, tid_v), f"vCPU {cpu}")
        self.record(("X", name, "sched", VCPU_PID, tid_v, start, end - start,
                     {"pid": pid, "tid": tid}))

    def guest_run(self, cpu: int, reason: int, start: float, end: float) -> None:
        self.record(("X", f"guest, exit {KVM_EXIT_NAMES.get(reason, reason)}", "exit", VCPU_PID,
                     VCPU_TID_BASE + cpu, start, end - start, None))

    def syscall(self, pid: int, tid: int, number: int, start: float, end: float,
                result: int | None, blocked: bool) -> None:
        args: dict[str, Any] = {"nr": f"{number:#x}"}
        if blocked:
            args["blocked"] = True
        elif result is not None:
            args["result"] = result - (1 << 64) if result >= 1 << 63 else result
        self.record(("X", syscall_name(number), "syscall", pid, tid, start, end - start,
                     args))

    def fault(self, pid: int, tid: int, vector: int, rip: int, at: float) -> None:
        self.record(("i", vector_name(vector), "fault", pid, tid, at, 0.0,
                     {"rip": f"{rip:#x}"}))

    def invalidation(self, start: float, end: float) -> None:
        self.record(("X", "invalidate", "vm", VCPU_PID, INVALIDATION_TID, start,
                     end - start, None))

    # --- the file -------------------------------------------------------------------------

    def to_json_events(self) -> list[dict[str, Any]]:
        """Every event as the format's JSON objects, metadata (names) first."""
        out: list[dict[str, Any]] = []
        for pid, name in sorted(self._processes.items()):
            out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                        "args": {"name": name}})
        for (pid, tid), name in sorted(self._threads.items()):
            out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                        "args": {"name": name}})
        origin = self.origin
        for ph, name, cat, pid, tid, ts, dur, args in self.events:
            event: dict[str, Any] = {"ph": ph, "name": name, "cat": cat, "pid": pid,
                                     "tid": tid, "ts": round((ts - origin) * 1e6, 3)}
            if ph == "X":
                event["dur"] = round(dur * 1e6, 3)
            elif ph == "i":
                event["s"] = "t"
            if args is not None:
                event["args"] = args
            out.append(event)
        return out

    def write(self, file: IO[str]) -> None:
        """The trace as one JSON object (``traceEvents`` and ``otherData``)."""
        file.write('{"traceEvents":[\n')
        for i, event in enumerate(self.to_json_events()):
            file.write(("," if i else "") + json.dumps(event, separators=(",", ":")) + "\n")
        other = {"producer": "copra", "kept_events": len(self.events),
                 "dropped_events": self.dropped, "event_limit": self.limit}
        file.write('],\n"displayTimeUnit":"ms",\n"otherData":' + json.dumps(other) + "}\n")
