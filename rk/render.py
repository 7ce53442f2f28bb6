"""How results look: tables and connection instructions on stdout, progress and errors on stderr."""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time

from rk.commands.base import CommandResult, HostResult


def use_color(stream) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def table(rows: list[list[str]], header: list[str]) -> str:
    cells = [header] + [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def human_duration(seconds) -> str:
    if seconds is None:
        return ""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def human_bytes(value) -> str:
    if value is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return ""


def print_json(result: CommandResult, error=None) -> None:
    """The --json envelope; the same shape whether the command worked or not."""
    document = result.to_json()
    if error is not None:
        document.update(ok=False, exit_code=int(error.exit_code), error={"message": error.message, "hint": error.hint})
    json.dump(document, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def print_failures(result: CommandResult) -> None:
    for warning in result.warnings:
        sys.stderr.write(f"rk: warning: {warning}\n")
    for host in result.hosts:
        if host.status != "ok":
            hint = f" (hint: {host.hint})" if host.hint else ""
            sys.stderr.write(f"rk: {host.host}: {host.message}{hint}\n")


def kernel_rows(result: CommandResult) -> list[list]:
    rows = []
    for host in result.hosts:
        if host.status != "ok":  # failed, unreachable, or hostkey (ssh refused the host's key)
            rows.append([host.host, "", host.status, "", "", "", "", "", "", ""])
            continue
        for k in host.kernels or [{"name": "", "state": "absent"}]:
            local = k.get("tunnel_file") or k.get("local_file") or ""
            if local and k.get("local_stale"):
                local += " (stale)"
            gpu = k.get("gpu_mem_mib")
            rows.append(
                [
                    host.host,
                    k.get("name", ""),
                    k.get("state", ""),
                    k.get("pid") or "",
                    human_duration(k.get("uptime_s")),
                    k.get("python") or "",
                    human_bytes(k.get("rss_bytes")),
                    f"{gpu}MiB" if gpu is not None else "",
                    k.get("tunnel") or "",
                    local,
                ]
            )
    return rows


KERNEL_HEADER = ["HOST", "KERNEL", "STATE", "PID", "UPTIME", "PYTHON", "MEMORY", "GPU", "TUNNEL", "LOCAL FILE"]


def connect_instructions(host: HostResult) -> str:
    lines = []
    connect = host.connect or {}
    for k in host.kernels:
        file = k.get("local_file")
        tunnel_file = k.get("tunnel_file")
        if not (file or tunnel_file):
            continue
        lines.append(f"{host.host} / {k['name']}: {tunnel_file or file}")
        if connect.get("connection") == "local":
            lines.append(f"  jupyter console --existing {file}")
            continue
        address = connect.get("address") or host.host
        user = connect.get("user") or k.get("user") or ""
        port = connect.get("port") or 22
        ssh = f"{user}@{address}" if user else address
        if tunnel_file:
            # rk's tunnel forwards 127.0.0.1 here to the kernel: a local kernel to any front end.
            lines.append(f"  jupyter console --existing {tunnel_file}")
            lines.append(f"  Spyder, 'Connect to an existing kernel' (local, no SSH settings): connection file {tunnel_file}")
            if k.get("transport") != "ipc":  # a hardened kernel has no ports on the host to fetch
                lines.append(f"  (Spyder's own SSH route instead: rk fetch --host {host.host} gives the file with the host's ports)")
            continue
        lines.append(f"  jupyter console --existing {file} --ssh {ssh}:{port}")
        lines.append(
            "  Spyder, 'Connect to an existing kernel', remote kernel: connection file "
            f"{file}; hostname {address}; user {user or '(yours)'}; port {port}; "
            f"key file {connect.get('ssh_key_file') or '(your default key or agent)'}"
        )
    return "\n".join(lines)


# What a host is doing, from the file of the task it runs: off a terminal one line per host and
# phase (task names are Ansible's business: -v shows them). None: no new phase (checks, reports).
_PHASES = {
    "rk_kernel/tasks/start.yml": "starting the kernel",
    "rk_kernel/tasks/launch.yml": "starting the kernel",
    "rk_kernel/tasks/fetch.yml": "fetching the connection file",
    "rk_kernel/tasks/stop.yml": "stopping",
    "rk_kernel/tasks/status.yml": "looking at the kernels",
    "rk_kernel/tasks/interrupt.yml": "interrupting",
    "rk_kernel/tasks/restart.yml": "restarting",
    "rk_kernel/tasks/clean.yml": "removing rk's files",
    "rk_python/tasks/clean.yml": "removing rk's files",
    "rk/commands/tunnel.py": "opening the SSH tunnel",  # rk's own step, after the playbook
    "rk/commands/doctor.py": "checking every layer",  # rk doctor runs no playbook
}


def phase_of(task_path: str) -> str | None:
    """The phase a task belongs to, from its file (`.../roles/rk_kernel/tasks/start.yml:12`)."""
    path = task_path.rsplit(":", 1)[0].replace(os.sep, "/")
    for suffix, phase in _PHASES.items():
        if path.endswith("/" + suffix):
            return phase
    return "provisioning Python" if "/roles/rk_python/" in path else None


class Progress:
    """Live per-host step on stderr: one redrawn line on a terminal, a line per phase otherwise."""

    FRAMES = "|/-\\"

    def __init__(self, enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.steps: dict[str, str] = {}
        self.phases: dict[str, str] = {}
        self.began = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._width = 0

    def __enter__(self):
        if self.enabled and self.tty:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join()
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()

    def task(self, host: str, task: str, path: str = "") -> None:
        if not self.enabled or not task or task == "Gathering Facts":
            return
        phase = phase_of(path)
        with self._lock:
            self.steps[host] = task
            if phase is None or self.phases.get(host) == phase:
                return
            self.phases[host] = phase
            if not self.tty:
                self.stream.write(f"rk: [{host}] {phase} ({time.monotonic() - self.began:.1f} s)\n")
                self.stream.flush()

    def asking(self, confirm):
        """`confirm` with the live line cleared and held while the user answers."""
        def ask(question: str) -> bool:
            with self._lock:
                if self._thread:
                    self.stream.write("\r" + " " * self._width + "\r")
                    self.stream.flush()
                    self._width = 0
                return confirm(question)
        return ask

    def _spin(self):
        for frame in itertools.cycle(self.FRAMES):
            if self._stop.wait(0.1):
                return
            with self._lock:
                text = " | ".join(f"{h}: {t}" for h, t in self.steps.items()) or "starting"
            width = os.get_terminal_size(self.stream.fileno()).columns - 1 if self.tty else 100
            line = f"{frame} {text}"[:width]
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
            self.stream.flush()
