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
        local = fetched / "kernel-rk-h1@default.json"
        assert stat.S_IMODE(local.stat().st_mode) == 0o600
        assert stat.S_IMODE(fetched.stat().st_mode) == 0o700
        assert not (fetched / "kernel-rk-h2@default.json").exists()  # -l h1 limits the fetch
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


def test_every_host_checks_its_own_variables_before_anything_runs(make_hosts, tmp_path):
    # An inventory can set rk_kernel_ variables per host, so each host checks its own: here h2
    # has a typo and h1 a wrong type, and neither starts a kernel; a wrong -e type fails all.
    group = make_hosts(n=2, image="python")
    extra = tmp_path / "per-host.yml"
    extra.write_text("all:\n  hosts:\n    h1:\n      rk_kernel_spyder: maybe\n"
                     "    h2:\n      rk_kernel_nmae: x\n")
    result = ansible_playbook("-i", str(group.inventory), "-i", str(extra), "playbooks/start_kernel.yml",
                              "-e", "rk_kernel_python=/usr/bin/python3")
    assert result.returncode != 0
    out = result.stdout
    assert "fatal: [h1]" in out and "rk_kernel_spyder" in out and "bool" in out, out[-3000:]
    assert "fatal: [h2]" in out and "unknown variable rk_kernel_nmae" in out, out[-3000:]
    assert "Traceback" not in out + result.stderr
    for host in group.hosts:
        assert "ipykernel" not in host.exec("ps -u rk -o args=", check=False).stdout

    timeout = ansible_playbook("-i", str(group.inventory), "playbooks/status.yml",
                               "-e", "rk_kernel_stop_timeout=soon")
    assert timeout.returncode != 0
    assert timeout.stdout.count("rk_kernel_stop_timeout") >= 2 and "float" in timeout.stdout, timeout.stdout[-3000:]


def test_fetch_replaces_a_symlink_or_fifo_at_its_destination_without_following_it(make_hosts, tmp_path):
    # Whatever sits where the file lands is replaced by a private regular file, never followed:
    # even a symlink to an identical copy is a change (it used to be compared through the link
    # and reported unchanged, leaving the link in place).
    group = make_hosts(n=1, image="python")
    inv = str(group.inventory)
    fetched = tmp_path / "kernels"
    local = fetched / "kernel-rk-h1@default.json"
    victim = tmp_path / "victim.json"

    def fetch() -> subprocess.CompletedProcess:
        done = ansible_playbook("-i", inv, "playbooks/fetch_kernel.yml", "-e", f"rk_kernel_fetch_dir={fetched}")
        assert done.returncode == 0, done.stdout[-3000:]
        mode = local.lstat().st_mode
        assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o600
        return done

    try:
        started = ansible_playbook("-i", inv, "playbooks/start_kernel.yml", "-e", "rk_kernel_python=/usr/bin/python3")
        assert started.returncode == 0, started.stdout[-3000:]
        fetch()
        victim.write_bytes(local.read_bytes())
        local.unlink()
        local.symlink_to(victim)
        assert "changed=1" in fetch().stdout
        assert victim.read_bytes() == local.read_bytes() and not local.is_symlink()

        local.unlink()
        os.mkfifo(local, 0o600)
        assert "changed=1" in fetch().stdout
        assert "key" in json.loads(local.read_text())
    finally:
        ansible_playbook("-i", inv, "playbooks/stop_kernel.yml")


def test_start_kernel_runs_the_interpreter_provision_was_given(make_hosts, tmp_path):
    # provision.yml with rk_python_interpreter, then start_kernel.yml with no -e: the kernel
    # runs that interpreter (python3.11, not the python3 the module would otherwise take).
    group = make_hosts(n=1, image="python")
    inv = str(group.inventory)
    fetched = tmp_path / "kernels"
    try:
        provisioned = ansible_playbook("-i", inv, "playbooks/provision.yml", "-e", "rk_python_interpreter=/usr/bin/python3.11")
        assert provisioned.returncode == 0, provisioned.stdout[-3000:]
        started = ansible_playbook("-i", inv, "playbooks/start_kernel.yml")
        assert started.returncode == 0, started.stdout[-3000:]
        fetch = ansible_playbook("-i", inv, "playbooks/fetch_kernel.yml", "-e", f"rk_kernel_fetch_dir={fetched}")
        assert fetch.returncode == 0, fetch.stdout[-3000:]
        with ssh_tunnel(group.hosts[0], fetched / "kernel-rk-h1@default.json") as info:
            assert execute(info, "import sys; print(sys.executable)").strip() == "/usr/bin/python3.11"
    finally:
        ansible_playbook("-i", inv, "playbooks/stop_kernel.yml")


def test_start_kernel_on_a_host_never_provisioned_says_to_provision_it_first(make_hosts):
    # Debian's python3 without ipykernel, and no provision.yml run: a sentence saying what to do.
    group = make_hosts(n=1, image="novenv")
    started = ansible_playbook("-i", str(group.inventory), "playbooks/start_kernel.yml")
    assert started.returncode != 0
    assert ("no Python was provisioned for rk on this host, and /usr/bin/python3 lacks ipykernel: "
            "run playbooks/provision.yml first") in " ".join(started.stdout.split()), started.stdout[-3000:]
    assert "Traceback" not in started.stdout + started.stderr
