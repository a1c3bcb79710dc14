"""Helpers shared by the key broker's tests (their fixtures are in conftest.py): the
RCAR requests a guest sends through the proxy, from evidence of the emulated chip."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from flask.testing import FlaskClient

from copra.attest.aproxy import attestation_body
from copra.attest.binding import PARAMS, Binding
from copra.attest.binding import report_data as svsm_report_data
from copra.attest.evidence import coconut_evidence
from copra.attest.jwe import EcPoint
from copra.attest.kbs.broker import KbsError, KeyBroker
from copra.attest.kbs.store import Store
from copra.attest.protocol import AttestationRequest, PublicKeyBytes, SnpEvidence, Tee
from copra.attest.verify import Verifier
from copra.hw.snp import SnpFirmware, SnpGuest
from copra.hw.snp_report import CertGuid, GuestPolicy, build_cert_table

SECRET = b"cocoonfs root key: 0123456789abcdef"
RESOURCE = "/kbs/v0/resource/default/sample/test"
AUTH = {"version": "0.4.0", "tee": "snp", "extra-params": ""}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _launch(chip: SnpFirmware, image: bytes, policy: GuestPolicy | None = None) -> SnpGuest:
    guest = chip.launch_start(policy=policy)
    guest.launch_update(0x100000, image)
    guest.launch_finish()
    return guest


def _der(*certs: Any) -> dict[CertGuid, bytes]:
    kinds = (CertGuid.VCEK, CertGuid.ASK, CertGuid.ARK)
    return {k: c.public_bytes(Encoding.DER) for k, c in zip(kinds, certs, strict=False)}


def _auth(client: FlaskClient) -> bytes:
    response = client.post("/kbs/v0/auth", json=AUTH)
    assert response.status_code == 200, response.json
    return base64.b64decode(response.json["nonce"])


def _body(
    chip: SnpFirmware,
    guest: SnpGuest,
    nonce: bytes,
    key: ec.EllipticCurvePrivateKey,
    *,
    binding: Binding = Binding.COCONUT,
    certs: bool = True,
    bind_key: ec.EllipticCurvePrivateKey | None = None,
) -> dict[str, Any]:
    """What the proxy sends for an SVSM that did everything right (unless told otherwise)."""
    sent = EcPoint.from_public_key(key.public_key())
    bound = EcPoint.from_public_key((bind_key or key).public_key())
    report = guest.get_report(svsm_report_data(PARAMS[binding], nonce, bound), 0)
    table = build_cert_table(_der(chip.vcek, chip.ask)) if certs else None
    request = AttestationRequest(
        Tee.SNP, SnpEvidence(report, table), nonce, PublicKeyBytes(sent.x, sent.y)
    )
    return attestation_body(binding, request)


def _attested(client: FlaskClient, chip: SnpFirmware, guest: SnpGuest, key: Any) -> str:
    nonce = _auth(client)
    response = client.post("/kbs/v0/attest", json=_body(chip, guest, nonce, key))
    assert response.status_code == 200, response.json
    return str(response.json["token"])


def _error(response: Any, status: int, kind: str) -> str:
    assert response.status_code == status, response.json
    assert response.json["type"].endswith("/" + kind)
    return str(response.json["detail"])


def refusal_of_genuine_report(store: Store, raw: bytes, key: Any) -> str:
    """The detail of the broker's refusal of a genuine AMD report (``raw``, made for
    another session) attested with ``key`` in a fresh session, verified against AMD's
    roots on 2025-06-01 with what ``store`` holds."""
    verifier = Verifier.with_amd_roots(clock=lambda: datetime(2025, 6, 1, tzinfo=UTC))
    broker = KeyBroker(store, verifier)
    session = broker.auth(AUTH)
    body = {
        "runtime-data": {"nonce": session.nonce_b64,
                         "tee-pubkey": EcPoint.from_public_key(key.public_key()).to_jwk()},
        "tee-evidence": {"primary_evidence": coconut_evidence(raw, None),
                         "additional_evidence": ""},
    }
    with pytest.raises(KbsError) as info:
        broker.attest(session.id, body)
    return info.value.detail
