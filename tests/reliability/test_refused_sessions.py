"""A host that refuses SSH sessions (issue 12, point 7): sshd's MaxSessions (sessions on rk's
shared ControlPersist connection) and MaxStartups (connections still in their handshake), set
low here so that a few concurrent `rk up` reach them, as twenty reach the defaults (10, 10) in
case 20 (test_scale.py). A busy host is retried, never called unreachable; a host that refuses
every session says so."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.reliability.support import SYSTEM_PYTHON, by_host, kernel_pids, rk, rk_json, wait_until

AT_ONCE = 8


def sshd_limits(host, text: str, sessions: bool = True) -> None:
    """Replace the host's sshd limits; sshd (PID 1) re-reads its config on SIGHUP."""
    host.exec(f"printf '{text}' > /etc/ssh/sshd_config.d/limits.conf && kill -HUP 1")
    wait_until(lambda: (host.ssh("true", check=False).returncode == 0) == sessions, "sshd's new limits apply")


@pytest.fixture(scope="module")
def group(module_hosts):
    return module_hosts(n=1, image="python")


def test_up_runs_at_once_beyond_the_hosts_session_limits_all_succeed(host, env, inv):
    sshd_limits(host, "MaxSessions 2\\nMaxStartups 2\\n")

    def up(i: int) -> dict:
        return rk_json(env, "up", "-i", inv, "--host", "h1", "--name", f"k{i}", "--python", SYSTEM_PYTHON,
                       "--no-tunnel")

    with ThreadPoolExecutor(AT_ONCE) as pool:
        docs = list(pool.map(up, range(AT_ONCE)))  # rk_json: each exits 0
    pids = sorted(by_host(doc)["h1"]["kernels"][0]["pid"] for doc in docs)
    assert kernel_pids(host) == pids


def test_a_host_that_refuses_every_session_says_so_not_unreachable(host, group, module_user, inv):
    env = module_user(group.inventory)  # a new user: no open connection, made under the old limits
    sshd_limits(host, "MaxSessions 0\\n", sessions=False)  # no session at all, on any new connection
    try:
        result = rk(env, "status", "-i", inv, "--host", "h1", "--json")
    finally:
        sshd_limits(host, "")  # module_user's `rk stop --all` needs sessions again
    assert result.returncode == 1, result.stderr  # the host answered: not 4, "no host reached"
    h1 = by_host(json.loads(result.stdout))["h1"]
    assert h1["status"] == "failed" and h1["message"] == "the host refused another SSH session (MaxSessions)", h1
    assert "MaxSessions" in h1["hint"]
