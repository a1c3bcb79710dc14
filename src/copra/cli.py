"""The ``copra`` command line."""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import click

from copra.abi.spec import EXIT_STATUS_SHIFT, KILLED_BY_EXCEPTION
from copra.attest.aproxy_cli import aproxy
from copra.attest.cli import attest
from copra.attest.driver import AttestationDriver, AttestMode, AttestSettings
from copra.attest.kbs.cli import kbs
from copra.attest.measure import measure_boot
from copra.kernel.boot import AttestationRefused, BootConfig, BootError, InitFailed, boot
from copra.kernel.image import GUEST_CPUS, GUEST_MEMORY_MIB, GuestImage
from copra.kernel.kernel import LogLevel
from copra.kernel.layout import MAX_CPUS
from copra.kernel.limits import Limits
from copra.kernel.objects.console import ConsoleInput
from copra.kernel.stats import RunStats, format_report
from copra.kernel.trace import DEFAULT_TRACE_EVENTS, Trace

# `copra run`'s own exit statuses (docs/abi.md, "copra run's exit status"). Init's
# EXIT code passes through (low 8 bits); these are chosen beside the shell's
# conventions: 124 as timeout(1), 126 "cannot execute", 128 + n only for signal n
# (130: Ctrl-C), and CPU exceptions above every signal number (192 + vector), so
# that init killed by #UD (6) never reads as SIGABRT.
EXIT_ATTESTATION_REFUSED = 123
EXIT_TIMEOUT = 124
EXIT_BOOT_FAILED = 125
EXIT_INIT_FAILED = 126
EXIT_INTERRUPTED = 130
EXIT_KILLED_BASE = 192


def _console(line: str) -> None:
    click.echo(line)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="copra")
def main() -> None:
    """copra: a Secure VM Service Module in the style of COCONUT-SVSM, on KVM."""


