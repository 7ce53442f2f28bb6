"""rk status: every kernel on the hosts, and local connection files whose kernel is gone."""

from __future__ import annotations

from rk import paths
from rk import tunnel as tunnels
from rk.commands import base
from rk.commands.tunnel import describe


def status(hosts: list[str] | None, options: base.Options | None = None) -> base.CommandResult:
    options = options or base.Options()
    selection = base.resolve(hosts, options)
    result, data = base.run("status", selection, {"rk_kernel_all": True}, options, "status")
    base.kernels_of(data, selection, result)
    # A killed rk can leave half-written copies of a key behind: status cleans up after it.
    paths.remove_stale_temp_files(paths.runtime_dir())
    paths.remove_stale_temp_files(tunnels.tunnels_dir())
    for inventory_name, host in zip(selection.limit, result.hosts):
        local = paths.local_connection_files(inventory_name)
        kept = set(local) | set(paths.local_connection_files(inventory_name, paths.TUNNEL))
        seen = set()
        for kernel in host.kernels:
            seen.add(kernel["name"])
            if kernel["name"] in local:
                kernel["local_file"] = str(local[kernel["name"]])
            if kernel["name"] in kept:
                # A frozen (unresponsive) kernel's files are still its own: not stale.
                kernel["local_stale"] = kernel.get("state") not in ("alive", "unresponsive")
        if host.status == "ok":
            # Local files with no kernel behind them: left by a stop that could not reach the host.
            for name in sorted(kept - seen):
                stale = {"name": name, "state": "absent", "local_stale": True}
                if name in local:
                    stale["local_file"] = str(local[name])
                host.kernels.append(stale)
        describe(inventory_name, host.kernels)
    return result
