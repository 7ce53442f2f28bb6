#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rk contributors
# MIT License (see pyproject.toml)
"""Start, stop and inspect named Jupyter kernels on this host, each in one call."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rk_kernel
short_description: Start, stop and inspect named Jupyter kernels that outlive the SSH session
description:
  - Manages named IPython (or Spyder) kernels of the connecting user on the target host.
  - Every action is one module call, so one SSH round trip.
  - The kernel runs detached (own session, stdin from C(/dev/null), output to C(kernel.log)),
    so it survives the end of the SSH connection and C(SIGHUP).
  - Where systemd-logind kills a user's processes at logout (C(KillUserProcesses=yes),
    C(KillOnlyUsers)), the kernel runs in a scope of the user's own systemd
    (C(systemd-run --user --scope)), which outlives logout when the user lingers; without
    linger O(state=started) fails and names the fix (C(loginctl enable-linger <user>)).
  - State lives in C(<state_root>/<hostname>/<name>/) (0700) beside a C(.lock) file that
    serialises every change on this host; C(kernel.json) (0600) is the connection file.
  - The HMAC key is generated here, written only to C(kernel.json), and never returned.
  - Pure standard library; runs on any Python 3.7+ of the host, which need not be the
    interpreter that runs the kernel.
version_added: "0.1.0"
options:
  name:
    description:
      - Kernel name, C(^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$).
      - Required for O(state=started); for O(state=stopped) unless O(all=true);
        omit it with O(state=status) to list every kernel of this host.
    type: str
  state:
    description:
      - V(started) starts the kernel unless it is alive (a dead one is cleaned up and started anew).
      - V(stopped) stops it (SIGTERM to its whole process tree and session, SIGKILL after
        O(stop_timeout)) and removes its directory.
      - V(status) reports V(alive), V(unresponsive), V(starting), V(dead) or V(absent); never
        changes anything. V(unresponsive) is a kernel process that is there but stopped
        (C(SIGSTOP), state C(T)) or whose heartbeat socket sends no ZeroMQ greeting within
        2 s; it is left alone (never signalled), and other states treat it as running.
      - V(interrupted) sends SIGINT to the kernel process (what a front end's interrupt does).
      - V(restarted) stops the kernel and starts it again with the settings, name and key it
        was started with (new ports); the other options are ignored.
    type: str
    choices: [started, stopped, status, interrupted, restarted]
    default: started
  all:
    description: With O(state=stopped) or O(state=status), act on every kernel of this host.
    type: bool
    default: false
  python:
    description:
      - Interpreter that runs the kernel (a path, or a command looked up in C(PATH)).
      - Empty, the interpreter the rk_python role recorded for this host in
        C(~/.local/share/rk/python-<hostname>), else C(python3).
    type: str
    default: ""
  state_root:
    description: Root of rk's state; the host name level is added below it.
    type: path
    default: ~/.local/state/rk
  spyder:
    description: Run C(spyder_kernels.console) instead of C(ipykernel_launcher).
    type: bool
    default: false
  transport:
    description:
      - V(tcp) binds five ports on 127.0.0.1, which every user of the host can connect to
        (their messages are rejected without the key, but they can read IOPub output).
      - V(ipc) (hardened) binds five unix sockets C(<name>/k-N) inside the kernel's own 0700
        directory, so other users cannot connect at all. The path must fit a unix socket
        (107 bytes). O(state=started) refuses to hand back a running tcp kernel for V(ipc).
    type: str
    choices: [tcp, ipc]
    default: tcp
  transport_encryption:
    description:
      - With O(state=started), CurveZMQ on all five channels: a key pair made here by the
        kernel's own pyzmq goes into C(kernel.json) beside the HMAC key (never returned), so
        other users of the host can neither read IOPub nor complete a connection.
      - Needs ipykernel 7.3 and jupyter_client 8.9 or newer in the kernel's interpreter (else
        the call fails saying so) and the same on the front end's side. Checked after the
        start: every channel must announce CURVE.
      - A running kernel without encryption is refused, not reused.
    type: bool
    default: false
  env:
    description: Environment variables added for the kernel; keys must be identifiers.
    type: dict
    default: {}
  gpus:
    description:
      - GPU indices or UUIDs exported as C(CUDA_VISIBLE_DEVICES).
      - Omitted, the variable is inherited; an empty list hides every GPU.
    type: list
    elements: str
  cwd:
    description: Working directory of the kernel; the user's home when omitted.
    type: path
  extra_args:
    description: Arguments appended to the kernel command line (no shell is involved).
    type: list
    elements: str
    default: []
  key_file:
    description:
      - With O(state=started), a connection file on the host (one a front end wrote) whose
        HMAC key the kernel is to use instead of a new one. It is read and deleted.
      - When the kernel already runs with that key it is left as it is; with another key the
        call fails.
    type: path
  lease:
    description:
      - With O(state=started), seconds the kernel lives without a lease holder touching
        C(<name>/lease); 0 for none. A later start of any kernel on the host removes
        kernels whose lease expired.
    type: float
    default: 0
  start_timeout:
    description: Seconds to wait for the kernel to bind its ports.
    type: float
    default: 30
  stop_timeout:
    description: Seconds to wait after SIGTERM before SIGKILL.
    type: float
    default: 10
notes:
  - Supports check mode; O(state=status) runs even in check mode.
  - Linux only (reads C(/proc)).
author: rk contributors
"""

EXAMPLES = r"""
- name: Start kernel "train" with the rk venv's Python on GPU 0
  rk_kernel:
    name: train
    python: ~/.local/share/rk/venv/bin/python
    gpus: ["0"]
  register: __rk_kernel_result

- name: List the kernels of this host
  rk_kernel:
    state: status

- name: Stop every kernel of this host
  rk_kernel:
    state: stopped
    all: true
"""

