"""Fixtures of the key broker's tests (tests/unit/test_kbs*.py): one emulated chip and
guest for the session, a fresh store, broker, fake clock and flask client per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient
from kbs_helpers import SECRET, FakeClock, _launch

from copra.attest.kbs.app import create_app
from copra.attest.kbs.broker import KeyBroker
from copra.attest.kbs.policy import ResourcePolicy
from copra.attest.kbs.store import ReferenceValues, ResourcePath, Store
from copra.attest.verify import Verifier
from copra.hw.snp import SnpFirmware, SnpGuest


@pytest.fixture(scope="session")
def chip(tmp_path_factory: pytest.TempPathFactory) -> SnpFirmware:
    return SnpFirmware.create(tmp_path_factory.mktemp("snp") / "chip", key_size=2048)


@pytest.fixture(scope="session")
def guest(chip: SnpFirmware) -> SnpGuest:
    return _launch(chip, b"\x90" * 8192)


@pytest.fixture
def store(tmp_path: Path, guest: SnpGuest) -> Store:
    store = Store(tmp_path / "kbs.db")
    store.set_reference_values(ReferenceValues(measurements=frozenset({guest.measurement})))
    store.set_resource(ResourcePath("default", "sample", "test"), SECRET,
                       ResourcePolicy(measurements=frozenset({guest.measurement})))
    return store


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(store: Store, chip: SnpFirmware, clock: FakeClock) -> KeyBroker:
    return KeyBroker(store, Verifier([chip.ark]), clock=clock)


@pytest.fixture
def client(broker: KeyBroker) -> Iterator[FlaskClient]:
    with create_app(broker).test_client() as client:
        yield client


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP521R1())
