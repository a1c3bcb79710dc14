"""The key broker against what Trustee's KBS accepts and refuses (kbs/src/attestation,
kbs-types, deps/verifier/src/snp): one test per case that docs/attestation-protocol.md
lists under "Where copra's broker differs from Trustee", plus the cases where it now
matches. Evidence comes from the emulated chip through the proxy's encoders."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from flask.testing import FlaskClient
from kbs_helpers import (
    AUTH,
    RESOURCE,
    SECRET,
    _auth,
    _body,
    _der,
    _error,
    refusal_of_genuine_report,
)

from copra.attest.aproxy import attestation_body
from copra.attest.binding import Binding, jcs, trustee_runtime_data
from copra.attest.jwe import EcPoint, FlattenedJwe, b64url_encode, decrypt
from copra.attest.kbs.store import ReferenceValues, Store
from copra.attest.protocol import AttestationRequest, PublicKeyBytes, SnpEvidence, Tee
from copra.attest.verify import load_certificates
from copra.hw.snp import SnpFirmware, SnpGuest
from copra.hw.snp_report import AttestationReport, CertGuid, build_cert_table

# --- REPORT_DATA: the tee-pubkey as Trustee re-serialises it ----------------------------


def test_attest_trustee_binding_key_with_kid_bound_as_trustee_does_returns_200(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    """The report binds {kty, crv, alg, x, y} (what Trustee hashes); the key arrives
    with a kid, which Trustee drops before hashing, and so does copra."""
    body = _body(chip, guest, _auth(client), key, binding=Binding.TRUSTEE)
    body["runtime-data"]["tee-pubkey"]["kid"] = "svsm-ephemeral"
    assert client.post("/kbs/v0/attest", json=body).status_code == 200


def test_attest_trustee_binding_report_bound_over_the_key_as_received_returns_401(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    nonce = _auth(client)
    point = EcPoint.from_public_key(key.public_key())
    runtime = trustee_runtime_data(nonce, point)
    runtime["tee-pubkey"]["kid"] = "svsm-ephemeral"
    as_received = hashlib.sha384(jcs({**runtime, "additional-evidence": ""})).digest()
    report = guest.get_report(as_received + bytes(16), 0)
    request = AttestationRequest(Tee.SNP, SnpEvidence(report, build_cert_table(
        _der(chip.vcek, chip.ask))), nonce, PublicKeyBytes(point.x, point.y))
    body = attestation_body(Binding.TRUSTEE, request)
    body["runtime-data"] = runtime
    detail = _error(client.post("/kbs/v0/attest", json=body), 401, "AttestationFailed")
    assert detail.startswith("ReportDataMismatch")


# --- evidence Trustee accepts is accepted ------------------------------------------------


def _trustee_body(client: FlaskClient, chip: SnpFirmware, guest: SnpGuest,
                  key: Any) -> dict[str, Any]:
    return _body(chip, guest, _auth(client), key, binding=Binding.TRUSTEE)


def test_attest_cert_chain_entry_of_other_guid_is_skipped(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    body = _trustee_body(client, chip, guest, key)
    other = {"cert_type": {"OTHER": str(uuid.uuid4())}, "data": [0x30, 0x00]}
    body["tee-evidence"]["primary_evidence"]["cert_chain"].insert(0, other)
    assert client.post("/kbs/v0/attest", json=body).status_code == 200


def test_attest_cert_chain_empty_and_crl_entries_are_ignored(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    body = _trustee_body(client, chip, guest, key)
    chain = body["tee-evidence"]["primary_evidence"]["cert_chain"]
    chain += [{"cert_type": "CRL", "data": list(b"not a certificate")},
              {"cert_type": "Empty", "data": []}]
    assert client.post("/kbs/v0/attest", json=body).status_code == 200


def test_attest_certs_buf_with_crl_entry_is_accepted(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    body = _body(chip, guest, _auth(client), key)
    certs = _der(chip.vcek, chip.ask) | {CertGuid.CRL: b"0\x03\x02\x01\x00 not a CRL either"}
    body["tee-evidence"]["primary_evidence"]["certs-buf"] = base64.b64encode(
        build_cert_table(certs)).decode()
    assert client.post("/kbs/v0/attest", json=body).status_code == 200


def test_attest_cert_chain_unknown_cert_type_returns_400(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    """virtee's CertType has no such variant: Trustee's deserialiser refuses it too."""
    body = _trustee_body(client, chip, guest, key)
    body["tee-evidence"]["primary_evidence"]["cert_chain"].append(
        {"cert_type": "VCEK2", "data": [1]})
    detail = _error(client.post("/kbs/v0/attest", json=body), 400, "InvalidRequest")
    assert "VCEK2" in detail


def test_attest_cert_chain_other_without_uuid_returns_400(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    body = _trustee_body(client, chip, guest, key)
    body["tee-evidence"]["primary_evidence"]["cert_chain"].append(
        {"cert_type": {"OTHER": "not-a-uuid"}, "data": [1]})
    _error(client.post("/kbs/v0/attest", json=body), 400, "InvalidRequest")


@pytest.mark.parametrize("version", ["0.4.0", "0.4.0+build.7", "0.4.0+20260801.sha-1f2e"])
def test_auth_version_matching_semver_eq_0_4_0_returns_200(
    client: FlaskClient, version: str
) -> None:
    assert client.post("/kbs/v0/auth", json={**AUTH, "version": version}).status_code == 200


@pytest.mark.parametrize(
    "version", ["0.4.0-rc.1", "0.4.1", "0.3.0", "0.4", "00.4.0", "v0.4.0", " 0.4.0", "0.4.0+",
                "0.4.0\n"])
def test_auth_version_not_matching_semver_eq_0_4_0_returns_401(
    client: FlaskClient, version: str
) -> None:
    _error(client.post("/kbs/v0/auth", json={**AUTH, "version": version}), 401,
           "ProtocolVersion")


@pytest.mark.parametrize("tee", ["tdx", "sgx", "az-snp-vtpm", "sample"])
def test_auth_other_kbs_types_tee_returns_a_challenge_and_attest_returns_401(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any, tee: str
) -> None:
    """Trustee issues a challenge for every TEE kbs-types knows; copra appraises only SNP
    evidence, so the session's /attest is refused as an appraisal failure."""
    response = client.post("/kbs/v0/auth", json={**AUTH, "tee": tee})
    assert response.status_code == 200
    nonce = base64.b64decode(response.json["nonce"])
    detail = _error(client.post("/kbs/v0/attest", json=_body(chip, guest, nonce, key)), 401,
                    "AttestationFailed")
    assert f"tee {tee!r}" in detail


