"""The rk_kernel module against real ipykernel kernels on this machine.

The module's functions are imported from roles/rk_kernel/library/rk_kernel.py and driven with
the test interpreter (which has ipykernel); parallel and detached cases run the module file as
a script, the way Ansible runs it.
"""

import importlib.util
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import waiting
from tests import kernels

MODULE_PATH = Path(__file__).resolve().parents[2] / "roles/rk_kernel/library/rk_kernel.py"
_spec = importlib.util.spec_from_file_location("rk_kernel", MODULE_PATH)
rk_kernel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rk_kernel)

DEADLINE_S = 20


@pytest.fixture
def root(tmp_path):
    """A private state root; every kernel started under it is stopped afterwards."""
    state_root = tmp_path / "state"
    yield state_root
    rk_kernel.run({"state": "stopped", "all": True, "state_root": str(state_root),
                   "stop_timeout": 1})


def params(root, **kw):
    base = {"name": "k", "python": sys.executable, "state_root": str(root)}
    base.update(kw)
    return base


def start(root, **kw):
    return rk_kernel.run(params(root, **kw))["kernels"][kw.get("name", "k")]


def status(root, name="k"):
    return rk_kernel.run(params(root, name=name, state="status"))["kernels"][name]


def alive(pid):
    return rk_kernel.running(rk_kernel.read_stat(pid))


def wait_until(predicate, what, timeout=DEADLINE_S):
    return waiting.wait_until(predicate, what, timeout)


def secret(info):
    return json.loads(Path(info["connection_file"]).read_text())["key"]


