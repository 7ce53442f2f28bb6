"""The bench's machinery: podman hosts, rk and hand-recipe invocations, timing, alternation.

Everything runs as subprocesses, the way a user runs them; wall time is measured around the
process, CPU time from its rusage (which includes ansible-playbook and its workers, but not the
detached ControlPersist ssh masters).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.hosts.hosts import HostGroup, generate_key, start_hosts
from tests.hosts.wheelhouse import ensure_wheelhouse

BIN = Path(sys.executable).parent
RK = str(BIN / "rk")
# The shared venv: one provisioned venv mounted into every python host at the same path, so
# 16 hosts need one pip install (rk's probe still reads its fingerprint on each host).
VENV_MOUNT = "/opt/rkshare"
VENV = f"{VENV_MOUNT}/venv"
HOST_UID = 1000  # the test image's `rk` user
SESSION = "rk-bench"


@dataclass
class Sample:
    wall: float
    cpu: float = 0.0  # user + sys of the process tree that was waited for


@dataclass
class Series:
    """Timings of one side of a comparison."""

    label: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def cpu_median(self) -> float:
        return statistics.median(s.cpu for s in self.samples)

    def spread(self) -> str:
        walls = sorted(s.wall for s in self.samples)
        return f"{walls[0]:.2f}-{walls[-1]:.2f}"


class Bench:
    """A private work directory (short path: ssh control sockets live below it) and its hosts."""

    def __init__(self, keep: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rkb-", dir="/tmp"))
        self.keep = keep
        self.home = self.dir / "home"
        self.runtime = self.dir / "rt"
        self.hand_cp = self.dir / "hcp"
        for d in (self.home, self.runtime, self.hand_cp):
            d.mkdir(mode=0o700)
        self.key = generate_key(self.dir / "id_ed25519")
        self.groups: list[HostGroup] = []
        self.wheelhouse = ensure_wheelhouse()
        self.env = dict(os.environ, HOME=str(self.home), JUPYTER_RUNTIME_DIR=str(self.runtime),
                        NO_COLOR="1")
        self.env.pop("XDG_RUNTIME_DIR", None)
        self.env.pop("ANSIBLE_CONFIG", None)

    # -- hosts ---------------------------------------------------------------------------
    def python_hosts(self, n: int) -> HostGroup:
        """n hosts of the `python` image sharing one venv (provisioned once, by rk, untimed)."""
        share = self.dir / "venvshare"
        share.mkdir()
        os.chown(share, HOST_UID, HOST_UID)
        group = self._start("py", n, "python", ["--volume", f"{share}:{VENV_MOUNT}"])
        inv = self.inventory(group, group.hosts, "py-all.yml")
        run([RK, "provision", "-i", str(inv), "--host", "h1"], self.env, check=True, timeout=600)
        return group

    def bare_hosts(self, n: int) -> HostGroup:
        return self._start("bare", n, "bare", [])

    def _start(self, name: str, n: int, image: str, podman_args: list[str]) -> HostGroup:
        group = start_hosts(self.dir / name, self.key, SESSION, n=n, image=image,
                            podman_args=podman_args)
        self.groups.append(group)
        return group

    def inventory(self, group: HostGroup, hosts, filename: str, shared_venv: bool = True) -> Path:
        """An inventory of `hosts` in group `bench`, with the wheelhouse (and shared venv) set."""
        host_vars = {h.name: h.inventory_vars(group.known_hosts, False) for h in hosts}
        group_vars = {"rk_python_wheelhouse": str(self.wheelhouse)}
        if shared_venv:
            group_vars["rk_python_venv"] = VENV
        data = {"all": {"children": {"bench": {"hosts": host_vars, "vars": group_vars}}}}
        path = self.dir / filename
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def close(self) -> None:
        self.drop_rk_masters()
        self.drop_hand_masters()
        for group in self.groups:
            group.destroy()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- rk ------------------------------------------------------------------------------
    def rk(self, *args: str, timeout: float = 600) -> Sample:
        return timed([RK, *args], self.env, timeout)

    def rk_control_dir(self) -> Path:
        return self.home / ".ansible" / "cp"

    def drop_rk_masters(self) -> None:
        """Close the ControlPersist masters rk's runs left (a cold start for the next run)."""
        _drop_masters(self.rk_control_dir())

    def drop_hand_masters(self) -> None:
        _drop_masters(self.hand_cp)

    # -- hand recipes ----------------------------------------------------------------------
    def ssh_argv(self, host, warm: bool) -> list[str]:
        """What a careful user types: their key, strict host keys, batch mode; a master only
        when measuring warm."""
        mux = (["-o", "ControlMaster=auto", "-o", "ControlPersist=60",
                "-o", f"ControlPath={self.hand_cp}/%C"] if warm
               else ["-o", "ControlMaster=no", "-o", "ControlPath=none"])
        return ["-F", "/dev/null", "-i", str(self.key), "-o", f"UserKnownHostsFile={host.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", *mux]

    def ssh(self, host, command: str, warm: bool, timeout: float = 120) -> list[str]:
        return ["ssh", *self.ssh_argv(host, warm), "-p", str(host.port), f"{host.user}@127.0.0.1", command]

    def scp(self, host, remote: str, local: Path, warm: bool) -> list[str]:
        return ["scp", "-q", *self.ssh_argv(host, warm), "-P", str(host.port),
                f"{host.user}@127.0.0.1:{remote}", str(local)]


