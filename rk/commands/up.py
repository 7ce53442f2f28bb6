"""rk up: provision if needed, start (or reuse) a kernel, fetch its connection file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rk import paths
from rk.commands import base
from rk.commands.fetch import check_local_files
from rk.commands.tunnel import connect_all
from rk.errors import UsageError

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GPUS = re.compile(r"^(none|[A-Za-z0-9-]+(,[A-Za-z0-9-]+)*)$")


@dataclass
class KernelSpec:
    name: str = "default"
    spyder: bool = False
    python: str | None = None  # an existing interpreter, used as it is
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    gpus: str | None = None
    packages: list[str] = field(default_factory=list)
    # ipc sockets in the kernel's 0700 directory instead of 127.0.0.1 ports other users reach;
    # False leaves the inventory's rk_kernel_transport (tcp by default) in charge.
    hardened: bool = False
    # CurveZMQ on the kernel's channels; False leaves rk_kernel_transport_encryption in charge.
    encrypt: bool = False

    def validate(self) -> None:
        base.check_name(self.name)
        for key in self.env:
            if not _ENV_KEY.match(key):
                raise UsageError(f"bad environment variable name {key!r}", "use letters, digits and _")
        if self.gpus is not None and not _GPUS.match(self.gpus):
            raise UsageError(f"bad --gpus value {self.gpus!r}", "give device numbers or UUIDs like 0,1, or none")

    def extravars(self) -> dict:
        extravars = {
            "rk_kernel_name": self.name,
            "rk_kernel_spyder": self.spyder,
            "rk_python_spyder": self.spyder,
            "rk_kernel_env": self.env,
            "rk_python_packages": self.packages,
        }
        if self.python:
            extravars["rk_python_interpreter"] = self.python
        if self.cwd:
            extravars["rk_kernel_cwd"] = self.cwd
        if self.hardened:
            extravars["rk_kernel_transport"] = "ipc"
        if self.encrypt:
            extravars["rk_kernel_transport_encryption"] = True
            if not self.python:  # rk's own venv: brought to an ipykernel that can encrypt
                extravars["rk_python_ipykernel_version"] = ">=7.3,<8"
        if self.gpus is not None:  # "none" hides every GPU
            extravars["rk_kernel_gpus"] = [] if self.gpus == "none" else self.gpus.split(",")
        return extravars


def up(hosts: list[str], kernel: KernelSpec | None = None, options: base.Options | None = None,
       tunnel: bool = True) -> base.CommandResult:
    """Start or reuse the kernel; unless `tunnel` is false, keep a tunnel to it (hosts over SSH)."""
    kernel = kernel or KernelSpec()
    options = options or base.Options()
    kernel.validate()
    if kernel.hardened and not tunnel:
        raise UsageError("--hardened needs rk's tunnel: a hardened kernel's sockets are files on the host",
                         "drop --no-tunnel; the tunnel file works in every front end")
    selection = base.resolve(hosts, options)
    fetch_dir = paths.ensure_private_dir(paths.runtime_dir())
    extravars = kernel.extravars() | {"rk_kernel_fetch_dir": str(fetch_dir)}
    result, data = base.run("up", selection, extravars, options, "up")
    base.kernels_of(data, selection, result)
    check_local_files(result, selection, tunnel)
    if tunnel:
        connect_all(result, selection, options)
    return result
