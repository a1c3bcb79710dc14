"""Fixtures of the KVM tier."""

from __future__ import annotations

import pytest
from guest_kernels import build


@pytest.fixture(scope="session")
def guest_kernels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The test guest kernels (user/guests), built once for the session."""
    return build(tmp_path_factory.mktemp("guests"))