RETURN = r"""
kernels:
  description:
    - The kernels acted on, by name. Never contains the HMAC key.
  returned: always
  type: dict
  contains:
    state:
      description: >-
        V(alive), V(unresponsive) (O(state=status) only: stopped, or no heartbeat
        greeting), V(starting) (alive, ports not bound yet), V(dead), V(absent), V(stopped)
        (just stopped by this call), or in check mode the state found.
      type: str
    name: {description: Kernel name., type: str}
    pid: {description: Kernel process id (null when absent)., type: int}
    started_at: {description: Start time, ISO 8601 UTC., type: str}
    uptime_s: {description: Seconds since start (null unless alive)., type: float}
    python: {description: Absolute path of the kernel's interpreter., type: str}
    rss_bytes: {description: Resident memory of the kernel process (null unless alive)., type: int}
    gpu_mem_mib:
      description: GPU memory of the kernel's process tree; null without C(nvidia-smi).
      type: int
    connection_file: {description: Path of C(kernel.json) on the host., type: str}
    hostname: {description: The host's own name (the state directory level)., type: str}
    ports:
      description:
        - Ports, keys C(shell), C(iopub), C(stdin), C(control), C(hb).
        - With transport V(ipc), the numbers N of the sockets C(<ip>-N).
      type: dict
    ip: {description: "Address the kernel binds: 127.0.0.1, or the socket path prefix for ipc.", type: str}
    transport: {description: ZeroMQ transport (tcp or ipc)., type: str}
    encrypted: {description: Whether its connection file carries CurveZMQ keys., type: bool}
    spyder: {description: Whether it is a Spyder kernel., type: bool}
    changed: {description: Whether this call changed this kernel., type: bool}
  sample:
    train:
      state: alive
      name: train
      pid: 4242
      started_at: "2024-05-01T10:00:00+00:00"
      uptime_s: 12.5
      python: /home/ana/.local/share/rk/venv/bin/python
      rss_bytes: 61440000
      gpu_mem_mib: null
      connection_file: /home/ana/.local/state/rk/gpu1/train/kernel.json
      hostname: gpu1
      ports: {shell: 40001, iopub: 40002, stdin: 40003, control: 40004, hb: 40005}
      ip: 127.0.0.1
      transport: tcp
      encrypted: false
      spyder: false
      changed: true
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PORT_NAMES = ("shell", "iopub", "stdin", "control", "hb")
KERNEL_IP = "127.0.0.1"
TRANSPORTS = ("tcp", "ipc")
# ipc: ipykernel binds "<ip>-<port>"; the prefix is this name inside the 0700 kernel directory.
IPC_PREFIX = "k"
UNIX_PATH_MAX = 107  # bytes of a unix socket path (sun_path less its NUL)
# A live kernel's ZeroMQ I/O thread greets a new connection at once, whatever its Python does
# (a long cell holds the GIL, not that thread); a stopped or wedged one never does.
HEARTBEAT_DEADLINE_S = 2.0
ZMTP_SIGNATURE_LEN = 10  # 0xFF, 8 bytes of padding, 0x7F
# Variables that tie a kernel to a parent process or a front end; a detached kernel must not
# inherit them from whatever started Ansible.
PARENT_ENV = ("JPY_PARENT_PID", "JPY_INTERRUPT_EVENT", "JPY_SESSION_NAME")
# The kernel and its tree get this long to die after SIGKILL (D state, slow exit).
KILL_GRACE_S = 5.0
POLL_S = 0.05
LOG_TAIL_BYTES = 4000
# A kernel that dies while starting with less than this free beside its files is blamed on
# the full disk: its own complaint may not even have reached kernel.log.
LOW_SPACE_BYTES = 1 << 20
# One line, the path of the interpreter the rk_python role last provisioned for this host
# (roles/rk_python/templates/probe.sh.j2 writes it): the default when no python is given.
PYTHON_RECORD = "~/.local/share/rk/python-%s"

ARGUMENT_SPEC = dict(
    name=dict(type="str"),
    state=dict(type="str", default="started",
               choices=["started", "stopped", "status", "interrupted", "restarted"]),
    all=dict(type="bool", default=False),
    python=dict(type="str", default=""),
    state_root=dict(type="path", default="~/.local/state/rk"),
    spyder=dict(type="bool", default=False),
    transport=dict(type="str", default="tcp", choices=list(TRANSPORTS)),
    transport_encryption=dict(type="bool", default=False),
    env=dict(type="dict", default={}),
    gpus=dict(type="list", elements="str"),
    cwd=dict(type="path"),
    extra_args=dict(type="list", elements="str", default=[]),
    key_file=dict(type="path", no_log=False),
    lease=dict(type="float", default=0.0),
    start_timeout=dict(type="float", default=30.0),
    stop_timeout=dict(type="float", default=10.0),
)


class KernelError(Exception):
    """A failure explained in one readable message (becomes fail_json's msg)."""


# ---------------------------------------------------------------- processes (/proc)


def read_stat(pid):
    """Fields of /proc/<pid>/stat we use, or None when the process is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("ascii", "replace")
    except (IOError, OSError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(")") + 2:].split()
    return {
        "state": fields[0],
        "ppid": int(fields[1]),
        "pgid": int(fields[2]),
        "sid": int(fields[3]),
        "starttime": int(fields[19]),
    }


def boot_id():
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def running(st):
    """A zombie has exited; it only waits to be reaped."""
    return st is not None and st["state"] not in ("Z", "X", "x")


def all_processes():
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = read_stat(int(entry))
            if running(st):
                procs[int(entry)] = st
    return procs


def same_process(pid, starttime, boot):
    """True when pid is still the process recorded (guards against pid reuse)."""
    st = read_stat(pid)
    return running(st) and st["starttime"] == starttime and boot == boot_id()


def descendants(roots, procs):
    children = {}
    for pid, st in procs.items():
        children.setdefault(st["ppid"], []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def reap(pids):
    """Collect exit status of our own children (only when called in-process, as in tests)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except OSError:
            pass


def kernel_tree(record):
    """Processes that belong to a recorded kernel: {pid: starttime}.

    The kernel leads its own session, and its descendants may make their own process groups
    or sessions (DataLoader workers), so we take the session, the group and the ppid tree.
    While a process still has the session id S, Linux does not hand out pid S again, so
    when the leader is gone every process of session S started after it is a leftover of it.
    When pid S is alive but is another process (reuse), nothing is ours.
    """
    pid, starttime = record["pid"], record["starttime"]
    if record["boot_id"] != boot_id():
        return {}
    procs = all_processes()
    leader = procs.get(pid)
    if leader is not None and leader["starttime"] != starttime:
        return {}
    tree = set(p for p, st in procs.items()
               if (st["sid"] == pid or st["pgid"] == pid) and st["starttime"] >= starttime)
    if leader is not None:
        tree.add(pid)
    tree |= descendants(tree, procs)
    return dict((p, procs[p]["starttime"]) for p in tree)


def signal_tree(tree, sig):
    for pid, starttime in tree.items():
        st = read_stat(pid)
        if running(st) and st["starttime"] == starttime:
            try:
                os.kill(pid, sig)
            except OSError:
                pass


def wait_gone(tree, timeout):
    deadline = time.monotonic() + timeout
    while True:
        reap(tree)
        alive = dict((p, t) for p, t in tree.items()
                     if running(read_stat(p)) and read_stat(p)["starttime"] == t)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(POLL_S)


def terminate(record, stop_timeout):
    """SIGTERM the kernel's tree, SIGKILL what is left after stop_timeout. Returns survivors."""
    tree = kernel_tree(record)
    if not tree:
        return {}
    signal_tree(tree, signal.SIGTERM)
    left = wait_gone(tree, stop_timeout)
    # Children may have forked or left the group meanwhile: look again before SIGKILL.
    tree.update(kernel_tree(record))
    for pid, starttime in list(tree.items()):
        if not running(read_stat(pid)):
            del tree[pid]
    if left or tree:
        signal_tree(tree, signal.SIGKILL)
    return wait_gone(tree, KILL_GRACE_S)


def is_socket(path):
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def zmtp_greets(family, address, deadline=HEARTBEAT_DEADLINE_S):
    """Whether a ZeroMQ peer at `address` sends its greeting's signature within `deadline`.

    Needs no key and sends nothing: ZeroMQ greets every new connection first. The kernel's
    socket accepts the connection even when the process is stopped (the OS does that), so
    only the greeting tells a live kernel from a frozen one.
    """
    data = zmtp_exchange(family, address, [(b"", ZMTP_SIGNATURE_LEN)], deadline)
    return data is not None and data[:1] == b"\xff" and data[9:10] == b"\x7f"


def zmtp_exchange(family, address, steps, deadline):
    """Connect, then for each (send, size) of `steps` send and read `size` bytes, all within
    `deadline`. What was read, or None if that fails."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(deadline)
        sock.connect(address)
        end = time.monotonic() + deadline
        data = b""
        for send, size in steps:
            sock.sendall(send)
            size += len(data)
            while len(data) < size:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                sock.settimeout(left)
                chunk = sock.recv(size - len(data))
                if not chunk:
                    return None
                data += chunk
        return data
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


ZMTP_GREETING_LEN = 64  # signature 10, version 2, mechanism 20, as-server 1, filler 31


def zmtp_mechanism(family, address, deadline=HEARTBEAT_DEADLINE_S):
    """The security mechanism (NULL, PLAIN, CURVE) a ZeroMQ peer announces, or None.

    libzmq sends the rest of its greeting once it has the peer's signature and major version;
    we send no mechanism of ours, so no handshake is ever attempted."""
    hello = b"\xff" + b"\0" * 8 + b"\x7f\x03"
    data = zmtp_exchange(family, address, [(b"", ZMTP_SIGNATURE_LEN),
                                           (hello, ZMTP_GREETING_LEN - ZMTP_SIGNATURE_LEN)], deadline)
    if data is None or data[:1] != b"\xff" or data[9:10] != b"\x7f":
        return None
    return data[12:32].rstrip(b"\0").decode("ascii", "replace")


def listening_ports():
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A":  # TCP_LISTEN
                        ports.add(int(cols[1].rsplit(":", 1)[1], 16))
        except (IOError, OSError, StopIteration):
            pass
    return ports


def rss_bytes(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (IOError, OSError):
        pass
    return None


def gpu_memory_by_pid():
    """{pid: MiB} from nvidia-smi, or None when there is no usable nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            timeout=10, check=True, universal_newlines=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    usage = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            usage[int(parts[0])] = usage.get(int(parts[0]), 0) + int(parts[1])
    return usage


# ---------------------------------------------------------------- files


def host_name():
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "localhost"


def check_private_dir(path, follow=False):
    """Refuse a state directory another user could tamper with.

    follow: the directory may be reached through a symlink (the state root, which users
    move to a bigger disk); the directory it names must still be theirs and private.
    """
    st = os.stat(path) if follow else os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise KernelError("refusing state directory %s: it is a symlink; point state_root "
                          "(rk_kernel_state_root) at the real directory" % path)
    if not stat.S_ISDIR(st.st_mode):
        raise KernelError("refusing state directory %s: it is not a directory" % path)
    if st.st_uid != os.geteuid():
        raise KernelError("refusing state directory %s: owned by uid %d, not by you (uid %d)"
                          % (path, st.st_uid, os.geteuid()))
    if st.st_mode & 0o022:
        raise KernelError("refusing state directory %s: group- or world-writable (mode %s); "
                          "run: chmod 700 %s" % (path, oct(st.st_mode & 0o7777), path))


def ensure_private_dir(path):
    """Create path (and missing parents) 0700 whatever the umask; check it either way."""
    missing = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    for new in reversed(missing):
        try:
            os.mkdir(new, 0o700)
            os.chmod(new, 0o700)
        except FileExistsError:
            pass  # a concurrent call made it; checked below
    # The level above too: whoever can write there can swap this directory for their own.
    check_private_dir(os.path.dirname(path), follow=True)
    check_private_dir(path)


def write_private(path, text):
    """Create a new 0600 file (never follows or reuses an existing one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def write_json_atomic(path, data):
    tmp = path + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    write_private(tmp, json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_json(path):
    """Parsed JSON, or None if missing or half written (ipykernel rewrites kernel.json in place)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (IOError, OSError, ValueError):
        return None


@contextlib.contextmanager
def host_lock(hostdir, timeout):
    """Exclusive flock on <hostdir>/.lock; O_CLOEXEC so no kernel ever inherits it."""
    fd = os.open(os.path.join(hostdir, ".lock"),
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise KernelError("another rk call has held %s/.lock for %.0f s; retry later"
                                      % (hostdir, timeout))
                time.sleep(POLL_S)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- one kernel


class Kernel:
    """The files of one named kernel: <hostdir>/<name>/{kernel.json,state.json,kernel.log}."""

    def __init__(self, hostdir, name):
        self.name = name
        self.dir = os.path.join(hostdir, name)
        self.connection_file = os.path.join(self.dir, "kernel.json")
        self.state_file = os.path.join(self.dir, "state.json")
        self.log_file = os.path.join(self.dir, "kernel.log")
        self.lease_file = os.path.join(self.dir, "lease")

    def key(self):
        return (read_json(self.connection_file) or {}).get("key")

    def curve(self):
        """The CurveZMQ (public, secret) key pair of kernel.json, or None."""
        info = read_json(self.connection_file) or {}
        pair = (info.get("curve_publickey"), info.get("curve_secretkey"))
        return pair if all(pair) else None

    def lease_expired(self, rec):
        """A leased kernel whose holder stopped touching its lease file."""
        lease = rec.get("lease_s") if rec else None
        if not isinstance(lease, (int, float)) or lease <= 0:
            return False
        try:
            return time.time() - os.stat(self.lease_file).st_mtime > lease
        except OSError:
            return True

    def exists(self):
        return os.path.lexists(self.dir)

    def record(self):
        """The start record, or None when missing or malformed (then nothing is signalled)."""
        rec = read_json(self.state_file)
        if not isinstance(rec, dict):
            return None
        ints = [rec.get(k) for k in ("pid", "starttime")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 1 for v in ints):
            return None
        if not isinstance(rec.get("boot_id"), str):
            return None
        return rec

    def state(self):
        """(state, record): alive | starting | dead | absent."""
        if not self.exists():
            return "absent", None
        rec = self.record()
        if not rec or not same_process(rec["pid"], rec["starttime"], rec["boot_id"]):
            return "dead", rec
        if 0 in self.ports().values():
            return "starting", rec
        return "alive", rec

    def ports(self):
        info = read_json(self.connection_file) or {}
        # Only the ports leave this function; the key stays in the file.
        return dict((p, int(info.get(p + "_port") or 0)) for p in PORT_NAMES)

    def endpoint(self):
        """(transport, ip) of the connection file: ("tcp", "127.0.0.1") or ("ipc", prefix)."""
        info = read_json(self.connection_file) or {}
        if info.get("transport") == "ipc":
            return "ipc", str(info.get("ip") or os.path.join(self.dir, IPC_PREFIX))
        return "tcp", KERNEL_IP

    def bound(self, ports):
        """Whether the kernel listens on all of `ports` (tcp ports, or ipc socket files)."""
        if 0 in ports.values():
            return False
        transport, ip = self.endpoint()
        if transport == "ipc":
            return all(is_socket("%s-%d" % (ip, n)) for n in ports.values())
        return set(ports.values()) <= listening_ports()

    def responsive(self, rec):
        """False for a kernel that is stopped (SIGSTOP) or does not greet on its heartbeat."""
        st = read_stat(rec["pid"])
        if st is None or st["state"] in ("T", "t"):
            return False
        return zmtp_greets(*self.address(self.ports()["hb"]))

    def address(self, port):
        """(socket family, address) of one of the kernel's channels."""
        transport, ip = self.endpoint()
        if transport == "ipc":
            return socket.AF_UNIX, "%s-%d" % (ip, port)
        return socket.AF_INET, (ip, port)

    def info(self, state, rec, changed, gpu_usage=None):
        alive = state in ("alive", "starting", "unresponsive")
        pid = rec.get("pid") if rec else None
        started = rec.get("started_at") if rec else None
        if not isinstance(started, (int, float)):
            started = None
        gpu = None
        if alive and gpu_usage is not None:
            gpu = sum(gpu_usage.get(p, 0) for p in kernel_tree(rec))
        return {
            "state": state,
            "name": self.name,
            "pid": pid,
            "started_at": iso(started),
            "uptime_s": round(time.time() - started, 1) if alive and started else None,
            "python": rec.get("python") if rec else None,
            "rss_bytes": rss_bytes(pid) if alive else None,
            "gpu_mem_mib": gpu,
            "connection_file": self.connection_file if state != "absent" else None,
            "hostname": host_name(),
            "ports": self.ports() if alive else None,
            "ip": self.endpoint()[1],
            "transport": self.endpoint()[0],
            "encrypted": self.curve() is not None,
            "spyder": bool(rec.get("spyder")) if rec else None,
            "changed": changed,
        }

    def remove(self, record, stop_timeout):
        survivors = terminate(record, stop_timeout) if record else {}
        if survivors:
            raise KernelError("kernel %r: processes %s survived SIGKILL (stuck in the kernel, "
                              "state D?); not removing %s"
                              % (self.name, sorted(survivors), self.dir))
        shutil.rmtree(self.dir, ignore_errors=True)


def iso(ts):
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(
        timespec="seconds")


def python_record():
    """Where the rk_python role records the interpreter it provisioned on this host."""
    return os.path.expanduser(PYTHON_RECORD % host_name())


def resolve_python(python):
    recorded = ""
    if not python:
        with contextlib.suppress(IOError, OSError), open(python_record()) as f:
            recorded = f.read().strip()
        python = recorded or "python3"
    path = shutil.which(os.path.expanduser(python))
    if not path and recorded:
        raise KernelError("python %s, which playbooks/provision.yml recorded for %s in %s, is gone; "
                          "run provision.yml again, or set rk_kernel_python"
                          % (python, host_name(), python_record()))
    if not path:
        raise KernelError("python %r not found on %s (PATH=%s); install it or set "
                          "rk_kernel_python" % (python, host_name(), os.environ.get("PATH", "")))
    return os.path.abspath(path)


def kernel_env(params):
    env = dict(os.environ)
    for key in PARENT_ENV:
        env.pop(key, None)
    for key, value in (params["env"] or {}).items():
        env[key] = "" if value is None else str(value)
    if params["gpus"] is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g).strip() for g in params["gpus"])
    return env