_INIT = click.option(
    "--init", "init_elf", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Boot this static ELF as /init of the default image (default.json; its init starts "
         "the hello service). Without --init, --config and --guest `copra run` boots the demo.")
_FILES = click.option("--file", "files", multiple=True, metavar="SRC=DEST",
                      help="Add a host file to the RAM fs at DEST (repeatable).")
_CONFIG = click.option("--config", "config_path",
                       type=click.Path(exists=True, dir_okay=False, path_type=Path),
                       help="An image configuration (JSON) instead of the default one.")
_MEMORY = click.option("--memory", type=click.IntRange(min=16, max=4096), default=256,
                       show_default=True, metavar="MIB", help="Physical memory of the SVSM VM.")


def default_snp_state() -> Path:
    """The per-user chip directory: $XDG_STATE_HOME/copra/snp, else ~/.local/state/copra/snp."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "copra" / "snp"


def _image(config_path: Path | None, init_elf: Path | None,
           files: tuple[str, ...], init_program: str | None = None,
           ) -> tuple[bytes, Limits, tuple[GuestImage, ...]]:
    """The boot archive, the limits and the guests of the image configuration with the
    overrides; ``init_program`` names a packaged program to boot as /init instead."""
    from copra.kernel.image import (
        INIT_PATH,
        ImageError,
        boot_image_config,
        build_archive,
        foreign_program_hint,
        packaged_program,
        with_vmm_service,
    )

    try:
        config = boot_image_config(config_path, init_elf, files)
        if init_program == "vmm":
            config = with_vmm_service(config)
        elif init_program is not None:
            config = config.with_file(INIT_PATH, packaged_program(init_program))
        archive = build_archive(config)
    except ImageError as e:
        raise click.ClickException(str(e)) from e
    if init_elf is not None:
        hint = foreign_program_hint(f"--init {init_elf}", init_elf.read_bytes())
        if hint is not None:
            click.echo(f"copra: note: {hint}", err=True)
    return archive, config.limits, config.guests


def _stdin_fd() -> int | None:
    """The descriptor of standard input if it is a terminal or a pipe (a FIFO or a
    socket); None for /dev/null, a regular file, or no descriptor at all (docs/vmm.md)."""
    try:
        fd = sys.stdin.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, AttributeError):
        return None
    if os.isatty(fd) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return fd
    return None


def _console_input() -> ConsoleInput | None:
    """A console-input object fed from standard input by a daemon thread (it waits
    while the object's buffer is full, ends the input at EOF or a read error, stops
    when the object is closed); None when stdin is neither a terminal nor a pipe."""
    fd = _stdin_fd()
    if fd is None:
        return None
    console_input = ConsoleInput()

    def pump() -> None:
        try:
            while data := os.read(fd, CONSOLE_READ):
                if not console_input.feed(data):
                    return
        except OSError:
            pass
        console_input.end()

    threading.Thread(target=pump, name="copra-stdin", daemon=True).start()
    return console_input


#: The bytes the standard-input thread reads at a time.
CONSOLE_READ = 4096


def _demo_unless_told(config_path: Path | None, init_elf: Path | None,
                      guest_kernels: tuple[Path, ...] = ()) -> Path | None:
    """The configuration to boot: with none of --config, --init and --guest, the shipped
    demo (images/demo.json: the vmm service, its device-model processes and the
    prebuilt `demo` guest); otherwise ``config_path`` (None: default.json, whose /init
    starts the hello service)."""
    if config_path is None and init_elf is None and not guest_kernels:
        from copra.kernel.image import demo_config_path

        return demo_config_path()
    return config_path


@main.command()
@_INIT
@_FILES
@_CONFIG
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Stop the run after this many seconds.")
@_MEMORY
@click.option("--kvm-device", default="/dev/kvm", show_default=True, metavar="PATH",
              help="The KVM device node.")
@click.option("--cpus", type=click.IntRange(1, MAX_CPUS), default=None, metavar="N",
              help=f"vCPUs of the SVSM, each run by a host thread in parallel (default: "
                   f"the host's online cores, at most {MAX_CPUS}).")
@click.option("--attest", "attest_mode", type=click.Choice([m.value for m in AttestMode]),
              is_flag=False, flag_value=AttestMode.OPTIONAL.value, default=None,
              help="Attest at boot and mount the persistent state at /persist; 'require' "
                   "stops the boot if that fails (bare --attest: optional).")
@click.option("--aproxy", "aproxy_socket", type=click.Path(path_type=Path), metavar="SOCKET",
              help="The attestation proxy's Unix socket (with --attest).")
@click.option("--snp-state", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="The emulated SNP chip's state directory, created on first use "
                   "(with --attest; default $XDG_STATE_HOME/copra/snp or "
                   "~/.local/state/copra/snp).")
@click.option("--persist", "persist_file", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="The sealed persistent store (with --attest); "
                                   "created on the first attested boot.")
@click.option("--stats", "show_stats", is_flag=True,
              help="Print statistics at the end (to stderr): exits, syscalls, faults, "
                   "scheduling, invalidations, time per process and vCPU "
                   "(docs/statistics.md).")
@click.option("--trace", "trace_file", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Write a trace of syscalls, exits and scheduling to FILE "
                                   "in the Chrome/Perfetto trace-event JSON format "
                                   "(open it at ui.perfetto.dev).")
@click.option("--trace-limit", type=click.IntRange(min=0), default=DEFAULT_TRACE_EVENTS,
              show_default=True, metavar="N",
              help="Keep at most N trace events (the first ones; later ones are counted "
                   "as dropped).")
@click.option("-q", "--quiet", "quiet", count=True,
              help="Log less: only the kernel's warnings and errors (and every task's "
                   "output).")
@click.option("-v", "--verbose", "verbose", count=True,
              help="Log more: also each process's start and end.")
@click.option("--timestamps", is_flag=True,
              help="Prefix every console line with the seconds since the start.")
@click.option("--guest", "guest_kernels", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="KERNEL.elf",
              help="Create a guest VM booting this PVH kernel (repeatable; VM n is the "
                   "n-th guest of the image configuration and then of these). Without "
                   "--init or --config, the vmm service is /init: it runs the guests, shows "
                   "their consoles and exits with VM 0's isa-debug-exit status.")
@click.option("--guest-memory", type=click.IntRange(*GUEST_MEMORY_MIB), default=64,
              show_default=True, metavar="MIB", help="RAM of each --guest.")
@click.option("--guest-cpus", type=click.IntRange(*GUEST_CPUS), default=1, show_default=True,
              metavar="N", help="vCPUs of each --guest.")
@click.option("--guest-cmdline", default="", metavar="TEXT",
              help="The command line of each --guest (in its PVH start info).")
def run(init_elf: Path | None, files: tuple[str, ...], config_path: Path | None,
        timeout: float | None, memory: int, kvm_device: str, cpus: int | None,
        attest_mode: str | None,
        aproxy_socket: Path | None, snp_state: Path | None, persist_file: Path | None,
        show_stats: bool, trace_file: Path | None, trace_limit: int, quiet: int,
        verbose: int, timestamps: bool,
        guest_kernels: tuple[Path, ...], guest_memory: int, guest_cpus: int,
        guest_cmdline: str) -> None:
    """Boot copra and run init; exit with init's status.

    With none of --init, --config and --guest it boots the demo (images/demo.json): the
    vmm service as /init runs the prebuilt interrupt-driven `demo` guest, its COM1 and
    block device as processes of their own, and exits with the guest's status, 43.
    `--init src/copra/images/init.elf` boots init and the hello service instead
    (images/default.json)."""
    if quiet and verbose:
        raise click.UsageError("-q and -v contradict each other")
    if attest_mode is None:
        given = [name for name, value in (("--aproxy", aproxy_socket), ("--snp-state", snp_state),
                                          ("--persist", persist_file)) if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} need --attest")
    elif aproxy_socket is None:
        raise click.UsageError("--attest needs --aproxy SOCKET (the attestation proxy)")
    config_path = _demo_unless_told(config_path, init_elf, guest_kernels)
    # `copra run --guest K.elf` alone runs the guest as QEMU would: the vmm service is
    # /init, shows its console and exits with its status (docs/vmm.md).
    vmm_init = "vmm" if guest_kernels and init_elf is None and config_path is None else None
    archive, limits, guests = _image(config_path, init_elf, files, vmm_init)
    guests += tuple(GuestImage(k, guest_memory, guest_cpus, guest_cmdline)
                    for k in guest_kernels)
    trace = Trace(trace_limit) if trace_file is not None else None
    if trace_file is not None:
        _check_writable(trace_file)
    run_stats = RunStats(trace) if show_stats or trace is not None else None
    level = LogLevel.WARNING if quiet else LogLevel.DEBUG if verbose else LogLevel.INFO
    config = BootConfig(archive, memory << 20, timeout, kvm_device=kvm_device, limits=limits,
                        cpus=cpus, log_level=level, stats=run_stats)
    console = _timestamped_console() if timestamps else _console
    if guests:
        from copra.vmm.service import boot_stages

        create, close = boot_stages(guests)
        config = replace(config, before_init=(create,), after_run=(close,),
                         console_input=_console_input())
    if attest_mode is not None:
        assert aproxy_socket is not None
        settings = AttestSettings(
            mode=AttestMode(attest_mode), aproxy=aproxy_socket,
            snp_state=snp_state if snp_state is not None else default_snp_state(),
            persist=persist_file)
        driver = AttestationDriver(settings, archive, memory << 20)
        config = replace(config, before_init=(driver.before_init, *config.before_init),
                         after_run=(*config.after_run, driver.after_run))
    try:
        result = boot(config, console)
    except KeyboardInterrupt:  # before the run started (boot, attestation)
        click.echo("copra: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BootError as e:
        click.echo(f"copra: {e}", err=True)
        sys.exit(EXIT_ATTESTATION_REFUSED if isinstance(e, AttestationRefused)
                 else EXIT_INIT_FAILED if isinstance(e, InitFailed) else EXIT_BOOT_FAILED)
    if show_stats and result.stats is not None:
        click.echo(format_report(result.stats), err=True)
    if trace is not None and trace_file is not None:
        _write_trace(trace, trace_file)
    if result.timed_out:
        click.echo(f"copra: stopped after the {timeout:g}-second timeout", err=True)
        sys.exit(EXIT_TIMEOUT)
    if result.interrupted:
        click.echo("copra: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(run_exit_status(result.status))


def _timestamped_console() -> Callable[[str], None]:
    """The console with dmesg's prefix: seconds since now, to the microsecond."""
    start = time.monotonic()

    def console(line: str) -> None:
        click.echo(f"[{time.monotonic() - start:12.6f}] {line}")

    return console


def _check_writable(path: Path) -> None:
    """Refuse a trace file that cannot be written before the run, naming the path."""
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as e:
        raise click.ClickException(f"cannot write the trace to {path}: "
                                   f"{e.strerror or e}") from e


def _write_trace(trace: Trace, path: Path) -> None:
    try:
        with path.open("w", encoding="utf-8") as file:
            trace.write(file)
    except OSError as e:
        click.echo(f"copra: cannot write the trace to {path}: {e.strerror or e}", err=True)
        return
    dropped = f"; {trace.dropped} dropped at the limit of {trace.limit}" if trace.dropped \
        else ""
    click.echo(f"copra: trace: {len(trace.events)} events written to {path}{dropped}",
               err=True)


def run_exit_status(status: int | None) -> int:
    """`copra run`'s exit status for init's packed status (None: it never ended)."""
    if status is None:
        return EXIT_BOOT_FAILED
    if status & 0xFF == KILLED_BY_EXCEPTION:
        return EXIT_KILLED_BASE + ((status >> 8) & 0x1F)
    return (status >> EXIT_STATUS_SHIFT) & 0xFF


@main.command()
@_INIT
@_FILES
@_CONFIG
@_MEMORY
def measure(init_elf: Path | None, files: tuple[str, ...], config_path: Path | None,
            memory: int) -> None:
    """Print the launch measurement (96 hex digits) of `copra run` with the same inputs.

    For the key broker's reference values:
    copra kbs --db kbs.db set-reference --measurement $(copra measure --init prog.elf)
    """
    config_path = _demo_unless_told(config_path, init_elf)
    click.echo(measure_boot(_image(config_path, init_elf, files)[0], memory << 20).hex())


@main.command()
@click.option("--snp-state", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="The chip's state directory (default as for `copra run`).")
def chip(snp_state: Path | None) -> None:
    """Open the emulated SNP chip, creating it if there is none; print its ARK's path.

    The ARK is the trust root a key broker needs for this chip's reports:
    copra kbs --db kbs.db serve --trust-root "$(copra chip)"
    """
    from copra.hw.snp import SnpFirmware, SnpFirmwareError, StateMissing

    state = snp_state if snp_state is not None else default_snp_state()
    try:
        try:
            SnpFirmware.open(state)
        except StateMissing:
            click.echo(f"copra: creating an emulated SNP chip in {state}", err=True)
            SnpFirmware.create(state)
    except (SnpFirmwareError, OSError) as e:
        raise click.ClickException(f"the emulated SNP chip in {state} is unusable: {e}") from e
    click.echo(state / "ark.pem")


main.add_command(attest)
main.add_command(aproxy)
main.add_command(kbs)


# `copra guest`'s own exit statuses (docs/guests.md): the guest's isa-debug-exit status
# ((value << 1) | 1, always odd) passes through; copra's are even where it could choose.
EXIT_GUEST_HALTED = 118
EXIT_GUEST_TRIPLE_FAULT = 120
EXIT_GUEST_FAILED = 122


@main.command()
@click.argument("kernel", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--memory", type=click.IntRange(min=2, max=3072), default=128, show_default=True,
              metavar="MIB", help="The guest's RAM.")
@click.option("--cmdline", default="", metavar="TEXT",
              help="The guest's command line (in the PVH start info).")
@click.option("--name", default=None, metavar="NAME",
              help="The name its console lines carry (default: the kernel file's stem).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Stop the guest after this many seconds.")
@click.option("--kvm-device", default="/dev/kvm", show_default=True, metavar="PATH",
              help="The KVM device node.")
def guest(kernel: Path, memory: int, cmdline: str, name: str | None, timeout: float | None,
          kvm_device: str) -> None:
    """Boot a PVH kernel (an ELF with the XEN_ELFNOTE_PHYS32_ENTRY note) as a guest VM.

    Its COM1 console is printed here, each line prefixed with its name, and the command
    exits with the status the guest gives through isa-debug-exit (port 0xF4), as
    `qemu-system-x86_64 -kernel KERNEL -device isa-debug-exit,iobase=0xf4,iosize=4` does.
    """
    from copra.vmm.guest import Guest, GuestConfig, GuestError, Outcome

    config = GuestConfig(name or kernel.stem, kernel.read_bytes(), memory << 20,
                         cmdline.encode())
    try:
        with Guest(config, _console, kvm_device) as vm:
            result = vm.run(timeout)
    except GuestError as e:
        click.echo(f"copra: {e}", err=True)
        sys.exit(EXIT_BOOT_FAILED)
    except KeyboardInterrupt:
        click.echo("copra: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if result.outcome is Outcome.EXITED and result.status is not None:
        sys.exit(result.status)
    click.echo(f"copra: guest {config.name}: {result.describe()}", err=True)
    sys.exit({Outcome.TIMED_OUT: EXIT_TIMEOUT, Outcome.HALTED: EXIT_GUEST_HALTED,
              Outcome.TRIPLE_FAULT: EXIT_GUEST_TRIPLE_FAULT}.get(result.outcome,
                                                                EXIT_GUEST_FAILED))
