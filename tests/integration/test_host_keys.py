"""A refused host key (unknown, or changed) is its own status, `hostkey`, and exit code 1, in
every command and in the tunnel's own ssh: never "unreachable", for the host did answer and
someone may be intercepting. Real podman hosts, real known_hosts files, strict checking."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rk.runner import control_dir
from tests.hosts import generate_key
from tests.kernels import execute
from tests.waiting import wait_until

pytestmark = pytest.mark.hosts

RK = str(Path(sys.executable).with_name("rk"))
SYSTEM_PYTHON = "/usr/bin/python3"  # the "python" image's interpreter, with Debian's ipykernel


@pytest.fixture
def env():
    return dict(os.environ, NO_COLOR="1")


def rk(env, *args, timeout=300) -> subprocess.CompletedProcess:
    result = subprocess.run([RK, *args], env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def rk_json(env, *args, expect: int) -> dict:
    result = rk(env, *args, "--json")
    assert result.returncode == expect, result.stderr[-3000:] + result.stdout[-3000:]
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == expect and doc["ok"] is (expect == 0)
    return doc


def by_host(doc: dict) -> dict[str, dict]:
    return {h["host"]: h for h in doc["hosts"]}


def refused(doc: dict, host: str, cause: str) -> dict:
    """The host's entry, checked to be a host-key refusal with `cause` and its hint."""
    entry = by_host(doc)[host]
    assert entry["status"] == "hostkey", entry
    assert cause in entry["message"] and "unreachable" not in entry["message"], entry
    hint = "ssh-keygen -R" if cause == "host key mismatch" else "--accept-new-host-keys"
    assert hint in entry["hint"], entry
    return entry


def host_key_line(group, host) -> str:
    key = (group.directory / host.name / "ssh_host_ed25519_key.pub").read_text().split()
    return f"[127.0.0.1]:{host.port} {key[0]} {key[1]}\n"


def forged_line(host, tmp_path: Path) -> str:
    """A known_hosts line for the host's address with another key: what a man in the middle shows."""
    impostor = generate_key(tmp_path / f"impostor-{host.name}")
    key = Path(f"{impostor}.pub").read_text().split()
    return f"[127.0.0.1]:{host.port} {key[0]} {key[1]}\n"


def status_table(env, inv: str, expect: int) -> dict:
    """`rk status` in text: {"rows": the words of each host's first row, "stderr": ...}."""
    result = rk(env, "status", "-i", inv)
    assert result.returncode == expect, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["HOST", "KERNEL", "STATE"]
    table = {}
    for row in rows:
        table.setdefault(row.split()[0], row.split())
    return {"rows": table, "stderr": result.stderr}


