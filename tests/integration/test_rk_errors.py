"""Each failure a user meets gives one line per host with the cause and a hint, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hosts import generate_key

pytestmark = pytest.mark.hosts

RK = str(Path(sys.executable).with_name("rk"))


def rk(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([RK, *args], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env=env or dict(os.environ))


def host_line(result: subprocess.CompletedProcess, host: str) -> str:
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.startswith(f"rk: {host}: ")]
    return line


def test_a_changed_host_key_is_a_mismatch_not_a_network_problem(make_hosts, tmp_path):
    group = make_hosts(n=1, image="python")
    port = group.hosts[0].port
    impostor = generate_key(tmp_path / "impostor")
    forged = f"[127.0.0.1]:{port} " + " ".join(Path(f"{impostor}.pub").read_text().split()[:2]) + "\n"
    group.known_hosts.write_text(forged)

    result = rk("status", "-i", str(group.inventory))
    assert result.returncode == 1  # the host answered: not 4, "no host could be reached"
    line = host_line(result, "h1")
    assert "host key mismatch" in line and "ssh-keygen -R" in line


def test_a_wrong_key_is_an_authentication_failure(make_hosts, tmp_path):
    group = make_hosts(n=1, image="python")
    stranger = generate_key(tmp_path / "stranger")
    inventory = group.inventory.read_text().replace(str(group.private_key), str(stranger))
    wrong = tmp_path / "wrong-key.yml"
    wrong.write_text(inventory)

    result = rk("status", "-i", str(wrong), "--json")
    assert result.returncode == 4
    (host,) = json.loads(result.stdout)["hosts"]
    assert host["status"] == "unreachable"
    assert host["message"] == "authentication failed" and "ansible_ssh_private_key_file" in host["hint"]


def test_a_host_without_python_says_so_and_how_to_fix_it(make_hosts):
    group = make_hosts(n=1, image="bare")
    result = rk("status", "-i", str(group.inventory))
    assert result.returncode == 1
    line = host_line(result, "h1")
    assert "python" in line.lower() and "rk provision" in line


def test_an_offline_host_without_wheelhouse_fails_with_what_to_do(make_hosts):
    group = make_hosts(n=1, image="python", offline=True)
    result = rk("up", "-i", str(group.inventory), "--host", "h1")
    assert result.returncode == 1
    line = host_line(result, "h1")
    assert "wheelhouse" in line, line


def test_one_bad_host_does_not_stop_the_others(make_hosts):
    group = make_hosts(n=2, image="python")
    group.hosts[1].pause()  # hangs in the SSH banner exchange
    try:
        result = rk("status", "-i", str(group.inventory), "--json")
    finally:
        group.hosts[1].unpause()
    assert result.returncode == 3
    by_host = {h["host"]: h for h in json.loads(result.stdout)["hosts"]}
    assert by_host["h1"]["status"] == "ok" and by_host["h2"]["status"] == "unreachable"
