"""copra.attest.evidence: Trustee (virtee serde) and aproxy evidence forms, cert tables."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.attest.binding import Binding
from copra.attest.evidence import (
    EvidenceError,
    coconut_evidence,
    parse_primary_evidence,
    trustee_evidence,
)
from copra.hw.snp_report import CertGuid, build_cert_table

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "snp"
E2E = VECTORS / "trustee" / "e2e-evidence.json"
needs_vectors = pytest.mark.skipif(not E2E.exists(), reason="tests/vectors/snp not present")


@needs_vectors
def test_parse_primary_evidence_trustee_e2e_vector_rebuilds_raw_report() -> None:
    evidence = parse_primary_evidence(json.loads(E2E.read_text()))
    raw = (VECTORS / "derived" / "genoa_v3_report_from_e2e-evidence.bin").read_bytes()
    vcek = (VECTORS / "derived" / "genoa_vcek_from_e2e-evidence.der").read_bytes()
    assert evidence.binding is Binding.TRUSTEE
    assert evidence.report == raw
    assert evidence.certificates == {CertGuid.VCEK: vcek}


@needs_vectors
def test_trustee_evidence_from_raw_report_equals_trustee_e2e_json() -> None:
    raw = (VECTORS / "derived" / "genoa_v3_report_from_e2e-evidence.bin").read_bytes()
    vcek = (VECTORS / "derived" / "genoa_vcek_from_e2e-evidence.der").read_bytes()
    built = trustee_evidence(raw, build_cert_table({CertGuid.VCEK: vcek}))
    assert built == json.loads(E2E.read_text())


def test_parse_primary_evidence_aproxy_form_selects_coconut_binding() -> None:
    table = build_cert_table({CertGuid.VCEK: b"vcek", CertGuid.ASK: b"ask"})
    evidence = parse_primary_evidence(coconut_evidence(b"report", table))
    assert evidence.binding is Binding.COCONUT
    assert evidence.report == b"report"
    assert evidence.certificates == {CertGuid.VCEK: b"vcek", CertGuid.ASK: b"ask"}


def test_parse_primary_evidence_aproxy_form_without_certs_has_none() -> None:
    assert parse_primary_evidence(coconut_evidence(b"r", None)).certificates == {}


def test_parse_primary_evidence_unknown_form_raises_evidence_error() -> None:
    with pytest.raises(EvidenceError, match="neither"):
        parse_primary_evidence({"report": "AA=="})


@needs_vectors
def test_parse_primary_evidence_trustee_byte_out_of_range_raises_evidence_error() -> None:
    doc = json.loads(E2E.read_text())
    doc["attestation_report"]["measurement"][0] = 256
    with pytest.raises(EvidenceError, match="measurement"):
        parse_primary_evidence(doc)


def _certs(table: bytes) -> dict[CertGuid, bytes]:
    return parse_primary_evidence(coconut_evidence(b"report", table)).certificates


def test_certs_buf_unterminated_raises_evidence_error() -> None:
    entry = CertGuid.VCEK.guid.bytes + (0).to_bytes(4, "little") + (8).to_bytes(4, "little")
    with pytest.raises(EvidenceError, match=r"certs-buf: .*terminating"):
        _certs(entry)


def test_certs_buf_entry_past_end_raises_evidence_error() -> None:
    table = bytearray(build_cert_table({CertGuid.VCEK: b"xyz"}))
    table[20:24] = (1000).to_bytes(4, "little")
    with pytest.raises(EvidenceError, match="out of bounds"):
        _certs(bytes(table))


def test_certs_buf_empty_entry_raises_evidence_error() -> None:
    # the firmware's codec always refused an empty blob; the broker's used to take it
    table = bytearray(build_cert_table({CertGuid.VCEK: b"xyz"}))
    table[20:24] = bytes(4)
    with pytest.raises(EvidenceError, match="empty"):
        _certs(bytes(table))


@needs_vectors
def test_trustee_cert_chain_kinds_are_cert_guid_member_names() -> None:
    raw = (VECTORS / "derived" / "genoa_v3_report_from_e2e-evidence.bin").read_bytes()
    table = build_cert_table({CertGuid.VCEK: b"v", CertGuid.CRL: b"c"})
    chain = trustee_evidence(raw, table)["cert_chain"]
    assert [entry["cert_type"] for entry in chain] == ["VCEK", "CRL"]  # virtee's names
    # decoded as Trustee's SNP verifier reads it: the CRL is not used
    assert parse_primary_evidence({**trustee_evidence(raw, table)}).certificates == {
        CertGuid.VCEK: b"v"}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_certs_buf_random_bytes_only_raise_evidence_error(data: bytes) -> None:
    with contextlib.suppress(EvidenceError):
        _certs(data)


def test_cert_table_codec_and_guids_have_one_home() -> None:
    src = Path(__file__).resolve().parents[2] / "src" / "copra"
    texts = {p: p.read_text() for p in src.rglob("*.py")}
    homes = [p.name for p, t in texts.items() if "def parse_cert_table" in t]
    guids = [p.name for p, t in texts.items() if "63da758d-e664-4564-adc5-f4b93be8accd" in t]
    assert homes == guids == ["snp_report.py"]


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 300) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "snp-report",
                    "certs-buf",
                    "attestation_report",
                    "cert_chain",
                    "version",
                    "signature",
                    "r",
                    "s",
                    "cert_type",
                    "data",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_parse_primary_evidence_random_json_only_raises_evidence_error(value: Any) -> None:
    with contextlib.suppress(EvidenceError):
        parse_primary_evidence(value)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_parse_primary_evidence_random_certs_buf_only_raises_evidence_error(data: bytes) -> None:
    doc = {"snp-report": "AA==", "certs-buf": base64.b64encode(data).decode()}
    with contextlib.suppress(EvidenceError):
        parse_primary_evidence(doc)


@needs_vectors
def test_trustee_evidence_genuine_milan_v2_report_roundtrips_through_json() -> None:
    raw = (VECTORS / "trustee" / "test-report.bin").read_bytes()
    doc = trustee_evidence(raw, None)
    assert doc["attestation_report"]["cpuid_fam_id"] is None  # v2 has no CPUID fields
    assert parse_primary_evidence(json.loads(json.dumps(doc))).report == raw
