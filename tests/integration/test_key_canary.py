"""The kernel's key is a credential: after `rk up -vvv` it exists in exactly two files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.hosts

RK = str(Path(sys.executable).with_name("rk"))
HOST_SAMPLES = "/tmp/rk-canary-samples"
HOST_SAMPLER = (
    # Every 20 ms, every process's argv and environment; bounded to about two minutes.
    f"i=0; while [ ! -e /tmp/rk-canary-stop ] && [ $i -lt 6000 ]; do "
    f"cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ >> {HOST_SAMPLES} 2>/dev/null; i=$((i+1)); sleep 0.02; done"
)


class ControllerSampler(threading.Thread):
    """Reads every process's argv and environment on the controller while rk runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen: set[bytes] = set()
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.01):
            for proc in Path("/proc").glob("[0-9]*"):
                for part in ("cmdline", "environ"):
                    try:
                        self.seen.add((proc / part).read_bytes())
                    except OSError:
                        pass


def files_containing(root: Path, needle: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    found.append(path)
            except OSError:
                pass
    return found


def test_key_is_only_in_the_two_connection_files(make_hosts, tmp_path):
    group = make_hosts(n=1, image="python")
    host = group.hosts[0]
    home = Path(os.environ["HOME"])  # conftest's per-test home; the runtime dir is inside it
    env = dict(os.environ, NO_COLOR="1")

    host.exec(f"rm -f /tmp/rk-canary-stop {HOST_SAMPLES}")
    subprocess.run(["podman", "exec", "-d", host.container, "sh", "-c", HOST_SAMPLER], check=True)
    sampler = ControllerSampler()
    sampler.start()
    artifacts = None
    try:
        result = subprocess.run(
            [RK, "up", "-vvv", "--json", "--keep-artifacts", "-i", str(group.inventory), "--host", "h1",
             "--python", "/usr/bin/python3"],
            env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )
        kept = re.search(r"artifacts kept in (\S+)", result.stderr)
        artifacts = Path(kept.group(1)) if kept else None
    finally:
        sampler.done.set()
        sampler.join()
        host.exec("touch /tmp/rk-canary-stop")
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        assert artifacts is not None and artifacts.is_dir()
        doc = json.loads(result.stdout)
        kernel = doc["hosts"][0]["kernels"][0]
        local = Path(kernel["tunnel_file"])  # with a tunnel, the one local connection file
        assert "local_file" not in kernel
        key = json.loads(local.read_text())["key"]
        remote = json.loads(host.exec(f"cat {kernel['connection_file']}").stdout)
        assert remote["key"] == key and len(key) >= 32
        needle = key.encode()

        assert key not in result.stdout, "key in --json output"
        assert key not in result.stderr, "key in -vvv output"
        assert "<<< " in result.stderr or "ESTABLISH" in result.stderr, "-vvv output was not verbose"
        assert files_containing(artifacts, needle) == [], "key in ansible-runner's directory"
        assert files_containing(home, needle) == [local], "key in a controller file other than the connection file"
        assert files_containing(tmp_path, needle) == [], "key in the test's inventory or host files"
        assert not any(needle in blob for blob in sampler.seen), "key in a controller process's argv or environment"
        assert len(sampler.seen) > 10, "the controller sampler saw nothing"

        samples = subprocess.run(["podman", "exec", host.container, "cat", HOST_SAMPLES],
                                 capture_output=True, check=True).stdout
        assert b"ipykernel" in samples, "the host sampler missed the kernel's start"
        assert needle not in samples, "key in a host process's argv or environment"
        on_host = host.exec(
            f"grep -rlF {key} /home /root /tmp /var/tmp 2>/dev/null | grep -v {HOST_SAMPLES} || true"
        ).stdout.split()
        assert on_host == [kernel["connection_file"]], "key in a host file other than the connection file"
    finally:
        if artifacts:
            shutil.rmtree(artifacts, ignore_errors=True)
        subprocess.run([RK, "stop", "-i", str(group.inventory), "--all"], env=env, capture_output=True, timeout=120)
