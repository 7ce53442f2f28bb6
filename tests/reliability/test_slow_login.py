"""Slow logins (issue 12, point 1): sshd is silent while PAM sets up a login session (pam_systemd
starting the user's manager, SSSD, an NFS home). Here PAM sleeps 8 s at every login, for real
(`pam_exec.so /bin/sleep 8` in /etc/pam.d/sshd). rk's Ansible connection, its tunnel and a
second command over the reused connection must all work; case 13 (test_unreachable.py) checks
that a silent host is still reported in time with the same settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernels import execute
from tests.reliability.support import SYSTEM_PYTHON, kernels_of, rk_json, wait_until

LOGIN_S = 8
SLOW_PAM = f"session optional pam_exec.so /bin/sleep {LOGIN_S}"


@pytest.fixture(scope="module")
def group(module_hosts):
    group = module_hosts(n=1, image="python")
    group.hosts[0].exec(f"echo '{SLOW_PAM}' >> /etc/pam.d/sshd")
    return group


def test_the_host_really_takes_8s_to_log_in(host):
    import time

    started = time.monotonic()
    host.ssh("true", timeout=60)
    assert time.monotonic() - started >= LOGIN_S  # the premise of the tests below


@pytest.fixture(scope="module")
def kernel(env, inv):
    """`rk up` with its tunnel, on a host no connection was open to."""
    doc = rk_json(env, "up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON)
    return kernels_of(doc)["default"]


def hostname_through(tunnel_file: Path) -> str:
    try:
        return execute(tunnel_file, "import socket; print(socket.gethostname())", timeout=10).strip()
    except RuntimeError:  # "Kernel died before replying": the tunnel's own login is not done yet
        return ""


def test_up_on_a_host_whose_login_takes_8s_starts_a_kernel_reached_through_its_tunnel(kernel, host):
    assert kernel["state"] == "alive"
    # The tunnel's ssh listens here at once but forwards only once its login is done (known
    # limitation, tests/reliability/README.md): a front end started at once may wait that long.
    name = wait_until(lambda: hostname_through(Path(kernel["tunnel_file"])), "the tunnel forwards",
                      timeout=4 * LOGIN_S)
    assert name == host.container


def test_status_and_stop_on_the_slow_host_answer_over_the_kept_connection(env, inv, kernel):
    status = rk_json(env, "status", "-i", inv, "--host", "h1")
    assert kernels_of(status)["default"]["state"] == "alive"
    assert kernels_of(status)["default"]["pid"] == kernel["pid"]
    stopped = rk_json(env, "stop", "-i", inv, "--host", "h1")
    assert stopped["hosts"][0]["status"] == "ok"
    assert not Path(kernel["tunnel_file"]).exists()
