"""The controller side where /proc is missing (macOS has none): rk's commands run in a mount
namespace with /proc unmounted, for real; the test watches them from outside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernels import execute
from tests.waiting import wait_until

pytestmark = pytest.mark.hosts

RK = str(Path(sys.executable).with_name("rk"))
SYSTEM_PYTHON = "/usr/bin/python3"
NO_PROC = ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'umount -l /proc && exec "$@"', "sh"]


def rk_without_proc(*args) -> dict:
    result = subprocess.run([*NO_PROC, RK, *args, "--json"], capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def supervisor_pid() -> int | None:
    states = list((Path(os.environ["XDG_STATE_HOME"]) / "rk" / "tunnels").glob("*.json"))
    return json.loads(states[0].read_text())["pid"] if states else None


def running(pid: int) -> bool:
    """Seen from outside the namespace, where /proc is there."""
    try:
        return b"rk.tunnel" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_without_proc_a_tunnel_is_seen_alive_reused_and_stopped(make_hosts):
    assert subprocess.run([*NO_PROC, "test", "!", "-e", "/proc/self"]).returncode == 0  # the premise
    group = make_hosts(n=1, image="python")
    inv = str(group.inventory)
    try:
        (kernel,) = rk_without_proc("up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON)["hosts"][0]["kernels"]
        pid = supervisor_pid()
        assert pid and running(pid)

        (seen,) = rk_without_proc("status", "-i", inv, "--host", "h1")["hosts"][0]["kernels"]
        assert seen["tunnel"] == "up"  # not "down": the supervisor is not taken for dead
        rk_without_proc("tunnel", "-i", inv, "--host", "h1")
        assert supervisor_pid() == pid and running(pid)  # reused, not started again
        assert execute(Path(kernel["tunnel_file"]), "print(6 * 7)").strip() == "42"

        rk_without_proc("tunnel", "-i", inv, "--host", "h1", "--stop")
        wait_until(lambda: not running(pid), "the supervisor has stopped", 15)
    finally:
        subprocess.run([RK, "stop", "-i", inv, "--all"], capture_output=True, timeout=300)
