"""``copra kbs``: run the development key broker and manage its store.

    copra kbs --db kbs.db set-resource default/sample/test secret.bin
    copra kbs --db kbs.db set-reference --measurement HEX [--min-tcb bl=4,tee=0,snp=24,ucode=219]
    copra kbs --db kbs.db add-cert CHIPDIR/vcek.pem CHIPDIR/ask.pem
    copra kbs --db kbs.db serve --listen 127.0.0.1:8080 --trust-root CHIPDIR/ark.pem
    copra kbs --db kbs.db --listen 127.0.0.1:8080 --trust-root amd      (same as serve)

Nothing here prints resource contents or keys.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import BinaryIO

import click

from copra.attest.binding import Binding
from copra.attest.cli import parse_min_tcb
from copra.attest.kbs.limits import ServerLimits
from copra.attest.kbs.store import ReferenceValues, ResourcePath, Store, StoreError
from copra.attest.text import visible
from copra.attest.verify import VerificationError, Verifier, fingerprint, load_certificates


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the server like Ctrl-C, so cleanup runs."""
    raise KeyboardInterrupt


def _store(ctx: click.Context) -> Store:
    db = ctx.obj["db"]
    try:
        return Store(db)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{text!r} is not HOST:PORT", param_hint="--listen")
    return host, int(port)


def _parse_hex(text: str, size: int, what: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError as exc:
        raise click.BadParameter(f"{what} is not hex", param_hint=f"--{what}") from exc
    if len(value) != size:
        raise click.BadParameter(f"{what} must be {size} bytes", param_hint=f"--{what}")
    return value


def _verifier(trust_root: str) -> Verifier:
    if trust_root == "amd":
        return Verifier.with_amd_roots()
    try:
        return Verifier([Path(trust_root).read_bytes()])
    except (OSError, VerificationError, ValueError) as exc:
        raise click.ClickException(f"trust root {trust_root}: {exc}") from exc


@click.group("kbs", invoke_without_command=True)
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    envvar="COPRA_KBS_DB",
    required=True,
    help="SQLite store (created if missing, mode 0600).",
)
@click.option("--listen", default=None, help="HOST:PORT; without a subcommand, serve there.")
@click.option("--trust-root", default=None, help="ARK PEM file (an emulated chip's) or 'amd'.")
@click.pass_context
def kbs(ctx: click.Context, db: str, listen: str | None, trust_root: str | None) -> None:
    """A development key broker speaking Trustee's KBS protocol (RCAR 0.4.0)."""
    ctx.ensure_object(dict)
    ctx.obj["db"] = db
    if ctx.invoked_subcommand is None:
        if listen is None:
            raise click.UsageError("give a subcommand, or --listen to serve")
        ctx.invoke(serve, listen=listen, trust_root=trust_root or "amd")


