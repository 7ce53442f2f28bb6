"""The cases of issue 7 (P1-P8), the floors that explain them, and the 1-16 host scaling."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import (RK, VENV, Bench, Sample, Series, alternate, hand_start_script, on_hosts,
                           run, stop_kernels, timed, timed_parallel)
from tests.kernels import execute, ssh_tunnel


@dataclass
class Row:
    case: str
    what: str
    condition: str
    rk: Series
    other: Series | None
    target: float | None  # max ratio rk/other (or MiB for P8)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.rk.median / self.other.median if self.other else None


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    floors: dict[str, Series] = field(default_factory=dict)
    scaling: list[dict] = field(default_factory=list)
    memory: list[dict] = field(default_factory=list)
    breakdown: list[tuple[str, float]] = field(default_factory=list)
    # P5, one extra run each: rk's tasks (from its progress callback) and the hand's steps.
    cold_breakdown: list[tuple[str, float]] = field(default_factory=list)
    cold_hand_steps: list[tuple[str, float]] = field(default_factory=list)


# -- the hand recipe and rk, one kernel on one host ---------------------------------------------

def hand_up(bench: Bench, host, warm: bool) -> Sample:
    """One ssh that starts the kernel detached and waits for its file, then scp of the file."""
    start = timed(bench.ssh(host, hand_start_script(f"{VENV}/bin/python"), warm))
    copy = timed(bench.scp(host, "hand/k.json", bench.dir / f"hand-{host.name}.json", warm))
    return Sample(start.wall + copy.wall, start.cpu + copy.cpu)


def hand_up_parallel(bench: Bench, hosts, warm: bool) -> Sample:
    """The hand recipe on every host at once (a shell loop with `&`): what P3 asks of rk, by hand."""
    start = time.perf_counter()
    with ThreadPoolExecutor(len(hosts)) as pool:
        samples = list(pool.map(lambda h: hand_up(bench, h, warm), hosts))
    return Sample(time.perf_counter() - start, sum(s.cpu for s in samples))


def rk_up(bench: Bench, inventory: Path, pattern: str, tunnel: bool = False) -> Sample:
    """`rk up` until the connection file is local: without rk's tunnel, like the hand recipe
    (P6 measures the tunnel, with tunnel=True)."""
    return bench.rk("up", "-i", str(inventory), "--host", pattern, *([] if tunnel else ["--no-tunnel"]))


# -- plain Ansible: what rk's playbook runs are measured against when asking "is it rk or Ansible?"

# The reference "naive playbook": a shell task that starts the kernel detached, wait_for
# its file, fetch it. No provisioning check, no tracked process, no lock, no private fetch.
NAIVE_PLAY = """- name: Naive kernel start
  hosts: all
  gather_facts: false
  tasks:
    - name: Start the kernel detached
      ansible.builtin.shell: >-
        mkdir -p ~/naive && rm -f ~/naive/k.json && cd ~ &&
        (setsid nohup {python} -m ipykernel_launcher -f ~/naive/k.json >~/naive/log 2>&1 </dev/null &)
      changed_when: true
    - name: Wait for its connection file
      ansible.builtin.wait_for:
        path: "/home/{{{{ ansible_user }}}}/naive/k.json"
        search_regex: '"key"'
        timeout: 60
    - name: Fetch it
      ansible.builtin.fetch:
        src: "/home/{{{{ ansible_user }}}}/naive/k.json"
        dest: "{dest}/naive-{{{{ inventory_hostname }}}}.json"
        flat: true
"""
EMPTY_PLAY = "- name: Nothing\n  hosts: all\n  gather_facts: false\n  tasks: []\n"
ONE_TASK = ("- name: One task\n  hosts: all\n  gather_facts: false\n  tasks:\n"
            "    - name: One\n      {task}\n")
# The least an Ansible status over N hosts can be: one module round trip per host.
PING_PLAY = ONE_TASK.format(task="ansible.builtin.ping:")


def plain_env(bench: Bench) -> dict:
    """ansible-playbook with rk's ansible.cfg and ssh settings, its control dir (so dropping rk's
    masters makes these runs cold too) and the shared venv's Python for modules."""
    from rk import content, runner

    env = dict(bench.env, **runner.ansible_env(), ANSIBLE_PYTHON_INTERPRETER=f"{VENV}/bin/python")
    env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(bench.rk_control_dir())  # rk's, under the bench's HOME
    env["ANSIBLE_CONFIG"] = str(content.ansible_cfg())
    return env


