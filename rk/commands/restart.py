"""rk restart: a fresh kernel process under the same name, key and local tunnel ports."""

from __future__ import annotations

from rk import tunnel as tunnels
from rk.commands import base
from rk.commands.fetch import run_and_fetch
from rk.commands.tunnel import ensure_or_fail


def restart(hosts: list[str] | None, name: str = "default", options: base.Options | None = None) -> base.CommandResult:
    options = options or base.Options()
    result, selection = run_and_fetch("restart_kernel", hosts, name, options, "restart")
    for inventory_name, host in zip(selection.limit, result.hosts):
        if host.status != "ok" or tunnels.find(inventory_name, name) is None:
            continue
        # The key is kept and the local ports too: the tunnel now leads to the new ports.
        for kernel in host.kernels:
            ensure_or_fail(host, inventory_name, selection.hostvars(inventory_name), kernel, options.accept_new_host_keys)
    return result
