"""The controller's own state under stress (issue 6): interleaved starts and stops (case 15),
rk SIGKILLed at random points of `rk up` (case 16), corrupt and planted local files (case 17).

One host for the module; each case has its own kernel names, case 16 its own controller users.
A user's TMPDIR is inside its home, so the private run directories of killed rk runs can be seen.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import os
import random
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.kernels import execute
from tests.reliability.support import (
    RK,
    SYSTEM_PYTHON,
    kernels_of,
    rk,
    rk_json,
    wait_until,
)

CRASHES = 30  # case 16: SIGKILLs of `rk up`
ORPHAN_TASK_S = 120  # bounds the task a killed rk's Ansible worker still finishes (a start: up to 30 s)
ROUNDS = 3  # case 15: rounds of 3 `rk up` and 3 `rk stop` of one name, launched together
QUARANTINED = ".corrupt-"


@pytest.fixture(scope="module")
def group(module_hosts):
    return module_hosts(n=1, image="python")


def user_with_tmpdir(module_user, inv) -> dict:
    env = module_user(Path(inv))
    tmp = Path(env["HOME"]) / "tmp"
    tmp.mkdir(mode=0o700)
    env["TMPDIR"] = str(tmp)
    return env


@pytest.fixture(scope="module")
def env(module_user, inv):
    """conftest's user, with its TMPDIR in its home."""
    return user_with_tmpdir(module_user, inv)


def runtime(env) -> Path:
    return Path(env["JUPYTER_RUNTIME_DIR"])


def tunnels_dir(env) -> Path:
    return Path(env["XDG_STATE_HOME"]) / "rk" / "tunnels"


