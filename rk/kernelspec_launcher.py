"""The process a front end starts through an rk kernelspec; it stands in for the remote kernel.

    python -m rk.kernelspec_launcher --host H --name N [options] CONNECTION_FILE

The front end (JupyterLab, Notebook, VS Code, nbclient) wrote CONNECTION_FILE with its key and
local ports. The launcher:
1. starts kernel `N-<hash of the file's path>` on the host with that key (playbook
   launch_kernel.yml copies the file there; the key is on no command line); a relaunch with the
   same file (a front end's restart) attaches to it when it still runs;
2. forwards the front end's five local ports to the kernel's ports through a supervised ssh,
   whose remote command is the lease holder (rk/lease_holder.py);
3. stays in the foreground as "the kernel": SIGINT interrupts the remote kernel, SIGTERM stops
   it, and it exits when the remote kernel ends (a shutdown request through the tunnel).
If the launcher dies without a word (kill -9), ssh ends, and the holder stops the kernel once
its lease has run out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

HEARTBEAT_S = 5
# What ssh says for each connection the front end still makes after the kernel has gone (its
# heartbeats, until it has seen the shutdown through): noise in a Jupyter server's log.
_REFUSED = re.compile(rb"^channel \d+: open failed: connect failed: Connection refused\s*$")


def remote_name(name: str, connection_file: str) -> str:
    digest = hashlib.sha256(os.path.abspath(connection_file).encode()).hexdigest()[:8]
    return f"{name[:55]}-{digest}"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rk.kernelspec_launcher")
    p.add_argument("--host", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("-i", "--inventory", action="append", default=[])
    p.add_argument("--python")
    p.add_argument("--spyder", action="store_true")
    p.add_argument("--lease", type=float, default=300)
    p.add_argument("--accept-new-host-keys", action="store_true")
    p.add_argument("connection_file")
    return p.parse_args(argv)


def start_remote(args) -> tuple[dict, dict]:
    """Start (or find) the remote kernel; returns (its rk_kernels info, the host's variables)."""
    from rk.commands import base
    from rk.errors import RkError

    options = base.Options(inventory=args.inventory, accept_new_host_keys=args.accept_new_host_keys)
    selection = base.resolve([args.host], options)
    if len(selection.limit) != 1:
        raise RkError(f"--host {args.host} names {len(selection.limit)} hosts; a kernelspec needs exactly one")
    name = remote_name(args.name, args.connection_file)
    extravars = {"rk_kernel_name": name, "rk_kernel_key_file": os.path.abspath(args.connection_file),
                 "rk_kernel_lease": args.lease, "rk_kernel_spyder": args.spyder}
    if args.python:
        extravars["rk_kernel_python"] = args.python
    result, data = base.run("launch_kernel", selection, extravars, options, "launch")
    base.kernels_of(data, selection, result)
    (host,) = result.hosts
    if host.status != "ok":
        raise RkError(f"{host.host}: {host.message}", host.hint)
    return host.kernels[0], selection.hostvars(selection.limit[0])


def quiet_log() -> int:
    """A pipe for ssh's output, copied to stderr in a thread without the refused-channel lines."""
    read, write = os.pipe()

    def copy():
        with os.fdopen(read, "rb") as lines:
            for line in lines:
                if not _REFUSED.match(line):
                    sys.stderr.buffer.write(line)
                    sys.stderr.flush()

    threading.Thread(target=copy, daemon=True).start()
    return write


def main(argv: list[str] | None = None) -> int:
    from rk import lease_holder, ssh, tunnel
    from rk.errors import RkError

    args = parse(sys.argv[1:] if argv is None else argv)
    front = json.loads(Path(args.connection_file).read_text())
    try:
        kernel, hostvars = start_remote(args)
    except RkError as exc:
        print(f"rk: cannot start the kernel on {args.host}: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""),
              file=sys.stderr, flush=True)
        return 1
    remote = {f"{port}_port": number for port, number in kernel["ports"].items()}
    forwards = [(front[p], remote[p]) for p in tunnel.PORT_NAMES]
    holder = [kernel["python"], "-c", Path(lease_holder.__file__).read_text(),
              os.path.dirname(kernel["connection_file"]), str(args.lease)]
    argv = ssh.forward_argv(ssh.Target.from_hostvars(args.host, hostvars), forwards, args.accept_new_host_keys,
                            command=[shlex.join(holder)])
    current = {}
    lock = threading.Lock()

    def send(byte: bytes) -> None:
        with lock:
            proc = current.get("proc")
            if proc and proc.stdin and proc.poll() is None:
                try:
                    proc.stdin.write(byte)
                    proc.stdin.flush()
                except OSError:
                    pass  # ssh is reconnecting; the next one gets the next heartbeat

    def started(proc):
        with lock:
            current["proc"] = proc

    # The holder exits 0 when the kernel has ended; anything else is ssh failing: go again.
    supervisor = tunnel.Supervisor(argv, log=quiet_log(), stdin=subprocess.PIPE, retry=lambda code: code != 0,
                                   on_start=started)
    signal.signal(signal.SIGINT, lambda *_: send(b"i"))
    signal.signal(signal.SIGTERM, lambda *_: send(b"q"))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    while thread.is_alive():
        send(b"h")
        thread.join(HEARTBEAT_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
