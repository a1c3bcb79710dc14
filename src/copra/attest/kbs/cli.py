"""``copra kbs``: run the development key broker and manage its store.

    copra kbs --db kbs.db set-reference --measurement HEX [--min-tcb Milan:bl=4,tee=0,snp=24,...]
    copra kbs --db kbs.db set-resource default/sample/test secret.bin --measurement HEX
    copra kbs --db kbs.db set-policy default/sample/test --measurement HEX [--policy-bit debug=0]
    copra kbs --db kbs.db add-cert CHIPDIR/vcek.pem CHIPDIR/ask.pem
    copra kbs --db kbs.db serve --listen 127.0.0.1:8080 --trust-root CHIPDIR/ark.pem
    copra kbs --db kbs.db --listen 127.0.0.1:8080 --trust-root amd      (same as serve)

Nothing here prints resource contents or keys. ``--db`` (or ``COPRA_KBS_DB``) is needed
by every subcommand but not by ``--help``/``-h``; ``list-resources``,
``show-reference``, ``show-policy``, ``set-policy`` and ``delete-resource`` refuse a
store that does not exist rather than create an empty one.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import click

from copra.attest.binding import Binding
from copra.attest.kbs.limits import ServerLimits
from copra.attest.kbs.policy import (
    ResourcePolicy,
    describe_bits,
    parse_policy_bits,
    parse_product_tcb,
)
from copra.attest.kbs.store import ReferenceValues, ResourcePath, Store, StoreError
from copra.attest.text import visible
from copra.attest.verify import VerificationError, Verifier, fingerprint, load_certificates
from copra.hw.snp_report import Generation, TcbVersion


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the server like Ctrl-C, so cleanup runs."""
    raise KeyboardInterrupt


def _store(ctx: click.Context, *, create: bool = True) -> Store:
    """The store ``--db`` names; with ``create=False`` (commands that only read, or
    change what must exist) a missing one is an error and nothing is created."""
    db = ctx.obj["db"]
    if db is None:
        raise click.UsageError("Missing option '--db' (or set COPRA_KBS_DB).", ctx)
    try:
        return Store(db, create=create)
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


@click.group("kbs", invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    envvar="COPRA_KBS_DB",
    help="SQLite store, mode 0600 (required; commands that write create it, commands that "
         "only read refuse a missing one).",
)
@click.option("--listen", default=None, help="HOST:PORT; without a subcommand, serve there.")
@click.option("--trust-root", default=None, help="ARK PEM file (an emulated chip's) or 'amd'.")
@click.pass_context
def kbs(ctx: click.Context, db: str | None, listen: str | None, trust_root: str | None) -> None:
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


def _resource_path(text: str) -> ResourcePath:
    try:
        return ResourcePath.parse(text)
    except StoreError as exc:
        raise click.BadParameter(str(exc), param_hint="PATH") from exc


def _product_tcbs(specs: tuple[str, ...]) -> dict[Generation, TcbVersion]:
    """``--min-tcb PRODUCT:bl=N,...`` options, at most one per product."""
    out: dict[Generation, TcbVersion] = {}
    for spec in specs:
        try:
            generation, tcb = parse_product_tcb(spec)
        except ValueError as exc:
            raise click.BadParameter(f"{spec!r}: {exc}", param_hint="--min-tcb") from None
        if generation in out:
            raise click.BadParameter(f"{generation.value} is given twice", param_hint="--min-tcb")
        out[generation] = tcb
    return out


def _resource_policy(
    measurements: tuple[str, ...], policy_bits: tuple[str, ...], min_tcbs: tuple[str, ...]
) -> ResourcePolicy:
    try:
        mask, value = parse_policy_bits(policy_bits)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--policy-bit") from None
    return ResourcePolicy(
        measurements=frozenset(_parse_hex(m, 48, "measurement") for m in measurements),
        policy_mask=mask,
        policy_value=value,
        minimum_tcb=_product_tcbs(min_tcbs),
    )


def _policy_options(required: bool) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def wrap(command: Callable[..., None]) -> Callable[..., None]:
        for option in reversed((
            click.option("--measurement", "measurements", multiple=True, required=required,
                         help="48-byte hex launch measurement that may read it; repeatable."),
            click.option("--policy-bit", "policy_bits", multiple=True,
                         help="NAME=0|1: a guest POLICY bit the report must show (debug, smt, "
                              "single_socket, ...); repeatable."),
            click.option("--min-tcb", "min_tcbs", multiple=True,
                         help="PRODUCT:bl=N,tee=N,snp=N,ucode=N[,fmc=N] (PRODUCT Milan, "
                              "Genoa or Turin); repeatable, one per product."),
        )):
            command = option(command)
        return command

    return wrap


