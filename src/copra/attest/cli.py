"""``copra attest``: decode and verify SEV-SNP attestation reports from the command line.

The main CLI adds the :data:`attest` group (``main.add_command(attest)``). Exit
status: 0 when the report verifies, 1 when verification fails (one line on stderr
naming the failed check, no traceback), 2 for usage errors (click's convention).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click

from copra.attest.text import visible
from copra.attest.verify import (
    Policy,
    VerificationError,
    Verifier,
    load_certificates,
    utc_now,
)
from copra.hw.snp_report import (
    AttestationReport,
    ReportFormatError,
    TcbLayout,
    TcbVersion,
    decode_report_file,
)

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def describe(report: AttestationReport) -> list[tuple[str, str]]:
    """Every field of ``report`` as (NAME, text) in layout order, names as in the spec."""
    pol = report.policy
    flags = "|".join(f.name or "" for f in type(pol.flags) if f in pol.flags) or "-"
    plat = report.platform_info
    plat_names = "|".join(f.name or "" for f in type(plat) if f in plat) or "-"
    ki = report.key_info
    rows = [
        ("VERSION", str(report.version)),
        ("GUEST_SVN", str(report.guest_svn)),
        ("POLICY", f"{pol.to_int():#x} (abi {pol.abi_major}.{pol.abi_minor}, {flags})"),
        ("FAMILY_ID", report.family_id.hex()),
        ("IMAGE_ID", report.image_id.hex()),
        ("VMPL", str(report.vmpl)),
        ("SIGNATURE_ALGO", str(report.signature_algo)),
        ("CURRENT_TCB", str(report.current_tcb)),
        ("PLATFORM_INFO", f"{int(plat):#x} ({plat_names})"),
        (
            "KEY_INFO",
            f"signing_key={ki.signing_key.name} author_key_en={int(ki.author_key_en)} "
            f"mask_chip_key={int(ki.mask_chip_key)}",
        ),
        ("REPORT_DATA", report.report_data.hex()),
        ("MEASUREMENT", report.measurement.hex()),
        ("HOST_DATA", report.host_data.hex()),
        ("ID_KEY_DIGEST", report.id_key_digest.hex()),
        ("AUTHOR_KEY_DIGEST", report.author_key_digest.hex()),
        ("REPORT_ID", report.report_id.hex()),
        ("REPORT_ID_MA", report.report_id_ma.hex()),
        ("REPORTED_TCB", str(report.reported_tcb)),
    ]
    if report.cpuid_fam_id is not None:
        gen = report.generation
        rows.append(
            (
                "CPUID",
                f"family {report.cpuid_fam_id:#x} model {report.cpuid_mod_id:#x} "
                f"stepping {report.cpuid_step:#x} ({gen.value if gen else 'unknown'})",
            )
        )
    rows += [
        ("CHIP_ID", report.chip_id.hex()),
        ("COMMITTED_TCB", str(report.committed_tcb)),
        ("CURRENT_VERSION", str(report.current_version)),
        ("COMMITTED_VERSION", str(report.committed_version)),
        ("LAUNCH_TCB", str(report.launch_tcb)),
    ]
    if report.launch_mit_vector is not None:
        rows.append(("LAUNCH_MIT_VECTOR", f"{report.launch_mit_vector:#x}"))
    if report.current_mit_vector is not None:
        rows.append(("CURRENT_MIT_VECTOR", f"{report.current_mit_vector:#x}"))
    rows += [
        ("SIGNATURE_R", f"{report.signature.r:x}"),
        ("SIGNATURE_S", f"{report.signature.s:x}"),
    ]
    return rows


def _echo_fields(report: AttestationReport) -> None:
    width = max(len(name) for name, _ in describe(report))
    for name, text in describe(report):
        click.echo(f"{name:<{width}}  {text}")


def _hex_option(size: int, *, pad: bool = False) -> Callable[..., bytes | None]:
    """A click callback turning a hex option into exactly ``size`` bytes."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> bytes | None:
        if value is None:
            return None
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not hex", ctx, param) from None
        if pad and len(raw) <= size:
            raw = raw.ljust(size, b"\0")
        if len(raw) != size:
            raise click.BadParameter(f"expected {size} bytes, got {len(raw)}", ctx, param)
        return raw

    return convert


