"""Booting copra: the SVSM VM, RAM fs from a PackIt archive, init, the exit loop.

The RAM fs keeps its files in the VM's guest frames (``FramePageStore``), so a
read-only file mapping can share them; the VM is therefore created first.

The boot log is printed through the console callable with the ``[kernel]`` prefix;
user lines come through each task's log with ``[taskname]``. Boot fails with
``BootError`` (one clear line) when KVM is unusable or /init cannot be started.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from copra import __version__
from copra.hw.kvm import KvmError
from copra.kernel.budget import default_metadata_limit
from copra.kernel.errors import SyscallError
from copra.kernel.handles import Rights
from copra.kernel.kernel import Kernel, LogLevel, RunResult, describe_status
from copra.kernel.layout import MAX_CPUS
from copra.kernel.limits import DEFAULT_LIMITS, Limits
from copra.kernel.logfile import LogFile
from copra.kernel.objects.console import ConsoleInput
from copra.kernel.packit import PackItError
from copra.kernel.process import Process
from copra.kernel.ramfs import FramePageStore, RamFs
from copra.kernel.stats import RunStats
from copra.kernel.svsm_vm import DEFAULT_MEMORY, SvsmVm

INIT_PATH = "/init"


class BootError(Exception):
    """The system could not start: the message says why, in one line."""


class MachineUnavailable(BootError):
    """KVM is unusable or refused to create the SVSM VM."""


class InitFailed(BootError):
    """/init could not be started (missing, not a loadable program, no memory)."""


class AttestationRefused(BootError):
    """Attestation or persistent state failed and the boot was told to require it."""


#: A boot stage run by the kernel's boot sequence; it may log through
#: ``kernel.log``, change the RAM fs, and raise BootError to stop the boot.
BootHook = Callable[[Kernel], None]


@dataclass(frozen=True)
class BootConfig:
    archive: bytes  #: the PackIt archive the RAM fs is populated from
    memory: int = DEFAULT_MEMORY
    timeout: float | None = None
    kvm_device: str = "/dev/kvm"
    #: resource limits (the image configuration's ``limits``; kernel/limits.py)
    limits: Limits = DEFAULT_LIMITS
    #: Stages run after the RAM fs is populated and before /init starts, in order
    #: (the attestation driver mounting persistent state is one).
    before_init: tuple[BootHook, ...] = ()
    #: Stages run after every process has ended (or the timeout), in order, even
    #: when init failed (sealing persistent state is one).
    after_run: tuple[BootHook, ...] = ()
    #: Host bytes the RAM fs's names, nodes and OPENDIR snapshots may take (ENOMEM
    #: beyond); None: ``limits.metadata``, and if that is None too, one eighth of
    #: ``memory`` (``budget.default_metadata_limit``).
    metadata_limit: int | None = None
    #: vCPUs of the SVSM, each run by a host thread; None: ``default_cpus()``.
    cpus: int | None = None
    #: The kernel's log level (``copra run -q``/``-v``).
    log_level: LogLevel = LogLevel.INFO
    #: Statistics (and, with its Trace, a trace) of the run of init, or None: the
    #: result's ``stats`` then holds the report (kernel/stats.py).
    stats: RunStats | None = None
    #: The host's standard input (``copra run`` with guests, docs/vmm.md), or None: its
    #: only handle goes to /init at id 1 (rights READ, WAIT, TRANSFER) and /init starts
    #: with rdi = 1, as a child of EXEC_HANDLES does; without it /init starts as always.
    console_input: ConsoleInput | None = None


def default_cpus() -> int:
    """The host's online cores, at most ``layout.MAX_CPUS``."""
    return max(1, min(os.cpu_count() or 1, MAX_CPUS))


#: How many task names the timeout line lists before it only counts the rest.
SHOWN_TASKS = 8


def summarize_tasks(tasks: tuple[str, ...]) -> str:
    """The first SHOWN_TASKS of ``tasks`` and a count of the rest: a line of bounded
    length however many processes a run leaves behind."""
    shown = ", ".join(tasks[:SHOWN_TASKS])
    rest = len(tasks) - SHOWN_TASKS
    return f"{shown} and {rest} more" if rest > 0 else shown