def _describe(policy: ResourcePolicy | None) -> str:
    if policy is None:
        return "no policy: released to no one"
    parts = [f"{len(policy.measurements)} measurement(s)"]
    if policy.policy_mask:
        parts.append(f"policy {describe_bits(policy.policy_mask, policy.policy_value)}")
    if policy.minimum_tcb:
        parts.append("minimum TCB for " + ", ".join(g.value for g in policy.minimum_tcb))
    return "; ".join(parts)


@kbs.command("set-resource")
@click.argument("path")
@click.argument("file", type=click.File("rb"))
@_policy_options(required=False)
@click.pass_context
def set_resource(
    ctx: click.Context,
    path: str,
    file: BinaryIO,
    measurements: tuple[str, ...],
    policy_bits: tuple[str, ...],
    min_tcbs: tuple[str, ...],
) -> None:
    """Store FILE's bytes as resource PATH (REPOSITORY/TYPE/TAG), and with --measurement
    its policy (else it keeps the one it has; a new resource without one is released to
    no one until `set-policy`)."""
    resource = _resource_path(path)
    if not measurements and (policy_bits or min_tcbs):
        raise click.UsageError("--policy-bit and --min-tcb need --measurement")
    policy = _resource_policy(measurements, policy_bits, min_tcbs) if measurements else None
    data = file.read()
    store = _store(ctx)
    store.set_resource(resource, data, policy)
    click.echo(f"{resource}: {len(data)} bytes; {_describe(store.policy(resource))}")


@kbs.command("set-policy")
@click.argument("path")
@_policy_options(required=True)
@click.pass_context
def set_policy(
    ctx: click.Context,
    path: str,
    measurements: tuple[str, ...],
    policy_bits: tuple[str, ...],
    min_tcbs: tuple[str, ...],
) -> None:
    """Replace the policy of resource PATH: which attested workloads may read it."""
    resource = _resource_path(path)
    policy = _resource_policy(measurements, policy_bits, min_tcbs)
    if not _store(ctx, create=False).set_policy(resource, policy):
        raise click.ClickException(f"no resource {resource}")
    click.echo(f"{resource}: {_describe(policy)}")


@kbs.command("show-policy")
@click.argument("path")
@click.pass_context
def show_policy(ctx: click.Context, path: str) -> None:
    """Print the policy of resource PATH as JSON (null: none, released to no one)."""
    import json

    resource = _resource_path(path)
    store = _store(ctx, create=False)
    if store.get_resource_and_policy(resource) is None:
        raise click.ClickException(f"no resource {resource}")
    policy = store.policy(resource)
    click.echo(json.dumps(None if policy is None else policy.to_json(), indent=2,
                          sort_keys=True))


@kbs.command("delete-resource")
@click.argument("path")
@click.pass_context
def delete_resource(ctx: click.Context, path: str) -> None:
    """Remove resource PATH."""
    resource = _resource_path(path)
    if not _store(ctx, create=False).delete_resource(resource):
        raise click.ClickException(f"no resource {resource}")


@kbs.command("list-resources")
@click.pass_context
def list_resources(ctx: click.Context) -> None:
    """Resource paths, sizes and policies (never contents)."""
    for path, size, policy in _store(ctx, create=False).list_resources():
        click.echo(f"{path}\t{size}\t{_describe(policy)}")


@kbs.command("set-reference")
@click.option(
    "--measurement", "measurements", multiple=True, required=True, help="48-byte hex; repeatable."
)
@click.option(
    "--min-tcb",
    "min_tcbs",
    multiple=True,
    help="PRODUCT:bl=N,tee=N,snp=N,ucode=N[,fmc=N] (PRODUCT Milan, Genoa or Turin; fmc for "
    "Turin only); repeatable, one per product; reports of an unlisted product are refused.",
)
@click.option("--allow-debug/--no-debug", default=False, show_default=True)
@click.option("--vmpl", default="0", show_default=True, help="Required VMPL 0..3, or 'any'.")
@click.option("--host-data", default=None, help="32-byte hex HOST_DATA to require.")
@click.pass_context
def set_reference(
    ctx: click.Context,
    measurements: tuple[str, ...],
    min_tcbs: tuple[str, ...],
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
            minimum_tcb=_product_tcbs(min_tcbs),
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

    click.echo(json.dumps(_store(ctx, create=False).reference_values().to_json(), indent=2,
                          sort_keys=True))


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
