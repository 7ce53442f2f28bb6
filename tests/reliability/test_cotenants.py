"""Co-tenants (issue 6, case 5): another user of the same host, `other`, against rk's kernels.

Over tcp (the default) the kernel's five ports are on the host's 127.0.0.1, which every user
of the host reaches: `other`'s execute_request, signed with a wrong key, is dropped (never run,
never answered), but `other` can subscribe to IOPub and read what the owner's cells print.
That is ZeroMQ's PUB socket: it has no authentication. `rk up --hardened` (transport ipc)
binds unix sockets inside the kernel's own 0700 directory instead, and rk's tunnel forwards
local ports to them: `other` cannot even connect, and receives nothing. `rk up --encrypt`
(CurveZMQ) keeps tcp but encrypts and authenticates every channel: `other` connects, but no
handshake completes, so their SUB receives nothing and their requests (even signed with the
HMAC key) never arrive; the owner's client, through rk's tunnel file, runs code.

`other`'s client runs on the host with the host's python3 and its zmq and jupyter_client
(the `python` image has Debian's ipykernel).
"""

from __future__ import annotations

import json
import subprocess

import yaml
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.curve_env import curve_wheelhouse
from tests.kernels import execute
from tests.reliability.support import SYSTEM_PYTHON, kernels_of, rk, rk_json, wait_until

# `other`'s client. execute: send one execute_request to a shell endpoint, signed with the key
# in KEYFILE ("-" for a random wrong key), and say whether a reply came within 5 s. listen:
# subscribe to an IOPub endpoint and print every message until STOPFILE exists or the text
# MARK was seen. connect: try a plain connect() to unix sockets.
CLIENT = r'''
import os, secrets, socket, sys, time
import zmq
from jupyter_client.session import Session

mode = sys.argv[1]
if mode == "execute":
    endpoint, keyfile, code = sys.argv[2:5]
    key = secrets.token_hex(32) if keyfile == "-" else __import__("json").load(open(keyfile))["key"]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    Session(key=key.encode(), signature_scheme="hmac-sha256").send(sock, "execute_request", {
        "code": code, "silent": False, "store_history": False, "user_expressions": {},
        "allow_stdin": False, "stop_on_error": True})
    print("reply" if sock.poll(5000) else "no reply", flush=True)
elif mode == "listen":
    endpoint, stopfile, mark = sys.argv[2:5]
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    print("listening", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(stopfile) and time.monotonic() < deadline:
        if sock.poll(200):
            frames = sock.recv_multipart()
            print("message", flush=True)
            if any(mark.encode() in f for f in frames):
                print("seen", flush=True)
                break
else:
    for path in sys.argv[2:]:
        try:
            socket.socket(socket.AF_UNIX).connect(path)
            print(path, "connected", flush=True)
        except OSError as exc:
            print(path, type(exc).__name__, flush=True)
'''


@pytest.fixture(scope="module")
def group(module_hosts):
    group = module_hosts(n=1, image="python")
    group.hosts[0].exec("useradd -m other")
    return group


@pytest.fixture(scope="module")
def host(group):
    return group.hosts[0]