def run_module_script(args, tmp_path, **popen):
    """Run the module file as Ansible does (args in a JSON file); returns the Popen."""
    argfile = tmp_path / ("args-%d.json" % time.monotonic_ns())
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    return subprocess.Popen([sys.executable, str(MODULE_PATH), str(argfile)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def execute(info, code):
    """Run code in the kernel through its connection file; returns what it printed."""
    return kernels.execute(Path(info["connection_file"]), code, timeout=DEADLINE_S)


@pytest.mark.fast
def test_start_writes_private_connection_file_and_returns_no_key(root):
    info = start(root)
    cf = Path(info["connection_file"])
    assert info["state"] == "alive" and info["changed"] is True
    assert stat.S_IMODE(cf.stat().st_mode) == 0o600
    assert stat.S_IMODE(cf.parent.stat().st_mode) & 0o777 == 0o700
    assert stat.S_IMODE(cf.parent.parent.stat().st_mode) == 0o700
    assert all(port > 0 for port in info["ports"].values())
    assert len(set(info["ports"].values())) == 5
    on_disk = json.loads(cf.read_text())
    assert on_disk["signature_scheme"] == "hmac-sha256" and on_disk["ip"] == "127.0.0.1"
    assert info["ports"]["shell"] == on_disk["shell_port"]
    assert secret(info) not in json.dumps(info)
    assert info["rss_bytes"] > 0 and info["gpu_mem_mib"] is None
    assert info["python"] == os.path.realpath(sys.executable) or info["python"] == sys.executable


@pytest.mark.fast
def test_a_client_executes_code_through_the_connection_file(root):
    assert execute(start(root), "print(1+1)").strip() == "2"


@pytest.mark.fast
def test_second_start_returns_the_running_kernel_unchanged(root):
    first = start(root)
    second = start(root)
    assert second["changed"] is False
    assert second["pid"] == first["pid"] and second["ports"] == first["ports"]


@pytest.mark.fast
def test_ten_parallel_starts_make_one_kernel(root, tmp_path):
    procs = [run_module_script(params(root), tmp_path) for _ in range(10)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out)["kernels"]["k"])
    assert len(set(r["pid"] for r in results)) == 1
    assert sum(r["changed"] for r in results) == 1
    assert all(r["state"] == "alive" and 0 not in r["ports"].values() for r in results)
    assert list(rk_kernel.run(params(root, name=None, state="status"))["kernels"]) == ["k"]


@pytest.mark.fast
def test_killed_kernel_is_reported_dead_and_started_anew(root):
    first = start(root)
    os.kill(first["pid"], signal.SIGKILL)
    wait_until(lambda: not alive(first["pid"]), "the kernel is dead")
    dead = status(root)
    assert dead["state"] == "dead" and dead["rss_bytes"] is None
    second = start(root)
    assert second["changed"] is True and second["pid"] != first["pid"]
    assert execute(second, "print(40 + 2)").strip() == "42"


@pytest.mark.fast
def test_stop_kills_children_that_ignore_sigterm(root):
    info = start(root)
    # A child and grandchild ignoring SIGTERM, plus one in its own session (as DataLoader
    # workers or daemonising tools do): only the ppid walk finds that one.
    code = (
        "import subprocess\n"
        "a = subprocess.Popen(['sh', '-c', 'trap \"\" TERM; sleep 1000 & wait'])\n"
        "b = subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
        "print(a.pid, b.pid)\n"
    )
    sh_pid, own_session_pid = map(int, execute(info, code).split())
    wait_until(lambda: rk_kernel.descendants([sh_pid], rk_kernel.all_processes()),
               "the grandchild sleep runs")
    tree = rk_kernel.kernel_tree(json.loads((Path(info["connection_file"]).parent
                                             / "state.json").read_text()))
    assert {info["pid"], sh_pid, own_session_pid} <= set(tree) and len(tree) >= 4

    t0 = time.monotonic()
    stopped = rk_kernel.run(params(root, state="stopped", stop_timeout=1))["kernels"]["k"]
    assert time.monotonic() - t0 < 1 + rk_kernel.KILL_GRACE_S
    assert stopped["state"] == "stopped" and stopped["changed"] is True
    assert [pid for pid in tree if alive(pid)] == []
    assert not Path(info["connection_file"]).parent.exists()
    assert status(root)["state"] == "absent"


@pytest.mark.fast
def test_stop_of_an_absent_kernel_changes_nothing(root):
    result = rk_kernel.run(params(root, state="stopped"))
    assert result["changed"] is False and result["kernels"]["k"]["state"] == "absent"


@pytest.mark.fast
def test_reused_pid_is_dead_and_never_signalled(root):
    info = start(root)
    rk_kernel.run(params(root, state="stopped", stop_timeout=1))
    # An unrelated process now "owns" the recorded pid (own session, like a kernel would).
    stranger = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        kdir = Path(info["connection_file"]).parent
        kdir.mkdir(mode=0o700)
        record = {"pid": stranger.pid, "pgid": stranger.pid, "boot_id": rk_kernel.boot_id(),
                  "starttime": rk_kernel.read_stat(stranger.pid)["starttime"] - 1,
                  "python": sys.executable, "started_at": time.time(), "name": "k",
                  "spyder": False, "cmdline": []}
        (kdir / "state.json").write_text(json.dumps(record))
        assert status(root)["state"] == "dead"
        result = rk_kernel.run(params(root, state="stopped", stop_timeout=1))
        assert result["changed"] is True and not kdir.exists()
        assert stranger.poll() is None, "stop signalled a process that is not the kernel"
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.fast
@pytest.mark.parametrize("record", ["", "{not json", "[]", '{"pid": 1, "starttime": 1}',
                                    '{"pid": "1", "starttime": 5, "boot_id": "x"}'])
def test_broken_state_record_is_dead_and_replaced(root, record):
    kdir = root / rk_kernel.host_name() / "k"
    kdir.mkdir(mode=0o700, parents=True)
    (kdir / "state.json").write_text(record)
    assert status(root)["state"] == "dead"
    info = start(root)
    assert info["state"] == "alive" and info["changed"] is True
    assert alive(1)  # nothing recorded was signalled


@pytest.mark.fast
@pytest.mark.parametrize("bad", ["", "../etc", "a b", "-rf", ".hidden", "k/x", "x" * 65,
                                 "ké"])
def test_bad_kernel_names_are_rejected(root, bad):
    with pytest.raises(rk_kernel.KernelError, match="invalid kernel name"):
        rk_kernel.run(params(root, name=bad))
    assert not root.exists()


@pytest.mark.fast
def test_bad_environment_names_are_rejected(root):
    with pytest.raises(rk_kernel.KernelError, match="invalid environment variable"):
        rk_kernel.run(params(root, env={"A=B": "x"}))


@pytest.mark.fast
def test_check_mode_changes_nothing(root):
    would = rk_kernel.run(params(root), check_mode=True)
    assert would["changed"] is True and not root.exists()
    info = start(root)
    would_stop = rk_kernel.run(params(root, state="stopped"), check_mode=True)
    assert would_stop["changed"] is True
    assert status(root)["state"] == "alive" and alive(info["pid"])
    assert rk_kernel.run(params(root), check_mode=True)["changed"] is False


@pytest.mark.fast
def test_environment_gpus_and_cwd_reach_the_kernel(root, tmp_path):
    info = start(root, env={"RK_TEST": "yes"}, gpus=["1", "3"], cwd=str(tmp_path))
    out = execute(info, "import os; print(os.environ['RK_TEST'], "
                        "os.environ['CUDA_VISIBLE_DEVICES'], os.getcwd(), "
                        "os.environ.get('JPY_PARENT_PID'))")
    assert out.split() == ["yes", "1,3", str(tmp_path), "None"]


@pytest.mark.fast
def test_kernel_holds_no_lock_and_no_module_descriptor(root):
    info = start(root)
    fds = Path("/proc/%d/fd" % info["pid"])
    targets = []
    for fd in fds.iterdir():
        with contextlib.suppress(FileNotFoundError):  # the kernel's threads open and close fds
            targets.append(os.readlink(fd))
    assert not [t for t in targets if t.endswith(".lock")]
    assert os.readlink(fds / "0") == "/dev/null"
    assert os.readlink(fds / "1").endswith("kernel.log")


@pytest.mark.fast
def test_kernel_survives_the_end_of_the_calling_session(root, tmp_path):
    # The module runs as the leader of its own session, like an SSH session's shell; hanging
    # up that session (SIGHUP to its group) must not reach the kernel.
    proc = run_module_script(params(root), tmp_path, start_new_session=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    pid = json.loads(out)["kernels"]["k"]["pid"]
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGHUP)  # the module is gone; its group is empty
    info = status(root)
    assert info["state"] == "alive" and info["pid"] == pid
    assert rk_kernel.read_stat(pid)["sid"] == pid != rk_kernel.read_stat(os.getpid())["sid"]


@pytest.mark.fast
def test_failed_start_shows_scrubbed_log_and_leaves_nothing(root, tmp_path):
    # A "python" that prints its connection file (key included) and exits.
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\ncat \"$4\"\necho 'No module named ipykernel_launcher' >&2\n"
                    "exit 3\n")
    fake.chmod(0o755)
    with pytest.raises(rk_kernel.KernelError) as err:
        start(root, python=str(fake))
    msg = str(err.value)
    assert "exited with code 3" in msg and "install ipykernel" in msg
    assert '"key": "<key>"' in msg
    assert not (root / rk_kernel.host_name() / "k").exists()


