"""End to end through the real command line: `copra run` as a user types it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from copra.kernel.image import demo_config_path, packaged_program

#: The shipped images: `--init IMAGES/init.elf` boots default.json (init, hello).
IMAGES = demo_config_path().parent


def copra(*args: str, timeout: float = 60,
          stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`copra *args` with standard input /dev/null, or a pipe carrying ``stdin``."""
    if stdin is None:
        return subprocess.run([sys.executable, "-m", "copra", *args], capture_output=True,
                              stdin=subprocess.DEVNULL, text=True, timeout=timeout,
                              check=False)
    return subprocess.run([sys.executable, "-m", "copra", *args], capture_output=True,
                          input=stdin, text=True, timeout=timeout, check=False)


def test_copra_run_init_boots_default_image_and_exits_zero() -> None:
    out = copra("run", "--init", str(IMAGES / "init.elf"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("[kernel] copra ")
    assert "[init] copra init starting" in lines
    assert "[hello] Hello from a copra service" in lines
    assert lines[-1].startswith("[kernel] init exited with 0")


def test_copra_run_custom_init_with_extra_file(tmp_path: Path) -> None:
    prog = tmp_path / "bench.elf"
    prog.write_bytes(packaged_program("syscall-bench"))
    n = tmp_path / "n.txt"
    n.write_text("10\n")
    out = copra("run", "--init", str(prog), "--file", f"{n}=/etc/bench.n")
    assert out.returncode == 0, out.stdout + out.stderr


def test_copra_run_timeout_stops_endless_loop_with_clear_message(tmp_path: Path) -> None:
    prog = tmp_path / "loop.elf"
    prog.write_bytes(packaged_program("fault-loop"))
    out = copra("run", "--init", str(prog), "--timeout", "0.5")
    assert out.returncode == 124
    assert "timeout" in out.stderr
    assert "Traceback" not in out.stderr


def test_copra_run_faulting_init_exits_192_plus_vector(tmp_path: Path) -> None:
    prog = tmp_path / "ud.elf"
    prog.write_bytes(packaged_program("fault-ud"))
    out = copra("run", "--init", str(prog))
    assert out.returncode == 192 + 6  # not 134, which reads as SIGABRT
    assert "killed: #UD" in out.stdout


def test_copra_run_rejects_non_elf_init_in_one_line(tmp_path: Path) -> None:
    prog = tmp_path / "bad.elf"
    prog.write_bytes(b"#!/bin/sh\necho hi\n")
    out = copra("run", "--init", str(prog))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1



def test_copra_run_without_an_init_in_the_image_exits_126(tmp_path: Path) -> None:
    config = tmp_path / "noinit.json"
    config.write_text('{"version": 1, "fs": {"modules": {"hello": {"path": "/bin/hello"}}}}')
    out = copra("run", "--config", str(config))
    assert out.returncode == 126, out.stdout + out.stderr
    assert out.stderr.strip().splitlines() == [
        "copra: cannot start /init: ENOTFOUND: /init: not found"]


def test_copra_run_interrupted_by_ctrl_c_exits_130_with_summary(tmp_path: Path) -> None:
    prog = tmp_path / "loop.elf"
    prog.write_bytes(packaged_program("fault-loop"))
    with subprocess.Popen([sys.executable, "-m", "copra", "run", "--init", str(prog)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None and child.stderr is not None
        for line in iter(child.stdout.readline, ""):  # the run has started once init is
            if line.startswith("[kernel] started /init"):
                break
        child.send_signal(signal.SIGINT)
        child.wait(timeout=60)
        stdout, stderr = child.stdout.read(), child.stderr.read()
    assert child.returncode == 130, stdout + stderr
    assert "[kernel] interrupted; still running: init (pid 2)" in stdout.splitlines()
    assert stderr.strip().splitlines() == ["copra: interrupted"]


def test_copra_run_applies_the_limits_of_the_image_config(tmp_path: Path) -> None:
    prog = tmp_path / "probe.elf"
    prog.write_bytes(packaged_program("limit-probe"))
    config = tmp_path / "image.json"
    config.write_text(json.dumps({
        "fs": {"modules": {"limit-probe": {"path": "/bin/limit-probe"}},
               "files": [{"path": "/etc/probe.conf", "text": "children"},
                         {"path": "/spin/etc/probe.conf", "text": "spin"}]},
        "limits": {"children": 2},
    }))
    out = copra("run", "--config", str(config), "--init", str(prog))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[init] started 2 then EAGAIN" in out.stdout.splitlines()


def test_copra_run_with_a_frame_limit_too_small_for_init_fails_in_one_line(
        tmp_path: Path) -> None:
    config = tmp_path / "image.json"
    config.write_text(json.dumps({"fs": {"modules": {"init": {"path": "/init"}}},
                                  "limits": {"frames": 4}}))
    out = copra("run", "--config", str(config))
    assert out.returncode == 126
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("copra: cannot start /init: ENOMEM: ")
    assert "limit of 4 frames" in line


def test_copra_run_takes_the_metadata_budget_from_the_image_config(tmp_path: Path) -> None:
    config = tmp_path / "image.json"
    config.write_text(json.dumps({
        "fs": {"modules": {"init": {"path": "/init"}, "hello": {"path": "/bin/hello"}},
               "files": [{"path": "/etc/init.services", "text": "/bin/hello\n"}]},
        "limits": {"metadata": 200_000},
    }))
    out = copra("run", "--config", str(config))
    assert out.returncode == 0, out.stdout + out.stderr
    assert any(line.startswith("[kernel] RAM fs:") and line.endswith(" of 200000 host bytes")
               for line in out.stdout.splitlines()), out.stdout


def test_copra_run_init_on_two_cpus_boots_default_image_and_says_so() -> None:
    out = copra("run", "--init", str(IMAGES / "init.elf"), "--cpus", "2")
    assert out.returncode == 0, out.stderr
    assert "2 CPUs" in out.stdout.splitlines()[0]
    assert "[hello] Hello from a copra service" in out.stdout


def test_copra_run_alone_boots_the_demo_every_device_model_a_process() -> None:
    before = datetime.now(UTC).date()
    out = copra("run")
    after = datetime.now(UTC).date()
    # The demo guest ends with (0x15 << 1) | 1 = 43, the status /etc/vmm.expect names:
    # the vmm service calls that success.
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert ("[init] vmm: the guest ended with status 43, the one /etc/vmm.expect expects: "
            "success") in lines
    assert "[uart] demo: console on TX-empty interrupts" in lines
    assert "[uart] demo: bye" in lines
    assert "[blk] demo: 3 requests served (2 sectors read, 1 written)" in lines
    assert any(re.fullmatch(r"\[init\] vmm: demo: COM1 is task \d+ \(/bin/uart\)", line)
               for line in lines), out.stdout
    assert any(re.fullmatch(r"\[init\] vmm: demo: the RTC is task \d+ \(/bin/rtc\)", line)
               for line in lines), out.stdout
    # The guest read the RTC, whose wall clock is the host's (the boot's /etc/clock):
    # today's UTC date (or the next, across midnight), a valid time of day.
    dates = [m for line in lines
             if (m := re.fullmatch(r"\[uart\] demo: rtc: (\d{4}-\d\d-\d\d) "
                                   r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d", line))]
    assert len(dates) == 1, out.stdout
    assert dates[0][1] in {before.isoformat(), after.isoformat()}, out.stdout
    assert "[uart] demo: rtc: 4 periodic interrupts at 8 Hz" in lines
    # every line says which process wrote it
    assert all(re.match(r"\[(kernel|init|uart|blk|rtc)\] ", line) for line in lines), out.stdout
    # stdin is /dev/null: no console input, the guest takes none and goes on
    assert not any("input:" in line for line in lines), out.stdout


def test_copra_run_demo_echoes_a_line_piped_to_stdin_through_the_uart_model() -> None:
    out = copra("run", stdin="hello from the host\nnot this\n")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    # the line reached VM 0's uart process and the guest's receive interrupt, in order
    assert lines.index("[uart] demo: input: hello from the host") < lines.index(
        "[uart] demo: bye"), out.stdout
    assert not any("not this" in line for line in lines), out.stdout


def test_copra_run_demo_with_an_empty_pipe_on_stdin_takes_no_input_and_succeeds() -> None:
    out = copra("run", stdin="")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "[uart] demo: bye" in lines
    assert not any("input:" in line for line in lines), out.stdout


def test_copra_run_demo_whose_block_process_dies_runs_on_and_keeps_the_archives_clock(
        tmp_path: Path) -> None:
    conf = tmp_path / "vmm.conf"
    conf.write_text("crash blk 1\n")  # the guest's first block device access, unanswered
    clock = tmp_path / "clock"
    clock.write_text("4102444770000000000\n")  # 2099-12-31 23:59:30 UTC at the RTC's start
    out = copra("run", "--file", f"{conf}=/etc/vmm.conf", "--file", f"{clock}=/etc/clock")
    assert out.returncode == 0, out.stdout + out.stderr  # the guest still ends with 43
    lines = out.stdout.splitlines()
    # the boot leaves an archive's /etc/clock alone: the RTC shows its time
    assert "[rtc] demo: 2099-12-31 23:59:30 UTC" in lines, out.stdout
    assert any(re.fullmatch(r"\[uart\] demo: rtc: 2099-12-31 23:59:[3-5]\d", line)
               for line in lines), out.stdout
    assert "[uart] demo: block: no device (its ports read all ones)" in lines
    assert "[uart] demo: bye" in lines
    assert not any(line.startswith("[blk] ") for line in lines), out.stdout
    assert any(line.startswith("[init] vmm: demo: device model /bin/blk (task ") and
               "killed by #UD" in line for line in lines), out.stdout


@pytest.mark.parametrize("access", [40, 400])  # during the polled line; in interrupt mode
def test_copra_run_demo_whose_uart_process_dies_ends_with_the_guests_status(
        tmp_path: Path, access: int) -> None:
    # The guest's console model dies: its ports read all ones (no TX-empty or receive
    # interrupt ever again); the guest's timer-driven backup feeds THR, its receive
    # waits give up, and it still ends with 43 instead of sleeping forever.
    conf = tmp_path / "vmm.conf"
    conf.write_text(f"crash uart {access}\n")
    out = copra("run", "--file", f"{conf}=/etc/vmm.conf")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("[init] vmm: demo: device model /bin/uart (task ") and
               "killed by #UD" in line for line in lines), out.stdout
    assert "[init] vmm: the guest ended with status 43, the one /etc/vmm.expect expects: " \
           "success" in lines, out.stdout
    assert "[uart] demo: bye" not in lines  # its output after the death went nowhere


def test_copra_run_refuses_more_cpus_than_the_layout_has() -> None:
    out = copra("run", "--cpus", "9")
    assert out.returncode == 2
    assert "--cpus" in out.stderr and "Traceback" not in out.stderr
