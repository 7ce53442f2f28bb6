"""SSH test hosts: one podman container running sshd per host, reached only on 127.0.0.1.

Every host gets its own freshly generated ed25519 host key, recorded in the group's
known_hosts file, so tests connect with strict host key checking the way users do. One
client key pair (per test session) is authorised for root and for the unprivileged `rk`.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .images import RUN_FLAGS, ULIMITS, ensure_image, podman

LABEL = "rk-test"
SESSION_LABEL = "rk-test-session"
CONTROLLER_CA = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_HOST = "/etc/rk-test-ca.crt"
SSHD_COMMAND = ("sh", "-c", "mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e")
SSHD_START_TIMEOUT = 30.0


class HostCommandError(subprocess.CalledProcessError):
    """A command on a test host failed; its output is part of the message."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def _run(argv: list[str], check: bool, timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise HostCommandError(result.returncode, argv, result.stdout, result.stderr)
    return result


def generate_key(path: Path) -> Path:
    """Write a passphrase-less ed25519 key pair at `path` and `path`.pub."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True, capture_output=True)
    return path


def ssh_options(known_hosts: Path) -> list[str]:
    """The ssh options every test connection uses: strict checks against our known_hosts."""
    return ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes"]


@dataclass
class Host:
    name: str
    container: str
    user: str
    private_key: Path
    known_hosts: Path
    offline: bool = False
    port: int = 0

    def exec(self, cmd: str, user: str = "root", check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess:
        """Run `cmd` with sh inside the container, bypassing SSH."""
        return _run(["podman", "exec", "--user", user, self.container, "sh", "-c", cmd],
                    check, timeout)

    def ssh(self, cmd: str, user: str | None = None, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess:
        """Run `cmd` over real SSH as `user` (default: the inventory user)."""
        argv = ["ssh", "-F", "/dev/null", "-i", str(self.private_key), *ssh_options(self.known_hosts),
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", str(self.port),
                f"{user or self.user}@127.0.0.1", cmd]
        return _run(argv, check, timeout)

    def pause(self) -> None:
        podman("pause", self.container)

    def unpause(self) -> None:
        podman("unpause", self.container)

    def stop(self) -> None:
        podman("stop", "--time", "5", self.container)

    def start(self) -> None:
        """Start a stopped host again; podman keeps its published port."""
        podman("start", self.container)
        self._wait_until_up()

    def inventory_vars(self, known_hosts: Path, become: bool) -> dict:
        ssh_args = " ".join(ssh_options(known_hosts))
        host_vars = {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.port,
            "ansible_user": self.user,
            "ansible_ssh_private_key_file": str(self.private_key),
            "ansible_ssh_common_args": ssh_args,
        }
        if become:
            host_vars["ansible_become"] = True
        return host_vars

    def _wait_until_up(self) -> None:
        if self.offline:
            self._cut_off_network()
        self.port = self._published_port()
        _wait_for_ssh_banner(self.port, SSHD_START_TIMEOUT, self.container)

    def _published_port(self) -> int:
        mapping = podman("port", self.container, "22/tcp").stdout.strip()
        return int(mapping.rsplit(":", 1)[1])

    def _cut_off_network(self) -> None:
        # Without a default route the host reaches nothing beyond its bridge, while SSH
        # on the published loopback port still works: podman's port forwarding arrives
        # from the bridge gateway, which is on-link.
        pid = podman("inspect", "--format", "{{.State.Pid}}", self.container).stdout.strip()
        subprocess.run(["nsenter", "-t", pid, "-n", "ip", "-4", "route", "del", "default"],
                       check=True, capture_output=True)
        routes = subprocess.run(["nsenter", "-t", pid, "-n", "ip", "route", "show", "default"],
                                check=True, capture_output=True, text=True).stdout
        if routes.strip():
            raise RuntimeError(f"{self.container} still has a default route: {routes}")


def _wait_for_ssh_banner(port: int, timeout: float, container: str) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                conn.settimeout(2)
                if conn.recv(64).startswith(b"SSH-"):
                    return
                last_error = "no SSH banner"
        except OSError as error:
            last_error = str(error)
        time.sleep(0.1)
    logs = podman("logs", container, check=False)
    raise TimeoutError(f"sshd of {container} not up on 127.0.0.1:{port} after {timeout}s "
                       f"({last_error}); logs:\n{logs.stdout}{logs.stderr}")


@dataclass
class HostGroup:
    hosts: list[Host]
    directory: Path
    known_hosts: Path
    private_key: Path
    become: bool = False
    inventory: Path = field(init=False)

    def __post_init__(self) -> None:
        self.inventory = self.write_inventory(self.directory / "inventory.yml")

    def write_inventory(self, path: Path, fmt: str = "yaml") -> Path:
        """Write an Ansible inventory with all hosts in group `testhosts`."""
        path = Path(path)
        host_vars = {h.name: h.inventory_vars(self.known_hosts, self.become) for h in self.hosts}
        if fmt == "yaml":
            text = yaml.safe_dump({"all": {"children": {"testhosts": {"hosts": host_vars}}}},
                                  sort_keys=False)
        elif fmt == "ini":
            # The INI parser reads each value as a Python literal: repr() round-trips.
            lines = ["[testhosts]"] + [
                " ".join([name] + [f"{key}={value!r}" for key, value in hv.items()])
                for name, hv in host_vars.items()]
            text = "\n".join(lines) + "\n"
        else:
            raise ValueError(f"unknown inventory format {fmt!r}")
        path.write_text(text)
        return path

    def __getitem__(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def destroy(self) -> None:
        remove_containers([h.container for h in self.hosts])

    def __enter__(self) -> HostGroup:
        return self

    def __exit__(self, *exc_info) -> None:
        self.destroy()


def remove_containers(containers: Sequence[str]) -> None:
    if containers:
        podman("rm", "--force", "--ignore", "--time", "0", *containers)


def remove_session_containers(session: str) -> list[str]:
    """Remove every test host container labelled with `session`; return their names."""
    names = podman("ps", "--all", "--filter", f"label={SESSION_LABEL}={session}",
                   "--format", "{{.Names}}").stdout.split()
    remove_containers(names)
    return names


def start_hosts(directory: Path, private_key: Path, session: str, n: int = 1,
                image: str = "bare", user: str = "rk", offline: bool = False,
                ca: bool = False, become: bool = False,
                podman_args: Sequence[str] = (), systemd: bool = False) -> HostGroup:
    """Start `n` hosts named h1..hN from `image` and write their inventory in `directory`.

    `user`: the inventory's ansible_user ("rk" or "root"). `offline`: the host can reach
    no network beyond the SSH port forwarding. `ca`: the controller's CA bundle is mounted
    at /etc/rk-test-ca.crt. `podman_args`: extra `podman run` arguments (mounts, tmpfs).
    `systemd`: PID 1 is the image's systemd (image "systemd") instead of sshd.
    If any host fails to start, those already started are removed before the error rises.
    """
    if user not in ("rk", "root"):
        raise ValueError(f"user must be 'rk' or 'root', not {user!r}")
    ref = ensure_image(image)
    directory.mkdir(parents=True, exist_ok=True)
    known_hosts = directory / "known_hosts"
    known_hosts.write_text("")
    hosts: list[Host] = []
    try:
        for index in range(1, n + 1):
            host = _create_host(f"h{index}", ref, directory, private_key, known_hosts, session,
                                user, offline, ca, podman_args, systemd)
            hosts.append(host)
            podman("start", host.container)
            host._wait_until_up()
            host_key = (directory / host.name / "ssh_host_ed25519_key.pub").read_text().split()
            with known_hosts.open("a") as kh:
                kh.write(f"[127.0.0.1]:{host.port} {host_key[0]} {host_key[1]}\n")
        return HostGroup(hosts, directory, known_hosts, private_key, become)
    except BaseException:
        remove_containers([h.container for h in hosts])
        raise


def _create_host(name: str, ref: str, directory: Path, private_key: Path, known_hosts: Path,
                 session: str, user: str, offline: bool, ca: bool,
                 podman_args: Sequence[str], systemd: bool = False) -> Host:
    container = f"rk-test-{uuid.uuid4().hex[:10]}"
    host_key = generate_key(directory / name / "ssh_host_ed25519_key")
    mounts = ["--volume", f"{CONTROLLER_CA}:{CA_IN_HOST}:ro"] if ca else []
    # systemd as PID 1 (the "systemd" image) starts sshd (ssh.service), dbus and logind itself.
    image_and_command = ["--systemd=always", ref, "/sbin/init"] if systemd else [ref, *SSHD_COMMAND]
    podman(*RUN_FLAGS, "create", *ULIMITS, "--name", container, "--hostname", container,
           "--label", f"{LABEL}=1", "--label", f"{SESSION_LABEL}={session}",
           "--publish", "127.0.0.1::22", *mounts, *podman_args, *image_and_command)
    host = Host(name, container, user, private_key, known_hosts, offline)
    try:
        podman("cp", str(host_key), f"{container}:/etc/ssh/ssh_host_ed25519_key")
        podman("cp", f"{private_key}.pub", f"{container}:/etc/ssh/rk-test-authorized_keys")
    except BaseException:
        remove_containers([container])
        raise
    return host
