"""rk doctor's checks of one host, layer by layer: inventory, SSH, sshd, Python, kernel runtime.

Read-only: rk's own ssh (rk/ssh.py's Target, BatchMode, host keys checked), `ssh -G` for the
effective configuration, `ssh-keygen -F` for known_hosts, and ONE remote shell script: the
rk_python role's probe rendered in check mode (it writes nothing) followed by rk/_doctor.sh.
"""

from __future__ import annotations

import hashlib
import json
import re
import select
import shlex
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import yaml

from rk import content, runner
from rk.errors import explain_host_key, explain_unreachable, first_line
from rk.ssh import Target

LOGIN_WARN_S = 2.0  # every rk command logs in at least once: slow PAM, LDAP or an NFS home shows here
IMPORT_WARN_S = 3.0  # a kernel slower than this to import ipykernel feels broken in a front end
FREE_WARN_KIB = 100 * 1024  # kernel state, logs and a venv's pip cache need some room
INODES_WARN = 1000
SOCKET_LIMIT = 108  # sun_path, terminating NUL included


@dataclass
class Check:
    layer: str
    name: str
    status: str  # ok | warning | failed | skipped
    figure: str = ""
    message: str = ""
    fix: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def _ssh_g(target: Target) -> dict[str, list[str]]:
    out = subprocess.run(target.argv("-G"), capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL).stdout
    config: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        config.setdefault(key.lower(), []).append(value)
    return config


def _one(config: dict, key: str, default: str = "") -> str:
    return (config.get(key) or [default])[0]


def inventory_check(name: str, source: str, target: Target) -> tuple[Check, dict]:
    config = _ssh_g(target)
    host, port, user = _one(config, "hostname", target.address), _one(config, "port", "22"), _one(config, "user")
    if source == "ad hoc" and host != target.address:
        source = "~/.ssh/config alias"
    jump = _one(config, "proxyjump", "none")
    identities = [i for i in config.get("identityfile", []) if Path(i).expanduser().exists()] or ["(none on disk)"]
    # rk's control sockets: runner.control_dir() + "/" + %C (40) + ssh's temporary suffix (17).
    length = len(str(runner.control_dir())) + 1 + 40 + 17
    figure = f"{user}@{host}:{port} via {source}; identity {', '.join(identities)}; ProxyJump {jump}; " \
             f"ControlPath {length}/{SOCKET_LIMIT - 1} bytes"
    check = Check("inventory", "effective ssh configuration", "ok", figure)
    if length >= SOCKET_LIMIT:
        check.status, check.message, check.fix = "failed", "control socket path too long", "set TMPDIR to a short path"
    return check, config


def tcp_check(config: dict) -> Check:
    """TCP connect time to the first hop (the first ProxyJump host, else the host itself)."""
    jump = _one(config, "proxyjump", "none")
    host, port = _one(config, "hostname"), int(_one(config, "port", "22"))
    if jump != "none":
        first = jump.split(",")[0].rpartition("@")[2]
        host, _, p = first.partition(":")
        port = int(p or 22)
        if _one(config, "proxycommand", "none") == "none":
            jumped = _ssh_g(Target(address=host, port=port))
            host, port = _one(jumped, "hostname", host), int(_one(jumped, "port", str(port)))
    began = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as exc:
        cause, hint = explain_unreachable(str(exc) if not isinstance(exc, TimeoutError) else "timed out")
        return Check("ssh", f"TCP connect to {host}:{port}", "failed", "", cause, hint)
    return Check("ssh", f"TCP connect to {host}:{port}", "ok", f"{(time.monotonic() - began) * 1000:.0f} ms")


def hostkey_check(config: dict) -> Check:
    host = _one(config, "hostkeyalias", "none")
    if host == "none":
        host = _one(config, "hostname")
    port = _one(config, "port", "22")
    lookup = host if port == "22" else f"[{host}]:{port}"
    files = [f for key in ("userknownhostsfile", "globalknownhostsfile") for v in config.get(key, []) for f in v.split()]
    for file in files:
        path = Path(file).expanduser()
        if path.is_file() and subprocess.run(["ssh-keygen", "-F", lookup, "-f", str(path)], capture_output=True,
                                             timeout=10).returncode == 0:
            return Check("ssh", "host key", "ok", f"{lookup} known in {path}")
    where = Path(files[0]).expanduser() if files else "~/.ssh/known_hosts"
    return Check("ssh", "host key", "failed", "", f"unknown host key: {lookup} is in no known_hosts file ({', '.join(files)})",
                 f"check its fingerprint, then `ssh-keyscan -p {port} {host} >> {where}` or connect once with "
                 "ssh; or pass --accept-new-host-keys to trust it on first use")