def test_auth_without_extra_params_returns_400(client: FlaskClient) -> None:
    body = {"version": "0.4.0", "tee": "snp"}
    assert "extra-params" in _error(client.post("/kbs/v0/auth", json=body), 400,
                                    "InvalidRequest")


@pytest.mark.parametrize("extra", ["", {"supported-hash-algorithms": ["sha384"]}, None])
def test_auth_with_any_extra_params_returns_200(client: FlaskClient, extra: object) -> None:
    assert client.post("/kbs/v0/auth", json={**AUTH, "extra-params": extra}).status_code == 200


def test_attest_without_additional_evidence_returns_400(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    body = _body(chip, guest, _auth(client), key)
    del body["tee-evidence"]["additional_evidence"]
    assert "additional_evidence" in _error(client.post("/kbs/v0/attest", json=body), 400,
                                           "InvalidRequest")


def test_attest_with_additional_evidence_returns_401(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    body = _body(chip, guest, _auth(client), key)
    body["tee-evidence"]["additional_evidence"] = json.dumps({"nvidia": {"evidence": 1}})
    detail = _error(client.post("/kbs/v0/attest", json=body), 401, "AttestationFailed")
    assert "no verifier for secondary devices" in detail


def test_attest_tee_pubkey_without_alg_returns_400(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    body = _body(chip, guest, _auth(client), key)
    del body["runtime-data"]["tee-pubkey"]["alg"]
    assert "no alg" in _error(client.post("/kbs/v0/attest", json=body), 400, "InvalidRequest")


def test_attest_p384_tee_pubkey_is_accepted_and_the_resource_decrypts(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest
) -> None:
    """Trustee would attest it but fail the resource (its JWE has P-256 and P-521 only);
    copra encrypts on P-384 too."""
    key = ec.generate_private_key(ec.SECP384R1())
    body = _body(chip, guest, _auth(client), key)
    assert body["runtime-data"]["tee-pubkey"]["crv"] == "P-384"
    assert client.post("/kbs/v0/attest", json=body).status_code == 200
    response = client.get(RESOURCE)
    assert decrypt(key, FlattenedJwe.from_json(response.json)) == SECRET


def test_attest_rsa_tee_pubkey_returns_400(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    """Trustee accepts RSA-OAEP-256 and RSA1_5 keys; the proxy protocol cannot carry an
    RSA-wrapped secret to an SVSM, so copra refuses them before any appraisal."""
    body = _body(chip, guest, _auth(client), key)
    numbers = rsa.generate_private_key(65537, 2048).public_key().public_numbers()
    body["runtime-data"]["tee-pubkey"] = {
        "kty": "RSA", "alg": "RSA-OAEP-256",
        "n": b64url_encode(numbers.n.to_bytes(256, "big")), "e": b64url_encode(b"\x01\x00\x01"),
    }
    assert "RSA" in _error(client.post("/kbs/v0/attest", json=body), 400, "InvalidRequest")


def test_attest_failed_attempt_then_second_attempt_returns_401_replayed_nonce(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    """Trustee appraises a retry with the same nonce; copra's nonce is used up by the
    first attempt, whatever its outcome."""
    nonce = _auth(client)
    good = _body(chip, guest, nonce, key)
    bad = json.loads(json.dumps(good))
    bad["tee-evidence"]["additional_evidence"] = "{}"
    _error(client.post("/kbs/v0/attest", json=bad), 401, "AttestationFailed")
    _error(client.post("/kbs/v0/attest", json=good), 401, "ReplayedNonce")


def test_resource_bad_token_answers_trustees_error_type(client: FlaskClient) -> None:
    response = client.get(RESOURCE, headers={"Authorization": "Bearer not.a.token"})
    assert response.json["type"] == (
        "https://github.com/confidential-containers/kbs/errors/TokenVerifierError")


def test_attest_init_data_returns_400(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    """Trustee compares HOST_DATA with the init-data digest; copra does not implement
    init-data and refuses it rather than ignore it."""
    body = _body(chip, guest, _auth(client), key)
    body["init-data"] = {"format": "toml", "body": "algorithm = \"sha384\""}
    assert "init-data" in _error(client.post("/kbs/v0/attest", json=body), 400,
                                 "InvalidRequest")


def test_attest_version_2_report_is_appraised_not_refused_for_its_version(
    tmp_path: Path, key: Any
) -> None:
    """Trustee refuses reports below version 3 (it reads the CPU generation from them);
    copra takes the generation from the VCEK, so a genuine Milan v2 report verifies and
    is refused only because it was not made for this session."""
    vectors = Path(__file__).resolve().parents[1] / "vectors" / "snp" / "trustee"
    raw = (vectors / "test-report.bin").read_bytes()
    report = AttestationReport.parse(raw)
    assert report.version == 2
    store = Store(tmp_path / "kbs.db")
    store.set_reference_values(ReferenceValues(measurements=frozenset({report.measurement})))
    store.add_certificate("vcek", (vectors / "test-vcek.der").read_bytes())
    for index, cert in enumerate(load_certificates((vectors / "milan_ask_ark_asvk.pem")
                                                   .read_bytes())):
        store.add_certificate(f"chain {index}", cert.public_bytes(Encoding.DER))
    detail = refusal_of_genuine_report(store, raw, key)
    assert detail.startswith("ReportDataMismatch"), detail
