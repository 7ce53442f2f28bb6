"""P6n and P6r: rk's first cell against a peer tool's, sshpyk (issue 13).

sshpyk is a jupyter_client kernel provisioner that runs everything over one ssh ControlMaster of
a dedicated ssh config alias. Its side starts a kernel through a KernelManager with its
kernelspec and executes `1+1`; rk's sides run `rk up` (a new kernel, or the running one again)
and a client on rk's tunnel file. Every side's client is the same fresh Python process, so all
pay the same interpreter start and jupyter_client import, as a front end started for the job
does. Same host, same venv (the bench's shared one), every ssh master closed before each run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.harness import BIN, RK, VENV, Bench, Sample, Series, _drop_masters, run, stop_kernels

SSHPYK = "sshpyk==1.25"  # bench/run installs this pin when it is missing
ALIAS = "rkbench_sshpyk"
KERNEL = "rkbench_sshpyk"

# The client: a new kernel through a kernelspec (sshpyk's provisioner), or a connection file
# (rk's tunnel file); prints the clock once `1+1` has run, then shuts a kernel it started down
# (not timed).
CLIENT = r"""
import sys, time
from jupyter_client import BlockingKernelClient, KernelManager
mode, arg = sys.argv[1:3]
km = None
if mode == "spec":
    km = KernelManager(kernel_name=arg)
    km.start_kernel()
    client = km.client()
else:
    client = BlockingKernelClient()
    client.load_connection_file(arg)
client.start_channels()
client.wait_for_ready(timeout=60)
# No output hook: the default one prints `2` to stdout, with no newline before the mark.
reply = client.execute_interactive("1+1", timeout=60, output_hook=lambda msg: None)
if reply["content"]["status"] != "ok":
    sys.exit("1+1 failed: %s" % reply["content"].get("ename"))
print("\nMARK", time.monotonic(), flush=True)
client.stop_channels()
if km is not None:
    km.shutdown_kernel()
"""


def ssh_config(bench: Bench, host) -> Path:
    """The dedicated alias sshpyk's README asks for, with the bench's key and strict host keys
    (the issue's rk side checks them too); ControlMaster auto is mandatory for sshpyk."""
    control = bench.dir / "spk"
    control.mkdir(mode=0o700, exist_ok=True)
    path = bench.dir / "sshpyk_config"
    path.write_text(
        f"Host {ALIAS}\n"
        f"  HostName 127.0.0.1\n  Port {host.port}\n  User {host.user}\n"
        f"  IdentityFile {bench.key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {host.known_hosts}\n  StrictHostKeyChecking yes\n"
        f"  BatchMode yes\n  ConnectTimeout 10\n"
        f"  ControlMaster auto\n  ControlPath {control}/%C\n  ControlPersist 10m\n")
    return path


def add_kernelspec(bench: Bench, config: Path) -> None:
    """`sshpyk add`: a local kernelspec (under the bench's HOME) naming the alias, our -F config,
    the venv's Python for its remote launcher, and the venv's `python3` kernelspec (ipykernel's)."""
    run([str(BIN / "sshpyk"), "add", "--replace", "--kernel-name", KERNEL, "--display-name", KERNEL,
         "--language", "python", "--ssh-host-alias", ALIAS, "--ssh-config", str(config),
         "--remote-python", f"{VENV}/bin/python", "--remote-kernel-name", "python3"],
        bench.env, check=True, timeout=60)


def client(bench: Bench, start: float, mode: str, arg: str) -> float:
    """Run the client; seconds from `start` until its `1+1` had run."""
    result = run([sys.executable, "-c", CLIENT, mode, arg], bench.env, check=True, timeout=180)
    mark = next(line for line in result.stdout.splitlines() if line.startswith("MARK "))
    seconds = float(mark.split()[1]) - start
    if not 0 < seconds < 180:
        raise RuntimeError(f"client's mark is {seconds:.1f} s from its start: clocks disagree")
    return seconds


def p6_peers(bench: Bench, inv1: Path, host, reps: int, res) -> None:
    from bench.cases import Row  # cases imports this module for its hook

    config = ssh_config(bench, host)
    add_kernelspec(bench, config)
    tunnel_file = bench.runtime / f"kernel-rktunnel-{host.name}@default.json"
    rk_args = ["-i", str(inv1), "--host", host.name]

    def rk_first_cell() -> Sample:
        start = time.monotonic()
        up = bench.rk("up", *rk_args)
        return Sample(client(bench, start, "file", str(tunnel_file)), up.cpu)

    def rk_again_first_cell() -> Sample:
        sample = rk_first_cell()
        if kernel_pids() != running[0]:  # after the mark: not timed
            raise RuntimeError("`rk up` with a kernel running started another one")
        return sample

    def sshpyk_first_cell() -> Sample:
        start = time.monotonic()
        return Sample(client(bench, start, "spec", KERNEL))

    def cold() -> None:
        bench.drop_rk_masters()
        _drop_masters(bench.dir / "spk")

    def no_kernel() -> None:
        run([RK, "stop", *rk_args], bench.env)
        stop_kernels([host])
        # sshpyk's remote launcher (a `python -c` reading its script from stdin), should a
        # shutdown have left it.
        host.exec("pkill -KILL -f '[S]SHPYK'; true", user=host.user, check=False)
        cold()

    def kernel_pids() -> str:
        return host.exec("pgrep -f '[i]pykernel' || true", user=host.user, check=False).stdout.strip()

    running: list[str] = []

    def kernel_running() -> None:
        # rk's kernel runs, its tunnel and every master are gone: a new session of the user.
        if not kernel_pids():
            no_kernel()
            run([RK, "up", *rk_args], bench.env, check=True)
        run([RK, "tunnel", "--stop", *rk_args], bench.env, check=True)
        running[:] = [kernel_pids()]
        host.exec("pkill -KILL -f '[S]SHPYK'; true", user=host.user, check=False)
        cold()

    peer = Series(f"sshpyk {SSHPYK.split('==')[1]}, new kernel + 1+1")
    new, again = Series("rk up (new kernel) + 1+1"), Series("rk up (kernel running) + 1+1")
    sides = [(peer, sshpyk_first_cell, no_kernel), (new, rk_first_cell, no_kernel),
             (again, rk_again_first_cell, kernel_running)]
    for _ in range(reps):  # as harness.alternate(), with each side's own reset
        for series, action, reset in sides:
            reset()
            series.samples.append(action())
    no_kernel()
    res.rows.append(Row("P6n", "first executed cell, new kernel, through rk's tunnel", "cold",
                        new, peer, 2.0))
    res.rows.append(Row("P6r", "first executed cell, kernel already running (`rk up` again, new "
                        "tunnel)", "cold", again, peer, 0.75))

