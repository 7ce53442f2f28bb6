"""What a person at a terminal sees: progress, Ctrl-C. On localhost, so no container is needed."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

RK = str(Path(sys.executable).with_name("rk"))
PYTHON = sys.executable  # the test venv has ipykernel


def rk(*args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([RK, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def kernel_pids() -> set[int]:
    """ipykernel processes started under this test's HOME (conftest gives each test its own)."""
    home = os.environ["HOME"]
    pids = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "ipykernel_launcher" in cmdline and home in cmdline:
            pids.add(int(proc.name))
    return pids


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal():
    result = rk("status", "--host", "localhost")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("rk: [localhost] ") for line in lines), result.stderr
    assert "\r" not in result.stderr
    assert result.stdout.startswith("HOST")


def test_off_a_terminal_up_prints_one_line_per_phase_with_the_elapsed_time_not_task_names():
    try:
        result = rk("up", "--host", "localhost", "--python", PYTHON, "--name", "phases")
        assert result.returncode == 0, result.stderr
        lines = result.stderr.splitlines()
        phases = [re.fullmatch(r"rk: \[localhost\] (.+) \((\d+\.\d) s\)", line) for line in lines]
        assert all(phases), result.stderr  # nothing but phase lines: no "Validating arguments ..."
        assert [m[1] for m in phases] == ["provisioning Python", "starting the kernel", "fetching the connection file"]
        elapsed = [float(m[2]) for m in phases]
        assert elapsed == sorted(elapsed)
        verbose = rk("up", "--host", "localhost", "--python", PYTHON, "--name", "phases", "-v")
        assert "Take the kernel's state" in verbose.stderr  # task names: with -v, from Ansible
    finally:
        rk("stop", "--host", "localhost", "--name", "phases")


def test_progress_is_one_redrawn_line_on_a_terminal():
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([RK, "status", "--host", "localhost"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(controller)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert b"\r" in seen and b"localhost: " in seen
    assert b"\nrk: [localhost]" not in seen  # no plain lines on a terminal
    assert out.startswith(b"HOST")  # the result still goes to stdout


def test_ctrl_c_during_up_leaves_nothing_unnoticed():
    proc = subprocess.Popen([RK, "up", "--host", "localhost", "--python", PYTHON, "--name", "interrupted"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        for line in proc.stderr:  # wait until the kernel is being started, then press Ctrl-C
            if "starting the kernel" in line or time.monotonic() > deadline:
                break
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        proc.communicate(timeout=60)
        assert proc.returncode == 130

        status = json.loads(rk("status", "--host", "localhost", "--json").stdout)
        listed = {k["pid"] for h in status["hosts"] for k in h["kernels"] if k.get("state") == "alive"}
        assert listed == kernel_pids(), "a running kernel that rk status does not show"
    finally:
        if proc.poll() is None:
            proc.kill()
        rk("stop", "--host", "localhost", "--all")
    assert kernel_pids() == set()


def test_in_a_checkout_status_shows_the_localhost_kernel_just_started_and_nothing_imaginary(tmp_path):
    """The README's first commands, run where ./inventory/ is this repository's example inventory."""
    checkout = tmp_path / "checkout"
    shutil.copytree(Path(__file__).parents[2] / "inventory", checkout / "inventory")

    def rk_here(*args):
        return subprocess.run([RK, *args], capture_output=True, text=True, timeout=180,
                              stdin=subprocess.DEVNULL, cwd=checkout)

    try:
        assert rk_here("up", "--host", "localhost", "--python", PYTHON).returncode == 0
        status = rk_here("status", "--json")
        assert status.returncode == 0, status.stderr
        hosts = json.loads(status.stdout)["hosts"]
        assert [h["host"] for h in hosts] == ["localhost"]
        assert [(k["name"], k["state"]) for k in hosts[0]["kernels"]] == [("default", "alive")]
    finally:
        rk_here("stop", "--host", "localhost")