@kbs.command()
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT")
@click.option("--trust-root", default="amd", show_default=True, help="ARK PEM file or 'amd'.")
@click.option(
    "--binding",
    "bindings",
    type=click.Choice([b.value for b in Binding]),
    multiple=True,
    help="Accept only these REPORT_DATA bindings (default: both).",
)
@click.option(
    "--session-timeout",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds an attested session lives.",
)
@click.option(
    "--unattested-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a session lives until it attests.",
)
@click.option(
    "--max-connections",
    default=ServerLimits.max_connections,
    show_default=True,
    type=click.IntRange(min=1),
    help="Connections open at once; a new one closes the oldest idle one.",
)
@click.option(
    "--threads",
    default=ServerLimits.threads,
    show_default=True,
    type=click.IntRange(min=1),
    help="Threads running requests.",
)
@click.option(
    "--idle-timeout",
    default=ServerLimits.idle_timeout,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds of silence after which a connection with nothing in flight is closed.",
)
@click.option(
    "--request-timeout",
    default=ServerLimits.request_timeout,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a request may take to arrive, from its first byte to its last.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    listen: str,
    trust_root: str,
    bindings: tuple[str, ...] = (),
    session_timeout: float = 300.0,
    unattested_timeout: float = 60.0,
    max_connections: int = ServerLimits.max_connections,
    threads: int = ServerLimits.threads,
    idle_timeout: float = ServerLimits.idle_timeout,
    request_timeout: float = ServerLimits.request_timeout,
) -> None:
    """Serve /kbs/v0/auth, /kbs/v0/attest and /kbs/v0/resource/... until interrupted."""
    from copra.attest.kbs.app import KbsServer
    from copra.attest.kbs.broker import BrokerConfig, KeyBroker

    host, port = _parse_listen(listen)
    store = _store(ctx)
    config = BrokerConfig(
        session_timeout=session_timeout,
        unattested_timeout=unattested_timeout,
        bindings=frozenset(Binding(b) for b in bindings) or frozenset(Binding),
    )
    broker = KeyBroker(store, _verifier(trust_root), config=config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    limits = ServerLimits(max_connections=max_connections, threads=threads,
                          idle_timeout=idle_timeout, request_timeout=request_timeout)
    try:
        server = KbsServer(broker, host, port, limits)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror or exc}") from exc
    signal.signal(signal.SIGTERM, _interrupt)
    click.echo(f"copra kbs: serving {server.url} (store {store.path})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@kbs.command("set-resource")
@click.argument("path")
@click.argument("file", type=click.File("rb"))
@click.pass_context
def set_resource(ctx: click.Context, path: str, file: BinaryIO) -> None:
    """Store FILE's bytes as resource PATH (REPOSITORY/TYPE/TAG)."""
    try:
        resource = ResourcePath.parse(path)
    except StoreError as exc:
        raise click.BadParameter(str(exc), param_hint="PATH") from exc
    data = file.read()
    _store(ctx).set_resource(resource, data)
    click.echo(f"{resource}: {len(data)} bytes")


@kbs.command("delete-resource")
@click.argument("path")
@click.pass_context
def delete_resource(ctx: click.Context, path: str) -> None:
    """Remove resource PATH."""
    try:
        resource = ResourcePath.parse(path)
    except StoreError as exc:
        raise click.BadParameter(str(exc), param_hint="PATH") from exc
    if not _store(ctx).delete_resource(resource):
        raise click.ClickException(f"no resource {resource}")


@kbs.command("list-resources")
@click.pass_context
def list_resources(ctx: click.Context) -> None:
    """Resource paths and sizes (never contents)."""
    for path, size in _store(ctx).list_resources():
        click.echo(f"{path}\t{size}")


@kbs.command("set-reference")
@click.option(
    "--measurement", "measurements", multiple=True, required=True, help="48-byte hex; repeatable."
)
@click.option(
    "--min-tcb",
    default=None,
    help="bl=N,tee=N,snp=N,ucode=N[,fmc=N] (or bootloader=, microcode=)",
)
@click.option("--allow-debug/--no-debug", default=False, show_default=True)
@click.option("--vmpl", default="0", show_default=True, help="Required VMPL 0..3, or 'any'.")
@click.option("--host-data", default=None, help="32-byte hex HOST_DATA to require.")
@click.pass_context
def set_reference(
    ctx: click.Context,
    measurements: tuple[str, ...],
    min_tcb: str | None,
    allow_debug: bool,
    vmpl: str,
    host_data: str | None,
) -> None:
    """Replace the reference values evidence is appraised against."""
    if vmpl != "any" and vmpl not in ("0", "1", "2", "3"):
        raise click.BadParameter("0..3 or 'any'", param_hint="--vmpl")
    try:
        values = ReferenceValues(
            measurements=frozenset(_parse_hex(m, 48, "measurement") for m in measurements),
            minimum_tcb=None if min_tcb is None else parse_min_tcb(min_tcb),
            allow_debug=allow_debug,
            vmpl=None if vmpl == "any" else int(vmpl),
            host_data=None if host_data is None else _parse_hex(host_data, 32, "host-data"),
        )
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    _store(ctx).set_reference_values(values)
    click.echo(f"{len(values.measurements)} measurement(s) set")


@kbs.command("show-reference")
@click.pass_context
def show_reference(ctx: click.Context) -> None:
    """Print the reference values as JSON."""
    import json

    click.echo(json.dumps(_store(ctx).reference_values().to_json(), indent=2, sort_keys=True))


@kbs.command("add-cert")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def add_cert(ctx: click.Context, files: tuple[str, ...]) -> None:
    """Cache ASK/ARK/VCEK certificates (PEM, bundles, or DER) for evidence that carries none."""
    from cryptography.hazmat.primitives.serialization import Encoding

    store = _store(ctx)
    for name in files:
        try:
            certs = load_certificates(Path(name).read_bytes())
        except VerificationError as exc:
            raise click.ClickException(f"{name}: {exc}") from exc
        for cert in certs:
            store.add_certificate(fingerprint(cert), cert.public_bytes(Encoding.DER))
            click.echo(f"{name}: {visible(cert.subject.rfc4514_string())}")
