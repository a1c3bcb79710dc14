"""The two encodings of SNP evidence a KBS receives as ``primary_evidence``.

* ``coconut`` (upstream aproxy's KBS backend): ``{"snp-report": base64(raw report),
  "certs-buf": base64(certificate table) | null}``.
* ``trustee`` (Trustee's SNP verifier, virtee/sev serde form):
  ``{"attestation_report": {...every field...}, "cert_chain": [{"cert_type": "VCEK",
  "data": [byte, ...]}] | null}``, byte strings as JSON lists of integers, each TCB
  as ``{fmc, bootloader, tee, snp, microcode}``, the signature as ``{r, s}`` (72
  little-endian bytes each), ``launch_mit_vector``/``current_mit_vector`` only on v5.

The certificate table (``certs_buf``) has one codec and one GUID table, in
:mod:`copra.hw.snp_report` (``parse_cert_table``, ``build_cert_table``, ``CertGuid``),
which the emulated firmware builds tables with too; ``CertGuid``'s member names are
also the kinds in Trustee's ``cert_chain``. Decoding keeps what Trustee's SNP verifier
uses, ARK, ASK, VCEK and VLEK, and drops the rest as it does: CRL entries (revocation is
not checked), unknown GUIDs, and ``cert_chain``'s ``Empty`` and ``{"OTHER": uuid}``.

Which encoding arrived also selects the REPORT_DATA binding
(:mod:`copra.attest.binding`): the two go together in the tools that produce them.
Parsing input from a peer raises only :class:`EvidenceError`.

Stateless; safe from any thread.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from typing import Any

from copra.attest.binding import Binding
from copra.hw.snp_report import (
    MAX_CERT_ENTRIES,
    AttestationReport,
    CertGuid,
    CertTableError,
    FirmwareVersion,
    GuestPolicy,
    KeyInfo,
    PlatformInfo,
    Signature,
    TcbVersion,
    parse_cert_table,
)


class EvidenceError(ValueError):
    """Evidence that cannot be decoded; the message names the member."""


@dataclass(frozen=True)
class Evidence:
    """Decoded evidence: which binding its encoding implies, the raw report, certificates."""

    binding: Binding
    report: bytes
    certificates: dict[CertGuid, bytes]


#: The certificate kinds evidence can carry that copra checks (a CRL is ignored, as
#: Trustee's SNP verifier ignores it: revocation is not checked, attestation-protocol.md).
_CHAIN_KINDS = {g.name: g for g in (CertGuid.ARK, CertGuid.ASK, CertGuid.VCEK, CertGuid.VLEK)}


def _cert_table(table: bytes) -> dict[CertGuid, bytes]:
    """A certificate table's certificates; a CRL entry is dropped (see above)."""
    try:
        certs = parse_cert_table(table)
    except CertTableError as exc:
        raise EvidenceError(f"certs-buf: {exc}") from exc
    return {kind: der for kind, der in certs.items() if kind.name in _CHAIN_KINDS}


# --- encoding --------------------------------------------------------------------------


def coconut_evidence(report: bytes, certs_buf: bytes | None) -> dict[str, Any]:
    """The ``primary_evidence`` upstream's aproxy sends."""
    return {
        "snp-report": base64.b64encode(report).decode("ascii"),
        "certs-buf": None if certs_buf is None else base64.b64encode(certs_buf).decode("ascii"),
    }


def _tcb_json(tcb: TcbVersion) -> dict[str, Any]:
    return {
        "fmc": tcb.fmc,
        "bootloader": tcb.bootloader,
        "tee": tcb.tee,
        "snp": tcb.snp,
        "microcode": tcb.microcode,
    }


def _version_json(version: FirmwareVersion) -> dict[str, int]:
    return {"major": version.major, "minor": version.minor, "build": version.build}


def trustee_report_json(report: AttestationReport) -> dict[str, Any]:
    """virtee/sev's serde form of a report."""
    out: dict[str, Any] = {
        "version": report.version,
        "guest_svn": report.guest_svn,
        "policy": report.policy.to_int(),
        "family_id": list(report.family_id),
        "image_id": list(report.image_id),
        "vmpl": report.vmpl,
        "sig_algo": report.signature_algo,
        "current_tcb": _tcb_json(report.current_tcb),
        "plat_info": int(report.platform_info),
        "key_info": report.key_info.to_int(),
        "report_data": list(report.report_data),
        "measurement": list(report.measurement),
        "host_data": list(report.host_data),
        "id_key_digest": list(report.id_key_digest),
        "author_key_digest": list(report.author_key_digest),
        "report_id": list(report.report_id),
        "report_id_ma": list(report.report_id_ma),
        "reported_tcb": _tcb_json(report.reported_tcb),
        "cpuid_fam_id": report.cpuid_fam_id,
        "cpuid_mod_id": report.cpuid_mod_id,
        "cpuid_step": report.cpuid_step,
        "chip_id": list(report.chip_id),
        "committed_tcb": _tcb_json(report.committed_tcb),
        "current": _version_json(report.current_version),
        "committed": _version_json(report.committed_version),
        "launch_tcb": _tcb_json(report.launch_tcb),
    }
    if report.launch_mit_vector is not None:
        out["launch_mit_vector"] = report.launch_mit_vector
        out["current_mit_vector"] = report.current_mit_vector
    out["signature"] = {
        "r": list(report.signature.r.to_bytes(72, "little")),
        "s": list(report.signature.s.to_bytes(72, "little")),
    }
    return out


