"""rk interrupt: SIGINT to a kernel, whatever front end is attached (or none).

Through a running tunnel, the interrupt goes as Jupyter's interrupt_request on the control
channel, and the kernel sends SIGINT to itself: a fraction of a second. Without one (localhost,
--no-tunnel, a tunnel that is down) the rk_kernel module signals the tracked pid after checking
its identity: one playbook run.
"""

from __future__ import annotations

from pathlib import Path

from rk import paths
from rk import tunnel as tunnels
from rk.commands import base
from rk.targets import Selection

REPLY_TIMEOUT_S = 3.0


def interrupt(hosts: list[str] | None, name: str = "default", options: base.Options | None = None) -> base.CommandResult:
    options = options or base.Options()
    base.check_name(name)
    selection = base.resolve(hosts, options)
    done = {}
    for host in selection.limit:
        tunnel_file = paths.local_connection_files(host, paths.TUNNEL).get(name)
        current = tunnels.find(host, name)
        if tunnel_file and current and tunnels.alive(current) and _interrupt_request(tunnel_file):
            kernel = {"name": name, "state": "alive", "interrupted_by": "interrupt_request"}
            done[host] = base.HostResult(selection.shown(host), "ok", kernels=[kernel])
    rest = [host for host in selection.limit if host not in done]
    result = base.CommandResult(command="interrupt")
    if rest:
        subset = Selection(selection.inventories, rest, selection.adhoc, selection.display, selection.known)
        result, data = base.run("interrupt_kernel", subset, {"rk_kernel_name": name}, options, "interrupt")
        base.kernels_of(data, subset, result)
    by_host = {h.host: h for h in result.hosts}
    result.hosts = [done.get(host) or by_host[selection.shown(host)] for host in selection.limit]
    return result


def _interrupt_request(connection_file: Path) -> bool:
    """Ask the kernel to interrupt itself; True when it said it did."""
    from jupyter_client import BlockingKernelClient

    client = BlockingKernelClient()
    client.load_connection_file(str(connection_file))
    client.start_channels(shell=False, iopub=False, stdin=False, hb=False, control=True)
    try:
        request = client.session.msg("interrupt_request", {})
        client.control_channel.send(request)
        while True:
            reply = client.control_channel.get_msg(timeout=REPLY_TIMEOUT_S)
            if reply["parent_header"].get("msg_id") == request["header"]["msg_id"]:
                return reply["content"].get("status", "ok") == "ok"  # ipykernel 6.x replies {}
    except Exception:  # no answer (queue.Empty), a broken tunnel: the playbook route decides
        return False
    finally:
        client.stop_channels()