def parse_min_tcb(text: str) -> TcbVersion:
    """``--min-tcb`` of ``copra attest verify`` (:meth:`TcbVersion.parse`); a usage error
    if it does not parse. One report, so no product; ``copra kbs`` takes ``PRODUCT:``
    before the same spelling (:func:`copra.attest.kbs.policy.parse_product_tcb`)."""
    try:
        return TcbVersion.parse(text)
    except ValueError as exc:
        raise click.BadParameter(
            f"{text!r}: {exc}; expected bl=N,tee=N,snp=N,ucode=N[,fmc=N] "
            "(or bootloader=, microcode=)",
            param_hint="--min-tcb",
        ) from None


@click.group("attest", context_settings={"help_option_names": ["-h", "--help"]})
def attest() -> None:
    """SEV-SNP attestation reports: decode and verify."""


@attest.command("show")
@click.argument("report", type=_FILE)
@click.option(
    "--layout",
    type=click.Choice([layout.value for layout in TcbLayout]),
    help="TCB layout of a v2 report (default milan-genoa; v3+ reports say it themselves).",
)
def show(report: Path, layout: str | None) -> None:
    """Decode REPORT (raw 1184 bytes or hex text) without verifying it."""
    try:
        raw = decode_report_file(report.read_bytes())
        parsed = AttestationReport.parse(raw, layout=TcbLayout(layout) if layout else None)
    except ReportFormatError as exc:
        click.echo(f"malformed report: {exc}", err=True)
        raise SystemExit(1) from None
    _echo_fields(parsed)


@attest.command("verify")
@click.argument("report", type=_FILE)
@click.option("--vcek", type=_FILE, required=True, help="VCEK or VLEK certificate, DER or PEM.")
@click.option(
    "--chain", type=_FILE, required=True, help="ASK/ASVK (and optionally the ARK), PEM or DER."
)
@click.option(
    "--trust-root",
    type=_FILE,
    multiple=True,
    help="Trust this ARK instead of AMD's pinned roots (e.g. an emulated chip's ark.pem).",
)
@click.option(
    "--at",
    "at_time",
    type=click.DateTime(),
    help="Check certificate validity at this UTC time instead of now.",
)
@click.option("--no-debug", is_flag=True, help="Reject a guest policy that allows debugging.")
@click.option("--vmpl", type=click.IntRange(0, 3), help="Require this VMPL.")
@click.option(
    "--min-tcb",
    help="Minimum REPORTED_TCB, e.g. bl=3,tee=0,snp=8,ucode=115 (or bootloader=, microcode=).",
)
@click.option("--measurement", callback=_hex_option(48), help="Expected MEASUREMENT (hex).")
@click.option(
    "--report-data",
    callback=_hex_option(64, pad=True),
    help="Expected REPORT_DATA (hex, zero-padded to 64 bytes).",
)
@click.option("--host-data", callback=_hex_option(32), help="Expected HOST_DATA (hex).")
def verify(
    report: Path,
    vcek: Path,
    chain: Path,
    trust_root: tuple[Path, ...],
    at_time: datetime | None,
    no_debug: bool,
    vmpl: int | None,
    min_tcb: str | None,
    measurement: bytes | None,
    report_data: bytes | None,
    host_data: bytes | None,
) -> None:
    """Verify REPORT (raw 1184 bytes or hex text) against its VCEK and AMD's chain."""
    policy = Policy(
        allow_debug=not no_debug,
        vmpl=vmpl,
        minimum_tcb=None if min_tcb is None else parse_min_tcb(min_tcb),
        measurement=measurement,
        report_data=report_data,
        host_data=host_data,
    )
    fixed = at_time.replace(tzinfo=UTC) if at_time is not None else None
    clock = (lambda: fixed) if fixed is not None else utc_now
    try:
        if trust_root:
            verifier = Verifier(
                [c for p in trust_root for c in load_certificates(p.read_bytes())], clock=clock
            )
        else:
            verifier = Verifier.with_amd_roots(clock=clock)
        raw = decode_report_file(report.read_bytes())
        result = verifier.verify(raw, vcek.read_bytes(), chain.read_bytes(), policy)
    except ReportFormatError as exc:
        click.echo(f"verification failed (MalformedReport): {exc}", err=True)
        raise SystemExit(1) from None
    except VerificationError as exc:
        click.echo(f"verification failed ({type(exc).__name__}): {exc}", err=True)
        raise SystemExit(1) from None
    root_cn = visible(result.root.subject.rfc4514_string())
    click.echo(
        f"OK: report verified, signed by a {result.signing_key.name} "
        f"({result.product_name or 'unknown product'}) chaining to {root_cn}"
    )
    _echo_fields(result.report)
