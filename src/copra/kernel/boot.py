"""Booting copra: the SVSM machine, RAM fs from a PackIt archive, init, the exit loop.

The RAM fs keeps its files in the machine's guest frames (``FramePageStore``), so a
read-only file mapping can share them; the machine is therefore created first.

The boot log is printed through the console callable with the ``[kernel]`` prefix;
user lines come through each task's log with ``[taskname]``. Boot fails with
``BootError`` (one clear line) when KVM is unusable or /init cannot be started.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from copra import __version__
from copra.hw.kvm import KvmError
from copra.kernel.errors import SyscallError
from copra.kernel.kernel import Kernel, RunResult, describe_status
from copra.kernel.limits import DEFAULT_LIMITS, Limits
from copra.kernel.machine import DEFAULT_MEMORY, Machine
from copra.kernel.packit import PackItError
from copra.kernel.ramfs import FramePageStore, RamFs

INIT_PATH = "/init"


class BootError(Exception):
    """The system could not start: the message says why, in one line."""


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


def make_kernel(machine: Machine, archive: bytes, console: Callable[[str], None],
                limits: Limits = DEFAULT_LIMITS) -> tuple[Kernel, int]:
    """A kernel on ``machine`` whose RAM fs (in the machine's frames) holds ``archive``,
    enforcing ``limits``, and the number of files the archive gave it.

    Raises PackItError or SyscallError when the archive is unusable. Everything that
    boots copra — ``boot``, the end-to-end tests, the benchmarks — starts here.
    """
    fs = RamFs(store=FramePageStore(machine.frames))
    files = fs.populate(archive)
    return Kernel(machine, fs, console, limits), files


def boot(config: BootConfig, console: Callable[[str], None]) -> RunResult:
    """Boot, run init and every process until they end (or the timeout); then shut down."""
    try:
        machine = Machine(config.memory, config.kvm_device)
    except KvmError as e:
        raise BootError(str(e)) from e
    except OSError as e:  # the host refused memory or a VM/vCPU ioctl
        raise BootError(f"cannot create the SVSM machine: {e.strerror or e}") from e
    try:
        return _boot_on(machine, config, console)
    finally:
        machine.close()


def _boot_on(machine: Machine, config: BootConfig,
             console: Callable[[str], None]) -> RunResult:
    """The boot sequence on a machine; its locals (kernel, RAM fs) die with it, so
    that nothing refers to guest memory any more when the caller closes the machine."""
    try:
        kernel, files = make_kernel(machine, config.archive, console, config.limits)
    except (PackItError, SyscallError) as e:
        raise BootError(f"the boot archive is unusable: {e}") from e
    kernel.log(f"copra {__version__}: SVSM kernel in Python on KVM, "
               f"{config.memory >> 20} MiB, {machine.frames.total} free frames")
    kernel.log(f"RAM fs: {files} files from a {len(config.archive)}-byte PackIt archive")
    for stage in config.before_init:
        stage(kernel)
    try:
        init = kernel.spawn(INIT_PATH, parent=0)
    except SyscallError as e:
        raise BootError(f"cannot start {INIT_PATH}: {e.errno.name}: {e.message}") from e
    except Exception as e:
        raise BootError(f"cannot start {INIT_PATH}: {e}") from e
    kernel.log(f"started {INIT_PATH} as task {init.pid}")
    result = kernel.run(init, config.timeout)
    for stage in config.after_run:
        stage(kernel)
    if result.timed_out:
        kernel.log(f"timed out after {config.timeout:g} s; still running: "
                   + ", ".join(result.still_running))
    elif result.status is not None:
        kernel.log(f"init {describe_status(result.status)}; "
                   f"{machine.exits} exits to the kernel")
    return result
