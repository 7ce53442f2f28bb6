"""rk fetch: copy a running kernel's connection file into Jupyter's runtime directory."""

from __future__ import annotations

import json
import posixpath

from rk import connection, paths
from rk.commands import base
from rk.targets import Selection


def fetch(hosts: list[str] | None, name: str = "default", options: base.Options | None = None) -> base.CommandResult:
    return run_and_fetch("fetch_kernel", hosts, name, options or base.Options(), "fetch", tunnel=False)[0]


def run_and_fetch(
    playbook: str, hosts: list[str] | None, name: str, options: base.Options, command: str, tunnel: bool = True
) -> tuple[base.CommandResult, Selection]:
    """Run a playbook that ends by fetching kernel `name`'s file; check the files it fetched.

    `tunnel`: whether the caller forwards the kernel through rk's tunnel afterwards."""
    base.check_name(name)
    selection = base.resolve(hosts, options)
    fetch_dir = paths.ensure_private_dir(paths.runtime_dir())
    extravars = {"rk_kernel_name": name, "rk_kernel_fetch_dir": str(fetch_dir)}
    result, data = base.run(playbook, selection, extravars, options, command)
    base.kernels_of(data, selection, result)
    check_local_files(result, selection, tunnel)
    return result, selection


def check_local_files(result: base.CommandResult, selection: Selection, tunnel: bool = True) -> None:
    """Validate every fetched file; a hostile or broken one is deleted and the host fails.

    Without a tunnel, the file of a hardened (ipc) kernel on a host reached over SSH is useless
    here (its sockets are paths on the host): it is deleted, and the host fails with a sentence."""
    by_shown = {selection.shown(n): n for n in selection.limit}
    for host in result.hosts:
        for kernel in host.kernels:
            local = paths.local_connection_file(by_shown[host.host], kernel["name"])
            if host.status != "ok" or not local.exists():
                continue
            try:
                info = connection.validate(local, _kernel_dir(kernel))
            except connection.BadConnectionFile as exc:
                local.unlink(missing_ok=True)
                host.status = "failed"
                host.message = f"rejected the connection file from the host: {exc}"
                host.hint = "the kernel on that host is not one rk started; stop it with `rk stop`"
                continue
            if info["transport"] == "ipc" and not tunnel and not _local(selection, by_shown[host.host]):
                local.unlink(missing_ok=True)
                host.status = "failed"
                host.message = (f"kernel {kernel['name']} is hardened (ipc sockets on the host): "
                                "its connection file is of no use on this machine")
                host.hint = f"use rk's tunnel file instead: rk tunnel --host {host.host} --name {kernel['name']}"
                continue
            # Say whose file this is, for status and stop --all (the name alone is ambiguous).
            info.update(rk_host=by_shown[host.host], rk_kernel=kernel["name"])
            paths.write_private(local, json.dumps(info, indent=1))
            kernel["local_file"] = str(local)


def _local(selection: Selection, name: str) -> bool:
    return selection.hostvars(name).get("ansible_connection") == "local"


def _kernel_dir(kernel: dict) -> str | None:
    """The kernel's directory on the host, from the module's result (where its kernel.json is)."""
    path = kernel.get("connection_file")
    return posixpath.dirname(path) if isinstance(path, str) and path else None