@pytest.mark.fast
def test_start_timeout_kills_the_slow_kernel(root, tmp_path):
    fake = tmp_path / "python"
    pidfile = tmp_path / "pid"
    fake.write_text("#!/bin/sh\necho $$ > %s\nexec sleep 1000\n" % pidfile)
    fake.chmod(0o755)
    with pytest.raises(rk_kernel.KernelError, match="did not bind its ports within 0.5 s"):
        start(root, python=str(fake), start_timeout=0.5)
    assert not (root / rk_kernel.host_name() / "k").exists()
    assert not alive(int(pidfile.read_text()))


@pytest.mark.fast
def test_missing_python_is_a_clear_error(root):
    with pytest.raises(rk_kernel.KernelError, match="python 'no-such-python3' not found"):
        start(root, python="no-such-python3")


@pytest.mark.fast
@pytest.mark.parametrize("damage", ["symlink", "world-writable"])
def test_unsafe_state_directory_is_refused(root, tmp_path, damage):
    hostdir = root / rk_kernel.host_name()
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    root.mkdir(mode=0o700)
    if damage == "symlink":
        hostdir.symlink_to(real)
    else:
        hostdir.mkdir()
        hostdir.chmod(0o777)
    with pytest.raises(rk_kernel.KernelError, match="refusing state directory"):
        start(root)
    assert list(real.iterdir()) == []


