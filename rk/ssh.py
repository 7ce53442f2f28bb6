"""OpenSSH command lines for rk's own connections (tunnels), from a host's Ansible variables.

The same variables Ansible uses decide where ssh goes (ansible_host, ansible_port,
ansible_user, ansible_ssh_private_key_file, ansible_ssh_common_args with a ProxyJump), with
the user's ANSIBLE_PRIVATE_KEY_FILE and ANSIBLE_SSH_COMMON_ARGS as defaults, the way Ansible
reads them. No `-F`: ~/.ssh/config applies. rk's own options come first because ssh keeps the
first value of an option: host keys are checked and no prompt can ever block.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

# A tunnel dies within about 15 s of a silent network and is then re-made by its supervisor.
KEEPALIVE = ("-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3")


@dataclass(frozen=True)
class Target:
    address: str
    port: int | None = None
    user: str | None = None
    key_file: str | None = None
    common_args: tuple[str, ...] = ()

    @classmethod
    def from_hostvars(cls, name: str, hostvars: dict, environ: dict | None = None) -> Target:
        environ = os.environ if environ is None else environ
        key = hostvars.get("ansible_ssh_private_key_file") or environ.get("ANSIBLE_PRIVATE_KEY_FILE")
        common = hostvars.get("ansible_ssh_common_args")
        if common is None:
            common = environ.get("ANSIBLE_SSH_COMMON_ARGS", "")
        port = hostvars.get("ansible_port")
        return cls(
            address=str(hostvars.get("ansible_host") or name),
            port=int(port) if port else None,
            user=hostvars.get("ansible_user") or None,
            key_file=os.path.expanduser(str(key)) if key else None,
            common_args=tuple(shlex.split(str(common or ""))),
        )

    def argv(self, *options: str, accept_new_host_keys: bool = False, command: list[str] | None = None) -> list[str]:
        """`ssh` with rk's safety options, then `options`, the host's settings and the command."""
        checking = "accept-new" if accept_new_host_keys else "yes"
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={checking}", *options]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.key_file:
            argv += ["-i", self.key_file]
        if self.user:
            argv += ["-l", self.user]
        argv += [*self.common_args, "--", self.address]
        return argv + list(command or [])


def forward_argv(target: Target, forwards: list[tuple[int, int | str]], accept_new_host_keys: bool = False,
                 command: list[str] | None = None) -> list[str]:
    """ssh that forwards 127.0.0.1:local here to 127.0.0.1:remote on the host, for each pair.

    A remote given as a path (str) is a unix socket on the host (a hardened, ipc kernel):
    OpenSSH's streamlocal forwarding connects to it as the logged-in user.

    Its own connection (`-S none`: a shared ControlMaster would die with its owner), and it
    exits when a forward cannot be set up, so its supervisor notices and tries again.
    """
    options = ["-S", "none", "-o", "ControlMaster=no", "-o", "ExitOnForwardFailure=yes",
               "-o", "GatewayPorts=no", "-o", "ConnectTimeout=15", *KEEPALIVE]
    for local, remote in forwards:
        to = remote if isinstance(remote, str) else f"127.0.0.1:{remote}"
        options += ["-L", f"127.0.0.1:{local}:{to}"]
    options += ["-T"] if command else ["-N"]
    return target.argv(*options, accept_new_host_keys=accept_new_host_keys, command=command)