def make_kernel(vm: SvsmVm, archive: bytes, console: Callable[[str], None],
                limits: Limits = DEFAULT_LIMITS, *,
                metadata_limit: int | None = None) -> tuple[Kernel, int]:
    """A kernel on ``vm`` whose RAM fs (in the VM's frames) holds ``archive``,
    enforcing ``limits``, and the number of files the archive gave it.

    ``metadata_limit`` bounds the host bytes of the RAM fs's names, nodes and OPENDIR
    snapshots (``RamFs.metadata``); None takes the default, one eighth of the VM's
    memory (``budget.default_metadata_limit``).

    Every console line also goes to the RAM fs's log file (kernel/logfile.py), which
    is created first, as upstream creates it before unpacking the archive: ``/`` lists
    ``Log`` first, and an archive that holds the log file itself is refused (EEXIST).

    Raises PackItError or SyscallError when the archive is unusable. Everything that
    boots copra — ``boot``, the end-to-end tests, the benchmarks — starts here.
    """
    if metadata_limit is None:
        metadata_limit = default_metadata_limit(vm.memory.size)
    fs = RamFs(store=FramePageStore(vm.frames), metadata_limit=metadata_limit)
    log = LogFile(fs, console)
    files = fs.populate(archive)
    return Kernel(vm, fs, log, limits), files


def boot(config: BootConfig, console: Callable[[str], None]) -> RunResult:
    """Boot, run init and every process until they end (or the timeout); then shut down."""
    try:
        vm = SvsmVm(config.memory, config.kvm_device,
                    cpus=config.cpus if config.cpus is not None else default_cpus())
    except KvmError as e:
        raise MachineUnavailable(str(e)) from e
    except OSError as e:  # the host refused memory or a VM/vCPU ioctl
        raise MachineUnavailable(f"cannot create the SVSM VM: {e.strerror or e}") from e
    try:
        return _boot_on(vm, config, console)
    finally:
        vm.close()


def _boot_on(vm: SvsmVm, config: BootConfig,
             console: Callable[[str], None]) -> RunResult:
    """The boot sequence on a VM; its locals (kernel, RAM fs) die with it, so
    that nothing refers to guest memory any more when the caller closes the VM."""
    try:
        metadata_limit = config.metadata_limit
        if metadata_limit is None:
            metadata_limit = config.limits.metadata
        kernel, files = make_kernel(vm, config.archive, console, config.limits,
                                    metadata_limit=metadata_limit)
    except (PackItError, SyscallError) as e:
        raise BootError(f"the boot archive is unusable: {e}") from e
    except ValueError as e:  # a metadata limit too small for the root directory
        raise BootError(f"cannot make the RAM fs: {e}") from e
    kernel.log_level = config.log_level
    cpus = len(vm.cpus)
    kernel.log(f"copra {__version__}: SVSM kernel in Python on KVM, {cpus} CPU"
               f"{'s' if cpus > 1 else ''}, {config.memory >> 20} MiB, "
               f"{vm.frames.total} free frames")
    metadata = kernel.fs.metadata
    kernel.log(f"RAM fs: {files} files from a {len(config.archive)}-byte PackIt archive; "
               f"metadata {metadata.in_use} of {metadata.limit} host bytes")
    for stage in config.before_init:
        stage(kernel)
    with _ctrl_c_stops(kernel):
        return _run_init(kernel, config)


@contextmanager
def _ctrl_c_stops(kernel: Kernel) -> Iterator[None]:
    """While init runs, Ctrl-C stops the run at the next slice boundary, as a timeout
    does, so that no handler is cut in half and the closing stages still run. Only
    the main thread can take SIGINT; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(_signum: int, _frame: FrameType | None) -> None:
        kernel.request_stop()

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


#: The rights of /init's handle on the console input: one reader, which may move it on.
CONSOLE_INPUT_RIGHTS = Rights.READ | Rights.WAIT | Rights.TRANSFER


def _give_input(console_input: ConsoleInput | None) -> Callable[[Process], int] | None:
    if console_input is None:
        return None

    def give(proc: Process) -> int:
        proc.handles.install(console_input, CONSOLE_INPUT_RIGHTS)
        return 1

    return give


def _run_init(kernel: Kernel, config: BootConfig) -> RunResult:
    vm = kernel.vm
    try:
        init = kernel.spawn(INIT_PATH, parent=0, give=_give_input(config.console_input))
    except SyscallError as e:
        raise InitFailed(f"cannot start {INIT_PATH}: {e.errno.name}: {e.message}") from e
    except Exception as e:
        raise InitFailed(f"cannot start {INIT_PATH}: {e}") from e
    kernel.log(f"started {INIT_PATH} as task {init.pid}")
    if config.stats is not None:
        kernel.attach_stats(config.stats)
    result = kernel.serve(init, config.timeout)
    for stage in config.after_run:
        stage(kernel)
    if result.timed_out:
        kernel.log(f"timed out after {config.timeout:g} s; still running: "
                   + summarize_tasks(result.still_running), LogLevel.WARNING)
    elif result.interrupted:
        kernel.log("interrupted; still running: " + summarize_tasks(result.still_running),
                   LogLevel.WARNING)
    elif result.status is not None:
        kernel.log(f"init {describe_status(result.status)}; "
                   f"{vm.exits} exits to the kernel")
    return result