@pytest.mark.fast
def test_status_lists_every_kernel_of_the_host(root):
    a = start(root, name="a")
    start(root, name="b")
    os.kill(a["pid"], signal.SIGKILL)
    wait_until(lambda: not alive(a["pid"]), "kernel a is dead")
    listed = rk_kernel.run(params(root, name=None, state="status"))
    assert listed["changed"] is False
    assert {n: k["state"] for n, k in listed["kernels"].items()} == {"a": "dead", "b": "alive"}
    stopped = rk_kernel.run(params(root, name=None, state="stopped", all=True))["kernels"]
    assert sorted(stopped) == ["a", "b"]
    assert rk_kernel.run(params(root, name=None, state="status"))["kernels"] == {}


# ---------------------------------------------------------------- front ends (issue 5)


def test_interrupted_stops_a_running_cell_and_keeps_the_kernel(root):
    import threading

    info = start(root)
    result = {}
    cell = threading.Thread(target=lambda: result.update(out=_interrupted_sleep(info)))
    cell.start()
    wait_until(lambda: "sleeping" in _log(info), "the cell runs")
    interrupted = rk_kernel.run(params(root, state="interrupted"))["kernels"]["k"]
    cell.join(DEADLINE_S)
    assert result.get("out") == "KeyboardInterrupt"
    assert interrupted["pid"] == info["pid"] and alive(info["pid"])


def _log(info):
    return (Path(info["connection_file"]).parent / "kernel.log").read_text()


def _interrupted_sleep(info):
    code = ("import sys, time\nprint('sleeping', file=sys.__stderr__, flush=True)\n"
            "try:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('KeyboardInterrupt')")
    return execute(info, code).strip()


def test_interrupting_an_absent_kernel_says_so(root):
    with pytest.raises(rk_kernel.KernelError, match="absent.*nothing to interrupt"):
        rk_kernel.run(params(root, state="interrupted"))


def test_restarted_keeps_name_key_and_settings_with_a_new_process(root, tmp_path):
    info = start(root, env={"RK_MARK": "kept"})
    key = secret(info)
    execute(info, "x = 1")
    again = rk_kernel.run(params(root, state="restarted", env={}))["kernels"]["k"]
    assert again["changed"] and again["state"] == "alive" and again["pid"] != info["pid"]
    assert not alive(info["pid"])
    assert secret(again) == key
    assert execute(again, "import os; print(os.environ['RK_MARK'], 'x' in globals())").split() == ["kept", "False"]


def test_key_file_gives_the_kernel_the_front_ends_key_and_is_deleted(root, tmp_path):
    front = tmp_path / "kernel-front.json"
    front.write_text(json.dumps({"key": "f" * 64, "signature_scheme": "hmac-sha256", "shell_port": 1}))
    info = start(root, key_file=str(front))
    assert secret(info) == "f" * 64 and not front.exists()
    assert execute(info, "print(2 + 2)").strip() == "4"

    front.write_text(json.dumps({"key": "f" * 64}))
    assert start(root, key_file=str(front))["changed"] is False  # attached: same key
    front.write_text(json.dumps({"key": "e" * 64}))
    with pytest.raises(rk_kernel.KernelError, match="another key"):
        start(root, key_file=str(front))


def test_a_start_removes_leased_kernels_whose_lease_expired(root):
    leased = start(root, name="leased", lease=1.0)
    lease = Path(leased["connection_file"]).parent / "lease"
    assert lease.exists()
    os.utime(lease, (time.time() - 60, time.time() - 60))
    start(root, name="other")
    assert not alive(leased["pid"])
    assert status(root, "leased")["state"] == "absent"
    assert status(root, "other")["state"] == "alive"
