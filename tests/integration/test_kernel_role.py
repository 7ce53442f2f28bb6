"""The rk_kernel role through real ansible-playbook runs against SSH test hosts.

The hosts' kernel is Debian's python3-ipykernel (6.x) under /usr/bin/python3, started by the
unprivileged user `rk`. Results are read the way rk reads them: ansible-runner runs
ansible-playbook, and the role's set_stats data arrives as the run's artifact_data.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import ansible_runner
import pytest

from tests import waiting
from tests.kernels import execute, ssh_tunnel

pytestmark = pytest.mark.hosts

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = str(BIN / "ansible-playbook")
# The repository's ansible.cfg, and this interpreter's ansible-playbook first on PATH.
ANSIBLE_ENV = {"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
PYTHON = "/usr/bin/python3"
DEADLINE_S = 30


def play(group, playbook: str, verbosity: int = 0, **extravars):
    """Run playbooks/<playbook>.yml; returns (runner, this host's rk_kernels from set_stats)."""
    data_dir = tempfile.mkdtemp(prefix="runner-", dir=group.directory)
    runner = ansible_runner.run(
        private_data_dir=data_dir,
        playbook=str(REPO / "playbooks" / f"{playbook}.yml"), inventory=str(group.inventory),
        extravars={"rk_kernel_python": PYTHON, **extravars}, verbosity=verbosity or None, quiet=True,
        envvars=ANSIBLE_ENV, timeout=180)
    runner.data_dir = Path(data_dir)
    assert runner.status == "successful", runner.stdout.read()[-6000:]
    (stats,) = [e["event_data"] for e in runner.events if e["event"] == "playbook_on_stats"]
    return runner, stats["artifact_data"]["rk_kernels"][group.hosts[0].name]


def remote_processes(host) -> dict[int, str]:
    """{pid: cmdline} of every process of user rk on the host."""
    out = host.exec("ps -u rk -o pid=,args=", check=False).stdout
    return {int(line.split(None, 1)[0]): line.split(None, 1)[1]
            for line in out.splitlines() if line.strip()}


def kernel_pids(host) -> list[int]:
    return [pid for pid, args in remote_processes(host).items() if "ipykernel_launcher" in args]


def wait_until(predicate, what, timeout=DEADLINE_S):
    return waiting.wait_until(predicate, what, timeout)


@pytest.fixture
def host_group(make_hosts):
    """One host with Debian's ipykernel; its kernels end with the container (make_hosts)."""
    return make_hosts(n=1, image="python")


def test_second_start_reuses_the_running_kernel(host_group):
    _, first = play(host_group, "start_kernel")
    _, second = play(host_group, "start_kernel")
    k1, k2 = first["default"], second["default"]
    assert k1["state"] == "alive" and k1["changed"] is True
    assert all(port > 0 for port in k1["ports"].values())
    assert k2["changed"] is False and k2["pid"] == k1["pid"] and k2["ports"] == k1["ports"]
    assert kernel_pids(host_group.hosts[0]) == [k1["pid"]]


def test_kernel_outlives_its_ssh_session_and_an_sshd_restart(host_group):
    host = host_group.hosts[0]
    _, started = play(host_group, "start_kernel")
    pid = started["default"]["pid"]
    # End every SSH session of rk (Ansible keeps a ControlMaster connection open), then make
    # sshd re-execute itself, which is what restarting it does.
    sessions = [p for p, args in remote_processes(host).items() if args.startswith("sshd:")]
    assert sessions, "expected Ansible's persistent SSH connection on the host"
    host.exec("kill -HUP " + " ".join(map(str, sessions)))
    host.exec("kill -HUP 1")
    wait_until(lambda: not any(a.startswith("sshd:") for a in remote_processes(host).values()),
               "the SSH sessions are gone")
    wait_until(lambda: host.ssh("true", check=False).returncode == 0, "sshd answers again")
    _, status = play(host_group, "status", rk_kernel_all=True)
    assert status["default"]["state"] == "alive" and status["default"]["pid"] == pid


def test_killed_kernel_is_reported_dead_and_restarted(host_group):
    host = host_group.hosts[0]
    _, started = play(host_group, "start_kernel", rk_kernel_name="k1")
    old = started["k1"]["pid"]
    host.exec(f"kill -KILL {old}")
    wait_until(lambda: old not in kernel_pids(host), "the kernel is dead")
    _, status = play(host_group, "status", rk_kernel_name="k1")
    assert status["k1"]["state"] == "dead"
    _, again = play(host_group, "start_kernel", rk_kernel_name="k1")
    assert again["k1"]["changed"] is True and again["k1"]["state"] == "alive"
    assert kernel_pids(host) == [again["k1"]["pid"]] != [old]


def test_fetched_file_drives_the_kernel_through_a_tunnel_and_stop_leaves_nothing(
        host_group, tmp_path):
    host = host_group.hosts[0]
    fetch_dir = tmp_path / "runtime"
    play(host_group, "start_kernel")
    _, fetched = play(host_group, "fetch_kernel", rk_kernel_fetch_dir=str(fetch_dir))
    local = Path(fetched["default"]["local_file"])
    assert local == fetch_dir / f"kernel-rk-{host.name}@default.json"
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    assert stat.S_IMODE(fetch_dir.stat().st_mode) == 0o700
    assert json.loads(local.read_text())["key"] not in json.dumps(fetched)

    with ssh_tunnel(host, local) as connection:
        # A child and a grandchild that ignore SIGTERM, like stubborn DataLoader workers.
        out = execute(connection, "import subprocess, os\n"
                                  "subprocess.Popen(['sh', '-c', 'trap \"\" TERM; sleep 1000 & wait'])\n"
                                  "print(os.getpid())")
    kernel = int(out)
    assert kernel == fetched["default"]["pid"]
    wait_until(lambda: "sleep 1000" in remote_processes(host).values(), "the grandchild runs")

    _, stopped = play(host_group, "stop_kernel", rk_kernel_stop_timeout=2)
    assert stopped["default"]["state"] == "stopped" and stopped["default"]["changed"] is True
    left = [a for a in remote_processes(host).values() if not a.startswith(("sshd:", "ps "))]
    assert left == []
    _, again = play(host_group, "stop_kernel")
    assert again["default"]["changed"] is False and again["default"]["state"] == "absent"


def test_key_never_appears_in_verbose_output_nor_runner_artifacts(host_group, tmp_path):
    fetch_dir = tmp_path / "runtime"
    runs = [play(host_group, "start_kernel", verbosity=4)[0],
            play(host_group, "fetch_kernel", verbosity=4, rk_kernel_fetch_dir=str(fetch_dir))[0],
            play(host_group, "status", verbosity=4)[0]]
    (local,) = fetch_dir.iterdir()
    key = json.loads(local.read_text())["key"].encode()
    assert len(key) >= 32
    for run in runs:
        files = [p for p in run.data_dir.rglob("*") if p.is_file()]
        assert b"ESTABLISH SSH CONNECTION" in b"".join(p.read_bytes() for p in files)  # -vvvv
        assert [p for p in files if key in p.read_bytes()] == []


def test_kernel_runs_as_the_connecting_user_under_become(make_hosts, tmp_path):
    group = make_hosts(n=1, image="python", become=True)
    play(group, "start_kernel")
    _, fetched = play(group, "fetch_kernel", rk_kernel_fetch_dir=str(tmp_path / "runtime"))
    kernel = fetched["default"]
    assert kernel["connection_file"] == f"/home/rk/.local/state/rk/{kernel['hostname']}/default/kernel.json"
    owner = group.hosts[0].exec(f"ps -o user= -p {kernel['pid']}").stdout.strip()
    assert owner == "rk" and Path(kernel["local_file"]).exists()


def test_typo_in_a_variable_gets_a_sentence(host_group):
    env = dict(os.environ, **ANSIBLE_ENV)
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(host_group.inventory), str(REPO / "playbooks/start_kernel.yml"),
         "-e", "rk_kernel_nmae=x"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "unknown variable rk_kernel_nmae" in proc.stdout
    assert kernel_pids(host_group.hosts[0]) == []
