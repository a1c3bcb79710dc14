"""`copra run`'s attestation options and the command set, checked before anything boots."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from copra.cli import default_snp_state, main


@pytest.mark.parametrize("option", [["--persist", "s.bin"], ["--aproxy", "a.sock"],
                                    ["--snp-state", "chip"]])
def test_run_attestation_option_without_attest_is_a_usage_error(option: list[str]) -> None:
    result = CliRunner().invoke(main, ["run", *option])
    assert result.exit_code == 2
    assert "need --attest" in result.output


def test_run_attest_without_proxy_socket_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["run", "--attest"])
    assert result.exit_code == 2
    assert "--aproxy" in result.output


def test_run_attest_rejects_unknown_mode() -> None:
    result = CliRunner().invoke(main, ["run", "--attest=always", "--aproxy", "a.sock"])
    assert result.exit_code == 2


def test_default_snp_state_follows_xdg_state_home(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_snp_state() == tmp_path / "copra" / "snp"


def test_default_snp_state_ignores_relative_xdg_state_home(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")  # the XDG spec says: ignore it
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_snp_state() == tmp_path / ".local" / "state" / "copra" / "snp"


def test_main_registers_every_command_group() -> None:
    assert {"run", "measure", "attest", "aproxy", "kbs"} <= set(main.commands)
