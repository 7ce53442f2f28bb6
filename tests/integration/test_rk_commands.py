"""The rk command end to end: the installed `rk`, real ansible-playbook runs, real SSH hosts."""

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

RK = str(Path(sys.executable).with_name("rk"))
SYSTEM_PYTHON = "/usr/bin/python3"  # the "python" image's interpreter, with Debian's ipykernel


@pytest.fixture
def env():
    """The user's environment: conftest already gave every test its own HOME and runtime dir."""
    return dict(os.environ, NO_COLOR="1")


def rk(env, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([RK, *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def rk_json(env, *args, expect=0) -> dict:
    result = rk(env, *args, "--json")
    assert result.returncode == expect, result.stderr + result.stdout
    return json.loads(result.stdout)


def only_kernel(doc: dict, host: str = "h1") -> dict:
    (entry,) = [h for h in doc["hosts"] if h["host"] == host]
    assert entry["status"] == "ok", entry
    (kernel,) = entry["kernels"]
    return kernel


@pytest.fixture
def stopped_after(env):
    """Inventories whose kernels are stopped after the test, whatever happened."""
    inventories = []
    yield inventories.append
    for inventory in inventories:
        rk(env, "stop", "-i", str(inventory), "--all")


def test_up_starts_a_kernel_that_runs_code_then_reuses_it(make_hosts, env, stopped_after):
    group = make_hosts(n=1, image="python")
    stopped_after(group.inventory)
    inv = str(group.inventory)

    # --no-tunnel: the fetched file, with the host's ports, as Spyder's own SSH route uses it.
    first = only_kernel(rk_json(env, "up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON, "--no-tunnel"))
    assert first["state"] == "alive"
    local = Path(first["local_file"])
    assert local.parent == Path(env["JUPYTER_RUNTIME_DIR"])
    assert local.name == "kernel-rk-h1@default.json"
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    assert stat.S_IMODE(local.parent.stat().st_mode) == 0o700

    host = group.hosts[0]
    with ssh_tunnel(host, local) as info:
        assert execute(info, "import socket; x = 41; print(socket.gethostname())").strip() == host.container

    again = rk_json(env, "up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON, "--no-tunnel")
    assert only_kernel(again)["pid"] == first["pid"]
    with ssh_tunnel(host, local) as info:
        assert execute(info, "print(x + 1)").strip() == "42"  # the same kernel, its state intact


def test_up_prints_how_to_connect(make_hosts, env, stopped_after):
    group = make_hosts(n=1, image="python")
    stopped_after(group.inventory)
    result = rk(env, "up", "-i", str(group.inventory), "--host", "h1", "--python", SYSTEM_PYTHON)
    assert result.returncode == 0, result.stderr
    port = group.hosts[0].port
    runtime = env["JUPYTER_RUNTIME_DIR"]
    # rk's tunnel file is the one to use, and the only local copy of the key.
    assert f"jupyter console --existing {runtime}/kernel-rktunnel-h1@default.json\n" in result.stdout
    assert "--ssh" not in result.stdout and "rk fetch --host h1" in result.stdout
    assert not Path(runtime, "kernel-rk-h1@default.json").exists()

    # Without a tunnel: the fetched file and the settings for jupyter's and Spyder's own SSH.
    no_tunnel = rk(env, "up", "-i", str(group.inventory), "--host", "h1", "--python", SYSTEM_PYTHON, "--no-tunnel")
    assert f"--existing {runtime}/kernel-rk-h1@default.json --ssh rk@127.0.0.1:{port}" in no_tunnel.stdout
    assert (f"connection file {runtime}/kernel-rk-h1@default.json; hostname 127.0.0.1; user rk; port {port}; "
            f"key file {group.private_key}") in no_tunnel.stdout


def test_stop_kills_the_kernel_and_removes_both_files(make_hosts, env):
    group = make_hosts(n=1, image="python")
    inv = str(group.inventory)
    kernel = only_kernel(rk_json(env, "up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON))
    host = group.hosts[0]
    assert host.exec(f"kill -0 {kernel['pid']}", check=False).returncode == 0

    doc = rk_json(env, "stop", "-i", inv, "--host", "h1")
    assert doc["hosts"][0]["status"] == "ok"
    assert host.exec(f"kill -0 {kernel['pid']}", check=False).returncode != 0
    assert not Path(kernel["tunnel_file"]).exists()
    assert host.exec(f"test -e {kernel['connection_file']}", check=False).returncode != 0

    status = rk_json(env, "status", "-i", inv)
    assert [k for h in status["hosts"] for k in h["kernels"]] == []


def test_status_reads_an_ini_inventory_and_reports_an_unreachable_host(make_hosts, env, stopped_after):
    group = make_hosts(n=2, image="python")
    stopped_after(group.inventory)
    ini = group.write_inventory(group.directory / "inventory.ini", fmt="ini")
    only_kernel(rk_json(env, "up", "-i", str(ini), "--host", "h1", "--python", SYSTEM_PYTHON))
    group.hosts[1].stop()

    result = rk(env, "status", "-i", str(ini), "--json")
    assert result.returncode == 3, result.stderr  # partial
    doc = json.loads(result.stdout)
    by_host = {h["host"]: h for h in doc["hosts"]}
    assert by_host["h1"]["status"] == "ok" and by_host["h1"]["kernels"][0]["state"] == "alive"
    assert by_host["h2"]["status"] == "unreachable"
    assert "refused" in by_host["h2"]["message"]

    text = rk(env, "status", "-i", str(ini))
    assert "rk: h2: unreachable: connection refused (hint:" in text.stderr
    assert "Traceback" not in text.stderr


def test_ad_hoc_user_at_host_port_with_the_users_own_ansible_settings(make_hosts, env, stopped_after):
    group = make_hosts(n=1, image="python")
    host = group.hosts[0]
    env = dict(
        env,
        ANSIBLE_PRIVATE_KEY_FILE=str(group.private_key),
        ANSIBLE_SSH_COMMON_ARGS=f"-o UserKnownHostsFile={group.known_hosts}",
    )
    target = f"rk@127.0.0.1:{host.port}"
    try:
        kernel = only_kernel(rk_json(env, "up", "--host", target, "--python", SYSTEM_PYTHON), host=target)
        # rk's tunnel reaches the ad hoc host with the user's own key and known_hosts settings.
        assert Path(kernel["tunnel_file"]).name == f"kernel-rktunnel-rk_127.0.0.1_{host.port}@default.json"
        assert execute(Path(kernel["tunnel_file"]), "print(6 * 7)").strip() == "42"
    finally:
        rk(env, "stop", "--host", target)


def test_unknown_host_key_is_refused_until_explicitly_accepted(make_hosts, env, tmp_path):
    group = make_hosts(n=1, image="python")
    host = group.hosts[0]
    known = tmp_path / "empty_known_hosts"
    known.write_text("")
    env = dict(env, ANSIBLE_PRIVATE_KEY_FILE=str(group.private_key), ANSIBLE_SSH_COMMON_ARGS=f"-o UserKnownHostsFile={known}")
    target = f"rk@127.0.0.1:{host.port}"

    refused = rk(env, "status", "--host", target, "--json")
    assert refused.returncode == 1, refused.stderr
    (entry,) = json.loads(refused.stdout)["hosts"]
    assert entry["status"] == "hostkey" and entry["message"].startswith("unknown host key")
    assert known.read_text() == ""

    accepted = rk(env, "status", "--host", target, "--accept-new-host-keys", "--json")
    assert accepted.returncode == 0, accepted.stderr
    lookup = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{host.port}", "-f", str(known)], capture_output=True, text=True)
    assert lookup.returncode == 0, "the accepted key was not recorded in known_hosts"


def test_localhost_needs_no_inventory(env):
    python = sys.executable  # the test venv has ipykernel: used as it is
    try:
        kernel = only_kernel(rk_json(env, "up", "--host", "localhost", "--python", python), host="localhost")
        assert execute(Path(kernel["local_file"]), "import os; print(os.getpid())").strip() == str(kernel["pid"])
        status = rk_json(env, "status", "--host", "localhost")
        assert only_kernel(status, host="localhost")["state"] == "alive"
    finally:
        stop = rk(env, "stop", "--host", "localhost")
    assert stop.returncode == 0, stop.stderr
    assert not Path(kernel["local_file"]).exists()


def test_json_envelope_schema(make_hosts, env, stopped_after):
    group = make_hosts(n=1, image="python")
    stopped_after(group.inventory)
    doc = rk_json(env, "up", "-i", str(group.inventory), "--host", "h1", "--python", SYSTEM_PYTHON)
    assert set(doc) == {"schema", "command", "ok", "exit_code", "hosts", "error", "warnings"}
    assert (doc["schema"], doc["command"], doc["ok"], doc["exit_code"], doc["error"]) == (1, "up", True, 0, None)
    (host,) = doc["hosts"]
    assert set(host) == {"host", "status", "message", "hint", "changed", "kernels", "python", "connect"}
    kernel = host["kernels"][0]
    for key in ("name", "state", "pid", "ports", "connection_file", "tunnel", "tunnel_file", "python", "uptime_s"):
        assert key in kernel, key
    assert set(kernel["ports"]) == {"shell", "iopub", "stdin", "control", "hb"}
    assert "key" not in kernel


def test_ten_parallel_ups_of_one_name_give_one_kernel(make_hosts, env, stopped_after):
    group = make_hosts(n=1, image="python")
    stopped_after(group.inventory)
    argv = [RK, "up", "-i", str(group.inventory), "--host", "h1", "--python", SYSTEM_PYTHON, "--json"]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(10)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 10, [err for _, err in outputs]
    pids = {only_kernel(json.loads(out))["pid"] for out, _ in outputs}
    assert len(pids) == 1
    running = group.hosts[0].exec("ps -u rk -o pid=,args= | grep [i]pykernel_launcher", check=False).stdout
    assert [int(line.split()[0]) for line in running.splitlines()] == list(pids)


def test_provision_then_up_from_the_venv_then_fetch_and_hosts(make_hosts, env, wheelhouse, stopped_after):
    group = make_hosts(n=1, image="python", offline=True)
    stopped_after(group.inventory)
    inv = str(group.inventory)
    # An air-gapped lab host: the wheelhouse comes from group_vars beside the inventory.
    (group.directory / "group_vars").mkdir()
    (group.directory / "group_vars" / "testhosts.yml").write_text(f"rk_python_wheelhouse: {wheelhouse}\n")

    provisioned = rk_json(env, "provision", "-i", inv)
    (host,) = provisioned["hosts"]
    assert host["status"] == "ok" and host["changed"] is True
    venv_python = "/home/rk/.local/share/rk/venv/bin/python"
    assert host["python"]["executable"] == venv_python and host["python"]["ipykernel"]
    assert rk_json(env, "provision", "-i", inv)["hosts"][0]["changed"] is False

    kernel = only_kernel(rk_json(env, "up", "-i", inv, "--host", "h1", "--no-tunnel"))
    assert kernel["python"] == venv_python
    local = Path(kernel["local_file"])
    local.unlink()
    fetched = only_kernel(rk_json(env, "fetch", "-i", inv, "--host", "h1"))
    assert fetched["pid"] == kernel["pid"] and Path(fetched["local_file"]) == local
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    with ssh_tunnel(group.hosts[0], local) as info:
        assert execute(info, "import sys; print(sys.executable)").strip() == venv_python

    (listed,) = rk_json(env, "hosts", "-i", inv)["hosts"]
    assert listed["host"] == "h1"
    assert listed["connect"] | {"groups": None} == {
        "address": "127.0.0.1", "port": group.hosts[0].port, "user": "rk", "connection": "ssh", "groups": None}
    assert listed["connect"]["groups"] == ["testhosts"]