@pytest.fixture(scope="module")
def owner(module_user, group):
    """The owner's environment, its inventory, and its kernels `shared` (tcp, the default) and
    `hardened` (rk up --hardened), each reached through rk's tunnel. Started at once: the two
    playbook runs overlap."""
    inv = str(group.inventory)
    env = module_user(group.inventory)

    def up(name, *extra):
        doc = rk_json(env, "up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON, "--name", name, *extra)
        kernel = kernels_of(doc)[name]
        assert kernel["state"] == "alive"
        return kernel

    with ThreadPoolExecutor(2) as pool:
        shared, hardened = pool.map(lambda args: up(*args), [("shared",), ("hardened", "--hardened")])
    return {"env": env, "inv": inv, "shared": shared, "hardened": hardened}


def as_user(host, user: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the co-tenant client as `user` on the host (argv as a list: no shell quoting)."""
    return subprocess.run(["podman", "exec", "--user", user, host.container, "python3", "-c", CLIENT, *args],
                          capture_output=True, text=True, timeout=timeout, check=True)


def remote_info(host, kernel: dict) -> dict:
    """The kernel's connection file as the host has it (read as root; the test keeps it in memory)."""
    return json.loads(host.exec(f"cat {kernel['connection_file']}").stdout)


def endpoint(info: dict, channel: str) -> str:
    port = info[f"{channel}_port"]
    return f"ipc://{info['ip']}-{port}" if info["transport"] == "ipc" else f"tcp://{info['ip']}:{port}"


class Listener:
    """`other` subscribed to an IOPub endpoint, in the background, until told to stop."""

    def __init__(self, host, address: str, mark: str):
        self.host, self.stopfile = host, f"/tmp/stop-listening-{uuid.uuid4().hex[:8]}"
        self.proc = subprocess.Popen(
            ["podman", "exec", "--user", "other", host.container, "python3", "-c", CLIENT, "listen", address,
             self.stopfile, mark], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def finished(self) -> bool:
        return self.proc.poll() is not None

    def stop(self) -> list[str]:
        self.host.exec(f"touch {self.stopfile}")
        self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        assert self.proc.returncode == 0, self.proc.stderr.read()
        return self.lines


def mark() -> str:
    return f"owner-output-{uuid.uuid4().hex[:12]}"


def test_another_users_execute_request_with_a_wrong_key_is_dropped_and_never_runs(host, owner):
    kernel = owner["shared"]
    shell = endpoint(remote_info(host, kernel), "shell")
    by_other, by_owner = f"/tmp/run-by-other-{uuid.uuid4().hex[:8]}", f"/tmp/run-by-owner-{uuid.uuid4().hex[:8]}"

    assert as_user(host, "other", "execute", shell, "-", f"open({by_other!r}, 'w').close()").stdout.split() == ["no", "reply"]
    # The same client with the kernel's key, as its owner: answered, and its code ran. The kernel
    # handles shell messages in arrival order, so `other`'s would have run before this one.
    assert as_user(host, host.user, "execute", shell, kernel["connection_file"],
                   f"open({by_owner!r}, 'w').close()").stdout.split() == ["reply"]
    assert host.exec(f"test -e {by_owner}", check=False).returncode == 0
    assert host.exec(f"test -e {by_other}", check=False).returncode != 0, "a message with a wrong key ran"
    log = host.exec(f"cat {Path(kernel['connection_file']).parent}/kernel.log").stdout
    assert "Invalid Signature" in log


def test_over_tcp_another_user_can_read_the_owners_output_a_documented_limitation(host, owner):
    text = mark()
    listener = Listener(host, endpoint(remote_info(host, owner["shared"]), "iopub"), text)
    wait_until(lambda: "listening" in listener.lines, "other's subscriber runs")
    # A subscription reaches the kernel a moment after the connect: the owner prints until
    # `other` has seen it (or 20 cells).
    for _ in range(20):
        assert execute(Path(owner["shared"]["tunnel_file"]), f"print({text!r})").strip() == text
        if listener.finished():
            break
    assert "seen" in listener.stop()


def test_hardened_kernel_binds_its_channels_in_its_private_directory_not_on_tcp(host, owner):
    kernel = owner["hardened"]
    info = remote_info(host, kernel)
    kernel_dir = str(Path(kernel["connection_file"]).parent)
    assert info["transport"] == "ipc" and str(Path(info["ip"]).parent) == kernel_dir
    # 0700 (jupyter_client adds the sticky bit to the directory of the file it writes)
    assert int(host.exec(f"stat -c %a {kernel_dir}").stdout, 8) & 0o777 == 0o700
    # None of its five channels is on TCP. ipykernel's one other listener, in both modes, is its
    # IOPub pipe for forked subprocesses: a PULL socket (it only receives) that drops every
    # message without a 128-bit secret. The tcp kernel has it beside its five ports.
    shared = owner["shared"]
    shared_listeners = tcp_listeners(host, shared["pid"])
    assert {f"0100007F:{port:04X}" for port in shared["ports"].values()} <= set(shared_listeners)
    assert len(tcp_listeners(host, kernel["pid"])) == len(shared_listeners) - 5
    # What front ends use is still tcp on this machine's loopback, through rk's tunnel.
    local = json.loads(Path(kernel["tunnel_file"]).read_text())
    assert (local["transport"], local["ip"]) == ("tcp", "127.0.0.1")
    assert Path(kernel["tunnel_file"]).stat().st_mode & 0o777 == 0o600


def test_hardened_another_user_cannot_connect_and_receives_nothing(host, owner):
    kernel = owner["hardened"]
    info = remote_info(host, kernel)
    sockets = [f"{info['ip']}-{info[p + '_port']}" for p in ("shell", "iopub", "stdin", "control", "hb")]
    assert [line.split()[-1] for line in as_user(host, "other", "connect", *sockets).stdout.splitlines()] == \
        ["PermissionError"] * 5
    # Control: the owner can connect to the same five sockets.
    assert [line.split()[-1] for line in as_user(host, host.user, "connect", *sockets).stdout.splitlines()] == \
        ["connected"] * 5

    text = mark()
    listener = Listener(host, endpoint(info, "iopub"), text)
    wait_until(lambda: "listening" in listener.lines, "other's subscriber runs")
    for _ in range(5):  # the owner's cells run and print, through rk's tunnel
        assert execute(Path(kernel["tunnel_file"]), f"print({text!r})").strip() == text
    assert listener.stop() == ["listening"], "another user received the hardened kernel's output"


def test_hardened_kernels_need_the_tunnel_and_are_never_downgraded(host, owner):
    env, inv = owner["env"], owner["inv"]
    no_tunnel = rk(env, "up", "-i", inv, "--host", "h1", "--name", "other-name", "--hardened", "--no-tunnel")
    assert no_tunnel.returncode == 2 and "--hardened needs rk's tunnel" in no_tunnel.stderr

    with ThreadPoolExecutor(2) as pool:  # two playbook runs at once
        fetching = pool.submit(rk, env, "fetch", "-i", inv, "--host", "h1", "--name", "hardened")
        # `shared` runs with tcp: a hardened start of that name is refused, never handed back.
        refusing = pool.submit(rk, env, "up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON,
                               "--name", "shared", "--hardened")
    fetched, refused = fetching.result(), refusing.result()
    assert fetched.returncode == 1 and "is hardened" in fetched.stderr, fetched.stderr
    assert "Traceback" not in fetched.stderr
    assert not list(Path(env["JUPYTER_RUNTIME_DIR"]).glob("kernel-rk-h1@hardened*.json"))
    assert refused.returncode == 1 and "runs with transport tcp" in refused.stderr, refused.stderr


# Local addresses of the process's sockets that listen on TCP (IPv4 or IPv6).
TCP_LISTENERS = r'''
import os, sys
pid = sys.argv[1]
mine = set()
for fd in os.listdir(f"/proc/{pid}/fd"):
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:  # closed meanwhile
        continue
    if target.startswith("socket:["):
        mine.add(target[8:-1])
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).readlines()[1:]:
        cols = line.split()
        if cols[3] == "0A" and cols[9] in mine:
            print(cols[1])
'''


def tcp_listeners(host, pid: int) -> list[str]:
    # As the kernel's user: the container's root may not read another user's /proc/<pid>/fd.
    argv = ["podman", "exec", "--user", host.user, host.container, "python3", "-c", TCP_LISTENERS, str(pid)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.fixture(scope="module")
def encrypted(group, owner):
    """The owner's kernel `curve` (rk up --encrypt), in rk's own venv from a wheelhouse with
    ipykernel 7.4 (the host's Debian ipykernel 6.17 cannot encrypt), through rk's tunnel."""
    inventory = yaml.safe_load(Path(owner["inv"]).read_text())
    inventory["all"]["vars"] = {"rk_python_wheelhouse": str(curve_wheelhouse())}
    path = Path(owner["inv"]).with_name("inventory-curve.yml")
    path.write_text(yaml.safe_dump(inventory))
    doc = rk_json(owner["env"], "up", "-i", str(path), "--host", "h1", "--name", "curve", "--encrypt")
    kernel = kernels_of(doc)["curve"]
    assert kernel["state"] == "alive" and kernel["encrypted"] is True
    return kernel


def test_encrypted_another_user_receives_nothing_and_cannot_get_a_request_through(host, owner, encrypted):
    info = remote_info(host, encrypted)
    assert (info["transport"], len(info["curve_secretkey"])) == ("tcp", 40)
    # `other` somehow has the HMAC key, but not the curve keys: a file of theirs with only that.
    stolen = f"/tmp/stolen-{uuid.uuid4().hex[:8]}.json"
    host.exec(f"echo '{json.dumps({'key': info['key']})}' > {stolen} && chown other {stolen}")
    shell = endpoint(info, "shell")
    by_other = f"/tmp/run-by-other-{uuid.uuid4().hex[:8]}"
    for keyfile in ("-", stolen):
        assert as_user(host, "other", "execute", shell, keyfile, f"open({by_other!r}, 'w').close()").stdout.split() \
            == ["no", "reply"]

    text = mark()
    listener = Listener(host, endpoint(info, "iopub"), text)
    wait_until(lambda: "listening" in listener.lines, "other's subscriber runs")
    for _ in range(5):  # the owner's cells run and print, through rk's tunnel, encrypted end to end
        assert execute(Path(encrypted["tunnel_file"]), f"print({text!r})").strip() == text
    assert listener.stop() == ["listening"], "another user received the encrypted kernel's output"
    assert host.exec(f"test -e {by_other}", check=False).returncode != 0, "another user's request ran"
    # The tunnel file carries the keys (0600), so front ends on this machine encrypt too.
    local = json.loads(Path(encrypted["tunnel_file"]).read_text())
    assert local["curve_publickey"] == info["curve_publickey"]
    assert Path(encrypted["tunnel_file"]).stat().st_mode & 0o777 == 0o600


def test_encrypt_on_an_ipykernel_too_old_is_refused_in_a_sentence(host, owner):
    refused = rk(owner["env"], "up", "-i", owner["inv"], "--host", "h1", "--python", SYSTEM_PYTHON,
                 "--name", "too-old", "--encrypt")
    assert refused.returncode == 1, refused.stderr
    assert "CurveZMQ needs ipykernel >= 7.3" in refused.stderr and "ipykernel 6.17" in refused.stderr
    assert "hint:" in refused.stderr and "Traceback" not in refused.stderr
    assert kernels_of(rk_json(owner["env"], "status", "-i", owner["inv"], "--host", "h1")).get("too-old") is None
