"""Security cases of issue 6 on a real host: permissions under umask 000 and refusal of unsafe
state directories (1), a hostile connection file handed back by the host (3), bind scope (4),
injection through names, values, paths and host variables (7)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import stat
import uuid
from pathlib import Path

import pytest
import yaml

from tests.kernels import execute
from tests.reliability.support import (SYSTEM_PYTHON, by_host, kernels_of, local_files, processes, rk, rk_json,
                                       wait_until)

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def group(module_hosts):
    group = module_hosts(n=1, image="python")
    # umask 000 for every SSH session of the host (sshd runs sessions through PAM).
    group.hosts[0].exec("echo 'session optional pam_umask.so umask=0000' >> /etc/pam.d/sshd")
    assert group.hosts[0].ssh("umask").stdout.strip() == "0000"
    return group


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(text: str) -> int:
    return int(text.strip(), 8)


def host_mode(host, path: str) -> int:
    return mode(host.exec(f"stat -c %a {shlex.quote(path)}").stdout)


def up(env, inv, name, *extra, expect=0) -> dict:
    return rk_json(env, "up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON, "--name", name, *extra,
                   expect=expect)


# ---------------------------------------------------------------- 1. permissions


def test_umask_000_on_both_ends_gives_a_0700_state_dir_and_0600_connection_files(host, inv, module_user, group):
    env = module_user(group.inventory)
    home = Path(env["HOME"])
    # Directories rk has to make itself, parents included.
    env.update(JUPYTER_RUNTIME_DIR=str(home / "fresh/jupyter/runtime"), XDG_STATE_HOME=str(home / "fresh/state"))
    with umask(0):
        kernel = kernels_of(up(env, inv, "perm"))["perm"]

    for made in [home / "fresh", home / "fresh/jupyter", home / "fresh/jupyter/runtime", home / "fresh/state",
                 home / "fresh/state/rk"]:
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made
    assert local_files(kernel)
    for local in local_files(kernel):
        assert stat.S_IMODE(os.stat(local).st_mode) == 0o600, local
    kernel_dir = Path(kernel["connection_file"]).parent
    for remote in (kernel_dir.parent.parent, kernel_dir.parent, kernel_dir):  # rk/, <hostname>/, <name>/
        # ipykernel adds the sticky bit to its connection file's directory; rwx bits are what count
        assert host_mode(host, str(remote)) & 0o777 == 0o700, remote
    assert host_mode(host, kernel["connection_file"]) == 0o600


@pytest.fixture(scope="module")
def hostdir(host, env, inv):
    """The host's state directory (~/.local/state/rk/<hostname>), made by a first kernel."""
    kernel = kernels_of(up(env, inv, "first", "--no-tunnel"))["first"]
    return str(Path(kernel["connection_file"]).parent.parent)


