"""rk tunnel: keep a supervised SSH tunnel to a kernel and a local connection file that uses it.

The tunnel file (`kernel-rktunnel-<host>@<kernel>.json` in Jupyter's runtime dir, 0600) is the
fetched file with ip 127.0.0.1 and rk's local ports: a front end uses it as a local kernel,
with no SSH settings. `rk up` calls `ensure` after each start; `rk stop` calls `teardown`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import posixpath
from pathlib import Path

from rk import paths, ssh
from rk import tunnel as tunnels
from rk.commands import base
from rk.commands.fetch import run_and_fetch
from rk.errors import RkError
from rk.targets import Selection


def tunnel(hosts: list[str] | None, name: str = "default", stop: bool = False,
           options: base.Options | None = None) -> base.CommandResult:
    options = options or base.Options()
    base.check_name(name)
    if stop:
        selection = base.resolve(hosts, options)
        result = base.CommandResult(command="tunnel")
        for host in selection.limit:
            kernel = {"name": name, "tunnel": "down"}
            teardown(host, name)
            result.hosts.append(base.HostResult(selection.shown(host), "ok", kernels=[kernel]))
        return result
    result, selection = run_and_fetch("fetch_kernel", hosts, name, options, "tunnel")
    connect_all(result, selection, options)  # the same selection: the inventory is parsed once
    return result


def connect_all(result: base.CommandResult, selection: Selection, options: base.Options) -> None:
    """Ensure a tunnel for every fetched kernel of the hosts reached over SSH; drop the fetched file."""
    by_shown = {selection.shown(n): n for n in selection.limit}
    for host in result.hosts:
        name = by_shown[host.host]
        hostvars = selection.hostvars(name)
        if host.status != "ok" or hostvars.get("ansible_connection") == "local":
            continue
        for kernel in host.kernels:
            if not kernel.get("local_file"):
                continue
            if options.on_task:
                options.on_task(host.host, f"Open the SSH tunnel to {kernel['name']}", __file__)
            if not ensure_or_fail(host, name, hostvars, kernel, options.accept_new_host_keys):
                continue
            # The tunnel file replaces the fetched one: one local copy of the key, one file to
            # use. `rk fetch` or `rk up --no-tunnel` give the host-port file for Spyder's SSH route.
            Path(kernel.pop("local_file")).unlink(missing_ok=True)


def ensure_or_fail(result: base.HostResult, host: str, hostvars: dict, kernel: dict, accept_new_host_keys: bool) -> bool:
    """`ensure`; a tunnel that cannot be made fails its host (`hostkey` when ssh refused the key)."""
    try:
        ensure(host, hostvars, kernel, accept_new_host_keys)
    except RkError as exc:
        result.status, result.message, result.hint = exc.status, exc.message, exc.hint
        return False
    return True


def ensure(host: str, hostvars: dict, kernel: dict, accept_new_host_keys: bool = False) -> None:
    """Forward local ports to the kernel's ports and write the tunnel file; reuse what still fits."""
    fetched = _connection_info(host, kernel)
    remote = remote_endpoints(fetched)
    target = ssh.Target.from_hostvars(host, hostvars)

    def argv_for(forwards):
        return ssh.forward_argv(target, forwards, accept_new_host_keys)

    with _locked(host, kernel["name"]):
        current = tunnels.find(host, kernel["name"])
        wanted = argv_for([(current.local_ports[p], remote[p]) for p in tunnels.PORT_NAMES]) if current else None
        # A supervisor whose ssh was refused the host's key gets a fresh try: known_hosts may be
        # fixed by now, and if not, `start` says so at once.
        if current is None or not tunnels.alive(current) or current.argv != wanted or tunnels.state(current) == "hostkey":
            # A restarted kernel has new ports on the host: forward the same local ports to them,
            # so that the tunnel file and the front ends that use it stay valid.
            local = current.local_ports if current else None
            if current:
                tunnels.stop(current)
            current = tunnels.start(host, kernel["name"], argv_for, remote, local)
        tunnel_file = paths.tunnel_connection_file(host, kernel["name"])
        # tcp on loopback here whatever the host uses: front ends need no change for ipc kernels.
        info = dict(fetched, ip="127.0.0.1", transport="tcp", rk_role="tunnel", **current.local_ports)
        paths.write_private(tunnel_file, json.dumps(info, indent=1))
    kernel.update(tunnel=tunnels.state(current), tunnel_file=str(tunnel_file), local_ports=current.local_ports)


def remote_endpoints(info: dict) -> dict[str, int | str]:
    """What each local port forwards to: the host's tcp port, or an ipc kernel's socket path
    (ipykernel binds "<ip>-<port>"; connection.validate checked it is in the kernel's directory)."""
    if info.get("transport") == "ipc":
        return {port: f"{info['ip']}-{info[port]}" for port in tunnels.PORT_NAMES}
    return {port: info[port] for port in tunnels.PORT_NAMES}


def _connection_info(host: str, kernel: dict) -> dict:
    """The kernel's key and host ports, from the fetched file.

    A concurrent `rk up` of the same kernel may already have replaced that file by the tunnel
    file (written before the fetched file is removed): then the key comes from there, and the
    host's ports from this run's own module result.
    """
    try:
        return json.loads(Path(kernel["local_file"]).read_text())
    except FileNotFoundError:
        pass
    info = paths.read_json_or_quarantine(paths.tunnel_connection_file(host, kernel["name"]))
    if info is None:
        raise RkError(f"the connection file of kernel {kernel['name']} vanished meanwhile",
                      "another rk stopped or changed it; run rk up again")
    info |= {f"{port}_port": number for port, number in kernel["ports"].items()}
    if kernel.get("transport") == "ipc":  # the tunnel file says tcp; the host's sockets are these
        info |= {"transport": "ipc", "ip": posixpath.join(posixpath.dirname(kernel["connection_file"]), "k")}
    return info


def teardown(host: str, kernel: str) -> None:
    """Stop the kernel's tunnel, if any, and remove its tunnel file."""
    with _locked(host, kernel, remove=True):
        current = tunnels.find(host, kernel)
        if current:
            tunnels.stop(current)
    tunnel_files = paths.local_connection_files(host, paths.TUNNEL)
    if kernel in tunnel_files:
        tunnel_files[kernel].unlink(missing_ok=True)


def describe(host: str, kernels: list[dict]) -> None:
    """Add each kernel's tunnel state and tunnel file (for rk status)."""
    recorded = tunnels.of_host(host)
    files = paths.local_connection_files(host, paths.TUNNEL)
    for kernel in kernels:
        if kernel["name"] in recorded or kernel["name"] in files:
            kernel["tunnel"] = tunnels.state(recorded.get(kernel["name"]))
        if kernel["name"] in files:
            kernel["tunnel_file"] = str(files[kernel["name"]])


@contextlib.contextmanager
def _locked(host: str, kernel: str, remove: bool = False):
    """One rk at a time changes a given tunnel (ten parallel `rk up` make one tunnel).

    With `remove`, the lock file goes too (a stopped kernel leaves no file behind). It is
    unlinked while held, so whoever opened it meanwhile finds, once it holds the lock, that
    the path no longer names what it locked, and opens the path again.
    """
    lock = tunnels.state_file(host, kernel).with_suffix(".lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(lock, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
        if remove:
            lock.unlink(missing_ok=True)
    finally:
        os.close(fd)
