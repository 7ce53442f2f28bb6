"""rk provision: ensure Python and ipykernel on the hosts, start nothing."""

from __future__ import annotations

from rk.commands import base


def provision(
    hosts: list[str] | None,
    python: str | None = None,
    spyder: bool = False,
    packages: list[str] | None = None,
    options: base.Options | None = None,
) -> base.CommandResult:
    options = options or base.Options()
    selection = base.resolve(hosts, options)
    extravars = {"rk_python_spyder": spyder, "rk_python_packages": packages or []}
    if python:
        extravars["rk_python_interpreter"] = python
    result, data = base.run("provision", selection, extravars, options, "provision")
    base.kernels_of(data, selection, result)
    return result
