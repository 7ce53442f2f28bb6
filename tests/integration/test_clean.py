"""rk clean: everything rk put on a host, or on this machine, goes; running kernels are asked about."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.hosts

RK = str(Path(sys.executable).with_name("rk"))
HOME = "/home/rk"
RK_ON_HOST = [f"{HOME}/.local/share/rk", f"{HOME}/.cache/rk", f"{HOME}/.local/state/rk"]


def rk(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([RK, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, NO_COLOR="1"))


def kernels_on(host) -> list[str]:
    out = host.exec("pgrep -af '[i]pykernel_launcher' || true").stdout
    return [line for line in out.splitlines() if line.strip()]


def present(host, paths: list[str]) -> list[str]:
    return [p for p in paths if host.exec(f"test -e {p}", check=False).returncode == 0]


def local_rk_files(host: str = "") -> list[str]:
    """rk's connection and tunnel files here (of one inventory host: "h1")."""
    runtime = Path(os.environ["JUPYTER_RUNTIME_DIR"])
    names = sorted(p.name for p in runtime.glob("kernel-rk*.json"))
    return [n for n in names if not host or f"-{host}-" in n or f"-{host}@" in n]


@pytest.fixture
def provisioned(make_hosts, wheelhouse):
    """Two hosts with rk's venv; h1 runs a kernel with a tunnel and has a kernelspec, so does h2."""
    group = make_hosts(n=2, image="python")
    inventory = yaml.safe_load(group.inventory.read_text())
    inventory["all"]["vars"] = {"rk_python_wheelhouse": str(wheelhouse)}
    group.inventory.write_text(yaml.safe_dump(inventory))
    inv = str(group.inventory)
    up = rk("up", "-i", inv, "--host", "all")
    assert up.returncode == 0, up.stderr
    for host in ("h1", "h2"):
        assert rk("kernelspec", "install", "-i", inv, "--host", host).returncode == 0
    yield group, inv
    rk("stop", "-i", inv, "--all")


def test_clean_refuses_while_kernels_run_and_removes_nothing(provisioned):
    group, inv = provisioned
    result = rk("clean", "-i", inv, "--host", "h1")
    assert result.returncode == 1
    assert "1 kernel(s) still run: h1/default; nothing was removed" in result.stderr
    assert "--yes" in result.stderr
    host = group.hosts[0]
    assert len(kernels_on(host)) == 1 and present(host, RK_ON_HOST) == RK_ON_HOST
    assert local_rk_files("h1")


def test_clean_yes_removes_everything_rk_put_on_the_host_and_only_that_host(provisioned):
    group, inv = provisioned
    h1, h2 = group.hosts
    h1.exec(f"mkdir -p {HOME}/work && touch {HOME}/work/data.csv && chown -R rk:rk {HOME}/work")

    result = rk("clean", "-i", inv, "--host", "h1", "--yes", "--json")

    assert result.returncode == 0, result.stderr
    assert kernels_on(h1) == [] and present(h1, RK_ON_HOST) == []
    assert present(h1, [f"{HOME}/work/data.csv"]) == [f"{HOME}/work/data.csv"]  # the user's own files stay
    assert local_rk_files("h1") == []
    specs = json.loads(rk("kernelspec", "list", "--json").stdout)
    assert sorted(h["host"] for h in specs["hosts"]) == ["h2"]
    tunnels = rk("status", "-i", inv, "--host", "h1", "--json")
    assert json.loads(tunnels.stdout)["hosts"][0]["kernels"] == []
    # h2 untouched: its kernel, venv, files, kernelspec.
    assert len(kernels_on(h2)) == 1 and present(h2, RK_ON_HOST) == RK_ON_HOST
    assert local_rk_files("h2")


def test_clean_local_yes_leaves_no_rk_file_on_this_machine_and_the_kernels_running(provisioned):
    group, inv = provisioned
    home = Path(os.environ["HOME"])
    assert (home / ".local/state/rk/tunnels").is_dir()

    refused = rk("clean", "--local")
    assert refused.returncode == 1 and "nothing was removed" in refused.stderr
    result = rk("clean", "--local", "--yes")

    assert result.returncode == 0, result.stderr
    assert local_rk_files() == []
    assert not (home / ".local/state/rk").exists() and not (home / ".cache/rk").exists()
    assert json.loads(rk("kernelspec", "list", "--json").stdout)["hosts"] == []
    supervisors = subprocess.run(["pgrep", "-f", f"rk.tunnel {home}"], capture_output=True, text=True).stdout
    assert supervisors == ""
    assert all(len(kernels_on(h)) == 1 for h in group.hosts)  # --local never touches a host


def test_clean_needs_a_host_or_local():
    result = rk("clean")
    assert result.returncode == 2 and "--local" in result.stderr