def trustee_evidence(report: bytes, certs_buf: bytes | None) -> dict[str, Any]:
    """Trustee's SNP ``primary_evidence`` for a raw report and optional certificate table."""
    try:
        parsed = AttestationReport.parse(report)
    except ValueError as exc:
        raise EvidenceError(f"report: {exc}") from exc
    chain = None
    if certs_buf is not None:
        try:
            table = parse_cert_table(certs_buf)
        except CertTableError as exc:
            raise EvidenceError(f"certs-buf: {exc}") from exc
        chain = [{"cert_type": kind.name, "data": list(der)} for kind, der in table.items()]
    return {"attestation_report": trustee_report_json(parsed), "cert_chain": chain}


# --- decoding --------------------------------------------------------------------------


def _get(obj: dict[str, Any], name: str) -> Any:
    if name not in obj:
        raise EvidenceError(f"attestation_report.{name} is missing")
    return obj[name]


def _int(value: object, name: str, bits: int) -> int:
    if type(value) is not int or not 0 <= value < 1 << bits:
        raise EvidenceError(f"{name} must be a u{bits}")
    return value


def _opt_int(value: object, name: str, bits: int) -> int | None:
    return None if value is None else _int(value, name, bits)


def _byte_list(value: object, name: str, size: int | None = None) -> bytes:
    if not isinstance(value, list) or (size is not None and len(value) != size):
        raise EvidenceError(f"{name} must be a list of {size or 'some'} bytes")
    if not all(type(b) is int and 0 <= b <= 255 for b in value):
        raise EvidenceError(f"{name} must hold integers 0..255")
    return bytes(value)


def _tcb(value: object, name: str) -> TcbVersion:
    if not isinstance(value, dict):
        raise EvidenceError(f"{name} must be an object")
    parts = {k: _int(_get(value, k), f"{name}.{k}", 8) for k in ("bootloader", "tee", "snp")}
    return TcbVersion(
        microcode=_int(_get(value, "microcode"), f"{name}.microcode", 8),
        fmc=_opt_int(value.get("fmc"), f"{name}.fmc", 8),
        **parts,
    )


def _version(value: object, name: str) -> FirmwareVersion:
    if not isinstance(value, dict):
        raise EvidenceError(f"{name} must be an object")
    return FirmwareVersion(
        *(_int(_get(value, k), f"{name}.{k}", 8) for k in ("major", "minor", "build"))
    )


def report_from_trustee_json(value: object) -> AttestationReport:
    """A report from virtee's serde form; raises :class:`EvidenceError`."""
    if not isinstance(value, dict):
        raise EvidenceError("attestation_report must be an object")
    r = value
    sig = _get(r, "signature")
    if not isinstance(sig, dict):
        raise EvidenceError("signature must be an object")
    try:
        return AttestationReport(
            version=_int(_get(r, "version"), "version", 32),
            guest_svn=_int(_get(r, "guest_svn"), "guest_svn", 32),
            policy=GuestPolicy.from_int(_int(_get(r, "policy"), "policy", 64)),
            family_id=_byte_list(_get(r, "family_id"), "family_id", 16),
            image_id=_byte_list(_get(r, "image_id"), "image_id", 16),
            vmpl=_int(_get(r, "vmpl"), "vmpl", 32),
            signature_algo=_int(_get(r, "sig_algo"), "sig_algo", 32),
            current_tcb=_tcb(_get(r, "current_tcb"), "current_tcb"),
            platform_info=PlatformInfo(_int(_get(r, "plat_info"), "plat_info", 64)),
            key_info=KeyInfo.from_int(_int(_get(r, "key_info"), "key_info", 32)),
            report_data=_byte_list(_get(r, "report_data"), "report_data", 64),
            measurement=_byte_list(_get(r, "measurement"), "measurement", 48),
            host_data=_byte_list(_get(r, "host_data"), "host_data", 32),
            id_key_digest=_byte_list(_get(r, "id_key_digest"), "id_key_digest", 48),
            author_key_digest=_byte_list(_get(r, "author_key_digest"), "author_key_digest", 48),
            report_id=_byte_list(_get(r, "report_id"), "report_id", 32),
            report_id_ma=_byte_list(_get(r, "report_id_ma"), "report_id_ma", 32),
            reported_tcb=_tcb(_get(r, "reported_tcb"), "reported_tcb"),
            cpuid_fam_id=_opt_int(r.get("cpuid_fam_id"), "cpuid_fam_id", 8),
            cpuid_mod_id=_opt_int(r.get("cpuid_mod_id"), "cpuid_mod_id", 8),
            cpuid_step=_opt_int(r.get("cpuid_step"), "cpuid_step", 8),
            chip_id=_byte_list(_get(r, "chip_id"), "chip_id", 64),
            committed_tcb=_tcb(_get(r, "committed_tcb"), "committed_tcb"),
            current_version=_version(_get(r, "current"), "current"),
            committed_version=_version(_get(r, "committed"), "committed"),
            launch_tcb=_tcb(_get(r, "launch_tcb"), "launch_tcb"),
            launch_mit_vector=_opt_int(r.get("launch_mit_vector"), "launch_mit_vector", 64),
            current_mit_vector=_opt_int(r.get("current_mit_vector"), "current_mit_vector", 64),
            signature=Signature(
                r=int.from_bytes(_byte_list(_get(sig, "r"), "signature.r", 72), "little"),
                s=int.from_bytes(_byte_list(_get(sig, "s"), "signature.s", 72), "little"),
            ),
        )
    except EvidenceError:
        raise
    except (ValueError, TypeError) as exc:
        raise EvidenceError(f"attestation_report: {exc}") from exc


