"""Hosts whose file names used to collide (issue 12, point 4), end to end on real SSH hosts.

Host gpu kernel 2-default and host gpu-2 kernel default were both kernel-rk-gpu-2-default.json:
each must keep its own fetched and tunnel file, each file must reach its own kernel, and
`rk stop --host gpu --all` must leave gpu-2's alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rk import paths
from tests.integration.test_playbooks_directly import ansible_playbook
from tests.kernels import execute, ssh_tunnel
from tests.reliability.support import SYSTEM_PYTHON, kernels_of, rk, rk_json

pytestmark = pytest.mark.hosts

PAIRS = [("gpu", "2-default"), ("gpu-2", "default")]
WHO = "import os; print(os.environ['RK_WHO'])"  # each kernel says whose it is: set by rk up --env


@pytest.fixture
def env():
    return dict(os.environ, NO_COLOR="1")


def named_hosts(make_hosts, *names):
    """Test hosts under the given inventory names, and the inventory that names them so."""
    group = make_hosts(n=len(names), image="python")
    for host, name in zip(group.hosts, names):
        host.name = name
    return group, group.write_inventory(group.directory / "named.yml")


def who(connection) -> str:
    return execute(connection, WHO).strip()


def test_gpu_and_gpu_2_keep_their_own_files_and_each_file_reaches_its_own_kernel(make_hosts, env):
    group, inv = named_hosts(make_hosts, "gpu", "gpu-2")
    runtime = Path(env["JUPYTER_RUNTIME_DIR"])
    # A stale file of older rk, under an old name, of a kernel gpu no longer runs.
    old = runtime / "kernel-rktunnel-gpu-gone.json"
    old.write_text(json.dumps({"key": "g" * 64, "ip": "127.0.0.1", "rk_host": "gpu", "rk_kernel": "gone"}))
    old.chmod(0o600)
    try:
        tunnel_files, fetched = {}, {}
        for host, kernel in PAIRS:
            doc = rk_json(env, "up", "-i", str(inv), "--host", host, "--name", kernel,
                          "--python", SYSTEM_PYTHON, "--env", f"RK_WHO={host}/{kernel}")
            tunnel_files[host] = Path(kernels_of(doc, host)[kernel]["tunnel_file"])
        for host, kernel in PAIRS:  # the host-port files too, as for Spyder's own SSH route
            doc = rk_json(env, "fetch", "-i", str(inv), "--host", host, "--name", kernel)
            fetched[host] = Path(kernels_of(doc, host)[kernel]["local_file"])

        assert len(set(tunnel_files.values()) | set(fetched.values())) == 4
        for host, kernel in PAIRS:
            assert who(tunnel_files[host]) == f"{host}/{kernel}"
            with ssh_tunnel(group[host], fetched[host]) as info:
                assert who(info) == f"{host}/{kernel}"

        # The old file is recognised by its fields, renamed once, and stale like any other.
        gone = kernels_of(rk_json(env, "status", "-i", str(inv)), "gpu")["gone"]
        assert gone["state"] == "absent" and gone["local_stale"] is True
        assert gone["tunnel_file"] == str(runtime / "kernel-rktunnel-gpu@gone.json") and not old.exists()

        rk_json(env, "stop", "-i", str(inv), "--host", "gpu", "--all")
        assert sorted(runtime.glob("kernel-rk*.json")) == sorted([tunnel_files["gpu-2"], fetched["gpu-2"]])
        assert who(tunnel_files["gpu-2"]) == "gpu-2/default"
        status = rk_json(env, "status", "-i", str(inv))
        assert kernels_of(status, "gpu") == {}
        assert kernels_of(status, "gpu-2")["default"]["state"] == "alive"
    finally:
        rk(env, "stop", "-i", str(inv), "--all")


def play(inv: Path, playbook: str, *extra: str) -> None:
    done = ansible_playbook("-i", str(inv), f"playbooks/{playbook}.yml", *extra)
    assert done.returncode == 0, done.stdout[-3000:]


def test_the_role_fetches_under_the_name_rk_gives_the_file(make_hosts, tmp_path):
    # '@' in the inventory name: mapped away in the host part by the role and by rk alike.
    _, inv = named_hosts(make_hosts, "lab@gpu")
    fetch_dir = tmp_path / "kernels"
    name = ["-e", "rk_kernel_name=2-default"]
    try:
        play(inv, "start_kernel", *name, "-e", f"rk_kernel_python={SYSTEM_PYTHON}")
        play(inv, "fetch_kernel", *name, "-e", f"rk_kernel_fetch_dir={fetch_dir}")
        names = [p.name for p in fetch_dir.iterdir()]
        assert names == ["kernel-rk-lab_gpu@2-default.json"]
        assert names == [paths.file_name("lab@gpu", "2-default")]  # what rk looks for
    finally:
        play(inv, "stop_kernel", *name)
