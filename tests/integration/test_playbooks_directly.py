"""The playbooks without rk: plain ansible-playbook from a checkout, as the README documents."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernels import execute, ssh_tunnel

pytestmark = pytest.mark.hosts

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def ansible_playbook(*args: str) -> subprocess.CompletedProcess:
    # cwd is the checkout, so ansible.cfg there is found exactly as it is for a user.
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("ANSIBLE_CONFIG", None)
    return subprocess.run(["ansible-playbook", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def test_start_fetch_status_stop_with_plain_ansible_playbook(make_hosts, tmp_path):
    group = make_hosts(n=2, image="python")
    inv = str(group.inventory)
    python = "-e rk_kernel_python=/usr/bin/python3"
    fetched = tmp_path / "kernels"
    try:
        started = ansible_playbook("-i", inv, "playbooks/start_kernel.yml", "-l", "h1", *python.split())
        assert started.returncode == 0, started.stdout[-3000:]

        fetch = ansible_playbook("-i", inv, "playbooks/fetch_kernel.yml", "-l", "h1",
                                 "-e", f"rk_kernel_fetch_dir={fetched}")
        assert fetch.returncode == 0, fetch.stdout[-3000:]
        local = fetched / "kernel-rk-h1-default.json"
        assert stat.S_IMODE(local.stat().st_mode) == 0o600
        assert stat.S_IMODE(fetched.stat().st_mode) == 0o700
        assert not (fetched / "kernel-rk-h2-default.json").exists()  # -l h1 limits the fetch
        assert json.loads(local.read_text())["key"] not in fetch.stdout + fetch.stderr
        with ssh_tunnel(group.hosts[0], local) as info:
            assert execute(info, "print('hello from', 'h1')").strip() == "hello from h1"

        status = ansible_playbook("-i", inv, "playbooks/status.yml")
        assert status.returncode == 0, status.stdout[-3000:]
        assert "state: alive" in status.stdout  # ansible.cfg's show_custom_stats: the role's report
    finally:
        stop = ansible_playbook("-i", inv, "playbooks/stop_kernel.yml", "-l", "h1")
    assert stop.returncode == 0, stop.stdout[-3000:]
    assert "ipykernel" not in group.hosts[0].exec("ps -u rk -o args=", check=False).stdout


def test_a_misspelt_variable_gets_a_sentence_not_a_traceback(make_hosts):
    group = make_hosts(n=1, image="python")
    result = ansible_playbook("-i", str(group.inventory), "playbooks/start_kernel.yml", "-e", "rk_kernel_nmae=x")
    assert result.returncode != 0
    assert "rk_kernel_nmae" in result.stdout and "Traceback" not in result.stdout + result.stderr
