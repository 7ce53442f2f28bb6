"""The exact ssh command lines of rk's tunnels (golden argv; nothing is run)."""

import pytest

from rk import ssh
from rk.kernelspec_launcher import remote_name

pytestmark = pytest.mark.fast

HOSTVARS = {
    "ansible_host": "gpu1.example.org",
    "ansible_port": 2222,
    "ansible_user": "alice",
    "ansible_ssh_private_key_file": "~/.ssh/id_ed25519",
    "ansible_ssh_common_args": "-o ProxyJump=alice@bastion.example.org",
}


def test_tunnel_argv_checks_host_keys_forwards_on_loopback_and_takes_the_inventory_settings(monkeypatch):
    monkeypatch.setenv("HOME", "/home/alice")
    target = ssh.Target.from_hostvars("gpu1", HOSTVARS, environ={})
    argv = ssh.forward_argv(target, [(50001, 40001), (50002, 40002)])
    assert argv == [
        "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-S", "none", "-o", "ControlMaster=no", "-o", "ExitOnForwardFailure=yes", "-o", "GatewayPorts=no",
        "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
        "-L", "127.0.0.1:50001:127.0.0.1:40001", "-L", "127.0.0.1:50002:127.0.0.1:40002", "-N",
        "-p", "2222", "-i", "/home/alice/.ssh/id_ed25519", "-l", "alice",
        "-o", "ProxyJump=alice@bastion.example.org", "--", "gpu1.example.org",
    ]
    assert "-F" not in argv  # ~/.ssh/config applies


def test_ad_hoc_hosts_take_ansibles_environment_defaults_and_accept_new_keys_only_when_asked():
    target = ssh.Target.from_hostvars("box", {}, environ={"ANSIBLE_PRIVATE_KEY_FILE": "/k", "ANSIBLE_SSH_COMMON_ARGS": "-o A=b"})
    argv = ssh.forward_argv(target, [(1, 2)], accept_new_host_keys=True, command=["holder"])
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new"]
    assert argv[-7:] == ["-i", "/k", "-o", "A=b", "--", "box", "holder"]
    assert "-T" in argv and "-N" not in argv


def test_each_front_end_connection_file_gets_its_own_remote_kernel_name():
    a, b = remote_name("gpu", "/run/kernel-a.json"), remote_name("gpu", "/run/kernel-b.json")
    assert a != b and a.startswith("gpu-") and remote_name("gpu", "/run/kernel-a.json") == a
    assert len(remote_name("n" * 64, "/x.json")) <= 64


def test_a_hardened_kernels_sockets_are_forwarded_from_loopback_ports_by_path():
    target = ssh.Target.from_hostvars("gpu1", {"ansible_host": "gpu1.example.org"}, environ={})
    argv = ssh.forward_argv(target, [(50001, "/home/alice/.local/state/rk/gpu1/k/k-1"), (50002, 40002)])
    assert argv[argv.index("-L"):argv.index("-L") + 4] == [
        "-L", "127.0.0.1:50001:/home/alice/.local/state/rk/gpu1/k/k-1", "-L", "127.0.0.1:50002:127.0.0.1:40002",
    ]