def write_play(bench: Bench, name: str, text: str) -> Path:
    play = bench.dir / f"plain-{name}.yml"
    play.write_text(text)
    return play


def plain_playbook(bench: Bench, play: Path):
    """A callable running `play` with ansible-playbook over an inventory and an optional limit."""
    env = plain_env(bench)
    playbook = str(Path(sys.executable).parent / "ansible-playbook")

    def run_it(inventory: Path, limit: str = "all") -> Sample:
        return timed([playbook, "-i", str(inventory), "-l", limit, str(play)], env)
    return run_it


def naive_playbook(bench: Bench):
    return plain_playbook(bench, write_play(bench, "naive", NAIVE_PLAY.format(
        python=f"{VENV}/bin/python", dest=bench.dir / "naive")))


def _warm_or_cold(bench: Bench, hosts, warm: bool) -> None:
    """Before a condition's block: masters for both sides (warm), or none at all (cold)."""
    if warm:
        for host in hosts:
            run(bench.ssh(host, "true", warm=True), check=True)
    else:
        bench.drop_rk_masters()
        bench.drop_hand_masters()


def p1_p2(bench: Bench, inv1: Path, host, reps: int, res: Results) -> None:
    naive = naive_playbook(bench)
    for warm in (False, True):
        cond = "warm (ssh masters up)" if warm else "cold (no ssh master)"
        _warm_or_cold(bench, [host], warm)
        if warm:
            rk_up(bench, inv1, host.name)  # leaves rk's master up (ControlPersist=60s)

        def before_rk():
            stop_kernels([host])
            if not warm:
                bench.drop_rk_masters()

        def reset_hand():
            stop_kernels([host])

        a, b, c = Series("rk up"), Series("hand recipe"), Series("naive playbook")
        for _ in range(reps):
            before_rk()
            a.samples.append(rk_up(bench, inv1, host.name))
            reset_hand()
            b.samples.append(hand_up(bench, host, warm))
            before_rk()  # the naive playbook runs over rk's control dir, like rk
            c.samples.append(naive(inv1, host.name))
        res.rows.append(Row("P1", "`rk up`, no kernel running", cond, a, b, 2.0))
        res.rows.append(Row("P1", "`rk up` against plain Ansible: the naive playbook (shell start,"
                            " wait_for, fetch)", cond, a, c, None))

        # P2: rk's kernel keeps running; the hand recipe starts its own each time.
        stop_kernels([host])
        rk_up(bench, inv1, host.name)
        a, b = Series("rk up (kernel runs)"), Series("hand recipe")
        for _ in range(reps):
            if not warm:
                bench.drop_rk_masters()
            a.samples.append(rk_up(bench, inv1, host.name))
            on_hosts([host], "pkill -KILL -f 'hand/[k].json'; true")
            b.samples.append(hand_up(bench, host, warm))
        res.rows.append(Row("P2", "`rk up`, kernel already running", cond, a, b, 1.4))
    stop_kernels([host])


def p3(bench: Bench, inv1: Path, inv8: Path, hosts8, reps: int, res: Results,
       conditions: tuple[bool, ...] = (False,)) -> None:
    for warm in conditions:
        cond = "warm" if warm else "cold"
        if warm:
            rk_up(bench, inv8, "bench")
        else:
            bench.drop_rk_masters()

        def reset():
            stop_kernels(hosts8)
            if not warm:
                bench.drop_rk_masters()

        a, b = Series("rk up, 8 hosts"), Series("rk up, 1 host")
        c, d = Series("naive playbook, 8 hosts"), Series("naive playbook, 1 host")
        e, f = Series("hand recipe, 8 hosts at once"), Series("hand recipe, 1 host")
        naive = naive_playbook(bench)
        alternate([(a, lambda: rk_up(bench, inv8, "bench")), (b, lambda: rk_up(bench, inv1, "h1")),
                   (c, lambda: naive(inv8)), (d, lambda: naive(inv1)),
                   (e, lambda: hand_up_parallel(bench, hosts8, warm)), (f, lambda: hand_up(bench, hosts8[0], warm))],
                  reps, reset)
        res.rows.append(Row("P3", "`rk up` on 8 hosts vs 1 host", cond, a, b, 2.0))
        # Not rk: the test hosts share the controller's two cores, so 8 kernels starting at once
        # compete with each other and with the controller. The same target applied by hand:
        res.rows.append(Row("P3", "by hand, not rk: the hand recipe on 8 hosts at once vs 1 host",
                            cond, e, f, 2.0))
        # Not rk: P3's target applied to Ansible alone, measured in the same alternation.
        res.rows.append(Row("P3", "plain Ansible, not rk: the naive playbook on 8 hosts vs 1 host",
                            cond, c, d, 2.0))
    stop_kernels(hosts8)


