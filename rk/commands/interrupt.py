"""rk interrupt: SIGINT to a kernel, whatever front end is attached (or none)."""

from __future__ import annotations

from rk.commands import base


def interrupt(hosts: list[str] | None, name: str = "default", options: base.Options | None = None) -> base.CommandResult:
    options = options or base.Options()
    base.check_name(name)
    selection = base.resolve(hosts, options)
    result, data = base.run("interrupt_kernel", selection, {"rk_kernel_name": name}, options, "interrupt")
    base.kernels_of(data, selection, result)
    return result