def login_and_probe(target: Target, accept_new: bool, timeout: float) -> tuple[list[Check], dict]:
    """Log in once (its own connection, timed to the script's first line) and run the script."""
    argv = target.argv("-v", "-S", "none", "-o", "ControlMaster=no", "-o", "ConnectTimeout=10",
                       accept_new_host_keys=accept_new, command=["sh", "-c", shlex.quote(remote_script())])
    began = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = ""
    try:
        # Bounded: a host that hangs mid-login (frozen, a PAM module waiting for ever) must not hang doctor.
        if not select.select([proc.stdout], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(argv, timeout)
        first = proc.stdout.readline()
        login_s = time.monotonic() - began
        rest, err = proc.communicate(timeout=max(1.0, timeout - login_s))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return [Check("ssh", "login", "failed", f"> {timeout:.0f} s", "the login or the checks did not finish in time",
                      "try `ssh` to the host by hand: a slow PAM, LDAP or NFS home shows there")], {}
    if proc.returncode != 0 and not first:
        cause, hint = explain_host_key(_ssh_error(err)) or explain_unreachable(_ssh_error(err))
        return [Check("ssh", "authentication and login", "failed", "", cause, _auth_hint(cause, hint, target))], {}
    accepted = re.search(r"Server accepts key: (.+?)( agent)?$", err, re.MULTILINE)
    how = "agent key" if accepted and ("agent" in accepted.group(0)) else "key"
    method = re.search(r'Authenticated to .* using "([^"]+)"', err)
    auth = Check("ssh", "authentication", "ok",
                 f"{method.group(1) if method else 'unknown'}" + (f", {how} {accepted.group(1).split()[0]}" if accepted else ""))
    login = Check("ssh", "login time", "ok", f"{login_s:.2f} s")
    if login_s > LOGIN_WARN_S:
        login.status = "warning"
        login.message = f"login takes longer than {LOGIN_WARN_S:.0f} s: every rk command waits for it"
        login.fix = "ask the administrator about slow PAM modules, LDAP or an NFS home; " \
                    "look at ~/.profile or ~/.bashrc on the host for slow commands"
    return [auth, login], parse(first + rest)


def _ssh_error(err: str) -> str:
    lines = [line for line in err.splitlines() if not line.startswith("debug")]
    return "\n".join(lines) or err


def _auth_hint(cause: str, hint: str, target: Target) -> str:
    if not cause.startswith("authentication"):
        return hint
    locked = []
    for key in [target.key_file] if target.key_file else [str(p) for p in Path("~/.ssh").expanduser().glob("id_*") if p.suffix != ".pub"]:
        if subprocess.run(["ssh-keygen", "-y", "-P", "", "-f", key], capture_output=True, timeout=10).returncode != 0:
            locked.append(key)
    if locked:
        return f"{', '.join(locked)} needs a passphrase, which BatchMode cannot ask: `ssh-add {locked[0]}` into your agent"
    return hint


def forwarding_check(target: Target, port: str) -> Check:
    """Does sshd allow TCP forwarding (rk's tunnel)? Asked for real: a -W to the host's own sshd."""
    argv = target.argv("-S", "none", "-o", "ControlMaster=no", "-o", "ConnectTimeout=10", "-o", "ExitOnForwardFailure=yes",
                       "-W", f"127.0.0.1:{port or 22}")
    try:
        proc = subprocess.run(argv, input="", capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return Check("sshd", "TCP forwarding", "warning", "", "the forwarding probe did not finish in 20 s")
    if "SSH-" in proc.stdout:  # the far end's banner came back through the forward
        return Check("sshd", "TCP forwarding", "ok", "allowed")
    why = first_line("\n".join(line for line in proc.stderr.splitlines() if "open failed" in line or "prohibited" in line)
                     or proc.stderr)
    return Check("sshd", "TCP forwarding", "failed", "", f"sshd refuses TCP forwarding ({why}): rk's tunnel cannot work",
                 "an administrator sets `AllowTcpForwarding yes` (or `local`) in the host's sshd_config; "
                 "meanwhile use `rk up --no-tunnel` and a front end that runs its own ssh")


def remote_script() -> str:
    """roles/rk_python's probe, rendered in check mode with the role's defaults, then ours."""
    import jinja2

    defaults = yaml.safe_load((content.content_dir() / "roles/rk_python/defaults/main.yml").read_text())
    template = (content.content_dir() / "roles/rk_python/templates/probe.sh.j2").read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["quote"] = shlex.quote
    probe = env.from_string(template).render(
        **defaults, ansible_check_mode=True, __rk_python_specs_sha256=specs_sha256(defaults, False),
        __rk_python_modules=["ipykernel"])
    ours = resources.files("rk").joinpath("_doctor.sh").read_text()
    return f"(\n{probe}\n)\n{ours}"  # the probe exits: a subshell


def specs_sha256(defaults: dict, spyder: bool) -> str:
    """The rk_python role's __rk_python_specs_sha256 (vars/main.yml): sha256 of to_json(specs)."""
    specs = ["ipykernel" + defaults["rk_python_ipykernel_version"]]
    if spyder:
        specs.append("spyder-kernels" + defaults["rk_python_spyder_kernels_version"])
    return hashlib.sha256(json.dumps(specs + list(defaults["rk_python_packages"])).encode()).hexdigest()


def parse(text: str) -> dict[str, str | list[str]]:
    """RK:key=value lines (the role's parser: vars/main.yml); repeated keys (gpu) kept as lists."""
    found: dict = {}
    for key, value in re.findall(r"^RK:([a-z_]+)=(.*?)\s*$", text, re.MULTILINE):
        if key == "gpu":
            found.setdefault("gpu", []).append(value)
        else:
            found[key] = value
    return found