def up_args(inv, name) -> list[str]:
    return ["up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON, "--name", name]


def up_argv(inv, name) -> list[str]:
    return [RK, *up_args(inv, name), "--json"]


def status(env, inv) -> dict:
    doc = rk_json(env, "status", "-i", inv)
    assert doc["warnings"] == [], "rk's own atomic writes never leave a corrupt file"
    return doc


def host_lock_is_free(host) -> bool:
    hostdir = f"/home/rk/.local/state/rk/{host.container}"  # the module's <state root>/<hostname>
    return host.exec(f"flock -n {hostdir}/.lock true", check=False).returncode == 0


def controller_locks_held(env) -> list[str]:
    held = []
    for lock in sorted(tunnels_dir(env).glob("*.lock")):
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(lock.name)
    return held


def supervisors(env) -> dict[int, Path]:
    """{pid: state file} of the tunnel supervisors (`python -m rk.tunnel STATE`) of this user."""
    found = {}
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"rk.tunnel" in argv and argv[-2].startswith(str(tunnels_dir(env)).encode()):
                found[int(proc.name)] = Path(argv[-2].decode())
    return found


def recorded_pid(state_file: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(state_file.read_text()).get("pid")
    return None


def orphan_supervisors(env) -> dict[int, Path]:
    """Supervisors whose state file is missing or names another process."""
    return {pid: path for pid, path in supervisors(env).items() if recorded_pid(path) != pid}


def kernel_pids(host, name: str | None = None) -> list[int]:
    """Pids (in the host's namespace) of the host's kernels, of kernel `name` when given.

    Read from this machine's /proc, where the container's processes are visible too: a
    `podman exec ps` costs about 0.3 s of CPU, and case 15 looks several times a second. The
    state directory on a kernel's argv has the host's name, so no other host's kernel matches.
    """
    marker = f"/rk/{host.container}/{name + '/' if name else ''}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError):
            argv = (proc / "cmdline").read_bytes()
            if b"ipykernel_launcher" in argv and marker in argv and (proc / "stat").read_text().split()[2] != "Z":
                nspid = [line for line in (proc / "status").read_text().splitlines() if line.startswith("NSpid:")]
                found.append(int(nspid[0].split()[-1]))
    return sorted(found)


def local_processes_of(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if marker.encode() in (proc / "cmdline").read_bytes() and (proc / "stat").read_text().split()[2] != "Z":
                found.append(int(proc.name))
    return found


# ---------------------------------------------------------------- case 17: corrupt local state


TRUNCATED = b'{"shell_port": 5, "key": "' + b"a" * 40  # a connection file cut in the middle of its key


@pytest.fixture(scope="module")
def decoy(env):
    """A file outside rk's directories that planted symlinks point to; rk must never touch it."""
    path = Path(env["HOME"]) / "decoy.json"
    path.write_text(json.dumps({"key": "d" * 64, "rk_host": "h1", "rk_kernel": "decoy", "ip": "127.0.0.1"}))
    path.chmod(0o644)
    return path


def plant(env, decoy) -> dict[Path, bytes | None]:
    """Corrupt and planted files among rk's; {path: content} (None for a symlink or a FIFO)."""
    tunnels_dir(env).mkdir(parents=True, exist_ok=True, mode=0o700)
    files = {
        runtime(env) / "kernel-rk-h1-truncated.json": TRUNCATED,
        runtime(env) / "kernel-rktunnel-h1-garbage.json": b"this is not JSON\n",
        runtime(env) / "kernel-rk-h1-empty.json": b"",
        tunnels_dir(env) / "h1-cut-0badc0de.json": b'{"host": "h1", "kernel": "cut", "argv": ["ss',
    }
    for path, content in files.items():
        path.write_bytes(content)
        path.chmod(0o644)  # quarantine makes it 0600: it may hold a key
    link = runtime(env) / "kernel-rk-h1-link.json"
    link.symlink_to(decoy)
    fifo = runtime(env) / "kernel-rktunnel-h1-fifo.json"
    os.mkfifo(fifo, 0o600)  # opening it for reading would block rk forever
    return files | {link: None, fifo: None}


def quarantined(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}{QUARANTINED}*"))


def assert_quarantined(planted: dict[Path, bytes | None], doc: dict, stderr: str, decoy: Path,
                       earlier: set[Path] = frozenset()) -> None:
    """Each planted file moved aside (as it was, 0600; a symlink as a symlink), with its warning."""
    for path, content in planted.items():
        assert not os.path.lexists(path), f"{path.name} is still in place"
        (aside,) = set(quarantined(path)) - earlier
        if content is not None:
            assert aside.read_bytes() == content, f"{aside.name} was changed"
            assert stat.S_IMODE(aside.stat().st_mode) == 0o600
        (warning,) = [w for w in doc["warnings"] if str(path) in w]
        assert aside.name in warning and "delete it" in warning
        assert f"rk: warning: {warning}" in stderr
    (link,) = [p for p in planted if p.name == "kernel-rk-h1-link.json"]
    (aside,) = set(quarantined(link)) - earlier
    assert aside.is_symlink() and os.readlink(aside) == str(decoy)
    assert json.loads(decoy.read_text())["rk_kernel"] == "decoy" and stat.S_IMODE(decoy.stat().st_mode) == 0o644


def rk_json_with_stderr(env, *args) -> tuple[dict, str]:
    result = rk(env, *args, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), result.stderr


def test_status_quarantines_corrupt_and_planted_files_with_a_message(env, inv, decoy):
    planted = plant(env, decoy)
    doc, stderr = rk_json_with_stderr(env, "status", "-i", inv)
    assert_quarantined(planted, doc, stderr, decoy)
    listed = set(kernels_of(doc))
    assert not listed & {"truncated", "garbage", "empty", "cut", "link", "decoy", "fifo"}


def test_up_never_writes_through_a_symlink_planted_at_its_tunnel_file(env, inv, decoy):
    link = runtime(env) / "kernel-rktunnel-h1@planted.json"
    link.symlink_to(decoy)
    digest = hashlib.sha256(b"h1\0planted").hexdigest()[:8]  # as rk.tunnel.state_file names it
    state = tunnels_dir(env) / f"h1-planted-{digest}.json"
    state.write_text('{"host": "h1", "kernel": "planted", "forwards": {"shell_port": [1, 2]}}')

    doc, stderr = rk_json_with_stderr(env, *up_args(inv, "planted"))
    kernel = kernels_of(doc)["planted"]
    assert kernel["state"] == "alive" and kernel["tunnel"] == "up"
    assert json.loads(decoy.read_text())["rk_kernel"] == "decoy" and stat.S_IMODE(decoy.stat().st_mode) == 0o644
    assert Path(kernel["tunnel_file"]) == link and not link.is_symlink()
    assert stat.S_IMODE(link.stat().st_mode) == 0o600
    for path in (link, state):
        (aside,) = quarantined(path)
        assert any(str(path) in w and aside.name in w for w in doc["warnings"]), doc["warnings"]
    assert "rk: warning:" in stderr
    assert execute(link, "print(6 * 7)").strip() == "42"


# ---------------------------------------------------------------- case 15: interleaved starts and stops


def test_interleaved_ups_and_stops_never_duplicate_a_kernel_and_leave_no_lock_held(env, inv, host):
    stop_argv = [RK, "stop", "-i", inv, "--host", "h1", "--name", "mixed", "--json"]
    most = 0
    for _ in range(ROUNDS):
        seen: list[int] = []
        done = threading.Event()

        def watch(seen=seen, done=done):
            while not done.wait(0.2):
                seen.append(len(kernel_pids(host, "mixed")))

        watcher = threading.Thread(target=watch)
        watcher.start()
        procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL)
                 for argv in [up_argv(inv, "mixed"), stop_argv] * 3]
        outputs = [p.communicate(timeout=300) for p in procs]
        done.set()
        watcher.join()
        for proc, (out, err) in zip(procs, outputs):
            assert "Traceback" not in err, err
            # An up whose kernel a concurrent stop ended fails, with a sentence; never a crash.
            assert proc.returncode in (0, 1), err
            doc = json.loads(out)
            assert proc.returncode == 0 or all(h["message"] for h in doc["hosts"] if h["status"] != "ok")
        most = max([most, *seen])
        assert most <= 1, f"two kernels named mixed ran at once ({seen})"

        pids = kernel_pids(host, "mixed")
        reported = kernels_of(status(env, inv)).get("mixed", {"state": "absent"})
        assert len(pids) <= 1
        if pids:
            assert (reported["state"], reported["pid"]) == ("alive", pids[0])
        else:
            assert reported["state"] in ("absent", "dead"), reported
        assert host_lock_is_free(host), "the host's .lock is still held"
        assert controller_locks_held(env) == []
        assert orphan_supervisors(env) == {}


# ---------------------------------------------------------------- case 17: stop --all


def everything_quarantined(env) -> set[Path]:
    return {p for d in (runtime(env), tunnels_dir(env)) for p in d.glob(f"*{QUARANTINED}*")}


def test_stop_all_with_corrupt_files_stops_every_kernel_and_keeps_the_quarantined_copies(env, inv, host, decoy):
    before = everything_quarantined(env)  # from the tests above
    assert before, "run with the whole module: the first test quarantines files"
    planted = plant(env, decoy)  # the same names again
    doc, stderr = rk_json_with_stderr(env, "stop", "-i", inv, "--host", "h1", "--all")
    assert kernel_pids(host) == []
    assert kernels_of(doc) and all(k["state"] in ("stopped", "absent") for k in kernels_of(doc).values())
    assert_quarantined(planted, doc, stderr, decoy, earlier=before)
    assert before <= everything_quarantined(env), "a quarantined file was deleted"


# ---------------------------------------------------------------- case 16: rk killed during rk up
#
# Two chains run side by side (2 cores: one waits on ssh while the other computes), each with
# its own controller user and kernel names, CRASHES // 2 kills each.


def killed_up(env, inv, name, after: float) -> int:
    """Start `rk up` and SIGKILL it `after` s later (unless it ended); wait for its orphans to go.
    Returns the killed rk's pid."""
    proc = subprocess.Popen(up_argv(inv, name), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(after)
    proc.kill()
    proc.wait()
    # ansible-playbook runs under a pty that rk held: the hangup ends it. A worker (its own
    # session) finishes its task first (a module run, a fetch), bounded by the module's timeouts.
    wait_until(lambda: not local_processes_of(f"rk-run-{proc.pid}-"), "the killed rk's ansible-playbook has ended",
               timeout=ORPHAN_TASK_S)
    return proc.pid


def started_at(host, name: str) -> float:
    """When the kernel `name` was started, from its state.json on the host (the clock is this
    machine's). A launch writes it right after starting the process: a kernel process that never
    gets one is an orphan, and the wait fails."""
    path = f"/home/rk/.local/state/rk/{host.container}/{name}/state.json"
    record = wait_until(lambda: host.exec(f"cat {path}", check=False).stdout, f"{name}'s state.json exists", timeout=10)
    return json.loads(record)["started_at"]


def assert_converged(env, inv, host, names, killed: list[int]) -> None:
    looked = time.time()
    doc = status(env, inv)
    kernels = kernels_of(doc)
    for name in names:
        pids = kernel_pids(host, name)
        assert len(pids) <= 1, f"two kernels named {name}: {pids}"
        reported = kernels.get(name, {"state": "absent"})
        if reported["state"] in ("alive", "starting"):
            assert pids == [reported["pid"]], (name, reported, pids)
        elif pids:
            # The killed run's module had its input and finishes on the host by itself: only a
            # kernel it started after status looked may be missing from status's answer.
            assert started_at(host, name) >= looked, (name, reported, pids)
    # Every supervisor has its state file; a file whose supervisor is gone shows as "down".
    wait_until(lambda: not orphan_supervisors(env), "every tunnel supervisor has a state file naming it", timeout=10)
    for path in tunnels_dir(env).glob("*.json"):
        record = json.loads(path.read_text())
        if record["pid"] not in supervisors(env):
            assert kernels.get(record["kernel"], {}).get("tunnel") == "down", (path.name, kernels.get(record["kernel"]))
    for directory in (runtime(env), Path(env["XDG_STATE_HOME"]) / "rk"):
        for path in directory.rglob("*.json"):
            json.loads(path.read_text())  # every file parses (and none was quarantined: see status())
        leftovers = [p.name for p in directory.rglob(".*") if p.name.endswith(".tmp") or p.name.startswith(".rk-fetch-")]
        assert leftovers == [], "half-written copies of a key left by a killed rk"
    abandoned = [p.name for p in Path(env["TMPDIR"]).glob("rk-run-*") if int(p.name.split("-")[2]) in killed]
    assert abandoned == [], "private run directories of killed rk runs"


def crash_chain(env, inv, host, names: tuple[str, ...], chance: random.Random) -> list[int]:
    """Measure one `rk up`, then kill `rk up` CRASHES // 2 times at uniform random points of it,
    checking after each kill that `rk status` converges. Returns the killed pids."""
    began = time.monotonic()
    assert kernels_of(rk_json(env, *up_args(inv, names[0])))[names[0]]["state"] == "alive"  # from nothing
    span = time.monotonic() - began
    killed = []
    for i in range(CRASHES // 2):  # 15: the last kill is of names[-1]
        name = names[i % len(names)]
        running = kernel_pids(host, name)
        if i % 2 and running:
            # Every other time the kernel is dead first, so `rk up` is killed while it starts one.
            host.exec(f"kill -KILL {' '.join(map(str, running))}")
        killed.append(killed_up(env, inv, name, chance.uniform(0, span)))
        assert_converged(env, inv, host, names, killed)
    return killed


def test_rk_killed_at_random_points_of_up_converges_at_the_next_status(module_user, inv, host):
    seed = int(os.environ.get("RK_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"case 16: seed {seed} (RK_CRASH_SEED={seed} repeats the kill times)")
    chains = [(user_with_tmpdir(module_user, inv), tuple(f"crash{c}{n}" for n in range(3))) for c in range(2)]
    with concurrent.futures.ThreadPoolExecutor(len(chains)) as pool:
        futures = [pool.submit(crash_chain, env, inv, host, names, random.Random(f"{seed}-{c}"))
                   for c, (env, names) in enumerate(chains)]
        killed = [f.result() for f in futures]
    assert sum(map(len, killed)) == CRASHES

    # After the crashes, a complete `rk up` (of the name killed last in each chain) gives one
    # working kernel and one key file; then `rk stop --all` cleans up every name.
    ups = [(env, names[-1], subprocess.Popen(up_argv(inv, names[-1]), env=env, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL))
           for env, names in chains]
    for env, name, proc in ups:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        kernel = kernels_of(json.loads(out))[name]
        assert kernel_pids(host, name) == [kernel["pid"]]
        assert sorted(runtime(env).glob(f"kernel-rk*-h1@{name}.json")) == [Path(kernel["tunnel_file"])]
        assert execute(Path(kernel["tunnel_file"]), "import os; print(os.getpid())").strip() == str(kernel["pid"])
    # And `rk stop --all` leaves no copy of a key, no supervisor, no run directory behind.
    stops = [subprocess.Popen([RK, "stop", "-i", inv, "--all"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for env, _ in chains]
    errors = [p.communicate(timeout=300)[1] for p in stops]
    assert [p.returncode for p in stops] == [0] * len(stops), errors
    assert kernel_pids(host) == []
    for env, _ in chains:
        assert list(runtime(env).iterdir()) == [], "a file of a stopped kernel outlived rk stop"
        assert supervisors(env) == {}
        assert list(Path(env["TMPDIR"]).iterdir()) == []
