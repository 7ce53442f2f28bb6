"""Case 13: one host of four cannot be reached, in turn by each of four faults. rk status
answers within ConnectTimeout + 5 s, calls that host unreachable (never its kernel dead),
reports the others as they are, and exits with the partial code. The same bound holds for a
host whose login takes 8 s (issue 12)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.hosts.images import podman
from tests.reliability.support import (SSHD_BESIDE_A_REAPER, SYSTEM_PYTHON, by_host, rk_json, rk_within,
                                       wait_until)

CONNECT_TIMEOUT_S = 10  # Ansible's `timeout` (ssh ConnectTimeout); rk does not change it
BOUND_S = CONNECT_TIMEOUT_S + 5
PARTIAL = 3


@pytest.fixture(scope="module")
def group(module_hosts):
    return module_hosts(n=4, image="python", podman_args=SSHD_BESIDE_A_REAPER)


@pytest.fixture(scope="module")
def started(group, module_user):
    """A kernel on each of the four hosts: {host: pid}, and the user who started them."""
    env = module_user(group.inventory)
    doc = rk_json(env, "up", "-i", str(group.inventory), "--host", "testhosts", "--python", SYSTEM_PYTHON,
                  "--no-tunnel")
    pids = {name: h["kernels"][0]["pid"] for name, h in by_host(doc).items()}
    assert sorted(pids) == ["h1", "h2", "h3", "h4"]
    return env, pids


def in_netns(host, *argv: str) -> None:
    pid = podman("inspect", "--format", "{{.State.Pid}}", host.container).stdout.strip()
    subprocess.run(["nsenter", "-t", pid, "-n", *argv], check=True, capture_output=True)


def firewall(action: str):
    rule = ["INPUT", "-p", "tcp", "--dport", "22", "-j", *action.split()]

    def apply(host):
        in_netns(host, "iptables", "-I", *rule)

    def undo(host):
        in_netns(host, "iptables", "-D", *rule)
    return apply, undo


def stop_sshd(host):
    host.exec("pkill -KILL -x sshd")
    wait_until(lambda: "sshd" not in host.exec("ps -eo comm=").stdout.split(), "sshd is gone")


def start_sshd(host):
    host.exec("/usr/sbin/sshd")
    wait_until(lambda: host.ssh("true", check=False).returncode == 0, "sshd answers again")


# With rk's ControlPersist, a command soon after another one reuses the open SSH connection,
# and ssh's ConnectTimeout does not apply to it: rk's keepalives (rk/runner.py) must notice a
# silent host (dropped packets, frozen) fast enough for the bound below.

FAULTS = {
    "dropped": firewall("DROP"),
    "rejected": firewall("REJECT --reject-with tcp-reset"),
    "sshd-stopped": (stop_sshd, start_sshd),
    "paused": (lambda host: host.pause(), lambda host: host.unpause()),
}
CASES = [("dropped", "h1"), ("rejected", "h2"), ("sshd-stopped", "h3"), ("paused", "h4")]


@pytest.mark.parametrize("fault,victim", CASES)
def test_status_with_one_host_unreachable_is_partial_and_in_time(group, started, fault, victim):
    env, pids = started
    apply, undo = FAULTS[fault]
    apply(group[victim])
    try:
        result = rk_within(env, BOUND_S, "status", "-i", str(group.inventory), "--json")
    finally:
        undo(group[victim])
    assert result is not None, f"rk status took longer than {BOUND_S} s with {victim} {fault}"
    hosts = by_host(json.loads(result.stdout))
    assert hosts[victim]["status"] == "unreachable", hosts[victim]
    assert not [k for k in hosts[victim]["kernels"] if k.get("state") == "dead"]
    for name, pid in pids.items():
        if name != victim:
            assert hosts[name]["status"] == "ok", hosts[name]
            assert [(k["name"], k["state"], k["pid"]) for k in hosts[name]["kernels"]] == [("default", "alive", pid)]
    assert result.returncode == PARTIAL


# The same bound for a host whose login takes 8 s (PAM, as test_slow_login.py): rk's keepalives
# must let that login through, and still a silent host behind its reused master is reported in time.

@pytest.fixture(scope="module")
def slow_login(module_hosts, module_user):
    group = module_hosts(n=1, image="python")
    group.hosts[0].exec("echo 'session optional pam_exec.so /bin/sleep 8' >> /etc/pam.d/sshd")
    env = module_user(group.inventory)
    doc = rk_json(env, "up", "-i", str(group.inventory), "--host", "h1", "--python", SYSTEM_PYTHON, "--no-tunnel")
    assert by_host(doc)["h1"]["kernels"][0]["state"] == "alive"
    return group, env


@pytest.mark.parametrize("fault", ["dropped", "paused"])
def test_a_slow_login_host_that_goes_silent_is_unreachable_in_time(slow_login, fault):
    group, env = slow_login
    apply, undo = FAULTS[fault]
    rk_json(env, "status", "-i", str(group.inventory))  # its connection is open and in use
    apply(group["h1"])
    try:
        result = rk_within(env, BOUND_S, "status", "-i", str(group.inventory), "--json")
    finally:
        undo(group["h1"])
    assert result is not None, f"rk status took longer than {BOUND_S} s with the slow host {fault}"
    assert by_host(json.loads(result.stdout))["h1"]["status"] == "unreachable"
