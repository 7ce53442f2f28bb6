"""rk clean: remove everything rk put on hosts (--host) or on this machine (--local).

On a host: every kernel stopped, the host's kernel state, rk's venv and its cache
(playbooks/clean.yml), then the host's local files, tunnels and kernelspecs. Locally: every
tunnel, rk's connection files, its kernelspecs, its state and cache directories. Kernels that
still run are named and the caller's `confirm` asked first; without it (or with a no) nothing
is removed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from rk import paths
from rk import tunnel as tunnels
from rk.commands import base, kernelspec
from rk.commands.stop import forget
from rk.errors import RkError

RUNNING = ("alive", "unresponsive", "starting")
Confirm = Callable[[str], bool]


def clean(hosts: list[str], options: base.Options | None = None, yes: bool = False,
          confirm: Confirm | None = None) -> base.CommandResult:
    options = options or base.Options()
    selection = base.resolve(hosts, options)
    if not yes:  # only a question needs to know what runs: --yes goes straight to the clean run
        looked, data = base.run("status", selection, {"rk_kernel_all": True}, options, "clean")
        base.kernels_of(data, selection, looked)
        running = [f"{h.host}/{k['name']}" for h in looked.hosts for k in h.kernels if k.get("state") in RUNNING]
        _ask(running, "kernel(s) still run", "Stop them and remove everything rk put on the host?", yes, confirm)
    result, data = base.run("clean", selection, {}, options, "clean")
    base.kernels_of(data, selection, result)
    specs = kernelspec.installed().values()
    for inventory_name, host in zip(selection.limit, result.hosts):
        if host.status != "ok":
            continue
        forget(inventory_name, [k["name"] for k in host.kernels], "", all_kernels=True)
        for info in specs:
            if info.get("host") in (host.host, inventory_name):
                shutil.rmtree(info["kernelspec_dir"], ignore_errors=True)
    return result


def clean_local(yes: bool = False, confirm: Confirm | None = None) -> base.CommandResult:
    """Tunnels, rk's connection files and kernelspecs, and rk's state and cache on this machine."""
    from platformdirs import user_cache_dir

    recorded = [t for t in (tunnels.load(p) for p in sorted(tunnels.tunnels_dir().glob("*.json"))) if t]
    files = _connection_files()
    in_use = [f"{t.host}/{t.kernel}" for t in recorded if tunnels.alive(t)] + [p.name for p in files]
    _ask(sorted(set(in_use)), "tunnel(s) or connection file(s) of kernels remain",
         "Close and remove them (the kernels keep running on their hosts)?", yes, confirm)
    for tunnel in recorded:
        tunnels.stop(tunnel)
    for path in files:
        path.unlink(missing_ok=True)
    for info in kernelspec.installed().values():
        shutil.rmtree(info["kernelspec_dir"], ignore_errors=True)
    for directory in (paths.state_dir(), Path(user_cache_dir("rk"))):
        shutil.rmtree(directory, ignore_errors=True)
    return base.CommandResult(command="clean")


def _connection_files() -> list[Path]:
    """rk's connection and tunnel files in Jupyter's runtime directory (they hold keys)."""
    runtime = paths.runtime_dir()
    if not runtime.is_dir():
        return []
    return sorted(p for prefix in (paths.FETCHED, paths.TUNNEL) for p in runtime.glob(f"{prefix}*.json")
                  if not p.is_symlink())


def _ask(items: list[str], what: str, question: str, yes: bool, confirm: Confirm | None) -> None:
    """Go on when nothing is in use, with --yes, or when the user says yes; else remove nothing."""
    if not items or yes:
        return
    listed = f"{len(items)} {what}: {', '.join(items)}"
    if confirm is None or not confirm(f"{listed}. {question}"):
        raise RkError(f"{listed}; nothing was removed", "pass --yes to go ahead")
