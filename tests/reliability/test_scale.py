"""Shared homes and many kernels (issue 6, cases 19 and 20).

19: two hosts mount the same directory of this machine as /home/rk (owned by rk, 0700), as
    NFS homes do. A kernel `default` on each must not collide: the rk_kernel module puts its
    state under ~/.local/state/rk/<hostname>/.
20: 20 kernels on one host plus 4 on each of 5 more, each with its tunnel, started by 24
    concurrent `rk up` runs, all at once (it takes one --name: 20 runs on the one host, 4 runs
    of one name on the 5 others). All must come up alive, with 5
    distinct ports, no port shared by two kernels of a host, no local tunnel port shared at
    all, and each tunnel file must reach its own kernel. `rk stop --all` then leaves nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.kernels import execute
from tests.reliability.support import (
    SYSTEM_PYTHON,
    alive_on,
    by_host,
    kernel_pids,
    kernels_of,
    local_files,
    new_home,
    rk,
    rk_json,
    user_env,
)

# Case 20's shape, as the issue states it.
ONE_HOST_KERNELS = 20
MORE_HOSTS = 5
KERNELS_EACH = 4
# All 24 `rk up` at once, no pool: sshd's MaxSessions 10 on the shared ControlPersist
# connection and MaxStartups 10 refuse some of their sessions, and rk's runner tries those
# hosts again (rk/runner.py, REFUSED_RETRY_S); starts on one host queue on the rk_kernel
# module's host lock, each holding it until its kernel has bound its ports.
SLOW_START_TIMEOUT_S = 120
PORT_NAMES = ("shell", "iopub", "stdin", "control", "hb")


def up_json(env: dict, inventory: Path, hosts: list[str], name: str) -> dict:
    host_args = [arg for host in hosts for arg in ("--host", host)]
    return rk_json(env, "up", "-i", str(inventory), *host_args, "--name", name, "--python", SYSTEM_PYTHON)


def hostname_through(kernel: dict) -> str:
    """The host name the kernel itself reports, asked through its tunnel file."""
    return execute(Path(kernel["tunnel_file"]), "import socket; print(socket.gethostname())").strip()


# ---------------------------------------------------------------- case 19: shared home


@pytest.fixture(scope="module")
def shared(module_hosts, module_user, tmp_path_factory):
    """Two hosts with one home directory (of this machine) at /home/rk, and a user of them."""
    home = tmp_path_factory.mktemp("shared-home")
    home.chmod(0o700)
    group = module_hosts(n=2, image="python", podman_args=("--volume", f"{home}:/home/rk"))
    uid = int(group.hosts[0].exec("id -u rk").stdout)
    subprocess.run(["chown", f"{uid}:{uid}", str(home)], check=True)
    return group, home, module_user(group.inventory)


@pytest.fixture(scope="module")
def shared_kernels(shared):
    """Kernel `default` on both hosts of the shared home, started by one `rk up` of the group."""
    group, _, env = shared
    doc = rk_json(env, "up", "-i", str(group.inventory), "--host", "testhosts", "--python", SYSTEM_PYTHON)
    return {host: kernels_of(doc, host)["default"] for host in ("h1", "h2")}


def test_two_hosts_sharing_a_home_each_run_their_own_default_kernel(shared, shared_kernels):
    group, home, _ = shared
    for host in group.hosts:
        kernel = shared_kernels[host.name]
        assert kernel["state"] == "alive"
        assert kernel_pids(host, "default") == [kernel["pid"]]
        assert kernel["connection_file"] == f"/home/rk/.local/state/rk/{host.container}/default/kernel.json"
        assert hostname_through(kernel) == host.container
    keys = {json.loads((home / Path(k["connection_file"]).relative_to("/home/rk")).read_text())["key"]
            for k in shared_kernels.values()}
    assert len(keys) == 2


def test_stopping_one_host_of_a_shared_home_leaves_the_other_alive_and_intact(shared, shared_kernels):
    group, home, env = shared
    h1, h2 = group.hosts
    kernel_dir = {h.name: home / Path(shared_kernels[h.name]["connection_file"]).parent.relative_to("/home/rk")
                  for h in group.hosts}
    before = {p.name: p.read_bytes() for p in kernel_dir["h2"].iterdir() if p.name != "kernel.log"}

    rk_json(env, "stop", "-i", str(group.inventory), "--host", "h1")

    assert not kernel_dir["h1"].exists()
    assert kernel_pids(h1, "default") == []
    assert alive_on(h2, shared_kernels["h2"]["pid"])
    assert {p.name: p.read_bytes() for p in kernel_dir["h2"].iterdir() if p.name != "kernel.log"} == before
    assert hostname_through(shared_kernels["h2"]) == h2.container
    status = rk_json(env, "status", "-i", str(group.inventory))
    assert kernels_of(status, "h2")["default"]["state"] == "alive"
    assert "default" not in kernels_of(status, "h1")


# ---------------------------------------------------------------- case 20: many kernels


@pytest.fixture(scope="module")
def many(module_hosts):
    """Six hosts and a user of them; at the end, what test_stop_all_... left is stopped."""
    group = module_hosts(n=1 + MORE_HOSTS, image="python")
    # These six hosts and this controller share 2 cores: under other load (9-15), 5 kernels
    # importing ipykernel at once beside the rk runs took more than the 30 s default
    # start_timeout in 1 of 3 runs (a kernel takes 1-3 s on an idle machine). Raising it is
    # the knob rk documents for slow hosts; it also lengthens the host lock's timeout.
    inventory = yaml.safe_load(group.inventory.read_text())
    inventory["all"]["children"]["testhosts"]["vars"] = {"rk_kernel_start_timeout": SLOW_START_TIMEOUT_S}
    group.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
    home = new_home()
    env = user_env(home)
    yield group, env
    # Not module_user's unconditional `rk stop --all`: 20-40 s over six hosts, for nothing
    # when the last test has already stopped everything.
    tunnels = Path(env["XDG_STATE_HOME"]) / "rk" / "tunnels"
    if any(kernel_pids(host) for host in group.hosts) or list(tunnels.glob("*.json")):
        rk(env, "stop", "-i", str(group.inventory), "--all", timeout=300)
    shutil.rmtree(home, ignore_errors=True)


def planned(group) -> list[tuple[list[str], str]]:
    """The `rk up` runs of case 20, as (--host, --name): 20 names on h1, one by one, and
    4 names on the other 5 hosts, each name on all 5 in one run (rk's hosts run in parallel)."""
    first, *rest = group.hosts
    on_first = [([first.name], f"k{i:02d}") for i in range(ONE_HOST_KERNELS)]
    on_rest = [([h.name for h in rest], f"k{i:02d}") for i in range(KERNELS_EACH)]
    plan = []
    for i, run in enumerate(on_first):
        if i % (ONE_HOST_KERNELS // KERNELS_EACH) == 0:
            plan.append(on_rest[i // (ONE_HOST_KERNELS // KERNELS_EACH)])
        plan.append(run)
    return plan


@pytest.fixture(scope="module")
def started(many):
    """Every kernel of case 20, all the runs started at once: {(host, name): kernel}."""
    group, env = many
    plan = planned(group)
    with ThreadPoolExecutor(len(plan)) as pool:
        docs = list(pool.map(lambda run: up_json(env, group.inventory, *run), plan))
    return {(host["host"], name): kernels_of(doc, host["host"])[name]
            for (_, name), doc in zip(plan, docs) for host in doc["hosts"]}


def test_forty_kernels_started_at_once_are_all_alive_and_answer_through_their_own_tunnel(many, started):
    group, env = many
    assert len(started) == ONE_HOST_KERNELS + MORE_HOSTS * KERNELS_EACH
    status = rk_json(env, "status", "-i", str(group.inventory))
    for (host, name), kernel in started.items():
        assert kernels_of(status, host)[name]["state"] == "alive"
        assert kernels_of(status, host)[name]["pid"] == kernel["pid"]
    for host in group.hosts:
        assert sorted(kernel_pids(host)) == sorted(k["pid"] for (h, _), k in started.items() if h == host.name)
    # Each tunnel file reaches the kernel rk named for it, not a neighbour.
    with ThreadPoolExecutor(8) as pool:
        pids = list(pool.map(lambda k: execute(Path(k["tunnel_file"]), "import os; print(os.getpid())").strip(),
                             started.values()))
    assert pids == [str(k["pid"]) for k in started.values()]


def test_no_port_is_shared_by_two_kernels_of_a_host_nor_by_two_tunnels(started):
    by_host_ports: dict[str, list[int]] = {}
    for (host, _), kernel in started.items():
        ports = [kernel["ports"][p] for p in PORT_NAMES]
        assert len(set(ports)) == 5, kernel
        by_host_ports.setdefault(host, []).extend(ports)
    for host, ports in by_host_ports.items():
        assert len(ports) == len(set(ports)), f"{host}: a port is used by two kernels"
    local = [json.loads(Path(k["tunnel_file"]).read_text())[f"{p}_port"] for k in started.values() for p in PORT_NAMES]
    assert len(local) == len(set(local)), "two tunnels listen on the same local port"


def test_stop_all_on_every_host_leaves_nothing(many, started):
    group, env = many
    doc = rk_json(env, "stop", "-i", str(group.inventory), "--all")
    assert all(h["status"] == "ok" for h in by_host(doc).values())
    for host in group.hosts:
        assert kernel_pids(host) == []
        assert host.exec("ls -A /home/rk/.local/state/rk/*/", check=False).stdout.split() == [".lock"]
    assert [f for k in started.values() for f in local_files(k) if f.exists()] == []
    tunnels = Path(env["XDG_STATE_HOME"]) / "rk" / "tunnels"
    assert [p.name for p in tunnels.glob("*.json")] == []
    supervisors = subprocess.run(["pgrep", "-f", f"rk.tunnel {tunnels}"], capture_output=True, check=False)
    assert supervisors.stdout == b""

