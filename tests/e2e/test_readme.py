"""The README's attested-boot recipe, run as written, twice, in a temporary directory.

The block is read from README.md itself (the first ``sh`` block of "Attested boot with
persistent state") and run by bash in an empty directory where ``src`` leads to this
checkout's sources and ``copra`` on PATH runs this checkout. Only the broker's port is
changed, to one that is free. The second run must find the first run's state: the
secret is not replaced and ``persist-demo`` counts ``boot 2``. Nothing any command
printed (the broker's and the proxy's logs included, none of them on a terminal) may
carry an escape sequence.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"### Attested boot with persistent state\n.*?```sh\n(.*?)```", re.S)


def readme_block() -> str:
    match = BLOCK.search((REPO / "README.md").read_text(encoding="utf-8"))
    assert match is not None, "README.md has no attested-boot sh block"
    return match.group(1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def workdir() -> Iterator[Path]:
    # short: the proxy's socket lives in it, and AF_UNIX paths are at most 107 bytes
    top = Path(tempfile.mkdtemp(prefix="copra-readme-"))
    (top / "src").symlink_to(REPO / "src")
    bin_dir = top / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "copra"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m copra "$@"\n')
    wrapper.chmod(0o755)
    try:
        yield top
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=False)


def _run(block: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{cwd / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(REPO / "src")}
    env.pop("COPRA_KBS_DB", None)
    process = subprocess.Popen(["bash", "-c", block], cwd=cwd, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = process.communicate(timeout=120)
    finally:  # whatever failed, leave no broker or proxy running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, "")


def test_readme_attested_boot_block_runs_twice_and_counts_two_boots(workdir: Path) -> None:
    block = readme_block()
    assert "127.0.0.1:8080" in block
    block = block.replace("127.0.0.1:8080", f"127.0.0.1:{_free_port()}")
    first = _run(block, workdir)
    assert "[init] persist-demo: boot 1" in first.stdout, first.stdout
    demo = workdir / "attest-demo"
    assert stat.S_IMODE(demo.stat().st_mode) == 0o700
    secret = (demo / "secret.bin").read_bytes()
    assert len(secret) == 32
    assert not (demo / "aproxy.sock").exists()  # the proxy removed it when stopped
    second = _run(block, workdir)
    assert "[init] persist-demo: boot 2" in second.stdout, second.stdout
    assert (demo / "secret.bin").read_bytes() == secret
    assert "\x1b" not in first.stdout + second.stdout
