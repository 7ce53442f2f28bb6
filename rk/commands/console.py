"""rk console: jupyter console on a kernel, through rk's tunnel (or directly on localhost)."""

from __future__ import annotations

import importlib.util
import os
import sys

from rk import paths
from rk.commands import base
from rk.commands.tunnel import tunnel
from rk.errors import RkError


def console_argv(host: str, name: str = "default", options: base.Options | None = None) -> list[str]:
    """The jupyter console command line for the kernel; makes sure the tunnel is up first."""
    options = options or base.Options()
    if importlib.util.find_spec("jupyter_console") is None:
        raise RkError("jupyter console is not installed here",
                      f"install it beside rk: {sys.executable} -m pip install jupyter_console")
    result = tunnel([host], name, options=options)  # fetches the file; reuses a working tunnel
    (entry,) = result.hosts
    if entry.status != "ok":
        raise RkError(f"{entry.host}: {entry.message}", entry.hint)
    (kernel,) = entry.kernels
    file = kernel.get("tunnel_file") or kernel.get("local_file")
    if not file:
        raise RkError(f"kernel {name} on {host} has no connection file", "start it with `rk up`")
    return [sys.executable, "-m", "jupyter_console", "--existing", file]


def console(host: str, name: str = "default", options: base.Options | None = None) -> None:
    """Replace this process with jupyter console (never returns)."""
    argv = console_argv(host, name, options)
    paths.runtime_dir()  # fail before exec if Jupyter's paths are unusable
    os.execv(argv[0], argv)
