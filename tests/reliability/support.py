"""What the reliability tests share: the installed `rk`, a user's environment, bounded waits,
and looking at processes and files on a test host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path


from tests.waiting import wait_until  # noqa: F401  (re-exported for the suite)
RK = str(Path(sys.executable).with_name("rk"))
SYSTEM_PYTHON = "/usr/bin/python3"  # the "python" image's interpreter, with Debian's ipykernel

# PID 1 of a host whose sshd may be killed: sshd runs as a daemon beside a reaper that never
# forks (so pid numbers move only when a test makes them move), and can be started again.
REAPER = ("import os, time\n"
          "while True:\n"
          "    try:\n"
          "        os.wait()\n"
          "    except ChildProcessError:\n"
          "        time.sleep(1)\n")
SSHD_BESIDE_A_REAPER = (
    "--entrypoint",
    json.dumps(["/bin/sh", "-c", "mkdir -p /run/sshd && /usr/sbin/sshd && exec python3 -c \"$0\"", REAPER]),
)


def new_home() -> Path:
    """A fresh HOME with XDG and Jupyter dirs, as conftest gives each test (short, for sockets)."""
    return Path(tempfile.mkdtemp(prefix="rk-home-"))


def user_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, HOME=str(home), NO_COLOR="1")
    for name, sub in [("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share"),
                      ("XDG_STATE_HOME", ".local/state"), ("XDG_CACHE_HOME", ".cache"),
                      ("JUPYTER_RUNTIME_DIR", ".local/share/jupyter/runtime")]:
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(home / sub)
    return env


def rk(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([RK, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def rk_json(env: dict, *args: str, expect: int = 0) -> dict:
    result = rk(env, *args, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == expect, result.stderr[-3000:] + result.stdout[-3000:]
    return json.loads(result.stdout)


def by_host(doc: dict) -> dict[str, dict]:
    return {h["host"]: h for h in doc["hosts"]}


def kernels_of(doc: dict, host: str = "h1") -> dict[str, dict]:
    return {k["name"]: k for k in by_host(doc)[host]["kernels"]}


def processes(host, user: str = "rk") -> dict[int, str]:
    """{pid: args} of the user's live processes on the host (zombies left out)."""
    out = host.exec(f"ps -u {user} -o pid=,stat=,args=", check=False).stdout
    found = {}
    for line in out.splitlines():
        pid, state, args = (line.split(None, 2) + [""])[:3]
        if not state.startswith("Z"):
            found[int(pid)] = args
    return found


def kernel_pids(host, name: str | None = None) -> list[int]:
    """Pids of kernels on the host (of kernel `name` when given: its state dir is on the argv)."""
    return sorted(pid for pid, args in processes(host).items()
                  if "ipykernel_launcher" in args and (name is None or f"/{name}/kernel.json" in args))


def alive_on(host, pid: int) -> bool:
    state = host.exec(f"ps -o stat= -p {pid}", check=False).stdout.strip()
    return bool(state) and not state.startswith("Z")


def rk_within(env: dict, limit: float, *args: str) -> subprocess.CompletedProcess | None:
    """Run rk; None when it has not finished after `limit` s (then it and its children are killed)."""
    proc = subprocess.Popen([RK, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def local_files(kernel: dict) -> list[Path]:
    """The kernel's connection files on this machine: the tunnel file, and the fetched one when kept."""
    return [Path(kernel[k]) for k in ("local_file", "tunnel_file") if kernel.get(k)]
