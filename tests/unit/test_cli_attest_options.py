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


def test_chip_opens_existing_chip_and_prints_its_ark(tmp_path: Path) -> None:
    from copra.hw.snp import SnpFirmware

    chip = SnpFirmware.create(tmp_path / "chip", key_size=2048)
    result = CliRunner().invoke(main, ["chip", "--snp-state", str(chip.state_dir)])
    assert result.exit_code == 0, result.output
    assert result.output == f"{chip.state_dir / 'ark.pem'}\n"


def test_chip_creates_missing_chip_at_amd_key_size(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from copra.hw.snp import SnpFirmware

    result = CliRunner().invoke(main, ["chip", "--snp-state", str(tmp_path / "new")])
    assert result.exit_code == 0, result.output
    ark = SnpFirmware.open(tmp_path / "new").ark.public_key()
    assert isinstance(ark, rsa.RSAPublicKey) and ark.key_size == 4096


def test_chip_reports_corrupt_state_without_replacing_it(tmp_path: Path) -> None:
    (tmp_path / "chip.json").write_text("{}")
    result = CliRunner().invoke(main, ["chip", "--snp-state", str(tmp_path)])
    assert result.exit_code == 1
    assert "is unusable" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["chip.json"]
