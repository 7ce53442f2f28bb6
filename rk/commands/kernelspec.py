"""rk kernelspec install/list/remove: Jupyter kernelspecs that run a kernel on a host.

A kernelspec is a directory `rk-<host>-<name>` in the user's Jupyter kernels directory whose
kernel.json starts rk.kernelspec_launcher with this rk's own interpreter (an absolute path that
exists: VS Code hides kernelspecs whose executable is missing). JupyterLab, Notebook, VS Code
and nbclient list it like any local kernel.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from rk import paths
from rk.commands import base
from rk.commands.provision import provision
from rk.errors import UsageError

LAUNCHER = "rk.kernelspec_launcher"


def kernels_dir() -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "kernels"


def spec_name(host: str, name: str) -> str:
    return f"rk-{paths.safe_name(host)}-{paths.safe_name(name)}".lower()


def install(host: str, name: str = "default", display_name: str | None = None, spyder: bool = False,
            python: str | None = None, lease_s: float = 300, options: base.Options | None = None) -> base.CommandResult:
    """Provision the host (Python, ipykernel, spyder-kernels with `spyder`), then write the kernelspec."""
    options = options or base.Options()
    base.check_name(name)
    if lease_s < 10:
        raise UsageError("--lease must be at least 10 seconds", "the launcher renews the lease every 5 s")
    result = provision([host], python, spyder, [], options)
    result.command = "kernelspec"
    if len(result.hosts) != 1:
        raise UsageError(f"--host {host} names {len(result.hosts)} hosts", "a kernelspec runs on exactly one host")
    (entry,) = result.hosts
    if entry.status != "ok":
        return result
    executable = python or (entry.python or {}).get("executable")
    argv = [sys.executable, "-m", LAUNCHER, "--host", host, "--name", name, "--lease", f"{lease_s:g}"]
    for inventory in base.resolve([host], options).inventories:
        argv += ["-i", str(Path(inventory).resolve())]
    if executable:
        argv += ["--python", executable]
    if spyder:
        argv.append("--spyder")
    if options.accept_new_host_keys:
        argv.append("--accept-new-host-keys")
    spec = {
        "argv": [*argv, "{connection_file}"],
        "display_name": display_name or f"Python ({name} on {host}, rk)",
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"rk": {"host": host, "name": name, "spyder": spyder}},
    }
    directory = kernels_dir() / spec_name(host, name)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
    entry.kernels = [{"name": name, "kernelspec": spec_name(host, name), "kernelspec_dir": str(directory)}]
    return result


def installed() -> dict[str, dict]:
    """rk's kernelspecs in the user's kernels directory, by kernelspec name."""
    found = {}
    directory = kernels_dir()
    for path in sorted(directory.glob("rk-*/kernel.json")) if directory.is_dir() else []:
        try:
            spec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if LAUNCHER in spec.get("argv", []):
            found[path.parent.name] = dict(spec.get("metadata", {}).get("rk", {}), display_name=spec.get("display_name"),
                                           kernelspec_dir=str(path.parent))
    return found


def list_specs() -> base.CommandResult:
    result = base.CommandResult(command="kernelspec")
    by_host: dict[str, base.HostResult] = {}
    for spec_dir, info in installed().items():
        host = by_host.setdefault(info.get("host", "?"), base.HostResult(info.get("host", "?"), "ok"))
        host.kernels.append({"name": info.get("name"), "kernelspec": spec_dir, **info})
    result.hosts = list(by_host.values())
    return result


def remove(host: str, name: str = "default") -> base.CommandResult:
    spec = spec_name(host, name)
    directory = kernels_dir() / spec
    if spec not in installed():
        raise UsageError(f"no rk kernelspec {spec} in {kernels_dir()}", "`rk kernelspec list` shows them")
    shutil.rmtree(directory)
    return base.CommandResult(command="kernelspec", hosts=[base.HostResult(host, "ok", kernels=[{"name": name, "kernelspec": spec}])])