DAMAGES = {
    # (how to damage the directory, how to repair it), as root on the host
    "world-writable": ("chmod 777 {d}", "chmod 700 {d}"),
    "owned by someone else": ("chown root {d}", "chown rk {d}"),
    "a symlink": ("mv {d} {d}.real && mkdir -m 700 /tmp/elsewhere && chown rk /tmp/elsewhere && ln -s /tmp/elsewhere {d}",
                  "rm {d} && rm -rf /tmp/elsewhere && mv {d}.real {d}"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_an_unsafe_state_directory_on_the_host_is_refused(host, env, inv, hostdir, damage):
    spoil, repair = DAMAGES[damage]
    host.exec(spoil.format(d=hostdir))
    try:
        doc = up(env, inv, "refused", "--no-tunnel", expect=1)
    finally:
        host.exec(repair.format(d=hostdir))
    entry = by_host(doc)["h1"]
    assert entry["status"] == "failed" and f"refusing state directory {hostdir}" in entry["message"]
    assert kernel_running(host, "refused") is False


def test_a_world_writable_state_root_on_the_host_is_refused(host, env, inv, hostdir):
    root = str(Path(hostdir).parent)
    host.exec(f"chmod 777 {root}")
    try:
        doc = up(env, inv, "refused-root", "--no-tunnel", expect=1)
    finally:
        host.exec(f"chmod 700 {root}")
    assert "refusing state directory" in by_host(doc)["h1"]["message"]


def kernel_running(host, name: str) -> bool:
    return any(f"/{name}/kernel.json" in args for args in processes(host).values())


LOCAL_DAMAGES = {
    "world-writable": lambda d: d.chmod(0o777),
    "group-writable": lambda d: d.chmod(0o770),
    "owned by someone else": lambda d: os.chown(d, 65534, 65534),  # the tests run as root
    "a symlink": lambda d: (d.rename(d.with_name("real")), d.symlink_to(d.with_name("real"))),
}


@pytest.mark.parametrize("which", ["JUPYTER_RUNTIME_DIR", "XDG_STATE_HOME"])
@pytest.mark.parametrize("damage", LOCAL_DAMAGES)
def test_an_unsafe_local_directory_is_refused_before_any_host_is_contacted(inv, module_user, group, which, damage):
    env = module_user()
    base = Path(env["HOME"]) / "unsafe"
    target = base / "rk" if which == "XDG_STATE_HOME" else base / "runtime"
    target.mkdir(parents=True, mode=0o700)
    env[which] = str(base if which == "XDG_STATE_HOME" else target)
    LOCAL_DAMAGES[damage](target)
    command = ["up", "-i", inv, "--host", "h1", "--python", SYSTEM_PYTHON] if which == "JUPYTER_RUNTIME_DIR" \
        else ["tunnel", "-i", inv, "--host", "h1", "--stop"]
    result = rk(env, *command)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert str(target) in result.stderr, result.stderr


# ---------------------------------------------------------------- 3. hostile connection file


HOSTILE = {
    "ip-not-loopback": lambda info: info.update(ip="0.0.0.0"),
    "short-key": lambda info: info.update(key="abc"),
    "oversized": lambda info: info.update(padding="x" * 20000),
}


@pytest.fixture(scope="module")
def hostile_host(host, env, inv):
    """Kernel `hostile` and its connection file as the host wrote it; put back after each case."""
    kernel = kernels_of(up(env, inv, "hostile", "--no-tunnel"))["hostile"]
    return kernel, json.loads(host.exec(f"cat {kernel['connection_file']}").stdout)


@pytest.mark.parametrize("change", HOSTILE)
def test_a_hostile_connection_file_from_the_host_is_rejected_and_not_kept(host, env, inv, hostile_host, change):
    kernel, original = hostile_host
    info = dict(original)
    HOSTILE[change](info)
    write = "cat > {f} <<'EOF'\n{text}\nEOF"
    host.exec(write.format(f=kernel["connection_file"], text=json.dumps(info)), user="rk")
    try:
        result = rk(env, "fetch", "-i", inv, "--host", "h1", "--name", "hostile", "--json")
    finally:
        host.exec(write.format(f=kernel["connection_file"], text=json.dumps(original)), user="rk")
    assert result.returncode == 1, result.stderr
    entry = by_host(json.loads(result.stdout))["h1"]
    assert entry["message"].startswith("rejected the connection file from the host")
    assert not Path(kernel["local_file"]).exists()
    assert original["key"] not in result.stdout + result.stderr


# ---------------------------------------------------------------- 4. bind scope


def listeners(host) -> list[tuple[str, int]]:
    """(local address, pid) of every TCP and UDP listener of user rk on the host."""
    # As rk: the containers' root lacks CAP_SYS_PTRACE, so ss could not name other users' pids.
    out = host.exec("ss -H -ltunp", user="rk").stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        address = cols[4].rsplit(":", 1)[0].strip("[]")
        for pid in re.findall(r"pid=(\d+)", line):
            found.append((address, int(pid)))
    return found


def tree(host, root: int) -> set[int]:
    out = host.exec("ps -eo pid=,ppid=").stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        pid, ppid = map(int, line.split())
        children.setdefault(ppid, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_the_kernel_its_descendants_and_rks_tunnel_listen_on_loopback_only(host, env, inv):
    kernel = kernels_of(up(env, inv, "bind"))["bind"]
    # A descendant that serves something, as user code or a library might.
    code = ("import subprocess, sys\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import zmq, time; s = zmq.Context().socket(zmq.REP); "
            "s.bind_to_random_port(\"tcp://127.0.0.1\"); time.sleep(1000)'])\nprint(p.pid)\n")
    child = int(execute(Path(kernel["tunnel_file"]), code))
    wait_until(lambda: child in {pid for _, pid in listeners(host)}, "the child listens")
    pids = tree(host, kernel["pid"])
    mine = [(address, pid) for address, pid in listeners(host) if pid in pids]
    assert len(mine) >= 6  # the five ports (and the child's)
    assert {address for address, _ in mine} == {LOOPBACK}, mine

    local = json.loads(Path(kernel["tunnel_file"]).read_text())
    for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
        assert local_listeners(local[name]) == {LOOPBACK}, name


def local_listeners(port: int) -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            address, hexport = cols[1].rsplit(":", 1)
            if cols[3] == "0A" and int(hexport, 16) == port:
                found.add({"0100007F": LOOPBACK}.get(address, address))
    return found


# ---------------------------------------------------------------- 7. injection


@pytest.fixture
def sentinel(host):
    """A path that an injected command would create, on this machine and on the host."""
    path = f"/tmp/rk-injected-{uuid.uuid4().hex[:8]}"
    yield path
    assert not Path(path).exists(), "an injected command ran on the controller"
    assert host.exec(f"test -e {path}", check=False).returncode != 0, "an injected command ran on the host"


def shell_payloads(sentinel: str) -> dict[str, str]:
    return {
        "SEMI": f"x; touch {sentinel}",
        "SUBST": f"$(touch {sentinel})",
        "BACKTICK": f"`touch {sentinel}`",
        "QUOTES": f"'\"; touch {sentinel}; echo \"'",
        "NEWLINE": f"a\ntouch {sentinel}\n",
        "DOTS": "../../../../etc/passwd",
        "LONG": "é" * 3000,
        "UNICODE": "snow ☃ / Ωmega / 日本",
    }


@pytest.mark.parametrize("name", ["x;touch S", "$(id)", "`id`", "../up", "a\nb", "k" * 65, "ké", "'q'"])
def test_hostile_kernel_names_are_refused_as_usage_errors(inv, env, name):
    result = rk(env, "up", "-i", inv, "--host", "h1", "--name", name)
    assert result.returncode == 2 and "bad kernel name" in result.stderr, result.stderr


def test_shell_metacharacters_in_env_values_and_a_host_variable_path_reach_the_kernel_verbatim(
        host, group, env, sentinel, tmp_path):
    payloads = shell_payloads(sentinel)
    odd_dir = f"/tmp/odd $(touch {sentinel}) `x` ; '\" dir"
    host.exec(f"mkdir -p {shlex.quote(odd_dir)} && chown rk {shlex.quote(odd_dir)}")
    inventory = yaml.safe_load(group.inventory.read_text())
    inventory["all"]["children"]["testhosts"]["hosts"]["h1"]["rk_kernel_cwd"] = odd_dir
    odd_inv = tmp_path / "odd.yml"
    odd_inv.write_text(yaml.safe_dump(inventory))

    env_args = [arg for key, value in payloads.items() for arg in ("--env", f"{key}={value}")]
    kernel = kernels_of(up(env, str(odd_inv), "odd", *env_args))["odd"]
    code = f"import os, json; print(json.dumps([os.getcwd(), {{k: os.environ.get(k) for k in {list(payloads)!r}}}]))"
    cwd, seen = json.loads(execute(Path(kernel["tunnel_file"]), code))
    assert cwd == odd_dir
    assert seen == payloads


def test_a_hostile_python_path_is_refused_without_running_it(env, inv, sentinel):
    result = rk(env, "up", "-i", inv, "--host", "h1", "--name", "badpy", "--python",
                f"/usr/bin/python3; touch {sentinel}", "--json")
    assert result.returncode == 1
    # The whole string is taken as one path (the probe quotes it), which is no executable.
    message = by_host(json.loads(result.stdout))["h1"]["message"]
    assert f"/usr/bin/python3; touch {sentinel} (rk_python_interpreter) is not an executable" in message


def test_a_jinja_template_in_an_env_value_is_passed_verbatim_and_never_evaluated(env, inv, sentinel):
    value = "{{ lookup('ansible.builtin.pipe', 'touch %s') }}" % sentinel
    try:
        kernel = kernels_of(up(env, inv, "jinja", "--env", f"T={value}"))["jinja"]
        seen = execute(Path(kernel["tunnel_file"]), "import os; print(os.environ['T'])").rstrip("\n")
    finally:
        controller_ran = Path(sentinel).exists()
        Path(sentinel).unlink(missing_ok=True)  # so the fixture's own check reports only the host
    assert not controller_ran, "a template in an --env value ran a command on the controller"
    assert seen == value