def hand_start_script(python: str) -> str:
    """The hand recipe's one ssh command: start ipykernel detached, wait for its file (bounded)."""
    return (
        "set -e; mkdir -p ~/hand; rm -f ~/hand/k.json; cd ~; "
        f"setsid nohup {python} -m ipykernel_launcher -f ~/hand/k.json >~/hand/log 2>&1 </dev/null & "
        "i=0; while [ ! -s ~/hand/k.json ]; do i=$((i+1)); [ $i -lt 600 ] || exit 1; sleep 0.05; done"
    )


def _drop_masters(directory: Path) -> None:
    if not directory.is_dir():
        return
    for sock in directory.iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"],
                       capture_output=True, timeout=10, stdin=subprocess.DEVNULL)


def run(argv: list[str], env: dict | None = None, check: bool = False,
        timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed ({result.returncode}):\n"
                           f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


def timed(argv: list[str], env: dict | None = None, timeout: float = 600) -> Sample:
    """Run argv to completion; it must succeed. Wall time and the CPU time of its tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out, err, usage = _wait(proc, timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... exited {proc.returncode}:\n"
                           f"{out.decode()[-2000:]}\n{err.decode()[-2000:]}")
    return Sample(wall, usage.ru_utime + usage.ru_stime)


def _wait(proc: subprocess.Popen, timeout: float):
    """communicate(), but reaping with wait4 so the child's rusage is kept."""
    chunks: dict[str, bytes] = {}

    def drain(name, stream):
        chunks[name] = stream.read()

    readers = [threading.Thread(target=drain, args=(n, s)) for n, s in
               (("out", proc.stdout), ("err", proc.stderr))]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"{proc.args[:3]} took more than {timeout}s")
        time.sleep(0.005)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    return chunks["out"], chunks["err"], usage


def timed_parallel(argvs: list[list[str]], env: dict | None = None, timeout: float = 120) -> Sample:
    """Start every argv at once (the hand's `ssh ... &` per host), wait for all."""
    start = time.perf_counter()
    with ThreadPoolExecutor(len(argvs)) as pool:
        samples = list(pool.map(lambda a: timed(a, env, timeout), argvs))
    return Sample(time.perf_counter() - start, sum(s.cpu for s in samples))


def on_hosts(hosts, command: str, user: str = "rk") -> None:
    """Run `command` in every host's container (not over SSH: no master is touched), in parallel."""
    with ThreadPoolExecutor(max(1, len(hosts))) as pool:
        list(pool.map(lambda h: h.exec(command, user=user, check=False), hosts))


STOP_KERNELS = ("pkill -KILL -f '[i]pykernel'; "
                "rm -rf ~/.local/state/rk ~/hand ~/naive; true")


def stop_kernels(hosts) -> None:
    """Reset: no kernel, neither rk's nor the hand recipe's (outside the timed region)."""
    on_hosts(hosts, STOP_KERNELS)


def alternate(pairs: list[tuple[Series, callable]], reps: int, reset=None) -> None:
    """A, B, A, B...: each side runs `reps` times, interleaved, with `reset()` before each run."""
    for _ in range(reps):
        for series, action in pairs:
            if reset:
                reset()
            series.samples.append(action())


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
