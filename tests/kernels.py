"""Talk to real kernels from tests: through a connection file, directly or over an SSH tunnel."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from pathlib import Path

from jupyter_client import BlockingKernelClient

PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def execute(connection: dict | Path, code: str, timeout: float = 30) -> str:
    """Run `code` in the kernel and return what it printed on stdout."""
    client = BlockingKernelClient()
    if isinstance(connection, Path):
        client.load_connection_file(str(connection))
    else:
        client.load_connection_info(connection)
    client.start_channels()
    try:
        client.wait_for_ready(timeout=timeout)
        out = []
        reply = client.execute_interactive(
            code,
            timeout=timeout,
            output_hook=lambda msg: out.append(msg["content"].get("text", ""))
            if msg["msg_type"] == "stream" and msg["content"].get("name") == "stdout"
            else None,
        )
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"kernel said {reply['content'].get('ename')}: {reply['content'].get('evalue')}")
        return "".join(out)
    finally:
        client.stop_channels()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ssh_tunnel(host, connection_file: Path):
    """Forward the kernel's five ports from 127.0.0.1 here to 127.0.0.1 on `host`.

    Yields connection info with the local ports (the key stays in memory only).
    """
    remote = json.loads(Path(connection_file).read_text())
    local = dict(remote, ip="127.0.0.1")
    forwards = []
    for name in PORTS:
        local[name] = free_port()
        forwards += ["-L", f"127.0.0.1:{local[name]}:127.0.0.1:{remote[name]}"]
    argv = [
        "ssh", "-F", "/dev/null", "-N", "-S", "none", "-i", str(host.private_key),
        "-o", f"UserKnownHostsFile={host.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-p", str(host.port),
        *forwards, f"{host.user}@127.0.0.1",
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(local["shell_port"], proc)
        yield local
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ssh tunnel exited: {proc.stderr.read().decode()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise TimeoutError(f"ssh tunnel not listening on {port} after {timeout}s")
