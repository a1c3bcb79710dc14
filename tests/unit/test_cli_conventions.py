"""Command-line conventions: -h everywhere, help without required options, read-only
commands that create nothing, and start-up checks that name the path or URL at fault."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from copra.cli import main


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _command_paths(command, (*prefix, name))


COMMANDS = [(), *_command_paths(main)]


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "copra")
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_command_prints_help_for_h_and_help_without_other_options(
    path: tuple[str, ...], flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COPRA_KBS_DB", raising=False)
    result = CliRunner().invoke(main, [*path, flag])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")


def test_kbs_subcommand_without_db_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COPRA_KBS_DB", raising=False)
    result = CliRunner().invoke(main, ["kbs", "list-resources"])
    assert result.exit_code == 2
    assert "Missing option '--db'" in result.output


@pytest.mark.parametrize("args", [
    ["list-resources"], ["show-reference"], ["show-policy", "default/sample/test"],
    ["delete-resource", "default/sample/test"],
    ["set-policy", "default/sample/test", "--measurement", "00" * 48]])
def test_kbs_command_on_a_missing_store_fails_and_creates_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    db = tmp_path / "state" / "kbs.db"
    result = CliRunner().invoke(main, ["kbs", "--db", str(db), *args])
    assert result.exit_code == 1
    assert f"{db}: no such store" in result.output
    assert not (tmp_path / "state").exists()


def test_kbs_set_reference_creates_the_store(tmp_path: Path) -> None:
    db = tmp_path / "kbs.db"
    result = CliRunner().invoke(main, ["kbs", "--db", str(db), "set-reference",
                                       "--measurement", "00" * 48])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(main, ["kbs", "--db", str(db), "show-reference"]).exit_code == 0


# --- copra aproxy checks what it was given before its socket exists -------------------------


def _aproxy(*args: str) -> click.testing.Result:
    return CliRunner().invoke(main, ["aproxy", "--broker-wait", "0", *args])


def test_aproxy_socket_in_a_missing_directory_names_it(tmp_path: Path) -> None:
    result = _aproxy("--socket", str(tmp_path / "no" / "a.sock"), "--url", "http://127.0.0.1:1")
    assert result.exit_code == 1
    assert f"the socket's directory {tmp_path / 'no'} does not exist" in result.output


def test_aproxy_socket_under_a_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = _aproxy("--socket", str(tmp_path / "file" / "a.sock"), "--url", "http://h:1")
    assert result.exit_code == 1
    assert f"{tmp_path / 'file'} is not a directory" in result.output


def test_aproxy_socket_path_too_long_for_af_unix_names_it(tmp_path: Path) -> None:
    path = tmp_path / ("s" * 120)
    result = _aproxy("--socket", str(path), "--url", "http://127.0.0.1:1")
    assert result.exit_code == 1
    assert f"socket path {path} is" in result.output and "at most 107" in result.output


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://h/", "http://", "http://u:p@h:1",
                                 "http://h:1/?x=1", "http://h:99999", "http://h:0"])
def test_aproxy_bad_url_names_it_and_creates_no_socket(tmp_path: Path, url: str) -> None:
    result = _aproxy("--socket", str(tmp_path / "a.sock"), "--url", url)
    assert result.exit_code == 1
    assert f"--url {url!r}" in result.output
    assert not (tmp_path / "a.sock").exists()


def test_aproxy_bad_metrics_address_is_a_usage_error(tmp_path: Path) -> None:
    result = _aproxy("--socket", str(tmp_path / "a.sock"), "--url", "http://h:1",
                     "--metrics", "nowhere")
    assert result.exit_code == 2
    assert "--metrics" in result.output
