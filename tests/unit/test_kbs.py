"""The development KBS (copra.attest.kbs) through flask's test client, with evidence from
the emulated SNP firmware: the RCAR flow, both bindings, and every refusal path."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey
from kbs_helpers import (
    AUTH,
    RESOURCE,
    SECRET,
    FakeClock,
    _attested,
    _auth,
    _body,
    _der,
    _error,
    _launch,
    refusal_of_genuine_report,
)

from copra.attest.binding import Binding
from copra.attest.jwe import EcPoint, FlattenedJwe, decrypt, unwrap_secret
from copra.attest.kbs.app import MAX_BODY, create_app
from copra.attest.kbs.broker import BrokerConfig, KbsError, KeyBroker
from copra.attest.kbs.cli import kbs
from copra.attest.kbs.policy import ResourcePolicy, parse_policy_bits, parse_product_tcb
from copra.attest.kbs.store import ReferenceValues, ResourcePath, Store, StoreError
from copra.attest.verify import Verifier, load_certificates
from copra.hw import hostfiles
from copra.hw.snp import SnpFirmware, SnpGuest
from copra.hw.snp_report import (
    AttestationReport,
    CertGuid,
    Generation,
    GuestPolicy,
    PolicyFlags,
    SigningKey,
    TcbVersion,
    build_cert_table,
)

# --- auth ------------------------------------------------------------------------------


def test_auth_valid_request_returns_32_byte_nonce_and_session_cookie(client: FlaskClient) -> None:
    response = client.post("/kbs/v0/auth", json=AUTH)
    assert response.status_code == 200
    assert len(base64.b64decode(response.json["nonce"], validate=True)) == 32
    assert response.json["extra-params"] == ""
    assert client.get_cookie("kbs-session-id") is not None


def test_auth_wrong_protocol_version_returns_401(client: FlaskClient) -> None:
    response = client.post("/kbs/v0/auth", json={**AUTH, "version": "0.3.0"})
    _error(response, 401, "ProtocolVersion")


def test_auth_non_json_body_returns_400(client: FlaskClient) -> None:
    response = client.post("/kbs/v0/auth", data=b"\xff{", content_type="application/json")
    _error(response, 400, "InvalidRequest")


def test_auth_unknown_tee_returns_400(client: FlaskClient) -> None:
    _error(client.post("/kbs/v0/auth", json={**AUTH, "tee": "svsm"}), 400, "InvalidRequest")


def test_anonymous_auth_flood_does_not_lock_out_a_guest(
    broker: KeyBroker, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    for _ in range(BrokerConfig().max_sessions + 1):  # r04: fills the whole table
        broker.auth(AUTH)
    session = broker.auth(AUTH)
    assert broker.attest(session.id, _body(chip, guest, session.nonce, key)).attested
    assert broker.counters["sessions_evicted"] == 2


def test_auth_with_full_table_evicts_the_oldest_unattested_session(
    store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any, clock: FakeClock
) -> None:
    broker = KeyBroker(store, Verifier([chip.ark]), config=BrokerConfig(max_sessions=3),
                       clock=clock)
    oldest = broker.auth(AUTH)
    attested = broker.auth(AUTH)
    broker.attest(attested.id, _body(chip, guest, attested.nonce, key))
    younger = broker.auth(AUTH)
    broker.auth(AUTH)  # the table is full: the oldest un-attested session goes
    body = _body(chip, guest, oldest.nonce, key)
    with pytest.raises(KbsError, match="unknown or expired session"):
        broker.attest(oldest.id, body)
    assert broker.resource(attested.id, None, "default", "sample", "test")
    assert not younger.nonce_used and broker.attest(
        younger.id, _body(chip, guest, younger.nonce, key)
    ).attested


def test_auth_with_table_full_of_attested_sessions_returns_503(
    store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    broker = KeyBroker(store, Verifier([chip.ark]), config=BrokerConfig(max_sessions=1))
    session = broker.auth(AUTH)
    broker.attest(session.id, _body(chip, guest, session.nonce, key))
    with pytest.raises(KbsError) as info:
        broker.auth(AUTH)
    assert (info.value.status, info.value.kind) == (503, "TooManySessions")


def test_unattested_session_expires_after_unattested_timeout(
    client: FlaskClient, clock: FakeClock, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    response = client.post("/kbs/v0/auth", json=AUTH)
    assert "Max-Age=60" in response.headers["Set-Cookie"]
    nonce = base64.b64decode(response.json["nonce"])
    clock.now += 61
    _error(
        client.post("/kbs/v0/attest", json=_body(chip, guest, nonce, key)), 401, "UnAuthenticated"
    )


def test_attested_session_lives_session_timeout_from_attestation(
    client: FlaskClient, clock: FakeClock, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    nonce = _auth(client)
    clock.now += 59
    response = client.post("/kbs/v0/attest", json=_body(chip, guest, nonce, key))
    assert "Max-Age=300" in response.headers["Set-Cookie"]
    clock.now += 299
    assert client.get(RESOURCE).status_code == 200
    clock.now += 2
    _error(client.get(RESOURCE), 401, "UnAuthenticated")


# --- attest: success -----------------------------------------------------------------


def test_attest_coconut_binding_returns_token_signed_by_kbs_key(
    client: FlaskClient, broker: KeyBroker, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    token = _attested(client, chip, guest, key)
    claims = jwt.decode(token, ECKey.import_key(broker.token_public_key)).claims
    assert claims["binding"] == "coconut"
    assert claims["measurement"] == guest.measurement.hex()
    assert EcPoint.from_jwk(claims["tee-pubkey"]) == EcPoint.from_public_key(key.public_key())


def test_resource_after_attest_decrypts_to_stored_secret(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    _attested(client, chip, guest, key)
    response = client.get(RESOURCE)
    assert response.status_code == 200
    jwe = FlattenedJwe.from_json(response.json)
    fields, ciphertext = jwe.split()
    assert unwrap_secret(key, fields, ciphertext) == SECRET


def test_attest_trustee_binding_then_resource_returns_secret(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    nonce = _auth(client)
    body = _body(chip, guest, nonce, key, binding=Binding.TRUSTEE)
    assert "attestation_report" in body["tee-evidence"]["primary_evidence"]
    assert client.post("/kbs/v0/attest", json=body).status_code == 200
    assert decrypt(key, FlattenedJwe.from_json(client.get(RESOURCE).json)) == SECRET


def test_attest_without_certs_uses_certificates_from_store(
    client: FlaskClient, store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    for kind, der in _der(chip.vcek, chip.ask).items():
        store.add_certificate(kind.value, der)
    nonce = _auth(client)
    response = client.post("/kbs/v0/attest", json=_body(chip, guest, nonce, key, certs=False))
    assert response.status_code == 200, response.json


def _decoy_vcek(chip: SnpFirmware) -> bytes:
    """A VCEK for ``chip`` (same names, extensions and hwID, signed by its ASK) with a
    key that did not sign its reports: what a KDS cache holds for an older TCB."""
    ask_key = serialization.load_pem_private_key(
        (chip.state_dir / "ask.key").read_bytes(), password=None
    )
    assert isinstance(ask_key, rsa.RSAPrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(chip.vcek.subject)
        .issuer_name(chip.vcek.issuer)
        .public_key(ec.generate_private_key(ec.SECP384R1()).public_key())
        .serial_number(1)
        .not_valid_before(chip.vcek.not_valid_before_utc)
        .not_valid_after(chip.vcek.not_valid_after_utc)
    )
    for extension in chip.vcek.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    return builder.sign(ask_key, hashes.SHA384(), rsa_padding=pss).public_bytes(Encoding.DER)


def test_attest_without_certs_tries_each_stored_vcek_of_the_chip(
    client: FlaskClient, store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    store.add_certificate("0 decoy, sorts first", _decoy_vcek(chip))
    store.add_certificate("1 vcek", chip.vcek.public_bytes(Encoding.DER))
    store.add_certificate("2 ask", chip.ask.public_bytes(Encoding.DER))
    nonce = _auth(client)
    response = client.post("/kbs/v0/attest", json=_body(chip, guest, nonce, key, certs=False))
    assert response.status_code == 200, response.json


def test_attest_vlek_report_without_certs_uses_the_stored_vlek_not_a_vcek_sorting_first(
    tmp_path: Path, key: Any
) -> None:
    vectors = Path(__file__).resolve().parents[1] / "vectors" / "snp" / "trustee"
    raw = (vectors / "test-vlek-report.bin").read_bytes()
    report = AttestationReport.parse(raw)
    assert report.key_info.signing_key is SigningKey.VLEK
    store = Store(tmp_path / "kbs.db")
    store.set_reference_values(ReferenceValues(
        measurements=frozenset({report.measurement}), allow_debug=True, vmpl=None))
    store.add_certificate("0 vcek, sorts first", (vectors / "test-vcek.der").read_bytes())  # r09
    store.add_certificate("1 vlek", (vectors / "test-vlek.der").read_bytes())
    bundle = load_certificates((vectors / "milan_ask_ark_asvk.pem").read_bytes())
    for index, cert in enumerate(bundle):
        store.add_certificate(f"2 chain {index}", cert.public_bytes(Encoding.DER))
    detail = refusal_of_genuine_report(store, raw, key)
    # genuine under the VLEK; refused only because it was not made for this session
    assert detail.startswith("ReportDataMismatch"), detail


def test_resource_with_bearer_token_and_no_cookie_returns_secret(
    client: FlaskClient, broker: KeyBroker, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    token = _attested(client, chip, guest, key)
    with create_app(broker).test_client() as fresh:
        response = fresh.get(RESOURCE, headers={"Authorization": f"Bearer {token}"})
    assert decrypt(key, FlattenedJwe.from_json(response.json)) == SECRET


# --- attest: refusals ----------------------------------------------------------------


def test_attest_wrong_measurement_returns_401_measurement_mismatch(
    client: FlaskClient, store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    store.set_reference_values(ReferenceValues(measurements=frozenset({bytes(48)})))
    nonce = _auth(client)
    response = client.post("/kbs/v0/attest", json=_body(chip, guest, nonce, key))
    assert "MeasurementMismatch" in _error(response, 401, "AttestationFailed")


def test_attest_no_reference_measurement_returns_401_policy_deny(
    client: FlaskClient, store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    store.set_reference_values(ReferenceValues())
    nonce = _auth(client)
    _error(client.post("/kbs/v0/attest", json=_body(chip, guest, nonce, key)), 401, "PolicyDeny")


def test_attest_second_attempt_in_attested_session_returns_the_same_token(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    """As Trustee answers: the old token, without appraising the body again."""
    nonce = _auth(client)
    first = client.post("/kbs/v0/attest", json=_body(chip, guest, nonce, key))
    assert first.status_code == 200
    again = client.post("/kbs/v0/attest", json={"not": "evidence"})
    assert again.status_code == 200
    assert again.json["token"] == first.json["token"]


def test_attest_failed_attempt_still_consumes_nonce(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    nonce = _auth(client)
    good = _body(chip, guest, nonce, key)
    bad = json.loads(json.dumps(good))
    bad["runtime-data"]["nonce"] = base64.b64encode(bytes(32)).decode()
    _error(client.post("/kbs/v0/attest", json=bad), 401, "InvalidNonce")
    _error(client.post("/kbs/v0/attest", json=good), 401, "ReplayedNonce")


def test_attest_recorded_evidence_in_new_session_returns_401_invalid_nonce(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    body = _body(chip, guest, _auth(client), key)
    assert client.post("/kbs/v0/attest", json=body).status_code == 200
    _auth(client)  # a new session, a new nonce
    _error(client.post("/kbs/v0/attest", json=body), 401, "InvalidNonce")


def test_attest_tampered_report_returns_401_signature_error(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    body = _body(chip, guest, _auth(client), key)
    primary = body["tee-evidence"]["primary_evidence"]
    report = bytearray(base64.b64decode(primary["snp-report"]))
    report[0x90] ^= 1  # MEASUREMENT
    primary["snp-report"] = base64.b64encode(bytes(report)).decode()
    detail = _error(client.post("/kbs/v0/attest", json=body), 401, "AttestationFailed")
    assert "SignatureError" in detail


def test_attest_report_bound_to_other_key_returns_401_report_data_mismatch(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    other = ec.generate_private_key(ec.SECP521R1())
    body = _body(chip, guest, _auth(client), key, bind_key=other)
    detail = _error(client.post("/kbs/v0/attest", json=body), 401, "AttestationFailed")
    assert "ReportDataMismatch" in detail


def test_attest_report_from_untrusted_chip_returns_401(
    store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    broker = KeyBroker(store, Verifier.with_amd_roots())
    with create_app(broker).test_client() as client:
        body = _body(chip, guest, _auth(client), key)
        detail = _error(client.post("/kbs/v0/attest", json=body), 401, "AttestationFailed")
    assert "Untrusted" in detail or "Chain" in detail


def test_attest_debug_guest_returns_401_debug_not_allowed(
    client: FlaskClient, store: Store, chip: SnpFirmware, key: Any
) -> None:
    debug = _launch(chip, b"\x90" * 8192, GuestPolicy(flags=PolicyFlags.SMT | PolicyFlags.DEBUG))
    store.set_reference_values(ReferenceValues(measurements=frozenset({debug.measurement})))
    detail = _error(
        client.post("/kbs/v0/attest", json=_body(chip, debug, _auth(client), key)),
        401,
        "AttestationFailed",
    )
    assert "DebugNotAllowed" in detail


def test_attest_debug_guest_bound_to_other_key_is_refused_for_debug_first(
    client: FlaskClient, store: Store, chip: SnpFirmware, key: Any
) -> None:
    """The order docs/attestation-protocol.md gives: the policy checks DEBUG before
    REPORT_DATA."""
    debug = _launch(chip, b"\x90" * 8192, GuestPolicy(flags=PolicyFlags.SMT | PolicyFlags.DEBUG))
    store.set_reference_values(ReferenceValues(measurements=frozenset({debug.measurement})))
    other = ec.generate_private_key(ec.SECP521R1())
    body = _body(chip, debug, _auth(client), key, bind_key=other)
    detail = _error(client.post("/kbs/v0/attest", json=body), 401, "AttestationFailed")
    assert detail.startswith("DebugNotAllowed")


def test_attest_below_minimum_tcb_returns_401_tcb_too_old(
    client: FlaskClient, store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    tcb = chip.tcb
    store.set_reference_values(
        ReferenceValues(
            measurements=frozenset({guest.measurement}),
            minimum_tcb={chip.generation: TcbVersion(
                bootloader=tcb.bootloader, tee=tcb.tee, snp=tcb.snp + 1, microcode=tcb.microcode
            )},
        )
    )
    detail = _error(
        client.post("/kbs/v0/attest", json=_body(chip, guest, _auth(client), key)),
        401,
        "AttestationFailed",
    )
    assert "TcbTooOld" in detail


def test_attest_binding_disabled_returns_401_policy_deny(
    store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    config = BrokerConfig(bindings=frozenset({Binding.COCONUT}))
    with create_app(KeyBroker(store, Verifier([chip.ark]), config=config)).test_client() as c:
        body = _body(chip, guest, _auth(c), key, binding=Binding.TRUSTEE)
        _error(c.post("/kbs/v0/attest", json=body), 401, "PolicyDeny")


def test_attest_without_session_returns_401(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    body = _body(chip, guest, bytes(32), key)
    _error(client.post("/kbs/v0/attest", json=body), 401, "UnAuthenticated")


def test_attest_after_session_timeout_returns_401(
    client: FlaskClient, clock: FakeClock, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    nonce = _auth(client)
    clock.now += 301
    _error(
        client.post("/kbs/v0/attest", json=_body(chip, guest, nonce, key)), 401, "UnAuthenticated"
    )


def test_attest_garbage_evidence_returns_400(client: FlaskClient, key: Any) -> None:
    nonce = base64.b64encode(_auth(client)).decode()
    jwk = EcPoint.from_public_key(key.public_key()).to_jwk()
    body = {
        "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
        "tee-evidence": {"primary_evidence": {"snp-report": "!!"}},
    }
    _error(client.post("/kbs/v0/attest", json=body), 400, "InvalidRequest")


def test_attest_tee_pubkey_off_curve_returns_400(client: FlaskClient) -> None:
    nonce = base64.b64encode(_auth(client)).decode()
    bad = EcPoint("P-521", bytes(66), bytes(66)).to_jwk()
    body = {"runtime-data": {"nonce": nonce, "tee-pubkey": bad}, "tee-evidence": {}}
    assert "not on" in _error(client.post("/kbs/v0/attest", json=body), 400, "InvalidRequest")


def test_attest_tee_pubkey_x_plus_field_prime_returns_400(client: FlaskClient, key: Any) -> None:
    # r15: the P-521 x coordinate + p was reduced modulo p and accepted as the same key
    nonce = base64.b64encode(_auth(client)).decode()
    point = EcPoint.from_public_key(key.public_key())
    x = int.from_bytes(point.x, "big") + (1 << 521) - 1
    jwk = {**point.to_jwk(), "x": base64.urlsafe_b64encode(x.to_bytes(66, "big")).decode()
           .rstrip("=")}
    body = {"runtime-data": {"nonce": nonce, "tee-pubkey": jwk}, "tee-evidence": {}}
    detail = _error(client.post("/kbs/v0/attest", json=body), 400, "InvalidRequest")
    assert "field prime" in detail


def test_attest_vcek_with_duplicate_extension_returns_400_and_uses_up_the_nonce(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    vcek = chip.vcek.public_bytes(Encoding.DER)
    struct_version = bytes.fromhex("06092b060104019c780101")  # OID 1.3.6.1.4.1.3704.1.1
    bad = vcek.replace(struct_version, bytes.fromhex("06092b060104019c780102"))  # r03
    good = _body(chip, guest, _auth(client), key)
    body = json.loads(json.dumps(good))
    ask = chip.ask.public_bytes(Encoding.DER)
    table = build_cert_table({CertGuid.VCEK: bad, CertGuid.ASK: ask})
    body["tee-evidence"]["primary_evidence"]["certs-buf"] = base64.b64encode(table).decode()
    detail = _error(client.post("/kbs/v0/attest", json=body), 400, "InvalidRequest")
    assert "appears twice" in detail
    _error(client.post("/kbs/v0/attest", json=good), 401, "ReplayedNonce")


FORGED_LINE = "\ncopra.kbs session deadbeef attested\x1b[2J\u202e"


def _vcek_with_issuer(cn: str) -> bytes:
    """A leaf named SEV-VCEK whose issuer's CN is ``cn``: the chain check quotes it."""
    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "SEV-VCEK")]))
        .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]))
        .public_key(ec.generate_private_key(ec.SECP384R1()).public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now.replace(year=now.year + 1))
        .sign(signer, hashes.SHA384())
    )
    return cert.public_bytes(Encoding.DER)