def scrub(text, *secrets_):
    for secret in secrets_:
        if secret:
            text = text.replace(secret, "<key>")
    return re.sub(r"\b[0-9a-fA-F-]{32,}\b", "<hex>", text)


def log_tail(kernel, *secrets_):
    try:
        with open(kernel.log_file, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
            return scrub(f.read().decode("utf-8", "replace"), *secrets_).strip()
    except (IOError, OSError):
        return ""


def start_hint(tail, params, python):
    if "No module named" in tail:
        pkg = "spyder-kernels" if params["spyder"] else "ipykernel"
        if not params["python"] and not os.path.exists(python_record()):
            return ("no Python was provisioned for rk on this host, and %s lacks %s: run "
                    "playbooks/provision.yml%s first, or set rk_kernel_python to a Python that "
                    "has it" % (python, pkg, " -e rk_python_spyder=true" if params["spyder"] else ""))
        return ("install %s for %s (the rk_python role does it: playbooks/provision.yml%s)"
                % (pkg, python, " -e rk_python_spyder=true" if params["spyder"] else ""))
    return ("see %s on the host; raise start_timeout (rk_kernel_start_timeout) if the "
            "Python is slow to import (network home?)" % "kernel.log")


# What a restart needs to start the kernel again as it was.
LAUNCH_PARAMS = ("python", "spyder", "env", "gpus", "cwd", "extra_args", "lease", "transport",
                 "transport_encryption")


def read_key_file(path):
    """The HMAC key of a front end's connection file; the file is deleted either way."""
    try:
        info = read_json(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    key = info.get("key") if isinstance(info, dict) else None
    if not isinstance(key, str) or len(key) < 32:
        raise KernelError("key_file %s holds no key of at least 32 characters" % path)
    if info.get("signature_scheme", "hmac-sha256") != "hmac-sha256":
        raise KernelError("key_file %s: only hmac-sha256 signatures are supported" % path)
    return key


def launch(kernel, params, key=None, curve=None):
    """Write the connection file, start the kernel detached, wait for its ports.

    curve: a restart's CurveZMQ key pair, kept (with transport_encryption) like its key."""
    python = resolve_python(params["python"])
    hint_params = params
    # Recorded as resolved, so a restart runs the same interpreter whatever is recorded later.
    params = dict(params, python=python)
    cwd = os.path.expanduser(params["cwd"] or "~")
    if not os.path.isdir(cwd):
        raise KernelError("cwd %s is not a directory on %s" % (cwd, host_name()))
    key = key or secrets.token_hex(32)
    if params["transport_encryption"]:
        curve = curve or curve_keypair(kernel, python, cwd, params)
    else:
        curve = None
    entry = "spyder_kernels.console" if params["spyder"] else "ipykernel_launcher"
    argv = [python, "-m", entry, "-f", kernel.connection_file] + list(params["extra_args"])
    argv = outlive_logout(kernel.name) + argv
    proc = None
    try:
        os.mkdir(kernel.dir, 0o700)
        os.chmod(kernel.dir, 0o700)
        write_connection_file(kernel, key, params["transport"], curve)
        proc = spawn(kernel, argv, cwd, params)
        record = start_record(kernel, proc, argv, python, params)
        if params["lease"]:
            write_private(kernel.lease_file, "")
        write_json_atomic(kernel.state_file, record)
    except OSError as exc:
        # A full or read-only disk half way: nothing of this kernel may stay, least of all a
        # process no state file knows or a truncated kernel.json a later status trips on.
        discard(kernel, proc)
        raise storage_error(exc, kernel.dir)
    problem = wait_ready(kernel, proc, params["start_timeout"])
    if not problem and curve:
        problem = unencrypted_channels(kernel)
    if problem:
        free = free_bytes(kernel.dir)
        tail = log_tail(kernel, key, curve and curve[1])
        discard(kernel, proc, record)
        if free is not None and free < LOW_SPACE_BYTES:
            raise KernelError("kernel %r on %s %s: the disk of %s is full (%d KiB free)\nhint: %s"
                              % (kernel.name, host_name(), problem, kernel.dir, free // 1024,
                                 SPACE_HINT))
        raise KernelError("kernel %r on %s %s.\n--- kernel.log (tail) ---\n%s\n---\nhint: %s"
                          % (kernel.name, host_name(), problem, tail or "(empty)",
                             start_hint(tail, hint_params, python)))
    return record


def write_connection_file(kernel, key, transport="tcp", curve=None):
    # Ports 0: ipykernel binds random free ports itself and rewrites this file (merging
    # what it found), so no other process can take a port between choosing and binding.
    # With ipc it takes the first free socket numbers "<ip>-1", "<ip>-2", ... instead.
    connection = dict(("%s_port" % p, 0) for p in PORT_NAMES)
    ip = os.path.join(kernel.dir, IPC_PREFIX) if transport == "ipc" else KERNEL_IP
    connection.update(ip=ip, key=key, transport=transport, signature_scheme="hmac-sha256",
                      kernel_name="python3")
    if curve:
        connection.update(curve_publickey=curve[0], curve_secretkey=curve[1])
    write_private(kernel.connection_file, json.dumps(connection, indent=2))


def spawn(kernel, argv, cwd, params):
    """The kernel process, detached: its own session, stdin /dev/null, output to kernel.log."""
    logfd = os.open(kernel.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                    0o600)
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logfd,
                                stderr=subprocess.STDOUT, close_fds=True,
                                start_new_session=True, cwd=cwd, env=kernel_env(params))
    finally:
        os.close(logfd)


def start_record(kernel, proc, argv, python, params):
    st = read_stat(proc.pid)
    return {
        "pid": proc.pid,
        "pgid": proc.pid,
        "starttime": st["starttime"] if st else None,
        "boot_id": boot_id(),
        "cmdline": argv,
        "python": python,
        "started_at": time.time(),
        "name": kernel.name,
        "spyder": params["spyder"],
        "lease_s": params["lease"] or None,
        "launch": dict((k, params[k]) for k in LAUNCH_PARAMS),
    }


def discard(kernel, proc, record=None):
    """Undo a failed launch: kill the kernel's session and remove its directory."""
    if proc is not None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(KILL_GRACE_S)
    if record and record["starttime"] is not None:
        terminate(record, 0)
    shutil.rmtree(kernel.dir, ignore_errors=True)


def free_bytes(path):
    """Bytes this user may still write on path's file system, or None when unknown."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


SPACE_HINT = "free some space there, or set rk_kernel_state_root to a directory on another disk"


def storage_error(exc, path):
    """One sentence for an OSError on rk's files: what is wrong where, and what to do."""
    path = exc.filename or path
    if exc.errno == errno.ENOSPC:
        cause, hint = "no space left on its disk", SPACE_HINT
    elif exc.errno == errno.EDQUOT:
        cause, hint = "your disk quota there is used up", SPACE_HINT
    elif exc.errno == errno.EROFS:
        cause, hint = ("its file system is read-only",
                       "set rk_kernel_state_root to a directory of yours on a writable disk")
    elif exc.errno in (errno.EACCES, errno.EPERM):
        cause, hint = ("permission denied",
                       "make it yours and writable, or set rk_kernel_state_root to a directory of yours")
    else:
        return KernelError("%s: %s" % (type(exc).__name__, exc))
    return KernelError("cannot write %s on %s: %s\nhint: %s" % (path, host_name(), cause, hint))


def wait_ready(kernel, proc, timeout):
    """None once the ports are bound and listening, else what went wrong."""
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            return "exited with code %d while starting" % code
        if kernel.bound(kernel.ports()):
            return None
        if time.monotonic() >= deadline:
            return "did not bind its ports within %g s (start_timeout)" % timeout
        time.sleep(POLL_S)


# ---------------------------------------------------------------- logout killers (logind)

LINGER_DIR = "/var/lib/systemd/linger"
SESSION_SCOPE_RE = re.compile(r"/session-[^/]+\.scope(/|$)")
LOGIND_KILL_PROPERTIES = ("KillUserProcesses", "KillOnlyUsers", "KillExcludeUsers")


def in_session_scope(cgroup_text):
    """Whether /proc/<pid>/cgroup text puts the process in a logind session's scope."""
    return any(SESSION_SCOPE_RE.search(line.split(":", 2)[-1]) for line in cgroup_text.splitlines())


def logind_kill_settings():
    """logind's (KillUserProcesses, KillOnlyUsers, KillExcludeUsers) as it runs, or None when
    it cannot be asked (no busctl, no system bus)."""
    busctl = shutil.which("busctl")
    if not busctl:
        return None
    argv = [busctl, "--json=short", "get-property", "org.freedesktop.login1",
            "/org/freedesktop/login1", "org.freedesktop.login1.Manager"]
    try:
        out = subprocess.run(argv + list(LOGIND_KILL_PROPERTIES), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10,
                             check=True, universal_newlines=True).stdout
        values = tuple(json.loads(line)["data"] for line in out.splitlines() if line.strip())
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return None
    return values if len(values) == len(LOGIND_KILL_PROPERTIES) else None


def logind_kills(user, kill_user_processes, kill_only_users, kill_exclude_users):
    """Whether logind ends `user`'s session processes at logout (its manager_shall_kill)."""
    if not kill_exclude_users and user == "root":  # logind's default exclusion
        return False
    if user in kill_exclude_users:
        return False
    if kill_only_users:
        return user in kill_only_users
    return kill_user_processes is True


def outlive_logout(name):
    """The argv prefix that lets kernel `name` outlive this login session: [] on hosts where
    the end of the session kills nothing (no logind, or KillUserProcesses=no).

    With KillUserProcesses, logind stops the session's whole scope at logout, setsid or not;
    only a scope of the user's own systemd escapes it, and that systemd outlives the last
    session only when the user lingers. systemd-run --scope execs the kernel in place, so the
    pid, session and start time rk records stay the kernel's own.
    """
    try:
        with open("/proc/self/cgroup") as f:
            if not in_session_scope(f.read()):
                return []
    except OSError:
        return []
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # no name for our uid (NSS failing): start as on any other host
        return []
    settings = logind_kill_settings()
    if settings is None or not logind_kills(user, *settings):
        return []
    if not os.path.exists(os.path.join(LINGER_DIR, user)):
        raise KernelError(
            "kernel %r not started on %s: logind kills %s's processes at logout "
            "(KillUserProcesses) and %s does not linger, so the kernel would die with this SSH "
            "session\nhint: an administrator can run 'loginctl enable-linger %s' on %s; rk then "
            "runs kernels under your own systemd, which outlives logout"
            % (name, host_name(), user, user, user, host_name()))
    prefix = ["systemd-run", "--user", "--scope", "--quiet", "--collect",
              "--unit=rk-kernel-%s-%s" % (name, secrets.token_hex(4)), "--"]
    if not os.environ.get("XDG_RUNTIME_DIR"):  # where systemd-run finds the user's systemd
        prefix = ["env", "XDG_RUNTIME_DIR=/run/user/%d" % os.geteuid()] + prefix
    return prefix


# ---------------------------------------------------------------- transport encryption (CurveZMQ)

# ipykernel 7.3 (PR 1515) binds with the connection file's curve keys; jupyter_client 8.9 (PR
# 1110) reads them there. Older ones ignore the keys: the kernel would run unencrypted.
CURVE_NEEDS = (("ipykernel", (7, 3)), ("jupyter_client", (8, 9)))
# Run by the kernel's interpreter: its versions, and a key pair made by its own libzmq. The
# pair comes back on a pipe, never on a command line.
CURVE_PROBE = r"""
import json, sys
found = {}
try:
    from importlib.metadata import version
except ImportError:
    version = None
for dist in ("ipykernel", "jupyter_client"):
    try:
        found[dist] = version(dist)
    except Exception:
        found[dist] = None
try:
    import zmq
    found["curve"] = bool(zmq.has("curve"))
    if found["curve"]:
        public, secret = zmq.curve_keypair()
        found["pair"] = [public.decode("ascii"), secret.decode("ascii")]
except Exception:
    found["curve"] = False
json.dump(found, sys.stdout)
"""
CURVE_HINT = ("rk up --encrypt brings rk's own venv to ipykernel 7.3 or newer; for an interpreter "
              "of yours, pip install 'ipykernel>=7.3' into it, or start the kernel without "
              "encryption (no --encrypt, rk_kernel_transport_encryption: false)")


def version_tuple(text):
    return tuple(int(n) for n in re.findall(r"\d+", text or "")[:2])


def curve_keypair(kernel, python, cwd, params):
    """A fresh (public, secret) CurveZMQ pair from the kernel's interpreter, after checking it
    can encrypt; a KernelError says what is missing."""
    try:
        out = subprocess.run([python, "-c", CURVE_PROBE], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=cwd,
                             env=kernel_env(params), timeout=params["start_timeout"],
                             universal_newlines=True).stdout
        found = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        found = {}
    found = found if isinstance(found, dict) else {}
    what = "kernel %r not started on %s with transport encryption" % (kernel.name, host_name())
    old = ["%s %s" % (dist, found.get(dist) or "(missing)") for dist, least in CURVE_NEEDS
           if version_tuple(found.get(dist)) < least]
    if old:
        raise KernelError("%s: CurveZMQ needs ipykernel >= 7.3 and jupyter_client >= 8.9, but %s "
                          "has %s\nhint: %s" % (what, python, ", ".join(old), CURVE_HINT))
    pair = found.get("pair")
    if not found.get("curve") or not (isinstance(pair, list) and len(pair) == 2):
        raise KernelError("%s: the pyzmq of %s has no CurveZMQ (its libzmq was built without it)"
                          "\nhint: pip install a pyzmq wheel from PyPI into it, which has it"
                          % (what, python))
    return pair[0], pair[1]


def unencrypted_channels(kernel):
    """None when every channel of a started kernel announces CURVE, else what is wrong."""
    plain = [port for port, number in sorted(kernel.ports().items())
             if zmtp_mechanism(*kernel.address(number)) != "CURVE"]
    if plain:
        return ("bound %s without CurveZMQ although its connection file has the keys"
                % ", ".join(plain))
    return None


def check_encryption(kernel, wanted):
    """A running kernel found for an encrypted start must be encrypted: never a silent downgrade."""
    if wanted and kernel.curve() is None:
        raise KernelError("kernel %r runs without transport encryption on %s; stop it first "
                          "(rk stop) to start it encrypted, or use another name"
                          % (kernel.name, host_name()))


# ---------------------------------------------------------------- actions


def validate(params):
    name = params.get("name")
    if name is not None and not NAME_RE.match(name):
        raise KernelError("invalid kernel name %r: use 1-64 letters, digits, '_', '.', '-', "
                          "starting with a letter or digit" % name)
    if params["state"] == "started" and name is None:
        raise KernelError("state=started needs a kernel name")
    if params["state"] == "stopped" and name is None and not params["all"]:
        raise KernelError("state=stopped needs a kernel name or all=true")
    if name is not None and params["all"]:
        raise KernelError("give either name or all=true, not both")
    for key in params["env"] or {}:
        if not ENV_KEY_RE.match(str(key)):
            raise KernelError("invalid environment variable name %r" % (key,))
    if params["state"] in ("interrupted", "restarted") and name is None:
        raise KernelError("state=%s needs a kernel name" % params["state"])
    if params["lease"] < 0:
        raise KernelError("lease must be 0 or positive, got %r" % params["lease"])
    for knob in ("start_timeout", "stop_timeout"):
        if not params[knob] > 0:
            raise KernelError("%s must be positive, got %r" % (knob, params[knob]))


def with_defaults(params):
    full = dict((k, spec.get("default")) for k, spec in ARGUMENT_SPEC.items())
    full.update((k, v) for k, v in params.items() if v is not None)
    return full


def host_dir(params):
    return os.path.join(os.path.expanduser(params["state_root"]), host_name())


def kernel_names(hostdir):
    if not os.path.isdir(hostdir):
        return []
    return sorted(n for n in os.listdir(hostdir)
                  if NAME_RE.match(n) and os.path.isdir(os.path.join(hostdir, n))
                  and not os.path.islink(os.path.join(hostdir, n)))


def lock_timeout(params):
    # Long enough for the holder to finish a start or a stop of every kernel.
    return params["start_timeout"] + params["stop_timeout"] + 2 * KILL_GRACE_S + 30


def check_transport(kernel, transport):
    """A kernel found running for a hardened (ipc) start must be one: never a silent downgrade."""
    if transport == "ipc" and kernel.endpoint()[0] != "ipc":
        raise KernelError("kernel %r runs with transport tcp, which other users of %s can "
                          "connect to; stop it first (rk stop) to start it with ipc, or use "
                          "another name" % (kernel.name, host_name()))


def check_ipc_path(kernel, transport):
    """The longest socket path "<dir>/k-NN" must fit a unix socket address."""
    longest = os.path.join(kernel.dir, IPC_PREFIX) + "-99"
    if transport == "ipc" and len(longest.encode("utf-8")) > UNIX_PATH_MAX:
        raise KernelError("the kernel directory %s is too long for unix sockets (%d bytes at "
                          "most)\nhint: use a shorter kernel name or set rk_kernel_state_root "
                          "to a shorter path" % (kernel.dir, UNIX_PATH_MAX))


def check_key(kernel, key):
    if key is not None and kernel.key() != key:
        raise KernelError("kernel %r runs with another key than key_file's; stop it first or "
                          "use another name" % kernel.name)


def sweep_expired(hostdir, params, keep):
    """Remove leased kernels (other than `keep`) whose lease holder is gone. Under the lock."""
    for name in kernel_names(hostdir):
        kernel = Kernel(hostdir, name)
        state, rec = kernel.state()
        if name != keep and rec and rec.get("lease_s") and (state == "dead" or kernel.lease_expired(rec)):
            check_private_dir(kernel.dir)
            kernel.remove(rec, params["stop_timeout"])


def start(params, check_mode):
    hostdir = host_dir(params)
    kernel = Kernel(hostdir, params["name"])
    key = read_key_file(params["key_file"]) if params["key_file"] and not check_mode else None
    state, rec = kernel.state()
    if state == "alive":
        check_key(kernel, key)
        check_transport(kernel, params["transport"])
        check_encryption(kernel, params["transport_encryption"])
        return {kernel.name: kernel.info(state, rec, False, gpu_memory_by_pid())}
    check_ipc_path(kernel, params["transport"])
    if check_mode:
        return {kernel.name: kernel.info(state, rec, state != "starting")}
    # "starting" means another call is launching it: wait for its lock, then look again.
    ensure_private_dir(hostdir)
    with host_lock(hostdir, lock_timeout(params)):
        # Look again under the lock: a concurrent call may have started it meanwhile.
        if kernel.exists():
            check_private_dir(kernel.dir)
        sweep_expired(hostdir, params, kernel.name)
        state, rec = kernel.state()
        if state in ("alive", "starting"):
            check_key(kernel, key)
            check_transport(kernel, params["transport"])
            check_encryption(kernel, params["transport_encryption"])
            return {kernel.name: kernel.info(state, rec, False, gpu_memory_by_pid())}
        if state == "dead":
            kernel.remove(rec, params["stop_timeout"])
        rec = launch(kernel, params, key)
        return {kernel.name: kernel.info("alive", rec, True, gpu_memory_by_pid())}


def running_kernel(params):
    kernel = Kernel(host_dir(params), params["name"])
    state, rec = kernel.state()
    if state not in ("alive", "starting"):
        verb = {"interrupted": "interrupt", "restarted": "restart"}[params["state"]]
        raise KernelError("kernel %r is %s on %s: nothing to %s; start it with rk up"
                          % (kernel.name, state, host_name(), verb))
    return kernel, state, rec


def interrupt(params, check_mode):
    """SIGINT to the kernel process only (as Jupyter's signal-mode interrupt does)."""
    kernel, state, rec = running_kernel(params)
    if not check_mode:
        if not same_process(rec["pid"], rec["starttime"], rec["boot_id"]):
            raise KernelError("kernel %r ended meanwhile" % kernel.name)
        os.kill(rec["pid"], signal.SIGINT)
    return {kernel.name: kernel.info(state, rec, True)}


def restart(params, check_mode):
    """Stop the kernel and start it with its recorded settings and key; the ports change."""
    kernel, state, rec = running_kernel(params)
    if check_mode:
        return {kernel.name: kernel.info(state, rec, True)}
    hostdir = host_dir(params)
    with host_lock(hostdir, lock_timeout(params)):
        kernel, state, rec = running_kernel(params)
        check_private_dir(kernel.dir)
        key, curve = kernel.key(), kernel.curve()
        launch_params = dict(params)
        launch_params.update(rec.get("launch") or {"python": rec.get("python"), "spyder": rec.get("spyder")})
        kernel.remove(rec, params["stop_timeout"])
        rec = launch(kernel, with_defaults(launch_params), key, curve)
        return {kernel.name: kernel.info("alive", rec, True, gpu_memory_by_pid())}


def stop(params, check_mode):
    hostdir = host_dir(params)
    names = kernel_names(hostdir) if params["all"] else [params["name"]]
    result = {}
    if check_mode or not any(Kernel(hostdir, n).exists() for n in names):
        for name in names:
            kernel = Kernel(hostdir, name)
            state, rec = kernel.state()
            result[name] = kernel.info(state, rec, state != "absent")
        return result
    check_private_dir(hostdir)
    with host_lock(hostdir, lock_timeout(params)):
        for name in names:
            kernel = Kernel(hostdir, name)
            state, rec = kernel.state()
            info = kernel.info(state, rec, state != "absent")
            if state != "absent":
                check_private_dir(kernel.dir)
                kernel.remove(rec, params["stop_timeout"])
                info.update(state="stopped", uptime_s=None, rss_bytes=None, gpu_mem_mib=None,
                            ports=None, connection_file=None)
            result[name] = info
    return result


def status(params):
    hostdir = host_dir(params)
    names = [params["name"]] if params["name"] else kernel_names(hostdir)
    gpu_usage = gpu_memory_by_pid() if names else None
    result = {}
    for name in names:
        kernel = Kernel(hostdir, name)
        state, rec = kernel.state()
        # Only status asks: a start or stop must treat a frozen kernel as running (rk never
        # kills one on its own, and the probe's deadline would slow every start).
        if state == "alive" and not kernel.responsive(rec):
            state = "unresponsive"
        result[name] = kernel.info(state, rec, False, gpu_usage)
    return result


def run(params, check_mode=False):
    """Do one action. Returns {'changed': bool, 'kernels': {name: info}}; raises KernelError."""
    params = with_defaults(params)
    validate(params)
    action = {"started": start, "stopped": stop, "interrupted": interrupt,
              "restarted": restart}.get(params["state"])
    try:
        kernels = action(params, check_mode) if action else status(params)
    except OSError as exc:
        raise storage_error(exc, host_dir(params))
    return {"changed": any(k["changed"] for k in kernels.values()), "kernels": kernels}


def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = run(module.params, module.check_mode)
    except KernelError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