def test_an_unknown_host_key_is_hostkey_exit_1_until_accepted(make_hosts, env):
    group = make_hosts(n=1, image="python")
    host = group.hosts[0]
    inv = str(group.inventory)
    subprocess.run(["ssh-keygen", "-R", f"[127.0.0.1]:{host.port}", "-f", str(group.known_hosts)],
                   check=True, capture_output=True)
    assert group.known_hosts.read_text() == ""

    refused(rk_json(env, "status", "-i", inv, expect=1), "h1", "unknown host key")
    refused(rk_json(env, "up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON, expect=1), "h1", "unknown host key")
    text = status_table(env, inv, expect=1)
    assert text["rows"]["h1"] == ["h1", "hostkey"]
    assert "rk: h1: unknown host key" in text["stderr"] and "unreachable" not in text["stderr"]
    assert group.known_hosts.read_text() == ""  # nothing was trusted behind the user's back

    accepted = rk_json(env, "status", "-i", inv, "--accept-new-host-keys", expect=0)
    assert by_host(accepted)["h1"]["status"] == "ok"
    # The host's own key, recorded for its address (hashed, as Debian's ssh_config asks).
    (recorded,) = group.known_hosts.read_text().splitlines()
    assert recorded.split()[1:] == host_key_line(group, host).split()[1:]
    lookup = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{host.port}", "-f", str(group.known_hosts)],
                            capture_output=True, text=True)
    assert lookup.returncode == 0, lookup.stdout + lookup.stderr


# Every command that contacts a host, with a changed key: (argv, whether it prints host results).
COMMANDS = [
    (["status"], True),
    (["up", "--host", "h1", "--python", SYSTEM_PYTHON], True),
    (["up", "--host", "h1", "--python", SYSTEM_PYTHON, "--no-tunnel"], True),
    (["fetch", "--host", "h1"], True),
    (["tunnel", "--host", "h1"], True),
    (["restart", "--host", "h1"], True),
    (["interrupt", "--host", "h1"], True),
    (["stop", "--host", "h1"], True),
    (["provision", "--host", "h1"], True),
    (["kernelspec", "install", "--host", "h1"], True),
    (["console", "--host", "h1"], False),  # one host: an error of the command
]


def test_a_changed_host_key_is_hostkey_exit_1_in_every_command_and_accept_new_never_trusts_it(
        make_hosts, env, tmp_path):
    group = make_hosts(n=1, image="python")
    host = group.hosts[0]
    inv = str(group.inventory)
    forged = forged_line(host, tmp_path)
    group.known_hosts.write_text(forged)

    for argv, per_host in COMMANDS:
        doc = rk_json(env, *argv, "-i", inv, expect=1)
        if per_host:
            refused(doc, "h1", "host key mismatch")
        else:
            assert doc["error"]["message"].startswith("h1: host key mismatch"), doc
            assert "ssh-keygen -R" in doc["error"]["hint"]

    # The kernelspec launcher (what a front end runs) says the same, in its own words.
    connection = tmp_path / "kernel-front.json"
    connection.write_text(json.dumps({"ip": "127.0.0.1", "transport": "tcp", "signature_scheme": "hmac-sha256",
                                      "key": secrets.token_hex(32), "shell_port": 50001, "iopub_port": 50002,
                                      "stdin_port": 50003, "control_port": 50004, "hb_port": 50005}))
    launcher = subprocess.run([sys.executable, "-m", "rk.kernelspec_launcher", "--host", "h1", "--name", "ks",
                               "-i", inv, str(connection)], env=env, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
    assert launcher.returncode == 1, launcher.stderr
    assert launcher.stderr.startswith("rk: cannot start the kernel on h1: ") and "unreachable" not in launcher.stderr
    assert "host key mismatch" in launcher.stderr and "ssh-keygen -R" in launcher.stderr, launcher.stderr

    # --accept-new-host-keys trusts a key never seen before, never one that replaces a known one.
    refused(rk_json(env, "status", "-i", inv, "--accept-new-host-keys", expect=1), "h1", "host key mismatch")
    refused(rk_json(env, "up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON, "--accept-new-host-keys",
                    expect=1), "h1", "host key mismatch")
    assert group.known_hosts.read_text() == forged


def test_one_refused_host_key_makes_the_whole_run_exit_1_beside_good_or_unreachable_hosts(make_hosts, env, tmp_path):
    group = make_hosts(n=2, image="python")
    h1, h2 = group.hosts
    inv = str(group.inventory)
    group.known_hosts.write_text(host_key_line(group, h1) + forged_line(h2, tmp_path))
    try:
        # h1's kernel starts with its tunnel, and still the run is 1, not 3 (partial).
        doc = rk_json(env, "up", "-i", inv, "--host", "testhosts", "--python", SYSTEM_PYTHON, expect=1)
        (kernel,) = by_host(doc)["h1"]["kernels"]
        assert by_host(doc)["h1"]["status"] == "ok" and kernel["state"] == "alive" and kernel["tunnel"] == "up"
        assert execute(Path(kernel["tunnel_file"]), "print(6 * 7)").strip() == "42"
        refused(doc, "h2", "host key mismatch")
        text = status_table(env, inv, expect=1)
        assert text["rows"]["h1"][2] == "alive" and text["rows"]["h2"] == ["h2", "hostkey"]
    finally:
        rk(env, "stop", "-i", inv, "--host", "h1")

    # h1 unreachable and h2 refused: 1, not 4 ("no host could be reached"): h2 answered.
    h1.stop()
    doc = rk_json(env, "status", "-i", inv, expect=1)
    assert by_host(doc)["h1"]["status"] == "unreachable"
    refused(doc, "h2", "host key mismatch")


def tunnel_supervisor_pid() -> int:
    (state,) = (Path(os.environ["XDG_STATE_HOME"]) / "rk" / "tunnels").glob("*.json")
    return json.loads(state.read_text())["pid"]


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_the_tunnels_own_ssh_refused_for_its_host_key_is_hostkey_not_reconnecting(make_hosts, env, tmp_path):
    """Ansible still gets through on an SSH connection opened before the key changed (its
    ControlPersist master, held open here for as long as the test needs); the tunnel's ssh
    opens its own connection, and is refused."""
    group = make_hosts(n=1, image="python")
    host = group.hosts[0]
    inv = str(group.inventory)
    good = group.known_hosts.read_text()
    control = f"ControlPath={control_dir()}/%C"
    ssh = ["ssh", "-F", "/dev/null", "-i", str(group.private_key), "-o", f"UserKnownHostsFile={group.known_hosts}",
           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", control, "-p", str(host.port), "-l", "rk"]
    # The master stays in the background holding its stdio: no pipes for it to keep open.
    subprocess.run([*ssh, "-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "127.0.0.1", "true"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    try:
        up = rk_json(env, "up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON, expect=0)
        tunnel_file = Path(by_host(up)["h1"]["kernels"][0]["tunnel_file"])
        group.known_hosts.write_text(forged_line(host, tmp_path))
        for ssh_pid in children(tunnel_supervisor_pid()):
            os.kill(ssh_pid, signal.SIGTERM)  # the network dropped: the supervisor connects again

        def tunnel_state():
            doc = rk_json(env, "status", "-i", inv, expect=0)
            (kernel,) = by_host(doc)["h1"]["kernels"]
            assert kernel["state"] == "alive"
            return kernel["tunnel"] == "hostkey"

        wait_until(tunnel_state, "rk status says the tunnel's ssh was refused the host key", 90, every=1)
        header, row = rk(env, "status", "-i", inv).stdout.splitlines()
        assert row[header.index("TUNNEL"):].split()[0] == "hostkey"

        # Commands that make the tunnel say so at once, as a hostkey failure of the host.
        for argv in (["restart", "--host", "h1"], ["tunnel", "--host", "h1"],
                     ["up", "--host", "h1", "--python", SYSTEM_PYTHON]):
            entry = refused(rk_json(env, *argv, "-i", inv, expect=1), "h1", "host key mismatch")
            assert entry["message"].startswith("the SSH tunnel to h1 was refused: host key mismatch"), entry

        # The key is fixed: the tunnel comes back, and its file works.
        group.known_hosts.write_text(good)
        again = rk_json(env, "tunnel", "-i", inv, "--host", "h1", expect=0)
        (kernel,) = by_host(again)["h1"]["kernels"]
        assert kernel["tunnel"] == "up" and kernel["tunnel_file"] == str(tunnel_file)
        assert execute(tunnel_file, "print(6 * 7)").strip() == "42"
    finally:
        group.known_hosts.write_text(good)
        rk(env, "stop", "-i", inv, "--all")
        subprocess.run([*ssh, "-O", "exit", "127.0.0.1"], capture_output=True, timeout=60)
