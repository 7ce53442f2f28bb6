"""Supervised SSH tunnels from local ports to a kernel's five ports on a host.

One detached supervisor a (host, kernel): `python -m rk.tunnel STATE_FILE`, in its own session,
output to a log beside its state file in rk's XDG state directory. It runs `ssh -N -L ...` and,
whenever ssh ends (network loss, laptop sleep, a killed ssh), starts it again on the same local
ports after a bounded backoff. It never touches the kernel. It stops on SIGTERM, or when its
state file is removed or names another process.

The state file holds ports, ssh's argv and the supervisor's pid and start time; never the key.
A pid is signalled only while the supervisor's life lock (`<state>.alive`, flocked by the
supervisor for as long as it lives, its pid inside) is held with that pid: pids get reused,
and the lock needs neither /proc nor ps (macOS, WSL).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rk import paths
from rk.errors import HostKeyError, RkError, explain_host_key

RETRY_S = (1, 2, 4, 8, 15)  # waits between attempts; the last one repeats
STABLE_S = 30  # an ssh that lasted this long was a working tunnel: the next wait starts over
START_TIMEOUT_S = 30
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
_MARK = "rk.tunnel"
_ENDED = f"{_MARK}: ssh ended"  # the supervisor's line after each ssh attempt, in the log


@dataclass
class Tunnel:
    host: str  # inventory name
    kernel: str
    argv: list[str]
    forwards: dict[str, list]  # port name -> [local port, remote port or ipc socket path]
    pid: int | None = None
    starttime: str | None = None
    path: str = field(default="", compare=False)

    @property
    def local_ports(self) -> dict[str, int]:
        return {name: pair[0] for name, pair in self.forwards.items()}

    @property
    def remote_ports(self) -> dict[str, int | str]:
        return {name: pair[1] for name, pair in self.forwards.items()}

    @property
    def log(self) -> Path:
        return Path(self.path).with_suffix(".log")


def state_file(host: str, kernel: str) -> Path:
    # The hash keeps host "a-b" kernel "c" apart from host "a" kernel "b-c".
    digest = hashlib.sha256(f"{host}\0{kernel}".encode()).hexdigest()[:8]
    return tunnels_dir() / f"{paths.safe_name(host)}-{paths.safe_name(kernel)}-{digest}.json"


def tunnels_dir() -> Path:
    return paths.ensure_private_dir(paths.state_dir() / "tunnels")


def load(path: Path) -> Tunnel | None:
    """The tunnel recorded in `path`, or None (the supervisor's view: it never moves files)."""
    try:
        return _from_record(json.loads(path.read_text()), path)
    except (OSError, ValueError):
        return None


def _from_record(data, path: Path) -> Tunnel | None:
    """A Tunnel from a state file's JSON, or None when it is not one rk wrote."""
    try:
        tunnel = Tunnel(**{k: data[k] for k in ("host", "kernel", "argv", "forwards", "pid", "starttime")}, path=str(path))
    except (KeyError, TypeError):
        return None
    well_formed = (
        isinstance(tunnel.host, str) and isinstance(tunnel.kernel, str)
        and isinstance(tunnel.argv, list) and all(isinstance(a, str) for a in tunnel.argv)
        and isinstance(tunnel.forwards, dict) and set(tunnel.forwards) == set(PORT_NAMES)
        and all(isinstance(pair, list) and len(pair) == 2 and type(pair[0]) is int and _remote_end(pair[1])
                for pair in tunnel.forwards.values())
        and (tunnel.pid is None or type(tunnel.pid) is int)
        and (tunnel.starttime is None or isinstance(tunnel.starttime, str))
    )
    return tunnel if well_formed else None


def _remote_end(remote) -> bool:
    """A forward's remote end: a port, or a hardened (ipc) kernel's socket path on the host."""
    return type(remote) is int or (isinstance(remote, str) and remote.startswith("/"))


def _recorded(path: Path) -> Tunnel | None:
    """What rk's commands read: a corrupt or planted state file is quarantined (paths.quarantine)."""
    data = paths.read_json_or_quarantine(path)
    if data is None:
        return None
    tunnel = _from_record(data, path)
    if tunnel is None:
        paths.quarantine(path, "is not a tunnel state file rk wrote")
    return tunnel


def find(host: str, kernel: str) -> Tunnel | None:
    return _recorded(state_file(host, kernel))


def of_host(host: str) -> dict[str, Tunnel]:
    """Every recorded tunnel of one host, by kernel name."""
    found = {}
    for path in sorted(tunnels_dir().glob("*.json")):
        tunnel = _recorded(path)
        if tunnel and tunnel.host == host:
            found[tunnel.kernel] = tunnel
    return found


def _save(tunnel: Tunnel) -> None:
    data = asdict(tunnel)
    del data["path"]
    paths.write_private(Path(tunnel.path), json.dumps(data, indent=1))


def process_starttime(pid: int) -> str | None:
    """The kernel's start time of a process (Linux /proc), or `ps`'s where /proc is not mounted
    (macOS); None if gone. Only for supervisors of an older rk, which hold no life lock."""
    if os.path.exists("/proc/self/stat"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read().decode("ascii", "replace")
            fields = data[data.rindex(")") + 2:].split()
            return None if fields[0] in ("Z", "X") else fields[19]
        except OSError:
            return None
    with contextlib.suppress(OSError):
        result = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True)
        return result.stdout.strip() or None
    return None


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    with contextlib.suppress(OSError):
        return subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True).stdout
    return ""


