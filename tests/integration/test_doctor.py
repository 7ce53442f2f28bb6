"""rk doctor names the broken layer and its fix, each layer broken for real on podman hosts.

Several faults share a host where they do not interfere; the groups are checked in parallel.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.waiting import wait_until

pytestmark = pytest.mark.hosts

RK = str(Path(sys.executable).with_name("rk"))
VENV = "/home/rk/.local/share/rk/venv"


def doctor(*args) -> tuple[int, dict, str]:
    proc = subprocess.run([RK, "doctor", "--json", *args], capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL, env=dict(os.environ, NO_COLOR="1"))
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def checks_of(document: dict, host: str) -> dict[str, dict]:
    (found,) = [h for h in document["hosts"] if h["host"] == host]
    return {c["name"]: c for c in found["checks"]}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


@pytest.fixture
def broken(make_hosts):
    """python h1: no TCP forwarding, a stale venv with a wrong spyder-kernels, a full state dir;
    python h2: its known_hosts entry removed. novenv h1: no ipykernel, a slow login.
    systemd h1: KillUserProcesses without linger."""
    python = make_hosts(n=2, image="python", podman_args=(
        "--mount", "type=tmpfs,destination=/home/rk/.local/state,tmpfs-size=2m,tmpfs-mode=1777"))
    novenv = make_hosts(n=1, image="novenv")
    systemd = make_hosts(n=1, image="systemd", systemd=True)
    h1 = python["h1"]
    h1.exec("chown rk:rk /home/rk/.local /home/rk/.local/state")  # the tmpfs mount made them root's
    # rk's venv as rk_python made it, then its base Python "upgraded": the fingerprint names another.
    h1.ssh(f"python3 -m venv --system-site-packages {VENV} && "
           f"echo '437e22c83e37fb7c29e8296d26f207a62eb4f7fe6271d1c4064fb9adb3240050 3.9.2' > {VENV}/.rk-fingerprint && "
           f"mkdir {VENV}/lib/python3.11/site-packages/spyder_kernels && "
           f"echo '__version__ = \"2.5.2\"' > {VENV}/lib/python3.11/site-packages/spyder_kernels/__init__.py")
    h1.exec("echo 'AllowTcpForwarding no' >> /etc/ssh/sshd_config && kill -HUP 1")
    wait_until(lambda: h1.ssh("true", check=False).returncode == 0, "sshd back after its HUP")
    h1.exec("dd if=/dev/zero of=/home/rk/.local/state/fill bs=64k 2>/dev/null; true")
    lines = python.known_hosts.read_text().splitlines()
    python.known_hosts.write_text("".join(f"{line}\n" for line in lines if f":{python['h2'].port} " not in line))
    slow = novenv["h1"]
    slow.exec("echo 'session optional pam_exec.so /bin/sleep 4' >> /etc/pam.d/sshd")
    slow.ssh("mkdir -p ~/.local/share/rk && echo /usr/bin/python3 > ~/.local/share/rk/python-$(printf %s $(uname -n) | tr -c 'A-Za-z0-9_.-' _)")
    return python, novenv, systemd


def test_doctor_names_each_broken_layer_and_its_fix(broken):
    python, novenv, systemd = broken
    unreachable = f"rk@127.0.0.1:{closed_port()}"
    with ThreadPoolExecutor(3) as pool:
        runs = [pool.submit(doctor, "-i", str(python.inventory), "--host", "all", "--host", unreachable),
                pool.submit(doctor, "-i", str(novenv.inventory), "--host", "h1"),
                pool.submit(doctor, "-i", str(systemd.inventory), "--host", "h1")]
        (code, doc, err), (slow_code, slow_doc, _), (sd_code, sd_doc, _) = [r.result() for r in runs]
    assert code == 3 and not doc["ok"], err  # hosts failed, this machine is ok: partial

    h1 = checks_of(doc, "h1")
    assert h1["TCP forwarding"]["status"] == "failed"
    assert "AllowTcpForwarding yes" in h1["TCP forwarding"]["fix"]
    assert h1["venv fingerprint"]["status"] == "warning" and "stale" in h1["venv fingerprint"]["message"]
    assert "rk provision" in h1["venv fingerprint"]["fix"]
    assert h1["spyder-kernels"]["status"] == "failed" and "2.5.2" in h1["spyder-kernels"]["message"]
    assert "--spyder" in h1["spyder-kernels"]["fix"]
    assert h1["state directory space"]["status"] == "failed"
    assert "rk clean" in h1["state directory space"]["fix"]
    assert h1["host key"]["status"] == "ok" and h1["login time"]["status"] == "ok"

    h2 = checks_of(doc, "h2")
    assert h2["host key"]["status"] == "failed" and "ssh-keyscan" in h2["host key"]["fix"]
    assert h2["authentication and login"]["status"] == "failed"
    assert "unknown host key" in h2["authentication and login"]["message"]
    assert h2["all checks"]["status"] == "skipped"

    gone = checks_of(doc, unreachable)
    (tcp,) = [c for name, c in gone.items() if name.startswith("TCP connect")]
    assert tcp["status"] == "failed" and "refused" in tcp["message"] and "sshd" in tcp["fix"]
    assert gone["host key"]["status"] == "skipped"

    slow = checks_of(slow_doc, "h1")
    assert slow_code == 3, json.dumps(slow, indent=1)
    assert slow["login time"]["status"] == "warning" and "PAM" in slow["login time"]["fix"]
    assert slow["interpreter"]["figure"].startswith("/usr/bin/python3") and "yours" in slow["interpreter"]["figure"]
    assert slow["ipykernel"]["status"] == "failed" and "pip install ipykernel" in slow["ipykernel"]["fix"]

    logind = checks_of(sd_doc, "h1")["logind"]
    assert sd_code == 3
    assert logind["status"] == "failed" and "loginctl enable-linger rk" in logind["fix"]

    controller = checks_of(doc, "(this machine)")
    assert controller["ansible-runner"]["status"] == "ok"
    assert controller["Jupyter runtime directory"]["status"] == "ok"


    # The same as text: one check a line, the fix on the next, progress on stderr.
    proc = subprocess.run([RK, "doctor", "-i", str(python.inventory), "--host", "h1"], capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL, env=dict(os.environ, NO_COLOR="1"))
    assert proc.returncode == 3
    lines = proc.stdout.splitlines()
    (forwarding,) = [i for i, line in enumerate(lines) if "TCP forwarding" in line]
    assert lines[forwarding].split()[0] == "FAIL" and lines[forwarding + 1].strip().startswith("fix: ")
    assert "rk: [h1] checking every layer" in proc.stderr  # progress, off a terminal