def hand_kill0(bench: Bench, hosts, pids: dict[str, int], warm: bool) -> Sample:
    return timed_parallel([bench.ssh(h, f"kill -0 {pids[h.name]}", warm) for h in hosts])


def kernel_pids(bench: Bench, inventory: Path) -> dict[str, int]:
    out = run([RK, "status", "-i", str(inventory), "--json"], bench.env, check=True).stdout
    return {h["host"]: h["kernels"][0]["pid"] for h in json.loads(out)["hosts"]}


def p4(bench: Bench, inv8: Path, hosts8, reps: int, res: Results) -> None:
    one_module = plain_playbook(bench, write_play(bench, "ping", PING_PLAY))
    stop_kernels(hosts8)
    rk_up(bench, inv8, "bench")
    pids = kernel_pids(bench, inv8)
    for warm in (False, True):
        cond = "warm" if warm else "cold"
        _warm_or_cold(bench, hosts8, warm)
        if warm:
            bench.rk("status", "-i", str(inv8))

        def status():
            if not warm:
                bench.drop_rk_masters()
            return bench.rk("status", "-i", str(inv8))

        def ping():
            if not warm:
                bench.drop_rk_masters()
            return one_module(inv8)

        a, b, c = Series("rk status, 8 hosts"), Series("parallel ssh kill -0"), Series("one ping task, 8 hosts")
        alternate([(a, status), (b, lambda: hand_kill0(bench, hosts8, pids, warm)), (c, ping)], reps)
        res.rows.append(Row("P4", "`rk status` over 8 hosts", cond, a, b, 2.0))
        res.rows.append(Row("P4", "`rk status` against plain Ansible: a one-task (ping) playbook over"
                            " 8 hosts", cond, a, c, None))
    stop_kernels(hosts8)


HAND_COLD_STEPS = ("apt-get install python3 python3-venv", "wheelhouse over one tar stream",
                   "venv + pip install --no-index + start the kernel", "scp of the connection file")