def test_attest_issuer_with_control_characters_is_escaped_in_detail_and_log(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # r15: the issuer went raw into the detail and the log: a newline forged a log line
    body = _body(chip, guest, _auth(client), key)
    table = build_cert_table({CertGuid.VCEK: _vcek_with_issuer("evil" + FORGED_LINE),
                              CertGuid.ASK: chip.ask.public_bytes(Encoding.DER)})
    body["tee-evidence"]["primary_evidence"]["certs-buf"] = base64.b64encode(table).decode()
    with caplog.at_level("INFO", logger="copra.kbs"):
        detail = _error(client.post("/kbs/v0/attest", json=body), 401, "AttestationFailed")
    assert detail.isprintable(), detail
    assert "evil\\ncopra.kbs session deadbeef attested\\x1b[2J\\u202e" in detail
    messages = [r.getMessage() for r in caplog.records if r.name == "copra.kbs"]
    assert any("evil\\ncopra.kbs" in m for m in messages), messages
    assert all(m.isprintable() for m in messages), messages


def test_kbs_logger_escapes_control_characters_whatever_the_call_site(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("INFO", logger="copra.kbs"):
        logging.getLogger("copra.kbs").warning("tag %s", "x" + FORGED_LINE)
    (record,) = caplog.records
    assert record.getMessage().isprintable() and "x\\ncopra.kbs" in record.getMessage()


class BrokenVerifier(Verifier):
    """A verifier with a bug: every verification raises something no check expects."""

    def verify(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the verifier")


def test_attest_unexpected_appraisal_error_raises_500_kbs_error_and_is_counted(
    store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    broker = KeyBroker(store, BrokenVerifier([chip.ark]))
    session = broker.auth(AUTH)
    with pytest.raises(KbsError) as info:
        broker.attest(session.id, _body(chip, guest, session.nonce, key))
    assert (info.value.status, info.value.kind) == (500, "InternalError")
    assert "RuntimeError" in info.value.detail and "call /auth again" in info.value.detail
    assert broker.counters["attest_internal_error"] == 1
    assert session.nonce_used


# --- resource ------------------------------------------------------------------------


def test_resource_without_session_returns_401(client: FlaskClient) -> None:
    _error(client.get(RESOURCE), 401, "UnAuthenticated")


def test_resource_before_attest_returns_403(client: FlaskClient) -> None:
    _auth(client)
    _error(client.get(RESOURCE), 403, "PolicyDeny")


def test_resource_unknown_after_attest_returns_404(
    client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    _attested(client, chip, guest, key)
    _error(client.get("/kbs/v0/resource/default/sample/missing"), 404, "ResourceNotFound")


def test_resource_with_forged_bearer_token_returns_401(client: FlaskClient) -> None:
    response = client.get(RESOURCE, headers={"Authorization": "Bearer a.b.c"})
    _error(response, 401, "TokenVerifierError")


def test_resource_with_token_after_expiry_returns_401(
    client: FlaskClient, clock: FakeClock, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    token = _attested(client, chip, guest, key)
    clock.now += 301
    response = client.get(RESOURCE, headers={"Authorization": f"Bearer {token}"})
    _error(response, 401, "TokenVerifierError")


def test_unknown_route_and_wrong_method_return_json_errors(client: FlaskClient) -> None:
    assert client.get("/kbs/v0/nothing").json["type"].endswith("/NotFound")
    assert client.get("/kbs/v0/auth").status_code == 405


def test_oversized_body_returns_413_json(client: FlaskClient) -> None:
    response = client.post("/kbs/v0/auth", data=b"x" * (2 << 20))
    assert response.status_code == 413 and "type" in response.json


# A chunked body as werkzeug's server hands it over: terminated input, no Content-Length.
CHUNKED = {"wsgi.input_terminated": True, "CONTENT_LENGTH": ""}


@pytest.mark.parametrize("size", [MAX_BODY + 1, 3 << 20])
def test_chunked_body_over_the_limit_returns_413(client: FlaskClient, size: int) -> None:
    # r04: the body used to be cut at 1 MiB and refused as bad JSON (400)
    body = io.BytesIO(b"x" * size)
    response = client.post("/kbs/v0/auth", input_stream=body, environ_overrides=CHUNKED)
    _error(response, 413, "RequestEntityTooLarge")


def test_chunked_body_of_exactly_the_limit_is_read_whole(client: FlaskClient) -> None:
    text = json.dumps(AUTH).encode()
    body = io.BytesIO(text + b" " * (MAX_BODY - len(text)))
    response = client.post("/kbs/v0/auth", input_stream=body, environ_overrides=CHUNKED)
    assert response.status_code == 200, response.json


def test_declared_body_one_byte_over_the_limit_returns_413(client: FlaskClient) -> None:
    response = client.post("/kbs/v0/auth", data=b"x" * (MAX_BODY + 1))
    _error(response, 413, "RequestEntityTooLarge")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "runtime-data",
                    "tee-evidence",
                    "nonce",
                    "tee-pubkey",
                    "primary_evidence",
                    "snp-report",
                    "attestation_report",
                    "kty",
                    "crv",
                    "x",
                    "y",
                    "init-data",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=15,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_json)
def test_attest_random_json_never_returns_500(client: FlaskClient, body: Any) -> None:
    client.post("/kbs/v0/auth", json=AUTH)
    status = client.post("/kbs/v0/attest", json=body).status_code
    assert status in (400, 401)


# --- store and CLI -------------------------------------------------------------------


@pytest.mark.parametrize("text", ["a/b", "a/../c", "a/b/c/d", "a/b/c d", "./b/c"])
def test_resource_path_parse_invalid_raises_store_error(text: str) -> None:
    with pytest.raises(StoreError):
        ResourcePath.parse(text)


def test_store_reference_values_roundtrip(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    values = ReferenceValues(
        measurements=frozenset({b"\x01" * 48}),
        minimum_tcb={Generation.GENOA: TcbVersion(bootloader=1, tee=0, snp=8, microcode=115)},
        vmpl=None,
        host_data=b"\x02" * 32,
    )
    store.set_reference_values(values)
    assert Store(tmp_path / "db").reference_values() == values


def test_store_file_is_private(tmp_path: Path) -> None:
    Store(tmp_path / "db")
    assert (tmp_path / "db").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620], ids=lambda mode: f"{mode:04o}")
def test_store_existing_db_accessible_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    Store(tmp_path / "db")
    (tmp_path / "db").chmod(mode)
    with pytest.raises(StoreError, match=f"mode {mode:04o}.*chmod 600"):
        Store(tmp_path / "db")


def test_store_db_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # r15: a 0600 database another user had prepared (in a directory both could write)
    # was opened; mode bits alone cannot tell
    Store(tmp_path / "db")
    owner = (tmp_path / "db").stat().st_uid
    monkeypatch.setattr(hostfiles.os, "geteuid", lambda: owner + 4242)
    with pytest.raises(StoreError, match="not by the effective user"):
        Store(tmp_path / "db")


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777], ids=lambda mode: f"{mode:04o}")
def test_store_in_a_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    # r15: in /tmp (1777) another user can plant the file or a journal before the broker
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(StoreError, match="writable by group or others"):
        Store(shared / "db")
    assert not (shared / "db").exists()


def test_store_db_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "real.db")
    (tmp_path / "db").symlink_to(tmp_path / "real.db")
    with pytest.raises(StoreError, match="symbolic link"):
        Store(tmp_path / "db")


def test_store_db_created_by_another_process_meanwhile_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(tmp_path / "db").set_resource(ResourcePath("a", "b", "c"), b"kept")
    # the other process won the race: the file did not exist when we looked, now it does
    monkeypatch.setattr(Path, "exists", lambda self: False)
    assert Store(tmp_path / "db").get_resource(ResourcePath("a", "b", "c")) == b"kept"


def test_store_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    with pytest.raises(StoreError, match="not a regular file"):
        Store(tmp_path / "db")


def test_cli_with_db_readable_by_others_fails_with_the_reason(tmp_path: Path) -> None:
    Store(tmp_path / "db")
    (tmp_path / "db").chmod(0o644)
    result = CliRunner().invoke(kbs, ["--db", str(tmp_path / "db"), "list-resources"])
    assert result.exit_code == 1 and "chmod 600" in result.output


def test_cli_set_resource_and_reference_are_visible_in_store(tmp_path: Path) -> None:
    db = str(tmp_path / "kbs.db")
    (tmp_path / "s.bin").write_bytes(SECRET)
    runner = CliRunner()
    result = runner.invoke(
        kbs, ["--db", db, "set-resource", "default/sample/test", str(tmp_path / "s.bin")]
    )
    assert result.exit_code == 0, result.output
    assert SECRET.decode() not in result.output
    result = runner.invoke(
        kbs,
        [
            "--db",
            db,
            "set-reference",
            "--measurement",
            "ab" * 48,
            "--min-tcb",
            "Milan:bootloader=4,tee=0,snp=24,microcode=219",
        ],
    )
    assert result.exit_code == 0, result.output
    store = Store(db)
    assert store.get_resource(ResourcePath.parse("default/sample/test")) == SECRET
    assert store.reference_values().measurements == {bytes.fromhex("ab" * 48)}
    assert store.reference_values().minimum_tcb == {
        Generation.MILAN: TcbVersion(bootloader=4, tee=0, snp=24, microcode=219)}


@pytest.mark.parametrize(
    "spelling", ["bl=4,tee=0,snp=24,ucode=219", "bootloader=4,tee=0,snp=24,microcode=219"]
)
def test_cli_set_reference_min_tcb_accepts_both_component_spellings(
    tmp_path: Path, spelling: str
) -> None:
    db = str(tmp_path / "kbs.db")
    result = CliRunner().invoke(
        kbs, ["--db", db, "set-reference", "--measurement", "ab" * 48,
              "--min-tcb", f"genoa:{spelling}"]
    )
    assert result.exit_code == 0, result.output
    assert Store(db).reference_values().minimum_tcb == {
        Generation.GENOA: TcbVersion(bootloader=4, tee=0, snp=24, microcode=219)}


def test_cli_set_reference_bad_min_tcb_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        kbs,
        ["--db", str(tmp_path / "db"), "set-reference", "--measurement", "ab" * 48,
         "--min-tcb", "Milan:bl=4,tee=0,snp=24"],
    )
    assert result.exit_code == 2 and "missing microcode" in result.output