def _life_lock(tunnel: Tunnel) -> Path:
    return Path(tunnel.path).with_suffix(".alive")


def hold_life_lock(tunnel: Tunnel) -> int | None:
    """In the supervisor: flock the tunnel's life lock for as long as this process lives, with
    its pid inside. Whether a supervisor lives is then a question of the lock, which needs no
    /proc and no ps (macOS, WSL) and cannot be fooled by a reused pid. None: another supervisor
    of this tunnel kept it for START_TIMEOUT_S (it ends once the state file names another pid)."""
    fd = os.open(_life_lock(tunnel), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def alive(tunnel: Tunnel) -> bool:
    """Is the recorded supervisor still that very process? Its life lock is held, with its pid."""
    if not tunnel.pid:
        return False
    try:
        fd = os.open(_life_lock(tunnel), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:  # a supervisor of an older rk: its pid and start time
        return bool(tunnel.starttime) and process_starttime(tunnel.pid) == tunnel.starttime \
            and _MARK in _cmdline(tunnel.pid)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False  # nobody holds it: no supervisor lives
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        return holder in ("", str(tunnel.pid))  # "": it has just taken the lock
    finally:
        os.close(fd)


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def state(tunnel: Tunnel | None) -> str:
    """up (forwarding), reconnecting (supervisor alive, ssh not connected), hostkey (ssh's last
    attempt refused the host's key: not a network problem) or down."""
    if tunnel is None or not alive(tunnel):
        return "down"
    if listening(tunnel.forwards["shell_port"][0]):
        return "up"
    return "hostkey" if host_key_refusal(tunnel) else "reconnecting"


def host_key_refusal(tunnel: Tunnel) -> tuple[str, str] | None:
    """(cause, hint) when ssh's last attempt refused the host's key (rk.errors), else None."""
    return explain_host_key(_last_attempt(tunnel))


def _last_attempt(tunnel: Tunnel) -> str:
    """What the latest ssh attempt that said anything wrote to the log (its last 16 KiB)."""
    with contextlib.suppress(OSError), open(tunnel.log, "rb") as log:
        log.seek(max(0, os.fstat(log.fileno()).st_size - 16384))
        attempts, current = [], []
        for line in log.read().decode(errors="replace").splitlines():
            if line.startswith(_ENDED):
                attempts.append("\n".join(current))
                current = []
            elif line.strip():
                current.append(line)
        attempts.append("\n".join(current))
        return next((text for text in reversed(attempts) if text), "")
    return ""


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now, all different (held open together while chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def start(host: str, kernel: str, argv_for: Callable[[list[tuple[int, int]]], list[str]],
          remote: dict[str, int | str], local: dict[str, int] | None = None) -> Tunnel:
    """Start a supervisor forwarding `local` (or new free ports) to `remote`; wait until it forwards."""
    path = state_file(host, kernel)
    ports = local or dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
    forwards = {name: [ports[name], remote[name]] for name in PORT_NAMES}
    tunnel = Tunnel(host, kernel, argv_for([tuple(pair) for pair in forwards.values()]), forwards, path=str(path))
    _save(tunnel)
    log = os.open(tunnel.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", _MARK, str(path)], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    finally:
        os.close(log)
    tunnel.pid = proc.pid
    tunnel.starttime = process_starttime(proc.pid)
    _save(tunnel)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not listening(forwards["shell_port"][0]):
        refused = host_key_refusal(tunnel)  # retrying cannot help: say so now, not in 30 s
        if refused or proc.poll() is not None or time.monotonic() > deadline:
            words = _log_tail(tunnel)  # before stop(), which removes the log
            stop(tunnel)
            if refused:
                raise HostKeyError(f"the SSH tunnel to {host} was refused: {refused[0]}", refused[1])
            raise RkError(f"the SSH tunnel to {host} did not come up: {words}", "try `ssh` to the host by hand")
        time.sleep(0.1)
    return tunnel


def stop(tunnel: Tunnel, timeout: float = 10) -> None:
    """Stop the supervisor (and so its ssh) and forget the tunnel."""
    if alive(tunnel):
        with contextlib.suppress(ProcessLookupError):
            os.kill(tunnel.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(tunnel) and time.monotonic() < deadline:
            time.sleep(0.05)
    Path(tunnel.path).unlink(missing_ok=True)
    tunnel.log.unlink(missing_ok=True)
    if not alive(tunnel):
        _life_lock(tunnel).unlink(missing_ok=True)


def _log_tail(tunnel: Tunnel) -> str:
    """ssh's last words (not the supervisor's "again in N s")."""
    lines = _last_attempt(tunnel).splitlines()
    return lines[-1][:300] if lines else "no output"


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the process that started it dies (Linux), so no ssh outlives rk's supervisor."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    """Run `argv` again and again until stopped; the waits between runs back off and are bounded.

    `retry(returncode)` says whether an ended ssh is to be started again. `on_start(proc)` sees
    each new process (the kernelspec launcher talks to the host through its stdin).
    """

    def __init__(self, argv: list[str], log=None, stdin: int = subprocess.DEVNULL,
                 retry: Callable[[int], bool] = lambda code: True,
                 on_start: Callable[[subprocess.Popen], None] | None = None):
        self.argv = argv
        self.log = log
        self.stdin = stdin
        self.retry = retry
        self.on_start = on_start
        self.stopping = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    def run(self, keep_going: Callable[[], bool] = lambda: True) -> int | None:
        attempt = 0
        while not self.stopping.is_set() and keep_going():
            began = time.monotonic()
            # Its own process group: a front end's interrupt signals the launcher's whole group,
            # and must not kill the ssh that carries the interrupt to the host.
            self.proc = subprocess.Popen(self.argv, stdin=self.stdin, stdout=self.log, stderr=self.log,
                                         preexec_fn=_die_with_parent, process_group=0)
            if self.on_start:
                self.on_start(self.proc)
            while self.proc.poll() is None:
                if self.stopping.wait(0.5) or not keep_going():
                    self._end()
            self.returncode = self.proc.returncode
            if self.stopping.is_set() or not self.retry(self.returncode):
                break
            attempt = 0 if time.monotonic() - began > STABLE_S else attempt + 1
            wait = RETRY_S[min(attempt, len(RETRY_S) - 1)]
            print(f"{_ENDED} with code {self.returncode}; again in {wait} s", file=sys.stderr, flush=True)
            self.stopping.wait(wait)
        return self.returncode

    def stop(self) -> None:
        self.stopping.set()
        self._end()

    def _end(self) -> None:
        proc = self.proc
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: list[str]) -> int:
    """The detached supervisor: `python -m rk.tunnel STATE_FILE`."""
    path = Path(argv[0])
    tunnel = load(path)
    if tunnel is None:
        print(f"rk.tunnel: no tunnel state in {path}", file=sys.stderr)
        return 1
    if tunnel.pid is None:
        # The rk that started this supervisor records its pid next; if that rk is killed first,
        # the record would name no process and this supervisor would be nobody's: record it here.
        # Both write the same values.
        tunnel.pid, tunnel.starttime = os.getpid(), process_starttime(os.getpid())
        _save(tunnel)
    if hold_life_lock(tunnel) is None:
        print(f"rk.tunnel: another supervisor keeps {path}", file=sys.stderr)
        return 1
    supervisor = Supervisor(tunnel.argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: supervisor.stopping.set())

    def still_mine() -> bool:
        current = load(path)
        return current is not None and current.pid in (None, os.getpid())

    supervisor.run(still_mine)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
