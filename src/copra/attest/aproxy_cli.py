"""``copra aproxy``: run the host attestation proxy (see :mod:`copra.attest.aproxy`).

    copra aproxy --socket DIR/aproxy.sock --url http://127.0.0.1:8080 \\
                 [--binding coconut|trustee] [--resource default/sample/test] [--force] \\
                 [--broker-wait 10] [--metrics 127.0.0.1:9464]

At start, before the socket exists: the URL is checked (:func:`check_url`), then the
socket's directory (:func:`check_socket_path`; each error names the path), then the
broker is waited for, up to ``--broker-wait`` seconds, until its port accepts a
connection. So once the socket exists, both the proxy and (unless the log warns) the
broker are ready, which a script can wait for with ``[ -S SOCKET ]``. At the end (Ctrl-C
or SIGTERM) the counters are logged in one line; ``--metrics`` serves them meanwhile.
Exit status: 0 after a signal, 1 for a start-up error (one line naming the path or
URL), 2 for a usage error.
"""

from __future__ import annotations

import contextlib
import logging
import signal

import click

from copra.attest.aproxy import (
    DEFAULT_RESOURCE,
    AttestationProxy,
    ProxyConfig,
    bind_unix,
    check_socket_path,
    check_url,
    log,
    wait_for_broker,
)
from copra.attest.binding import Binding
from copra.attest.metrics import MetricsServer


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the server like Ctrl-C, so cleanup runs."""
    raise KeyboardInterrupt


def parse_listen(text: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0..65535); a usage error naming ``option`` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{text!r} is not HOST:PORT", param_hint=option)
    return host.strip("[]"), int(port)


@click.command("aproxy", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", "socket_path", required=True, metavar="PATH",
              help="Unix socket the SVSM connects to (mode 0600; its directory decides who "
                   "else can reach it).")
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
@click.option("--broker-wait", default=10.0, show_default=True, metavar="SECONDS",
              type=click.FloatRange(min=0),
              help="Wait this long at start for the broker to accept connections (0: not).")
@click.option("--metrics", "metrics_listen", default=None, metavar="HOST:PORT",
              help="Serve the counters at http://HOST:PORT/metrics (Prometheus text format).")
def aproxy(socket_path: str, url: str, binding: str, resource: str, force: bool,
           broker_wait: float, metrics_listen: str | None) -> None:
    """Attestation proxy between an SVSM and a Trustee-protocol key broker."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    metrics_address = None if metrics_listen is None else parse_listen(metrics_listen,
                                                                       "--metrics")
    try:
        config = ProxyConfig(url=check_url(url), binding=Binding(binding), resource=resource)
        path = check_socket_path(socket_path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if broker_wait > 0:
        why = wait_for_broker(url, broker_wait)
        if why is not None:
            log.warning("the key broker at %s does not accept connections (%s) after %g s; "
                        "serving anyway: attestations fail until it does", url, why,
                        broker_wait)
    try:
        listener = bind_unix(path, force=force)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    proxy = AttestationProxy(config)
    metrics: MetricsServer | None = None
    try:
        if metrics_address is not None:
            try:
                metrics = MetricsServer(*metrics_address, proxy.metrics).start()
            except OSError as exc:
                raise click.ClickException(
                    f"cannot serve metrics on {metrics_listen}: {exc.strerror or exc}") from exc
        signal.signal(signal.SIGTERM, _interrupt)
        extra = f", metrics at {metrics.url}" if metrics is not None else ""
        click.echo(f"copra aproxy: {path} -> {url} (binding {binding}){extra}")
        with contextlib.suppress(KeyboardInterrupt):
            proxy.serve(listener)
    finally:
        listener.close()
        path.unlink(missing_ok=True)
        if metrics is not None:
            metrics.stop()
        log.info("stopping: %s", proxy.summary())
