"""`copra run` where KVM is unusable: one clear line, no traceback (runs on every machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def copra(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "copra", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_copra_run_without_usable_kvm_says_why_in_one_line(tmp_path: Path) -> None:
    out = copra("run", "--kvm-device", str(tmp_path / "no-kvm"))
    assert out.returncode == 125
    assert out.stderr.strip().splitlines() == [
        f"copra: {tmp_path / 'no-kvm'} does not exist (no KVM on this machine)"]


def test_copra_run_with_a_non_kvm_device_says_why_in_one_line() -> None:
    out = copra("run", "--kvm-device", "/dev/null")
    assert out.returncode == 125
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "/dev/null" in lines[0]


def test_kvm_tiers_skip_with_the_reason_when_kvm_is_unusable(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         str(root / "tests" / "kvm")],
        capture_output=True, text=True, timeout=120, check=False, cwd=root,
        env={**os.environ, "COPRA_TEST_KVM_DEVICE": str(tmp_path / "none")},
    )
    assert out.returncode == 0, out.stdout
    assert "passed" not in out.stdout.splitlines()[-1]
    assert "needs a usable /dev/kvm" in out.stdout
    assert "does not exist" in out.stdout