def test_cli_set_reference_short_measurement_fails(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        kbs, ["--db", str(tmp_path / "db"), "set-reference", "--measurement", "abcd"]
    )
    assert result.exit_code != 0 and "48 bytes" in result.output


def test_cli_add_cert_stores_chip_chain(tmp_path: Path, chip: SnpFirmware) -> None:
    db = str(tmp_path / "db")
    result = CliRunner().invoke(
        kbs,
        ["--db", db, "add-cert", str(chip.state_dir / "vcek.pem"), str(chip.state_dir / "ask.pem")],
    )
    assert result.exit_code == 0, result.output
    assert len(Store(db).certificates()) == 2


# --- resource policy by measurement (r15) -------------------------------------------


@pytest.fixture(scope="module")
def guest_b(chip: SnpFirmware) -> SnpGuest:
    """Another workload on the same chip: another measurement."""
    return _launch(chip, b"\xcc" * 8192)


@pytest.fixture
def two_workloads(store: Store, guest: SnpGuest, guest_b: SnpGuest) -> Store:
    """Both workloads pass attestation; each has a key only it may read."""
    store.set_reference_values(
        ReferenceValues(measurements=frozenset({guest.measurement, guest_b.measurement})))
    store.set_resource(ResourcePath("default", "b", "key"), b"workload B's key",
                       ResourcePolicy(measurements=frozenset({guest_b.measurement})))
    return store


