"""rk stop: stop a kernel (or all of a host's), remove its connection files and its tunnel."""

from __future__ import annotations

from rk import paths
from rk import tunnel as tunnels
from rk.commands import base
from rk.commands.tunnel import teardown


def stop(
    hosts: list[str] | None, name: str = "default", all_kernels: bool = False, options: base.Options | None = None
) -> base.CommandResult:
    options = options or base.Options()
    base.check_name(name)
    selection = base.resolve(hosts, options)
    extravars = {"rk_kernel_name": name, "rk_kernel_all": all_kernels}
    result, data = base.run("stop_kernel", selection, extravars, options, "stop")
    base.kernels_of(data, selection, result)
    for inventory_name, host in zip(selection.limit, result.hosts):
        if host.status != "ok":
            continue  # the kernel may still run there: keep its local file
        forget(inventory_name, [k["name"] for k in host.kernels], name, all_kernels)
    return result


def forget(inventory_name: str, stopped: list[str], name: str, all_kernels: bool) -> None:
    """After a stop on the host: the kernel's (or every kernel's) local files and tunnels go."""
    local = paths.local_connection_files(inventory_name)
    for kernel in local if all_kernels else [name]:
        if kernel in local:
            local[kernel].unlink(missing_ok=True)
    _remove_unclaimed_fetched_files(inventory_name, stopped, all_kernels)
    for kernel in set(tunnels.of_host(inventory_name)) | set(paths.local_connection_files(inventory_name, paths.TUNNEL)):
        if all_kernels or kernel == name:
            teardown(inventory_name, kernel)


def _remove_unclaimed_fetched_files(host: str, names: list[str], all_kernels: bool) -> None:
    """Fetched files of runs killed before rk claimed them (added rk_host, rk_kernel): Ansible's
    worker finishes its fetch after rk died. With --all, every unclaimed file named after the
    host, whether or not the host still lists its kernel (another rk may have stopped it); '@'
    ends the host's part of the name, so host "gpu-2"'s files never match host "gpu"'s pattern.
    """
    candidates = {paths.local_connection_file(host, name) for name in names}
    if all_kernels:
        candidates |= set(paths.runtime_dir().glob(paths.host_glob(host)))
    for path in sorted(candidates):
        info = paths.read_json_or_quarantine(path)
        if info is not None and "rk_host" not in info:
            path.unlink(missing_ok=True)
