"""The SSH test hosts themselves: real logins with strict host key checking, as users have."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hosts import HostCommandError, HostGroup, generate_key
from tests.hosts.hosts import Host, podman

BIN = Path(sys.executable).parent


def ansible_raw(inventory: Path, command: str, *extra: str) -> subprocess.CompletedProcess:
    """Run `command` with the raw module on every test host, host key checking on."""
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run([BIN / "ansible", "-i", str(inventory), "testhosts", "-m", "raw",
                           "-a", command, *extra],
                          capture_output=True, text=True, env=env, timeout=120)


def container_exists(name: str) -> bool:
    return podman("container", "exists", name, check=False).returncode == 0


@pytest.mark.hosts
@pytest.mark.parametrize("image", ["bare", "python", "novenv"])
def test_root_and_rk_log_in_over_ssh_and_ansible_with_strict_host_keys(make_hosts, tmp_path,
                                                                       image):
    group = make_hosts(n=2, image=image)
    for host in group.hosts:
        assert host.ssh("id -un").stdout.strip() == "rk"
        assert host.ssh("id -un", user="root").stdout.strip() == "root"

    ini = group.write_inventory(tmp_path / "inventory.ini", fmt="ini")
    for inventory in (group.inventory, ini):
        as_rk = ansible_raw(inventory, "id -un")
        assert as_rk.returncode == 0, as_rk.stdout + as_rk.stderr
        assert as_rk.stdout.count("\nrk") == 2, as_rk.stdout
        as_root = ansible_raw(inventory, "id -un", "-e", "ansible_user=root")
        assert as_root.returncode == 0, as_root.stdout + as_root.stderr
        assert as_root.stdout.count("\nroot") == 2, as_root.stdout


@pytest.mark.hosts
def test_changed_host_key_is_refused_by_ssh_and_ansible(make_hosts, tmp_path):
    group = make_hosts(image="bare")
    host = group.hosts[0]
    impostor = generate_key(tmp_path / "impostor").with_suffix(".pub").read_text().split()
    group.known_hosts.write_text(f"[127.0.0.1]:{host.port} {impostor[0]} {impostor[1]}\n")

    refused = host.ssh("true", check=False)
    assert refused.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
    assert "Host key verification failed" in refused.stderr

    result = ansible_raw(group.inventory, "true")
    assert result.returncode != 0
    assert "UNREACHABLE" in result.stdout
    assert "Host key verification failed" in result.stdout + result.stderr


@pytest.mark.hosts
def test_unknown_host_is_refused(make_hosts):
    group = make_hosts(image="bare")
    group.known_hosts.write_text("")
    refused = group.hosts[0].ssh("true", check=False)
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr


@pytest.mark.hosts
def test_rk_has_passwordless_sudo_and_its_own_home(make_hosts):
    host = make_hosts(image="bare").hosts[0]
    assert host.ssh("sudo -n id -un").stdout.strip() == "root"
    assert host.ssh("echo $HOME; getent passwd rk | cut -d: -f7").stdout.split() == [
        "/home/rk", "/bin/bash"]


@pytest.mark.hosts
def test_images_have_exactly_the_python_they_promise(make_hosts):
    bare = make_hosts(image="bare").hosts[0]
    assert bare.ssh("command -v python3 python || echo none").stdout.strip() == "none"

    python = make_hosts(image="python").hosts[0]
    assert python.ssh("python3 -c 'import ipykernel, venv, ensurepip; print(ipykernel.__file__)'"
                      ).stdout.startswith("/usr/lib/python3/dist-packages/ipykernel/")

    novenv = make_hosts(image="novenv").hosts[0]
    assert novenv.ssh("python3 -c 'import sys; print(sys.version_info[:2])'").stdout.strip() == \
        "(3, 11)"
    assert novenv.ssh("python3 -c 'import ensurepip'", check=False).returncode != 0
    made = novenv.ssh("python3 -m venv /tmp/venv", check=False)
    assert made.returncode != 0
    assert "ensurepip is not\navailable" in made.stdout


@pytest.mark.hosts
def test_offline_host_reaches_no_network_yet_answers_ssh(make_hosts):
    host = make_hosts(image="python", offline=True).hosts[0]
    assert host.ssh("true").returncode == 0
    assert host.ssh("getent hosts pypi.org deb.debian.org", check=False).returncode != 0
    # An address literal, to fail on routing rather than on name resolution.
    probe = host.ssh("python3 -c \"import socket; socket.create_connection(('151.101.0.223', 443), 5)\"",
                     check=False)
    assert "Network is unreachable" in probe.stderr
    apt = host.ssh("timeout 30 apt-get update", user="root", check=False)
    assert "Failed to fetch" in apt.stdout + apt.stderr

    # A restarted container gets a fresh network namespace; the host must stay offline.
    host.stop()
    host.start()
    assert host.ssh("ip route show default").stdout.strip() == ""


@pytest.mark.hosts
def test_host_with_controller_ca_reaches_the_package_index(make_hosts):
    host = make_hosts(image="python", ca=True).hosts[0]
    status = host.ssh(
        "python3 -c \"import ssl, urllib.request; "
        "ctx = ssl.create_default_context(cafile='/etc/rk-test-ca.crt'); "
        "print(urllib.request.urlopen('https://pypi.org/simple/pip/', context=ctx, timeout=30).status)\"")
    assert status.stdout.strip() == "200"


@pytest.mark.hosts
def test_stopped_host_starts_again_on_the_same_port_and_key(make_hosts):
    host = make_hosts(image="bare").hosts[0]
    port = host.port
    host.stop()
    assert host.ssh("true", check=False, timeout=15).returncode == 255
    host.start()
    assert host.port == port
    assert host.ssh("true").returncode == 0


@pytest.mark.hosts
def test_paused_host_hangs_until_unpaused(make_hosts):
    host = make_hosts(image="bare").hosts[0]
    host.pause()
    with pytest.raises(subprocess.TimeoutExpired):
        host.ssh("true", timeout=3)
    host.unpause()
    assert host.ssh("true").returncode == 0


@pytest.mark.hosts
def test_extra_podman_arguments_reach_the_container(make_hosts):
    host = make_hosts(image="bare", podman_args=["--tmpfs", "/data:size=1m"]).hosts[0]
    assert host.ssh("df -k /data | tail -1").stdout.split()[1] == "1024"
    assert host.exec("id -un", user="rk").stdout.strip() == "rk"
    with pytest.raises(HostCommandError, match="exit status 3"):
        host.exec("exit 3")


@pytest.mark.hosts
def test_destroyed_group_leaves_no_container(make_hosts):
    group = make_hosts(n=2, image="bare")
    names = [host.container for host in group.hosts]
    assert all(container_exists(name) for name in names)
    group.destroy()
    assert not any(container_exists(name) for name in names)


@pytest.mark.fast
def test_yaml_and_ini_inventories_describe_the_same_hosts(tmp_path):
    hosts = [Host(f"h{i}", f"rk-test-x{i}", "rk", tmp_path / "id_ed25519",
                  tmp_path / "known_hosts", port=2200 + i) for i in (1, 2)]
    group = HostGroup(hosts, tmp_path, tmp_path / "known_hosts", tmp_path / "id_ed25519",
                      become=True)
    ini = group.write_inventory(tmp_path / "inventory.ini", fmt="ini")

    def listed(inventory: Path) -> dict:
        out = subprocess.run([BIN / "ansible-inventory", "-i", str(inventory), "--list"],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    from_yaml, from_ini = listed(group.inventory), listed(ini)
    assert from_yaml["testhosts"]["hosts"] == from_ini["testhosts"]["hosts"] == ["h1", "h2"]
    assert from_yaml["_meta"]["hostvars"] == from_ini["_meta"]["hostvars"]
    h2 = from_yaml["_meta"]["hostvars"]["h2"]
    assert h2["ansible_host"] == "127.0.0.1"
    assert h2["ansible_port"] == 2202
    assert h2["ansible_become"] is True
    assert h2["ansible_ssh_common_args"] == (
        f"-o UserKnownHostsFile={tmp_path / 'known_hosts'} -o StrictHostKeyChecking=yes"
        " -o IdentitiesOnly=yes")


@pytest.mark.hosts
def test_wheelhouse_installs_ipykernel_on_an_offline_host(make_hosts, wheelhouse):
    host = make_hosts(image="python", offline=True).hosts[0]
    podman("cp", str(wheelhouse), f"{host.container}:/opt/wheelhouse")
    host.ssh("python3 -m venv ~/venv && ~/venv/bin/pip install --quiet --no-index "
             "--find-links /opt/wheelhouse ipykernel", timeout=180)
    imported = host.ssh("~/venv/bin/python -c 'import ipykernel, zmq; print(ipykernel.__file__)'")
    assert imported.stdout.startswith("/home/rk/venv/lib/python3.11/site-packages/ipykernel/")
