"""rk fetch: copy a running kernel's connection file into Jupyter's runtime directory."""

from __future__ import annotations

import json

from rk import connection, paths
from rk.commands import base
from rk.targets import Selection


def fetch(hosts: list[str] | None, name: str = "default", options: base.Options | None = None) -> base.CommandResult:
    return run_and_fetch("fetch_kernel", hosts, name, options or base.Options(), "fetch")[0]


def run_and_fetch(
    playbook: str, hosts: list[str] | None, name: str, options: base.Options, command: str
) -> tuple[base.CommandResult, Selection]:
    """Run a playbook that ends by fetching kernel `name`'s file; check the files it fetched."""
    base.check_name(name)
    selection = base.resolve(hosts, options)
    fetch_dir = paths.ensure_private_dir(paths.runtime_dir())
    extravars = {"rk_kernel_name": name, "rk_kernel_fetch_dir": str(fetch_dir)}
    result, data = base.run(playbook, selection, extravars, options, command)
    base.kernels_of(data, selection, result)
    check_local_files(result, selection)
    return result, selection


def check_local_files(result: base.CommandResult, selection: Selection) -> None:
    """Validate every fetched file; a hostile or broken one is deleted and the host fails."""
    by_shown = {selection.shown(n): n for n in selection.limit}
    for host in result.hosts:
        for kernel in host.kernels:
            local = paths.local_connection_file(by_shown[host.host], kernel["name"])
            if host.status != "ok" or not local.exists():
                continue
            try:
                info = connection.validate(local)
            except connection.BadConnectionFile as exc:
                local.unlink(missing_ok=True)
                host.status = "failed"
                host.message = f"rejected the connection file from the host: {exc}"
                host.hint = "the kernel on that host is not one rk started; stop it with `rk stop`"
                continue
            # Say whose file this is, for status and stop --all (the name alone is ambiguous).
            info.update(rk_host=by_shown[host.host], rk_kernel=kernel["name"])
            paths.write_private(local, json.dumps(info, indent=1))
            kernel["local_file"] = str(local)