def hand_cold_start(bench: Bench, host, steps_out: list | None = None) -> Sample:
    """Bare host to running kernel by hand: apt, wheelhouse over one tar stream, venv + pip, start."""
    steps = [
        bench.ssh(host, "sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                        "apt-get install -qq -y --no-install-recommends python3 python3-venv'", False),
        ["sh", "-c", f"tar -C {shlex.quote(str(bench.wheelhouse))} -cf - . | "
                     + shlex.join(bench.ssh(host, "mkdir -p ~/wh && tar -xf - -C ~/wh", False))],
        bench.ssh(host, "python3 -m venv ~/venv && ~/venv/bin/pip install -q --no-index "
                        "--find-links ~/wh ipykernel && " + hand_start_script("~/venv/bin/python"), False),
        bench.scp(host, "hand/k.json", bench.dir / f"hand-{host.name}.json", False),
    ]
    samples = [timed(argv, timeout=900) for argv in steps]
    if steps_out is not None:
        steps_out.extend(zip(HAND_COLD_STEPS, (s.wall for s in samples)))
    return Sample(sum(s.wall for s in samples), sum(s.cpu for s in samples))


def p5(bench: Bench, reps: int, res: Results) -> None:
    group = bench.bare_hosts(2 * reps + 2)
    hosts = iter(group.hosts)
    a, b = Series("rk up, bare host"), Series("by hand")
    for _ in range(reps):
        mine, theirs = next(hosts), next(hosts)
        inv = bench.inventory(group, [mine], f"bare-{mine.name}.yml", shared_venv=False)
        a.samples.append(bench.rk("up", "-i", str(inv), "--host", mine.name, "--no-tunnel", timeout=900))
        b.samples.append(hand_cold_start(bench, theirs))
    # Where the difference goes: one more of each, rk timed task by task.
    mine, theirs = next(hosts), next(hosts)
    inv = bench.inventory(group, [mine], f"bare-{mine.name}.yml", shared_venv=False)
    res.cold_breakdown = profiled_up(bench, inv, mine.name)
    hand_cold_start(bench, theirs, res.cold_hand_steps)
    group.destroy()
    bench.groups.remove(group)
    res.rows.append(Row("P5", "cold start from a bare host, wheelhouse", "cold, fresh host per run",
                        a, b, 1.3))


def first_cell(bench: Bench, host, local_file: Path, tunnel: bool) -> None:
    """Open the five forwards (unless rk's own tunnel serves the file), execute 1+1."""
    if tunnel:
        with ssh_tunnel(host, local_file) as info:
            execute(info, "1+1")
    else:
        execute(local_file, "1+1")


def p6(bench: Bench, inv1: Path, host, reps: int, variant: str, res: Results) -> None:
    own_tunnel = variant == "own-tunnel"
    # With rk's tunnel, its tunnel file (local ports) replaces the fetched one.
    rk_file = bench.runtime / f"kernel-{'rk' if own_tunnel else 'rktunnel'}-{host.name}@default.json"

    def rk_side() -> Sample:
        start = time.perf_counter()
        up = rk_up(bench, inv1, host.name, tunnel=not own_tunnel)
        first_cell(bench, host, rk_file, own_tunnel)
        return Sample(time.perf_counter() - start, up.cpu)

    def hand_side() -> Sample:
        start = time.perf_counter()
        up = hand_up(bench, host, warm=False)
        first_cell(bench, host, bench.dir / f"hand-{host.name}.json", True)
        return Sample(time.perf_counter() - start, up.cpu)

    def reset():
        if not own_tunnel:  # rk's supervised tunnel goes with rk stop
            run([RK, "stop", "-i", str(inv1), "--host", host.name], bench.env)
        stop_kernels([host])
        bench.drop_rk_masters()

    a, b = Series("rk up + tunnel + 1+1"), Series("hand + ssh -L + 1+1")
    alternate([(a, rk_side), (b, hand_side)], reps, reset)
    what = ("first executed cell (rk up, own `ssh -L`, 1+1)" if own_tunnel
            else "first executed cell (rk up with rk's tunnel, 1+1)")
    res.rows.append(Row("P6", what, "cold", a, b, 1.6))
    reset()


def p7(bench: Bench, reps: int, res: Results) -> None:
    a, b = Series("rk --help"), Series("python -c pass")
    alternate([(a, lambda: timed([RK, "--help"], bench.env)),
               (b, lambda: timed([sys.executable, "-c", "pass"], bench.env))], reps * 2)
    res.rows.append(Row("P7", "`rk --help`", "-", a, b, 5.0))


# -- P8: controller memory ------------------------------------------------------------------

def peak_memory(bench: Bench, argv: list[str]) -> dict:
    """Peak over time of the summed RSS and PSS of rk's process tree, sampled every 50 ms.

    PSS counts pages shared between Ansible's forked workers once; RSS counts them per worker.
    """
    import psutil

    proc = subprocess.Popen(argv, env=bench.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = {"rss": 0, "pss": 0, "procs": 0}
    done = threading.Event()

    def sample():
        root = psutil.Process(proc.pid)
        while not done.is_set():
            rss = pss = 0
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for p in tree:
                try:
                    info = p.memory_full_info()
                except psutil.Error:
                    continue
                rss += info.rss
                pss += info.pss
            peak["rss"] = max(peak["rss"], rss)
            peak["pss"] = max(peak["pss"], pss)
            peak["procs"] = max(peak["procs"], len(tree))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    proc.wait(timeout=600)
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}")
    return {k: (v / 2**20 if k != "procs" else v) for k, v in peak.items()}


def p8(bench: Bench, inv8: Path, hosts8, reps: int, res: Results) -> None:
    for _ in range(reps):
        stop_kernels(hosts8)
        res.memory.append(peak_memory(bench, [RK, "up", "-i", str(inv8), "--host", "bench"]))
    stop_kernels(hosts8)


# -- floors ---------------------------------------------------------------------------------

RUNNER_EMPTY = """
import sys
from pathlib import Path
from rk import runner
runner.content.playbook = Path  # a playbook outside rk's content
result = runner.run_playbook(sys.argv[1], limit=["h1"], extravars={},
                             options=runner.RunOptions(inventories=[Path(sys.argv[2])]))
assert result.status == "successful" and not result.error, result
"""
LIST_HOSTS = ("from pathlib import Path; from rk.runner import Inventory; "
              "Inventory([Path({inv!r})]).hosts('h1')")


def floors(bench: Bench, inv1: Path, host, reps: int, res: Results) -> None:
    empty = write_play(bench, "empty", EMPTY_PLAY)
    play_empty = plain_playbook(bench, empty)
    play_raw = plain_playbook(bench, write_play(
        bench, "raw", ONE_TASK.format(task="ansible.builtin.raw: 'true'\n      changed_when: false")))
    play_module = plain_playbook(bench, write_play(bench, "ping", PING_PLAY))
    runner_script = bench.dir / "runner_empty.py"
    runner_script.write_text(RUNNER_EMPTY)

    measures = {
        "python -c pass": lambda: timed([sys.executable, "-c", "pass"], bench.env),
        "python -c 'import rk.cli' (rk's import cost at start-up)":
            lambda: timed([sys.executable, "-c", "import rk.cli"], bench.env),
        "in-process inventory parse (rk.runner.Inventory, incl. python start)":
            lambda: timed([sys.executable, "-c", LIST_HOSTS.format(inv=str(inv1))], bench.env),
        "ansible-playbook, empty play": lambda: play_empty(inv1),
        "ansible-runner (rk.runner), empty play":
            lambda: timed([sys.executable, str(runner_script), str(empty), str(inv1)], bench.env),
        "ansible-playbook, one raw task (warm master)": lambda: play_raw(inv1, "h1"),
        "ansible-playbook, one module task (ping, warm master)": lambda: play_module(inv1, "h1"),
        "ssh true, cold": lambda: timed(bench.ssh(host, "true", warm=False)),
        "ssh true, warm master": lambda: timed(bench.ssh(host, "true", warm=True)),
        "scp of the connection file, cold": lambda: timed(bench.scp(host, "hand/k.json", bench.dir / "x.json", False)),
        "ipykernel start until its file exists (on the host, no ssh)":
            lambda: _kernel_start_on_host(host),
    }
    run(bench.ssh(host, "true", warm=True), check=True)
    play_raw(inv1, "h1")  # rk's master up
    stop_kernels([host])
    hand_up(bench, host, warm=False)  # a file for the scp floor
    for _ in range(reps):
        for name, measure in measures.items():
            res.floors.setdefault(name, Series(name)).samples.append(measure())
    stop_kernels([host])


def _kernel_start_on_host(host) -> Sample:
    host.exec("pkill -KILL -f 'hand/[k].json'; true", user="rk")
    start = time.perf_counter()
    host.exec(hand_start_script(f"{VENV}/bin/python"), user="rk")
    return Sample(time.perf_counter() - start)


# -- rk up's tasks, timed by rk's own progress callback -------------------------------------

PROFILE = """
import json, sys, time
t0 = time.perf_counter()
from rk.commands import base
from rk.commands.up import up
marks = []
opts = base.Options(inventory=[sys.argv[1]], on_task=lambda h, t, _path: marks.append((t, time.perf_counter() - t0)))
result = up([sys.argv[2]], options=opts, tunnel=False)
marks.append(("(results back in rk)", time.perf_counter() - t0))
print(json.dumps(marks))
"""


def profiled_up(bench: Bench, inventory: Path, host_name: str) -> list[tuple[str, float]]:
    """One `rk up` (no tunnel) through the API, timed task by task by rk's progress callback."""
    script = bench.dir / "profile_up.py"
    script.write_text(PROFILE)
    out = run([sys.executable, str(script), str(inventory), host_name], bench.env, check=True).stdout
    marks = json.loads(out.strip().splitlines()[-1])
    steps = [("(start-up: rk, inventory parse, ansible-playbook)", marks[0][1])]
    return steps + [(name, after - at) for (name, at), (_, after) in zip(marks, marks[1:])]


def breakdown(bench: Bench, inv1: Path, host, res: Results) -> None:
    """Where one warm `rk up` (no kernel running) spends its time, task by task."""
    rk_up(bench, inv1, host.name)  # masters up
    stop_kernels([host])
    res.breakdown = profiled_up(bench, inv1, host.name)
    stop_kernels([host])


# -- scaling --------------------------------------------------------------------------------

def scaling(bench: Bench, group, counts: list[int], reps: int, res: Results) -> None:
    """rk up (cold), rk status (cold) and the hand's parallel kill -0 (cold) on 1..16 hosts."""
    for n in counts:
        hosts = group.hosts[:n]
        inv = bench.inventory(group, hosts, f"py-{n}.yml")
        up, status, hand = Series("up"), Series("status"), Series("hand")
        for _ in range(reps):
            stop_kernels(hosts)
            bench.drop_rk_masters()
            up.samples.append(rk_up(bench, inv, "bench"))
            bench.drop_rk_masters()
            status.samples.append(bench.rk("status", "-i", str(inv)))
            pids = kernel_pids(bench, inv)
            hand.samples.append(hand_kill0(bench, hosts, pids, warm=False))
        res.scaling.append({"n": n, "up": up, "status": status, "hand": hand})
        stop_kernels(hosts)