#: virtee/sev's ``CertType`` unit variants that carry no certificate copra checks.
_SKIPPED_CERT_TYPES = frozenset({"Empty", "CRL"})


def _cert_chain(chain: object) -> dict[CertGuid, bytes]:
    """Trustee's ``cert_chain`` (virtee's ``Vec<CertTableEntry>`` or null) as Trustee's
    SNP verifier reads it: ARK, ASK, VCEK and VLEK are kept (the first VCEK or VLEK,
    the last ARK or ASK); ``CRL``, ``Empty`` and ``{"OTHER": "<uuid>"}`` entries are
    skipped; a ``cert_type`` virtee does not know is an error, as its deserialiser
    makes it. Every entry's ``data`` must be a byte list."""
    if chain is None:
        return {}
    if not isinstance(chain, list) or len(chain) > MAX_CERT_ENTRIES:
        raise EvidenceError(f"cert_chain must be a list of at most {MAX_CERT_ENTRIES} or null")
    out: dict[CertGuid, bytes] = {}
    for index, entry in enumerate(chain):
        if not isinstance(entry, dict):
            raise EvidenceError(f"cert_chain[{index}] must be an object")
        cert_type = entry.get("cert_type")
        data = _byte_list(entry.get("data"), f"cert_chain[{index}].data")
        if isinstance(cert_type, dict) and set(cert_type) == {"OTHER"}:
            other = cert_type["OTHER"]
            try:
                uuid.UUID(other)
            except (TypeError, ValueError, AttributeError):
                raise EvidenceError(
                    f"cert_chain[{index}].cert_type OTHER must name a UUID") from None
            continue
        if not isinstance(cert_type, str):
            raise EvidenceError(f"cert_chain[{index}].cert_type must be a string or "
                                '{"OTHER": uuid}')
        if cert_type in _SKIPPED_CERT_TYPES:
            continue
        kind = _CHAIN_KINDS.get(cert_type)
        if kind is None:
            raise EvidenceError(f"cert_chain[{index}].cert_type {cert_type!r} is not a "
                                "virtee/sev CertType")
        if kind in (CertGuid.VCEK, CertGuid.VLEK):
            out.setdefault(kind, data)
        else:
            out[kind] = data
    return out


def _b64(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise EvidenceError(f"{name} must be a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise EvidenceError(f"{name}: bad base64 ({exc})") from exc


def parse_primary_evidence(value: object) -> Evidence:
    """Decode either encoding of ``primary_evidence``; raises :class:`EvidenceError`."""
    if not isinstance(value, dict):
        raise EvidenceError("primary_evidence must be a JSON object")
    if "snp-report" in value:
        report = _b64(value["snp-report"], "snp-report")
        certs_buf = value.get("certs-buf")
        certs = {} if certs_buf is None else _cert_table(_b64(certs_buf, "certs-buf"))
        return Evidence(Binding.COCONUT, report, certs)
    if "attestation_report" in value:
        parsed = report_from_trustee_json(value["attestation_report"])
        return Evidence(Binding.TRUSTEE, parsed.to_bytes(), _cert_chain(value.get("cert_chain")))
    raise EvidenceError("primary_evidence is neither aproxy ('snp-report') nor Trustee form")
