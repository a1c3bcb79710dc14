"""``copra aproxy``: run the host attestation proxy (see :mod:`copra.attest.aproxy`).

    copra aproxy --socket /run/copra/aproxy.sock --url http://127.0.0.1:8080 \\
                 [--binding coconut|trustee] [--resource default/sample/test] [--force]
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import click

from copra.attest.aproxy import DEFAULT_RESOURCE, AttestationProxy, ProxyConfig, bind_unix
from copra.attest.binding import Binding


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the server like Ctrl-C, so cleanup runs."""
    raise KeyboardInterrupt


@click.command("aproxy")
@click.option("--socket", "socket_path", required=True, help="Unix socket the SVSM connects to.")
@click.option("--url", required=True, help="Key broker base URL, e.g. http://127.0.0.1:8080.")
@click.option(
    "--binding",
    type=click.Choice([b.value for b in Binding]),
    default=Binding.COCONUT.value,
    show_default=True,
    help="REPORT_DATA binding and evidence encoding.",
)
@click.option("--resource", default=DEFAULT_RESOURCE, show_default=True, help="REPO/TYPE/TAG")
@click.option("--force", is_flag=True, help="Replace a stale socket file.")
def aproxy(socket_path: str, url: str, binding: str, resource: str, force: bool) -> None:
    """Attestation proxy between an SVSM and a Trustee-protocol key broker."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = ProxyConfig(url=url, binding=Binding(binding), resource=resource)
        listener = bind_unix(socket_path, force=force)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    proxy = AttestationProxy(config)
    signal.signal(signal.SIGTERM, _interrupt)
    click.echo(f"copra aproxy: {socket_path} -> {url} (binding {binding})")
    try:
        proxy.serve(listener)
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
        Path(socket_path).unlink(missing_ok=True)
