"""`copra run`'s statistics and logging options, where they are refused before a boot."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from copra.cli import main


def test_run_quiet_and_verbose_together_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["run", "-q", "-v"])
    assert result.exit_code == 2
    assert "-q and -v" in result.output


def test_run_trace_to_an_unwritable_path_fails_naming_it_before_booting(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "trace.json"
    result = CliRunner().invoke(main, ["run", "--trace", str(target)])
    assert result.exit_code == 1
    assert str(target) in result.output
    assert "[kernel]" not in result.output  # nothing booted


def test_run_negative_trace_limit_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["run", "--trace-limit", "-1"])
    assert result.exit_code == 2
