"""Front ends on remote kernels (issue 5): rk's tunnels, kernelspecs, interrupt, restart, console, Spyder.

Real SSH test hosts, the installed `rk`, and real clients: jupyter_client, nbclient through a
KernelManager (the path JupyterLab takes), jupyter console in a pseudo-terminal, and the
spyder-kernels comm protocol.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests import waiting
from tests.integration.test_rk_commands import RK, SYSTEM_PYTHON, only_kernel, rk, rk_json
from tests.kernels import execute

pytestmark = pytest.mark.hosts

DEADLINE_S = 60
INTERRUPT_BOUND_S = 5  # the bound for an interrupt to stop time.sleep(60)


@pytest.fixture
def env():
    return dict(os.environ, NO_COLOR="1")


@pytest.fixture
def up_host(make_hosts, env):
    """A host with kernel `default` started by `rk up` (with its tunnel); stopped afterwards."""
    group = make_hosts(n=1, image="python")
    inv = str(group.inventory)
    try:
        kernel = only_kernel(rk_json(env, "up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON))
        yield group, inv, kernel
    finally:
        rk(env, "stop", "-i", inv, "--all")


def wait_until(predicate, what, timeout=DEADLINE_S):
    return waiting.wait_until(predicate, what, timeout)


def tunnel_states() -> list[dict]:
    root = Path(os.environ["XDG_STATE_HOME"]) / "rk" / "tunnels"
    return [json.loads(p.read_text()) for p in root.glob("*.json")] if root.is_dir() else []


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited supervisor waits for its reaper, whoever that is)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP listener on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            address, hexport = cols[1].rsplit(":", 1)
            if cols[3] == "0A" and int(hexport, 16) == port:
                found.add(address)
    return found


def remote_kernels(host) -> list[str]:
    out = host.exec("ps -u rk -o pid=,args=", check=False).stdout
    return [line for line in out.splitlines() if "ipykernel_launcher" in line or "spyder_kernels" in line]


def run_cell_in_thread(connection, code: str) -> tuple[threading.Thread, queue.Queue]:
    """Start `code` in the kernel from another thread; the queue gets its reply status and ename."""
    from jupyter_client import BlockingKernelClient

    client = BlockingKernelClient()
    client.load_connection_info(connection) if isinstance(connection, dict) else client.load_connection_file(str(connection))
    client.start_channels()
    client.wait_for_ready(timeout=DEADLINE_S)
    results: queue.Queue = queue.Queue()

    def run():
        try:
            reply = client.execute_interactive(code, timeout=120, output_hook=lambda msg: None)
            results.put((reply["content"]["status"], reply["content"].get("ename")))
        finally:
            client.stop_channels()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, results


# ---------------------------------------------------------------- tunnels


def test_tunnel_file_is_a_local_kernel_that_survives_a_killed_tunnel(up_host, env):
    group, inv, kernel = up_host
    host = group.hosts[0]
    tunnel_file = Path(kernel["tunnel_file"])
    assert tunnel_file.parent == Path(env["JUPYTER_RUNTIME_DIR"]) and tunnel_file.name.startswith("kernel-")
    assert stat.S_IMODE(tunnel_file.stat().st_mode) == 0o600
    info = json.loads(tunnel_file.read_text())
    remote = json.loads(group.hosts[0].exec(f"cat {kernel['connection_file']}").stdout)
    assert info["ip"] == "127.0.0.1" and info["key"] == remote["key"]
    assert "local_file" not in kernel  # the tunnel file replaced the fetched one
    assert kernel["tunnel"] == "up"

    # jupyter_client, given only the file: no SSH settings at all.
    assert execute(tunnel_file, "import socket; x = 41; print(socket.gethostname())").strip() == host.container

    # Every listener of the tunnel is on 127.0.0.1 only.
    for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
        assert listening_addresses(info[name]) == {"0100007F"}, name

    (state,) = tunnel_states()
    (ssh_pid,) = children(state["pid"])
    os.kill(ssh_pid, signal.SIGKILL)
    wait_until(lambda: children(state["pid"]) and children(state["pid"]) != [ssh_pid], "ssh is started again")
    assert json.loads(tunnel_file.read_text()) == info  # same local ports, same file
    assert execute(tunnel_file, "print(x)", timeout=DEADLINE_S).strip() == "41"

    status = only_kernel(rk_json(env, "status", "-i", inv))
    assert status["tunnel"] == "up" and status["tunnel_file"] == str(tunnel_file)


def test_tunnel_stop_then_tunnel_again_and_stop_tears_it_down(up_host, env):
    group, inv, kernel = up_host
    (state,) = tunnel_states()
    rk_json(env, "tunnel", "-i", inv, "--host", "h1", "--stop")
    assert not Path(kernel["tunnel_file"]).exists()
    assert not running(state["pid"])
    status = only_kernel(rk_json(env, "status", "-i", inv))
    assert status["state"] == "alive" and "tunnel" not in status  # the kernel is untouched

    again = only_kernel(rk_json(env, "tunnel", "-i", inv, "--host", "h1"))
    assert again["tunnel"] == "up"
    assert execute(Path(again["tunnel_file"]), "print(6 * 7)").strip() == "42"
    (state,) = tunnel_states()

    rk_json(env, "stop", "-i", inv, "--host", "h1")
    wait_until(lambda: not running(state["pid"]), "the tunnel's supervisor is gone", 15)
    assert tunnel_states() == [] and not Path(again["tunnel_file"]).exists()


def test_unreachable_host_is_reported_unreachable_and_its_tunnel_kept(up_host, env):
    group, inv, kernel = up_host
    group.hosts[0].pause()
    try:
        result = rk(env, "status", "-i", inv, "--json", timeout=120)
        (entry,) = json.loads(result.stdout)["hosts"]
        assert entry["status"] == "unreachable", entry
        (state,) = tunnel_states()
        assert running(state["pid"])  # a tunnel problem is not a reason to stop anything
    finally:
        group.hosts[0].unpause()
    assert execute(Path(kernel["tunnel_file"]), "print('back')", timeout=DEADLINE_S).strip() == "back"


# ---------------------------------------------------------------- interrupt, restart, console


def test_rk_interrupt_stops_a_sleep_and_restart_keeps_name_key_and_tunnel(up_host, env):
    group, inv, kernel = up_host
    tunnel_file = Path(kernel["tunnel_file"])
    before = tunnel_file.read_text()
    execute(tunnel_file, "x = 1")
    thread, results = run_cell_in_thread(tunnel_file, "import time; time.sleep(60)")
    time.sleep(1)  # let the cell start; the bound below is about the interrupt, not this
    began = time.monotonic()
    interrupted = subprocess.Popen([RK, "interrupt", "-i", inv, "--host", "h1"], env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert results.get(timeout=INTERRUPT_BOUND_S * 2) == ("error", "KeyboardInterrupt")
    took = time.monotonic() - began
    assert interrupted.wait(60) == 0, interrupted.stderr.read()
    print(f"rk interrupt: cell stopped {took:.1f} s after rk started, rk took {time.monotonic() - began:.1f} s")
    assert took < INTERRUPT_BOUND_S
    thread.join(10)

    restarted = only_kernel(rk_json(env, "restart", "-i", inv, "--host", "h1"))
    assert restarted["name"] == "default" and restarted["pid"] != kernel["pid"]
    assert restarted["ports"] != kernel["ports"]
    assert tunnel_file.read_text() == before  # same key, same local ports
    assert execute(tunnel_file, "print('x' in globals())").strip() == "False"


def test_rk_console_prints_the_remote_hostname(up_host, env):
    pexpect = pytest.importorskip("pexpect")
    group, inv, kernel = up_host
    child = pexpect.spawn(RK, ["console", "-i", inv, "--host", "h1"], env=env, encoding="utf-8", timeout=DEADLINE_S)
    try:
        child.expect(r"In \[")
        child.sendline("import socket; print('host=' + socket.gethostname())")
        child.expect(f"host={group.hosts[0].container}")
        child.sendline("exit(keep_kernel=True)")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert only_kernel(rk_json(env, "status", "-i", inv))["state"] == "alive"


def test_jupyter_console_existing_tunnel_file(up_host, env):
    pexpect = pytest.importorskip("pexpect")
    group, inv, kernel = up_host
    jupyter = str(Path(sys.executable).with_name("jupyter"))
    child = pexpect.spawn(jupyter, ["console", "--existing", kernel["tunnel_file"]], env=env, encoding="utf-8",
                          timeout=DEADLINE_S)
    try:
        child.expect(r"In \[")
        child.sendline("import socket; print('host=' + socket.gethostname())")
        child.expect(f"host={group.hosts[0].container}")
    finally:
        child.close(force=True)


# ---------------------------------------------------------------- kernelspecs


@pytest.fixture
def kernelspec(make_hosts, env):
    """An rk kernelspec for a python host, with a short lease; removed afterwards."""
    group = make_hosts(n=1, image="python")
    inv = str(group.inventory)
    name = "ks" + uuid.uuid4().hex[:6]
    result = rk(env, "kernelspec", "install", "-i", inv, "--host", "h1", "--name", name, "--python", SYSTEM_PYTHON,
                "--lease", "10")
    assert result.returncode == 0, result.stderr + result.stdout
    spec_name = f"rk-h1-{name}"
    try:
        yield group, spec_name
    finally:
        rk(env, "kernelspec", "remove", "--host", "h1", "--name", name)
        rk(env, "stop", "-i", inv, "--all")


def test_kernelspec_is_listed_with_an_existing_executable(kernelspec, env):
    from jupyter_client.kernelspec import KernelSpecManager

    group, spec_name = kernelspec
    spec = KernelSpecManager().get_kernel_spec(spec_name)
    assert Path(spec.argv[0]).is_absolute() and os.access(spec.argv[0], os.X_OK)
    assert spec.argv[-1] == "{connection_file}"
    listed = rk_json(env, "kernelspec", "list")
    assert [k["kernelspec"] for h in listed["hosts"] for k in h["kernels"]] == [spec_name]


def test_nbclient_runs_a_notebook_through_the_kernelspec_and_shutdown_leaves_nothing(kernelspec, env):
    import nbclient
    import nbformat

    group, spec_name = kernelspec
    host = group.hosts[0]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("import socket; y = 6 * 7"),
                      nbformat.v4.new_code_cell("print(socket.gethostname(), y)")]
    client = nbclient.NotebookClient(notebook, kernel_name=spec_name, timeout=DEADLINE_S, startup_timeout=120)
    client.execute()
    assert notebook.cells[1].outputs[0]["text"].split() == [host.container, "42"]
    wait_until(lambda: remote_kernels(host) == [], "the remote kernel is gone after shutdown", 30)


def test_interrupt_through_the_kernelspec_in_signal_and_message_modes(kernelspec):
    from jupyter_client.manager import KernelManager

    group, spec_name = kernelspec
    km = KernelManager(kernel_name=spec_name)
    km.start_kernel()
    try:
        client = km.client()
        client.start_channels()
        client.wait_for_ready(timeout=120)
        for mode in ("signal", "message"):
            km.kernel_spec.interrupt_mode = mode
            replies: queue.Queue = queue.Queue()
            # stop_on_error=False: otherwise the first mode's KeyboardInterrupt makes ipykernel
            # abort what arrives while it flushes its queue, and on a loaded machine the second
            # mode's request can land in that window and be answered "aborted" (seen once in CI).
            msg_id = client.execute("import time; time.sleep(60)", stop_on_error=False)

            def reply_to(msg_id=msg_id):
                while (msg := client.get_shell_msg(timeout=120))["parent_header"].get("msg_id") != msg_id:
                    pass
                replies.put(msg)

            threading.Thread(target=reply_to, daemon=True).start()
            time.sleep(1)
            began = time.monotonic()
            km.interrupt_kernel()
            reply = replies.get(timeout=INTERRUPT_BOUND_S * 2)
            assert (reply["content"]["status"], reply["content"].get("ename")) == ("error", "KeyboardInterrupt"), mode
            assert time.monotonic() - began < INTERRUPT_BOUND_S, mode
        client.stop_channels()
    finally:
        km.shutdown_kernel(now=False)
    wait_until(lambda: remote_kernels(group.hosts[0]) == [], "the remote kernel is gone after shutdown", 30)


def test_a_killed_front_end_leaves_no_orphan_after_the_lease(kernelspec):
    from jupyter_client.manager import KernelManager

    group, spec_name = kernelspec
    km = KernelManager(kernel_name=spec_name)
    km.start_kernel()
    try:
        client = km.client()
        client.start_channels()
        client.wait_for_ready(timeout=120)
        client.stop_channels()
        assert len(remote_kernels(group.hosts[0])) == 1
        os.kill(km.provisioner.process.pid, signal.SIGKILL)  # the launcher, as if the front end crashed
        # Lease 10 s, then SIGTERM; generous bound for a slow machine.
        wait_until(lambda: remote_kernels(group.hosts[0]) == [], "the orphaned kernel is gone", 60)
    finally:
        km.cleanup_resources()


# ---------------------------------------------------------------- Spyder


def test_spyder_kernel_answers_the_spyder_comm_handshake(make_hosts, wheelhouse, env):
    group = make_hosts(n=1, image="bare")
    inventory = yaml.safe_load(group.inventory.read_text())
    inventory["all"]["vars"] = {"rk_python_wheelhouse": str(wheelhouse)}
    group.inventory.write_text(yaml.safe_dump(inventory))
    inv = str(group.inventory)
    try:
        kernel = only_kernel(rk_json(env, "up", "-i", inv, "--host", "h1", "--spyder"))
        assert remote_kernels(group.hosts[0]) and "spyder_kernels.console" in remote_kernels(group.hosts[0])[0]
        assert spyder_is_defined(Path(kernel["tunnel_file"]), "spyder_probe = 42", "spyder_probe") is True
    finally:
        rk(env, "stop", "-i", inv, "--all")


def spyder_is_defined(connection_file: Path, code: str, name: str):
    """Spyder's handshake: kernel_info with spyder_kernels_info, comm 'spyder_api', '_comm_ready'
    answered, then a blocking remote call (is_defined, as the editor asks) and its reply."""
    from jupyter_client import BlockingKernelClient

    client = BlockingKernelClient()
    client.load_connection_file(str(connection_file))
    client.start_channels()
    try:
        client.wait_for_ready(timeout=DEADLINE_S)
        info = client.kernel_info(reply=True, timeout=DEADLINE_S)
        assert info["content"].get("spyder_kernels_info"), "not a spyder-kernels kernel"
        client.execute_interactive(code, timeout=DEADLINE_S)
        comm_id = uuid.uuid4().hex
        client.shell_channel.send(client.session.msg("comm_open", {"comm_id": comm_id, "target_name": "spyder_api", "data": {}}))

        def comm_msgs():
            deadline = time.monotonic() + DEADLINE_S
            while time.monotonic() < deadline:
                try:
                    msg = client.get_iopub_msg(timeout=1)
                except queue.Empty:
                    continue
                if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == comm_id:
                    yield msg
            pytest.fail("no comm message from the kernel")

        def send(spyder_msg_type, content):
            data = {"spyder_msg_type": spyder_msg_type, "content": content}
            client.shell_channel.send(client.session.msg("comm_msg", {"comm_id": comm_id, "data": data}))

        messages = comm_msgs()
        ready = next(m for m in messages if m["content"]["data"]["content"].get("call_name") == "_comm_ready")
        call = ready["content"]["data"]["content"]
        send("remote_call_reply", {"is_error": False, "call_id": call["call_id"], "call_name": call["call_name"],
                                   "call_return_value": None})
        call_id = uuid.uuid4().hex
        send("remote_call", {"call_name": "is_defined", "call_id": call_id,
                             "settings": {"blocking": True, "send_reply": True},
                             "call_args": [name], "call_kwargs": {}, "buffered_args": [], "buffered_kwargs": []})
        reply = next(m for m in messages if m["content"]["data"]["content"].get("call_id") == call_id)
        content = reply["content"]["data"]["content"]
        assert content["is_error"] is False, content
        return content["call_return_value"]
    finally:
        client.stop_channels()


def test_a_clean_shutdown_from_the_front_end_leaves_the_launchers_log_quiet(kernelspec, tmp_path):
    """A Jupyter server's log got "channel N: open failed: connect failed: Connection refused"
    lines from the launcher's ssh after every kernelspec kernel it shut down."""
    from jupyter_client.manager import KernelManager

    group, spec_name = kernelspec
    log = tmp_path / "launcher.log"
    km = KernelManager(kernel_name=spec_name)
    with open(log, "w") as stderr:
        km.start_kernel(stderr=stderr)
    client = km.client()
    client.start_channels()  # as a server's: heartbeats keep coming until the very end
    try:
        client.wait_for_ready(timeout=120)
        assert client.execute_interactive("print(6 * 7)", timeout=DEADLINE_S)["content"]["status"] == "ok"
        km.shutdown_kernel(now=False)
        wait_until(lambda: remote_kernels(group.hosts[0]) == [], "the remote kernel is gone after shutdown", 30)
        time.sleep(3)  # the client's heartbeats of the next seconds reach for the gone kernel
    finally:
        client.stop_channels()
        km.cleanup_resources()
    assert "open failed" not in log.read_text(), log.read_text()
