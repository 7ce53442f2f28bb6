"""Logout killers (issue 6, case 22): a host whose systemd-logind kills a user's processes when
their session ends (`KillUserProcesses=yes`, the "systemd" image with systemd as PID 1, logind
and sshd sessions registered by pam_systemd).

Without linger, `rk up` refuses with the fix in its hint and starts nothing; with linger, the
kernel runs in a scope of the user's own systemd, outlives the end of every SSH session of the
user, still executes code, and `rk stop` stops it. One host for the module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernels import execute
from tests.reliability.support import (SYSTEM_PYTHON, alive_on, by_host, kernel_pids, kernels_of,
                                       rk_json, wait_until)


@pytest.fixture(scope="module")
def group(module_hosts):
    return module_hosts(n=1, image="systemd", systemd=True)


def up(env, inv, name, expect=0) -> dict:
    return rk_json(env, "up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON, "--name", name,
                   expect=expect)


def sessions_of_rk(host) -> set[str]:
    listed = host.exec("loginctl list-sessions --no-legend").stdout.splitlines()
    return {line.split()[0] for line in listed if line.split()[2:3] == ["rk"]}


def scopes_stopped(host, sessions: set[str]) -> bool:
    """Whether systemd has begun to stop the sessions' scopes: the moment it signals every
    process in them (KillUserProcesses). A scope gone altogether reads "inactive"."""
    units = " ".join(f"session-{s}.scope" for s in sorted(sessions))
    return "active" not in host.exec(f"systemctl show -p ActiveState --value {units}").stdout.split()


def log_out(host) -> None:
    """End every SSH connection of user rk (rk's persistent one, the tunnel's), as a logout
    or a dropped network does, and wait until logind has had their scopes stopped."""
    before = sessions_of_rk(host)
    assert before, "expected rk's SSH sessions to be logind sessions"
    host.exec("pkill -TERM -u rk -x sshd")
    # Not "until the sessions are gone": here a stopped scope stays "deactivating" until its
    # stop timeout (the container's systemd on cgroup v1 never hears that it emptied).
    # rk's tunnel reconnects at once in a new session: only the old ones count.
    wait_until(lambda: scopes_stopped(host, before), "logind had rk's session scopes stopped")


def test_the_host_kills_a_users_processes_at_logout(host):
    """The premise: what a kernel started the old way (setsid, no systemd) would meet."""
    host.ssh("setsid -f sleep 1022 </dev/null >/dev/null 2>&1")
    wait_until(lambda: "sleep 1022" not in host.exec("ps -u rk -o args=").stdout,
               "logind killed the setsid process when its session ended")


def test_without_linger_up_refuses_naming_the_fix_and_starts_nothing(host, env, inv):
    host.exec("loginctl disable-linger rk")
    doc = up(env, inv, "refused", expect=1)
    result = by_host(doc)["h1"]
    assert result["status"] == "failed"
    assert "KillUserProcesses" in result["message"] and "does not linger" in result["message"]
    assert "loginctl enable-linger rk" in result["hint"]
    assert kernel_pids(host) == []
    kernel_dir = f"/home/rk/.local/state/rk/{host.container}/refused"
    assert host.exec(f"test -e {kernel_dir}", check=False).returncode != 0
    assert list(Path(env["JUPYTER_RUNTIME_DIR"]).glob("kernel-*-refused.json")) == []
    assert list(Path(env["XDG_STATE_HOME"], "rk", "tunnels").glob("*refused*")) == []


def test_with_linger_the_kernel_outlives_logout_executes_code_and_stops(host, env, inv):
    host.exec("loginctl enable-linger rk")
    kernel = kernels_of(up(env, inv, "lingering"))["lingering"]
    scope = host.exec(f"cat /proc/{kernel['pid']}/cgroup").stdout
    assert "/user@1000.service/app.slice/rk-kernel-lingering-" in scope, scope

    log_out(host)
    assert alive_on(host, kernel["pid"]), "the kernel died at logout"
    status = kernels_of(rk_json(env, "status", "-i", inv, "--host", "h1"))["lingering"]
    assert (status["state"], status["pid"]) == ("alive", kernel["pid"])
    # Through rk's tunnel file: its supervisor reconnected in a new session by itself.
    code = "import os; print(os.getpid())"
    assert execute(Path(kernel["tunnel_file"]), code, timeout=60).strip() == str(kernel["pid"])

    stopped = kernels_of(rk_json(env, "stop", "-i", inv, "--host", "h1", "--name", "lingering"))
    assert stopped["lingering"]["state"] == "stopped"
    assert kernel_pids(host) == []
    assert host.exec(f"test -e {Path(kernel['connection_file']).parent}", check=False).returncode != 0