def test_resource_of_another_workload_returns_403_by_cookie_and_by_token(
    client: FlaskClient, broker: KeyBroker, two_workloads: Store, chip: SnpFirmware,
    guest_b: SnpGuest, key: Any,
) -> None:
    # r15: any attested session read every resource: B read A's key
    token = _attested(client, chip, guest_b, key)
    detail = _error(client.get(RESOURCE), 403, "PolicyDeny")
    assert f"measurement {guest_b.measurement.hex()[:16]}... may not read" in detail
    with create_app(broker).test_client() as fresh:
        response = fresh.get(RESOURCE, headers={"Authorization": f"Bearer {token}"})
        _error(response, 403, "PolicyDeny")
        own = fresh.get("/kbs/v0/resource/default/b/key",
                        headers={"Authorization": f"Bearer {token}"})
    assert decrypt(key, FlattenedJwe.from_json(own.json)) == b"workload B's key"


def test_resource_of_one_workload_is_released_to_it_and_not_to_the_other(
    client: FlaskClient, two_workloads: Store, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    _attested(client, chip, guest, key)
    assert decrypt(key, FlattenedJwe.from_json(client.get(RESOURCE).json)) == SECRET
    _error(client.get("/kbs/v0/resource/default/b/key"), 403, "PolicyDeny")


def test_resource_without_policy_returns_403(
    client: FlaskClient, store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    store.set_resource(ResourcePath("default", "no", "policy"), b"x")
    _attested(client, chip, guest, key)
    detail = _error(client.get("/kbs/v0/resource/default/no/policy"), 403, "PolicyDeny")
    assert "has no policy" in detail


def test_resource_policy_bits_the_report_lacks_return_403(
    client: FlaskClient, store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    mask, value = parse_policy_bits(("single_socket=1", "debug=0"))
    store.set_policy(ResourcePath("default", "sample", "test"), ResourcePolicy(
        measurements=frozenset({guest.measurement}), policy_mask=mask, policy_value=value))
    _attested(client, chip, guest, key)
    detail = _error(client.get(RESOURCE), 403, "PolicyDeny")
    assert "does not have single_socket=1,debug=0" in detail or "debug=0,single_socket=1" in detail


@pytest.mark.parametrize("raise_by", [0, 1])
def test_resource_minimum_tcb_of_the_report_product_is_checked(
    client: FlaskClient, store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any,
    raise_by: int,
) -> None:
    tcb = chip.tcb
    minimum = TcbVersion(bootloader=tcb.bootloader, tee=tcb.tee, snp=tcb.snp + raise_by,
                         microcode=tcb.microcode)
    store.set_policy(ResourcePath("default", "sample", "test"), ResourcePolicy(
        measurements=frozenset({guest.measurement}), minimum_tcb={chip.generation: minimum}))
    _attested(client, chip, guest, key)
    if raise_by:
        assert "below the Milan minimum" in _error(client.get(RESOURCE), 403, "PolicyDeny")
    else:
        assert client.get(RESOURCE).status_code == 200


def test_resource_minimum_tcb_for_other_products_only_refuses_this_product(
    client: FlaskClient, store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    # TCB numbers are not comparable across generations: a Genoa minimum says nothing of
    # a Milan report, which is then refused rather than compared
    genoa = TcbVersion(bootloader=0, tee=0, snp=0, microcode=0)
    store.set_policy(ResourcePath("default", "sample", "test"), ResourcePolicy(
        measurements=frozenset({guest.measurement}), minimum_tcb={Generation.GENOA: genoa}))
    _attested(client, chip, guest, key)
    detail = _error(client.get(RESOURCE), 403, "PolicyDeny")
    assert "no minimum TCB is configured for Milan (only for Genoa)" in detail


def test_attest_with_reference_minimum_tcb_for_another_product_only_is_refused(
    client: FlaskClient, store: Store, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    store.set_reference_values(ReferenceValues(
        measurements=frozenset({guest.measurement}),
        minimum_tcb={Generation.TURIN: TcbVersion(fmc=0, bootloader=0, tee=0, snp=0,
                                                  microcode=0)}))
    detail = _error(client.post("/kbs/v0/attest", json=_body(chip, guest, _auth(client), key)),
                    401, "AttestationFailed")
    assert "no minimum TCB is configured for Milan" in detail


def test_token_carries_the_product_and_what_policies_check(
    client: FlaskClient, broker: KeyBroker, chip: SnpFirmware, guest: SnpGuest, key: Any
) -> None:
    claims = jwt.decode(_attested(client, chip, guest, key),
                        ECKey.import_key(broker.token_public_key)).claims
    assert claims["product"] == "Milan"
    assert {"measurement", "policy", "reported_tcb"} <= set(claims)


@pytest.mark.parametrize(
    ("text", "error"),
    [("bl=1,tee=0,snp=1,ucode=1", "PRODUCT:COMPONENTS"),
     ("Rome:bl=1,tee=0,snp=1,ucode=1", "unknown product"),
     ("Turin:bl=1,tee=0,snp=1,ucode=1", "needs fmc"),
     ("Milan:bl=1,tee=0,snp=1,ucode=1,fmc=1", "has no fmc")],
)
def test_parse_product_tcb_refuses_a_tcb_without_product_or_of_the_wrong_layout(
    text: str, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        parse_product_tcb(text)


_V1_SCHEMA = """
CREATE TABLE resources (repository TEXT NOT NULL, type TEXT NOT NULL, tag TEXT NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (repository, type, tag));
CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE certificates (fingerprint TEXT PRIMARY KEY, der BLOB NOT NULL);
PRAGMA user_version = 1;
"""


def _v1_store(path: Path, measurements: list[str], tcb: dict[str, int] | None) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    db = sqlite3.connect(path)
    db.executescript(_V1_SCHEMA)
    db.execute("INSERT INTO resources VALUES ('default', 'sample', 'test', ?)", (SECRET,))
    values = {"measurements": measurements, "minimum_tcb": tcb, "allow_debug": False,
              "vmpl": 0, "host_data": None}
    db.execute("INSERT INTO settings VALUES ('reference_values', ?)", (json.dumps(values),))
    db.commit()
    db.close()


def test_store_schema_1_migrates_resources_to_the_reference_measurements(tmp_path: Path) -> None:
    _v1_store(tmp_path / "db", ["ab" * 48], {"bootloader": 4, "tee": 0, "snp": 24,
                                            "microcode": 219})
    store = Store(tmp_path / "db")
    policy = store.policy(ResourcePath("default", "sample", "test"))
    assert policy == ResourcePolicy(measurements=frozenset({bytes.fromhex("ab" * 48)}))
    old = TcbVersion(bootloader=4, tee=0, snp=24, microcode=219)
    assert store.reference_values().minimum_tcb == {Generation.MILAN: old, Generation.GENOA: old}
    assert store.get_resource(ResourcePath("default", "sample", "test")) == SECRET
    with contextlib.closing(sqlite3.connect(tmp_path / "db")) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


def test_store_schema_1_without_reference_measurements_leaves_resources_without_policy(
    tmp_path: Path,
) -> None:
    _v1_store(tmp_path / "db", [], None)
    assert Store(tmp_path / "db").policy(ResourcePath("default", "sample", "test")) is None


def test_store_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "db")
    with contextlib.closing(sqlite3.connect(tmp_path / "db")) as db:
        db.execute("PRAGMA user_version = 3")
    with pytest.raises(StoreError, match="schema version 3"):
        Store(tmp_path / "db")


def test_cli_set_resource_with_measurement_then_set_policy_and_show_it(tmp_path: Path) -> None:
    db = str(tmp_path / "kbs.db")
    (tmp_path / "s.bin").write_bytes(SECRET)
    runner = CliRunner()
    result = runner.invoke(kbs, ["--db", db, "set-resource", "a/b/c", str(tmp_path / "s.bin"),
                                 "--measurement", "ab" * 48])
    assert result.exit_code == 0 and "1 measurement(s)" in result.output, result.output
    result = runner.invoke(kbs, ["--db", db, "set-policy", "a/b/c", "--measurement", "cd" * 48,
                                 "--measurement", "ef" * 48, "--policy-bit", "debug=0",
                                 "--min-tcb", "Turin:fmc=1,bl=2,tee=3,snp=4,ucode=5"])
    assert result.exit_code == 0, result.output
    shown = json.loads(runner.invoke(kbs, ["--db", db, "show-policy", "a/b/c"]).output)
    assert shown["measurements"] == ["cd" * 48, "ef" * 48]
    assert shown["minimum_tcb"] == {"Turin": {"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4,
                                              "microcode": 5}}
    listed = runner.invoke(kbs, ["--db", db, "list-resources"]).output
    assert "a/b/c\t35\t2 measurement(s); policy debug=0; minimum TCB for Turin" in listed


def test_cli_set_resource_without_measurement_says_it_is_released_to_no_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "s.bin").write_bytes(SECRET)
    result = CliRunner().invoke(kbs, ["--db", str(tmp_path / "db"), "set-resource", "a/b/c",
                                      str(tmp_path / "s.bin")])
    assert result.exit_code == 0 and "released to no one" in result.output


def test_cli_set_policy_of_missing_resource_fails(tmp_path: Path) -> None:
    Store(tmp_path / "db")
    result = CliRunner().invoke(kbs, ["--db", str(tmp_path / "db"), "set-policy", "a/b/c",
                                      "--measurement", "ab" * 48])
    assert result.exit_code == 1 and "no resource a/b/c" in result.output
