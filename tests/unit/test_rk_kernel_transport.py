"""The rk_kernel module's hardened transport (ipc) and its 'unresponsive' status, against real
ipykernel kernels on this machine (the test interpreter has ipykernel)."""

import importlib.util
import json
import os
import shutil
import signal
import socket
import stat
import sys
from pathlib import Path

import pytest

from tests import kernels, waiting

MODULE_PATH = Path(__file__).resolve().parents[2] / "roles/rk_kernel/library/rk_kernel.py"
_spec = importlib.util.spec_from_file_location("rk_kernel_transport", MODULE_PATH)
rk_kernel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rk_kernel)


@pytest.fixture
def root(tmp_path):
    """A short private state root (unix socket paths are short); its kernels are stopped after."""
    state_root = Path(os.path.realpath(os.environ.get("TMPDIR", "/tmp"))) / f"rkt-{os.getpid()}-{tmp_path.name[-8:]}"
    yield state_root
    rk_kernel.run({"state": "stopped", "all": True, "state_root": str(state_root), "stop_timeout": 1})
    shutil.rmtree(state_root, ignore_errors=True)


def run(root, **params):
    return rk_kernel.run({"name": "k", "python": sys.executable, "state_root": str(root), **params})["kernels"]["k"]


def test_an_ipc_kernel_binds_sockets_in_its_private_directory_runs_code_and_keeps_ipc_on_restart(root):
    kernel = run(root, transport="ipc")
    kernel_dir = os.path.dirname(kernel["connection_file"])
    assert (kernel["transport"], kernel["ip"]) == ("ipc", os.path.join(kernel_dir, "k"))
    assert stat.S_IMODE(os.stat(kernel_dir).st_mode) & 0o777 == 0o700
    sockets = [f"{kernel['ip']}-{n}" for n in kernel["ports"].values()]
    assert all(stat.S_ISSOCK(os.lstat(s).st_mode) for s in sockets)
    assert kernels.execute(Path(kernel["connection_file"]), "print(6 * 7)").strip() == "42"
    assert run(root, state="status")["state"] == "alive"

    restarted = run(root, state="restarted")
    assert restarted["pid"] != kernel["pid"] and restarted["transport"] == "ipc"
    assert kernels.execute(Path(restarted["connection_file"]), "print(7 * 6)").strip() == "42"


def test_a_hardened_start_never_hands_back_a_running_tcp_kernel(root):
    # (The other way round is safe, and allowed: a plain start reuses a running ipc kernel.)
    tcp = run(root)
    with pytest.raises(rk_kernel.KernelError, match="runs with transport tcp"):
        run(root, transport="ipc")
    assert run(root, state="status")["pid"] == tcp["pid"]  # left as it was


def test_a_socket_path_too_long_for_unix_sockets_is_refused_before_anything_starts(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with pytest.raises(rk_kernel.KernelError, match="too long for unix sockets"):
        rk_kernel.run({"name": "k", "python": sys.executable, "state_root": str(deep), "transport": "ipc"})
    assert not deep.exists() or not any(deep.rglob("kernel.json"))


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_a_stopped_kernel_is_unresponsive_and_left_alone_then_alive_again(root, transport):
    kernel = run(root, transport=transport)
    os.kill(kernel["pid"], signal.SIGSTOP)
    try:
        waiting.wait_until(lambda: rk_kernel.read_stat(kernel["pid"])["state"] == "T", "the kernel is stopped")
        reported = run(root, state="status")
        assert (reported["state"], reported["pid"]) == ("unresponsive", kernel["pid"])
        assert rk_kernel.read_stat(kernel["pid"])["state"] == "T"  # not signalled, not killed
        assert run(root)["pid"] == kernel["pid"]  # a start finds it running: nothing is replaced
    finally:
        os.kill(kernel["pid"], signal.SIGCONT)
    assert run(root, state="status")["state"] == "alive"


def test_a_kernel_whose_heartbeat_does_not_greet_is_unresponsive(root):
    # A running process whose heartbeat endpoint accepts but never speaks (as a wedged
    # ZeroMQ I/O thread would): the probe, not the process state, must notice.
    kernel = run(root)
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        path = Path(kernel["connection_file"])
        info = json.loads(path.read_text())
        info["hb_port"] = mute.getsockname()[1]
        path.write_text(json.dumps(info))
        assert run(root, state="status")["state"] == "unresponsive"
