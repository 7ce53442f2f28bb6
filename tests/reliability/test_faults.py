"""Faults on the host side (issue 6, cases 8-12): killed sessions and sshd, killed, frozen, busy
and stubborn kernels, recycled pids. One host for the module; each case has its own kernel name.

The host's PID 1 is a reaper with sshd beside it (support.SSHD_BESIDE_A_REAPER), so sshd can
be killed without ending the container and pids move only when something forks.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import time
from pathlib import Path

import pytest
from jupyter_client import BlockingKernelClient

from tests.hosts.images import podman
from tests.kernels import execute
from tests.reliability.support import (SSHD_BESIDE_A_REAPER, SYSTEM_PYTHON, alive_on, kernel_pids,
                                       kernels_of, local_files, processes, rk, rk_json, wait_until)

SURVIVAL_S = 60  # case 8: the kernel still works this long after its sessions and sshd died
DEAD_WITHIN_S = 10  # case 9: status says dead this soon after kill -9
STOPPED_WITHIN_S = 15  # case 12: a kernel ignoring SIGTERM, its child and grandchild are gone


@pytest.fixture(scope="module")
def group(module_hosts):
    return module_hosts(n=1, image="python", podman_args=SSHD_BESIDE_A_REAPER)


def up(env, inv, name, *extra) -> dict:
    doc = rk_json(env, "up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON, "--name", name, *extra)
    kernel = kernels_of(doc)[name]
    assert kernel["state"] == "alive"
    return kernel


def status(env, inv) -> dict[str, dict]:
    return kernels_of(rk_json(env, "status", "-i", inv))


@pytest.fixture(scope="module")
def orphaned(host, env, inv):
    """Kernel `survivor`, whose SSH sessions and sshd itself were killed (then sshd restarted)."""
    kernel = up(env, inv, "survivor")
    assert any(args.startswith("sshd:") for args in processes(host).values()), \
        "expected rk's persistent SSH session on the host"
    host.exec("pkill -KILL -x sshd")
    killed_at = time.monotonic()
    wait_until(lambda: "sshd" not in host.exec("ps -eo comm=").stdout.split(), "every sshd is gone")
    survived = alive_on(host, kernel["pid"])
    host.exec("/usr/sbin/sshd")
    wait_until(lambda: host.ssh("true", check=False).returncode == 0, "sshd answers again")
    return kernel, killed_at, survived


def test_killing_every_ssh_session_and_sshd_leaves_the_kernel_running(orphaned):
    kernel, _, survived = orphaned
    assert survived, "the kernel died with its SSH session"


def test_a_killed_kernel_is_dead_within_10s_and_up_starts_it_again_cleanly(host, env, inv):
    old = up(env, inv, "victim")
    old_key = json.loads(Path(old["tunnel_file"]).read_text())["key"]
    host.exec(f"kill -KILL {old['pid']}")
    killed = time.monotonic()
    dead = status(env, inv)["victim"]
    assert time.monotonic() - killed <= DEAD_WITHIN_S
    assert dead["state"] == "dead"

    new = up(env, inv, "victim")
    assert new["pid"] != old["pid"] and kernel_pids(host, "victim") == [new["pid"]]
    kernel_dir = Path(new["connection_file"]).parent
    assert sorted(host.exec(f"ls -A {kernel_dir}").stdout.split()) == ["kernel.json", "kernel.log", "state.json"]
    remote = json.loads(host.exec(f"cat {new['connection_file']}").stdout)
    assert remote["key"] != old_key
    runtime = Path(env["JUPYTER_RUNTIME_DIR"])
    for local in runtime.glob("kernel-*-h1-victim.json"):
        assert json.loads(local.read_text())["key"] == remote["key"], f"{local.name} is stale"
    assert execute(Path(new["tunnel_file"]), "import os; print(os.getpid())").strip() == str(new["pid"])


@pytest.fixture(scope="module")
def frozen(host, env, inv):
    """Kernel `frozen` stopped with SIGSTOP, and what rk status said about it; resumed after."""
    kernel = up(env, inv, "frozen", "--no-tunnel")
    host.exec(f"kill -STOP {kernel['pid']}")
    try:
        yield kernel, status(env, inv)["frozen"]
    finally:
        host.exec(f"kill -CONT {kernel['pid']}", check=False)


def test_rk_status_leaves_a_frozen_kernel_alone(host, frozen):
    kernel, _ = frozen
    assert host.exec(f"ps -o stat= -p {kernel['pid']}").stdout.strip().startswith("T")


def test_rk_status_says_a_frozen_kernel_is_unresponsive(frozen):
    kernel, reported = frozen
    assert reported["state"] == "unresponsive"
    assert reported["pid"] == kernel["pid"]  # the same process, still there (exit code 0: status worked)


def test_a_kernel_busy_in_a_c_call_that_holds_the_gil_is_alive(host, env, inv):
    kernel = up(env, inv, "busy")
    client = BlockingKernelClient()
    client.load_connection_file(kernel["tunnel_file"])
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        # ctypes.PyDLL keeps the GIL through the call: no Python thread of the kernel runs, its
        # heartbeat's ZeroMQ I/O thread (C++) still does.
        # The time.sleep first: ipykernel announces execute_input from its IOPub thread, a Python
        # thread, which must get the GIL once before the C call takes it for good (under load it
        # used not to, and the announcement never came).
        msg_id = client.execute("import ctypes, time; time.sleep(2); ctypes.PyDLL(None).sleep(600)")
        wait_until(lambda: _executing(client, msg_id), "the cell runs", timeout=60)
        assert status(env, inv)["busy"]["state"] == "alive"
        host.exec(f"kill -INT {kernel['pid']}")  # sleep() returns on a signal; the cell ends
        reply = client.get_shell_msg(timeout=60)
        assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["ename"] == "KeyboardInterrupt"
    finally:
        client.stop_channels()


def _executing(client, msg_id) -> bool:
    """Whether IOPub has announced the execution of request msg_id (execute_input)."""
    while True:
        try:
            msg = client.get_iopub_msg(timeout=1)
        except queue.Empty:
            return False
        if msg["msg_type"] == "execute_input" and msg["parent_header"].get("msg_id") == msg_id:
            return True


@pytest.fixture
def stranger_with_pid(host):
    """start(pid): an unrelated `sleep` of user rk that gets exactly `pid` in the host's PID
    namespace (ns_last_pid set to pid - 1 just before it forks)."""
    container_pid = podman("inspect", "--format", "{{.State.Pid}}", host.container).stdout.strip()
    uid = host.exec("id -u rk").stdout.strip()  # numeric: the controller has no user rk
    started: list[subprocess.Popen] = []

    def start(pid: int) -> None:
        for _ in range(5):  # another fork on the host may take the pid first: try again
            script = (f"echo {pid - 1} > /proc/sys/kernel/ns_last_pid; "
                      f"setpriv --reuid={uid} --regid={uid} --clear-groups sleep 1000 & wait")
            proc = subprocess.Popen(["nsenter", "-t", container_pid, "-p", "--", "sh", "-c", script],
                                    start_new_session=True)
            started.append(proc)
            found = wait_until(lambda: [p for p, a in processes(host).items() if a == "sleep 1000"],
                               "the stranger runs", timeout=10)
            if found == [pid]:
                return
            host.exec(f"kill {' '.join(map(str, found))}")
        pytest.fail(f"could not give pid {pid} to a stranger")

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_a_recycled_pid_is_dead_and_stop_never_signals_its_new_owner(host, env, inv, stranger_with_pid):
    kernel = up(env, inv, "recycled", "--no-tunnel")
    host.exec(f"kill -KILL {kernel['pid']}")
    wait_until(lambda: not alive_on(host, kernel["pid"]), "the kernel is gone")
    stranger_with_pid(kernel["pid"])

    assert status(env, inv)["recycled"]["state"] == "dead"
    stopped = rk_json(env, "stop", "-i", inv, "--host", "h1", "--name", "recycled")
    assert kernels_of(stopped)["recycled"]["changed"] is True
    assert processes(host).get(kernel["pid"]) == "sleep 1000", "stop signalled the pid's new owner"
    assert host.exec(f"test -e {Path(kernel['connection_file']).parent}", check=False).returncode != 0


def test_stop_ends_a_kernel_that_ignores_sigterm_with_its_child_and_grandchild_within_15s(host, env, inv):
    kernel = up(env, inv, "stubborn")
    # The kernel notes when SIGTERM came and carries on; its child and grandchild ignore it.
    code = ("import os, signal, subprocess, time\n"
            "signal.signal(signal.SIGTERM, lambda *_: open('/tmp/sigterm-at', 'w').write(repr(time.time())))\n"
            "child = subprocess.Popen(['sh', '-c', 'trap \"\" TERM; sleep 1001 & wait'])\n"
            "print(child.pid)\n")
    child = int(execute(Path(kernel["tunnel_file"]), code))
    grandchild = wait_until(lambda: [p for p, a in processes(host).items() if a == "sleep 1001"], "the grandchild runs")[0]
    tree = [kernel["pid"], child, grandchild]

    result = rk(env, "stop", "-i", inv, "--host", "h1", "--name", "stubborn")
    returned = time.time()  # the host's clock is this machine's
    assert result.returncode == 0, result.stderr
    assert [pid for pid in tree if alive_on(host, pid)] == []
    # From SIGTERM to rk's answer that all is gone; Ansible's own start-up comes on top.
    sigterm_at = float(host.exec("cat /tmp/sigterm-at").stdout)
    assert returned - sigterm_at <= STOPPED_WITHIN_S
    assert host.exec(f"test -e {kernel['connection_file']}", check=False).returncode != 0
    assert [f for f in local_files(kernel) if f.exists()] == []


def test_the_kernel_still_executes_code_60s_after_its_sessions_and_sshd_were_killed(host, env, inv, orphaned):
    kernel, killed_at, _ = orphaned
    wait_until(lambda: time.monotonic() - killed_at >= SURVIVAL_S, f"{SURVIVAL_S} s have passed",
               timeout=SURVIVAL_S + 5, every=1)
    assert status(env, inv)["survivor"]["pid"] == kernel["pid"]
    # Through rk's tunnel file: its supervisor has reconnected to the restarted sshd by itself.
    code = "import os, socket; print(os.getpid(), socket.gethostname())"
    assert execute(Path(kernel["tunnel_file"]), code, timeout=60).split() == [str(kernel["pid"]), host.container]
