"""The exact environment rk hands to ansible-playbook (golden values; Ansible is not run)."""

import shlex

import pytest

from rk import content
from rk.runner import ansible_env

pytestmark = pytest.mark.fast


def ssh_options(env):
    words = shlex.split(env["ANSIBLE_SSH_ARGS"])
    return [words[i + 1] for i, w in enumerate(words) if w == "-o"]


def test_config_is_the_shipped_one():
    env = ansible_env()
    assert env["ANSIBLE_CONFIG"] == str(content.ansible_cfg())
    assert content.ansible_cfg().is_file()


def test_host_keys_are_checked_and_prompts_are_impossible_by_default():
    options = ssh_options(ansible_env())
    assert "StrictHostKeyChecking=yes" in options
    assert "BatchMode=yes" in options
    assert ansible_env()["ANSIBLE_HOST_KEY_CHECKING"] == "True"


def test_trust_on_first_use_only_when_asked():
    options = ssh_options(ansible_env(accept_new_host_keys=True))
    assert "StrictHostKeyChecking=accept-new" in options
    assert "StrictHostKeyChecking=yes" not in options


def test_connection_reuse_from_ansible_cfg_is_kept():
    assert "ControlMaster=auto" in ssh_options(ansible_env())


def test_playbooks_and_roles_ship_beside_the_config():
    root = content.content_dir()
    for name in ("up", "provision", "start_kernel", "fetch_kernel", "stop_kernel", "status"):
        assert content.playbook(name).is_file(), name
    assert (root / "roles" / "rk_kernel").is_dir() and (root / "roles" / "rk_python").is_dir()


def test_rks_own_bin_dir_comes_first_on_path():
    import sys
    from pathlib import Path

    assert ansible_env()["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def test_control_sockets_fit_the_unix_socket_limit_under_a_long_home(tmp_path, monkeypatch):
    long_home = tmp_path / ("h" * 90)
    long_home.mkdir()
    monkeypatch.setenv("HOME", str(long_home))
    control = ansible_env()["ANSIBLE_SSH_CONTROL_PATH_DIR"]
    assert len(control) + 1 + 40 + 17 < 108
    assert not control.startswith(str(long_home))


def test_extra_vars_reach_ansible_as_unsafe_strings():
    import yaml

    from rk.runner import unsafe_yaml

    data = {"rk_kernel_env": {"T": "{{ lookup('pipe', 'id') }}"}, "rk_kernel_all": True, "rk_python_packages": ["numpy"]}
    text = unsafe_yaml(data)
    tagged = []

    class Loader(yaml.SafeLoader):
        pass

    def unsafe(loader, node):
        tagged.append(node.value)
        return node.value

    Loader.add_constructor("!unsafe", unsafe)
    assert yaml.load(text, Loader=Loader) == data  # the same values...
    assert sorted(tagged) == sorted(["rk_kernel_env", "T", "{{ lookup('pipe', 'id') }}", "rk_kernel_all",
                                     "rk_python_packages", "numpy"])  # ...every string tagged


def test_keepalives_let_a_20s_login_through():
    options = ssh_options(ansible_env())
    assert "ServerAliveInterval=5" in options and "ServerAliveCountMax=3" in options


def test_ansible_runs_rks_ssh_wrapper_with_rks_interpreter():
    import os
    import sys

    path = ansible_env()["ANSIBLE_SSH_EXECUTABLE"]
    assert os.access(path, os.X_OK) and os.stat(path).st_mode & 0o077 == 0
    with open(path) as f:
        assert f.readline() == f"#!{sys.executable} -IS\n"
    assert ansible_env()["ANSIBLE_SSH_EXECUTABLE"] == path  # made once, then reused


@pytest.mark.parametrize("argv,options,rest", [
    (["-C", "-o", "ControlMaster=auto", "-tt", "127.0.0.1", "/bin/sh -c 'x'"],
     ["-C", "-o", "ControlMaster=auto", "-tt"], ["127.0.0.1", "/bin/sh -c 'x'"]),
    (["-oBatchMode=yes", "-p22", "-vvv", "host"], ["-oBatchMode=yes", "-p22", "-vvv"], ["host"]),
    (["-O", "check", "host"], ["-O", "check"], ["host"]),
    (["-o", "X=y", "--", "-host", "cmd"], ["-o", "X=y"], ["-host", "cmd"]),
])
def test_the_wrapper_finds_sshs_destination_as_ssh_does(argv, options, rest):
    from rk.ansible_ssh import split

    assert split(argv) == (options, rest)
