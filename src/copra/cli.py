"""The ``copra`` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from copra.abi.spec import EXIT_STATUS_SHIFT, KILLED_BY_EXCEPTION
from copra.kernel.boot import BootConfig, BootError, boot

EXIT_TIMEOUT = 124
EXIT_BOOT_FAILED = 125


def _console(line: str) -> None:
    click.echo(line)


@click.group()
@click.version_option(package_name="copra")
def main() -> None:
    """copra: a Secure VM Service Module in the style of COCONUT-SVSM, on KVM."""


@main.command()
@click.option("--init", "init_elf", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Boot this static ELF as /init instead of the default image's init.")
@click.option("--file", "files", multiple=True, metavar="SRC=DEST",
              help="Add a host file to the RAM fs at DEST (repeatable).")
@click.option("--config", "config_path",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An image configuration (JSON) instead of the default one.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Stop the run after this many seconds.")
@click.option("--memory", type=click.IntRange(min=16, max=4096), default=256, show_default=True,
              metavar="MIB", help="Physical memory of the SVSM VM.")
@click.option("--kvm-device", default="/dev/kvm", show_default=True, metavar="PATH",
              help="The KVM device node.")
def run(init_elf: Path | None, files: tuple[str, ...], config_path: Path | None,
        timeout: float | None, memory: int, kvm_device: str) -> None:
    """Boot copra and run init; exit with init's status."""
    from copra.kernel.image import ImageError, build_boot_archive

    try:
        archive = build_boot_archive(config_path, init_elf, files)
    except ImageError as e:
        raise click.ClickException(str(e)) from e
    try:
        config = BootConfig(archive, memory << 20, timeout, kvm_device=kvm_device)
        result = boot(config, _console)
    except BootError as e:
        click.echo(f"copra: {e}", err=True)
        sys.exit(EXIT_BOOT_FAILED)
    if result.timed_out:
        click.echo(f"copra: stopped after the {timeout:g}-second timeout", err=True)
        sys.exit(EXIT_TIMEOUT)
    status = result.status if result.status is not None else KILLED_BY_EXCEPTION
    if status & 0xFF == KILLED_BY_EXCEPTION:
        sys.exit(128 + ((status >> 8) & 0x7F))
    sys.exit((status >> EXIT_STATUS_SHIFT) & 0xFF)


def _register_optional() -> None:
    """Attach the command groups of the attestation side as they exist."""
    import importlib

    for module, name in (("copra.attest.cli", "attest"), ("copra.attest.aproxy_cli", "aproxy"),
                         ("copra.attest.kbs.cli", "kbs")):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        main.add_command(getattr(mod, name))


_register_optional()
