"""The only door into Ansible: every ansible-runner call and inventory parse goes through here.

One playbook run = one fresh private data directory (0700) holding the ad hoc inventory and
ansible-runner's artifacts; it is removed afterwards (artifacts can hold secrets) unless the
caller asks to keep it. The verdict for each host comes from the final stats, never from
ansible-playbook's exit code. Data comes back through `set_stats` (artifact_data).
"""

from __future__ import annotations

import configparser
import os
import random
import re
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rk import content, inventory_cache
from rk.errors import RkError, explain_host_key, refused_session
from rk.paths import ensure_private_dir, pid_alive, state_dir

# Added to ansible.cfg's ssh_args. BatchMode: a password or passphrase prompt would freeze rk,
# so fail instead. Host key checking is explicit: "ask" (ssh's default) would hang the same way.
# Keepalives: sshd is silent while it sets up a login (PAM: pam_systemd, SSSD, an NFS home), so
# they let 20 s of silence through; a host that went silent behind a reused ControlPersist
# master is noticed by rk/ansible_ssh.py's check instead, in 1 s (tests/reliability/README.md).
_SSH_RK_ARGS = "-o BatchMode=yes -o ServerAliveInterval=5 -o ServerAliveCountMax=3"


@dataclass
class HostOutcome:
    status: str = "ok"  # ok | failed | unreachable | hostkey (ssh refused the host's key)
    message: str = ""  # the last failure or unreachable message Ansible gave
    changed: bool = False


@dataclass
class RunResult:
    hosts: dict[str, HostOutcome] = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # set_stats artifact_data
    status: str = ""  # ansible-runner's status: successful, failed, canceled, timeout
    error: str = ""  # an error of the whole run (a broken playbook, a bad inventory)
    artifacts: Path | None = None  # kept private data dir, when asked for


@dataclass
class RunOptions:
    inventories: list[Path] = field(default_factory=list)
    verbosity: int = 0
    keep_artifacts: bool = False
    accept_new_host_keys: bool = False
    # Called with (host, task name) when a host starts a task: progress for humans.
    on_task: Callable[[str, str, str], None] | None = None  # (host, task name, task file path)
    # Called with Ansible's own output text when the user asked for -v.
    on_output: Callable[[str], None] | None = None
    # Returns True when the run should stop (Ctrl-C).
    cancelled: Callable[[], bool] | None = None


def ansible_env(accept_new_host_keys: bool = False) -> dict[str, str]:
    """Environment for ansible-playbook: rk's config, on top of the user's own ANSIBLE_*."""
    checking = "accept-new" if accept_new_host_keys else "yes"
    config = configparser.ConfigParser(interpolation=None)
    config.read(content.ansible_cfg())
    base = config.get("ssh_connection", "ssh_args", fallback="")
    # rk's own environment first, so `.venv/bin/rk` works without activating the venv.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
    return {
        "PATH": path,
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir()),
        "ANSIBLE_CONFIG": str(content.ansible_cfg()),
        "ANSIBLE_SSH_ARGS": f"{base} {_SSH_RK_ARGS} -o StrictHostKeyChecking={checking}".strip(),
        "ANSIBLE_SSH_EXECUTABLE": str(ssh_executable()),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
    }


def ssh_executable() -> Path:
    """rk/ansible_ssh.py as an executable for Ansible, run by this interpreter (made once).

    Named by its content, so two rk installations of one user never rewrite each other's.
    """
    import hashlib

    import rk

    script = (f"#!{sys.executable} -IS\nimport sys\nsys.path.insert(0, {str(Path(rk.__file__).parent.parent)!r})\n"
              "from rk.ansible_ssh import main\nmain()\n")
    digest = hashlib.sha256(script.encode()).hexdigest()[:16]
    path = ensure_private_dir(state_dir() / "bin") / f"ansible-ssh-{digest}"
    if not path.exists():  # written whole and executable, then renamed: never run half made
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(script)
        os.chmod(tmp, 0o700)  # os.open's mode is masked by the umask
        os.replace(tmp, path)
    return path


def control_dir() -> Path:
    """A private directory for ssh's ControlPath sockets, short enough for the socket limit.

    A unix socket path has at most 107 bytes and ssh's %C name takes 40 of them, so a long
    home directory cannot hold them; then the user's runtime dir or /tmp serves.
    """
    candidates = [Path.home() / ".ansible" / "cp"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "rk-cp")
    candidates.append(Path(tempfile.gettempdir()) / f"rk-cp-{os.getuid()}")
    for candidate in candidates:
        if len(str(candidate)) + len("/") + 40 + len(".XXXXXXXXXXXXXXXX") < 108:
            return ensure_private_dir(candidate)
    raise RkError("no directory with a path short enough for ssh's control sockets", "set TMPDIR to a short path")


# Waits before running a playbook again for the hosts that refused an SSH session or
# connection (sshd's MaxSessions, MaxStartups): busy, not unreachable. Measured with 20 `rk up`
# at once on one host (tests/reliability/README.md, case 20). A silent host is never retried.
REFUSED_RETRY_S = (1, 2, 4, 8)


def run_playbook(
    name: str,
    *,
    limit: list[str],
    extravars: dict,
    adhoc_hosts: dict[str, dict] | None = None,
    options: RunOptions,
) -> RunResult:
    """Run playbooks/<name>.yml over `limit` and return per-host outcomes and set_stats data.

    Hosts that refused another SSH session get the playbook again (rk's playbooks are
    idempotent), after a short, growing, jittered wait, at most len(REFUSED_RETRY_S) times.
    """
    result = _run_once(name, limit=limit, extravars=extravars, adhoc_hosts=adhoc_hosts, options=options)
    for wait in REFUSED_RETRY_S:
        again = [h for h in limit if h in result.hosts and result.hosts[h].status == "unreachable"
                 and refused_session(result.hosts[h].message)]
        if not again or (options.cancelled and options.cancelled()):
            break
        time.sleep(wait * random.uniform(0.5, 1.5))  # jitter: concurrent rk runs spread out
        retry = _run_once(name, limit=again, extravars=extravars, adhoc_hosts=adhoc_hosts, options=options)
        result.hosts.update({h: o for h, o in retry.hosts.items() if h in again})
        for key, value in retry.data.items():
            if isinstance(value, dict) and isinstance(result.data.get(key), dict):
                result.data[key].update(value)
            else:
                result.data[key] = value
        if retry.status == "canceled":
            result.status = retry.status
        result.artifacts = retry.artifacts or result.artifacts
    return result


def _run_once(
    name: str,
    *,
    limit: list[str],
    extravars: dict,
    adhoc_hosts: dict[str, dict] | None,
    options: RunOptions,
) -> RunResult:
    import ansible_runner  # slow import: only when a playbook really runs

    remove_abandoned_run_dirs()
    # mkdtemp makes it 0700. The pid says whether its rk still runs; kept ones are not "runs".
    private = Path(tempfile.mkdtemp(prefix="rk-artifacts-" if options.keep_artifacts else f"rk-run-{os.getpid()}-"))
    result = RunResult()
    inventories = [str(p) for p in options.inventories]
    if adhoc_hosts:
        adhoc = private / "adhoc.yml"
        adhoc.write_text(yaml.safe_dump({"all": {"hosts": adhoc_hosts}}))
        inventories.insert(0, str(adhoc))
    variables = private / "extravars.yml"
    variables.write_text(unsafe_yaml(extravars))

    def on_event(event: dict) -> bool:
        data = event.get("event_data", {})
        kind = event.get("event")
        if options.on_output and event.get("stdout"):
            options.on_output(event["stdout"])
        if kind in ("verbose", "error") and event.get("stdout", "").strip():
            # Text outside any task: the first [ERROR] wins, else the last words said.
            if "ERROR" in event["stdout"] or "ERROR" not in result.error:
                result.error = event["stdout"]
        elif kind == "runner_on_start" and options.on_task:
            options.on_task(data.get("host", ""), data.get("task", ""), data.get("task_path", ""))
        elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            outcome = result.hosts.setdefault(data.get("host", ""), HostOutcome())
            outcome.message = _message(data.get("res", {}))
        elif kind == "playbook_on_stats":
            _apply_stats(result, data)
        return False  # rk keeps what it needs; no need for ansible-runner to hold events

    try:
        runner = ansible_runner.run(
            private_data_dir=str(private),
            playbook=str(content.playbook(name)),
            inventory=inventories or None,
            limit=",".join(limit),
            extravars=str(variables),
            envvars=ansible_env(options.accept_new_host_keys),
            verbosity=options.verbosity or None,
            forks=max(5, min(len(limit) * 4, 100)),
            quiet=True,
            suppress_env_files=True,
            event_handler=on_event,
            cancel_callback=options.cancelled,
        )
        result.status = runner.status
    finally:
        if options.keep_artifacts:
            result.artifacts = private
        else:
            shutil.rmtree(private, ignore_errors=True)
    return result


_RUN_DIR = re.compile(r"^rk-run-(?P<pid>[0-9]+)-[A-Za-z0-9_]+$")


def remove_abandoned_run_dirs() -> None:
    """Remove the private data dirs of rk runs that were killed (SIGKILL skips the cleanup):
    they hold extra vars (--env values) and Ansible's artifacts."""
    for path in Path(tempfile.gettempdir()).glob("rk-run-*-*"):
        match = _RUN_DIR.match(path.name)
        if not match or int(match.group("pid")) == os.getpid():
            continue
        try:
            st = os.lstat(path)
        except OSError:
            continue  # vanished meanwhile
        if not pid_alive(int(match.group("pid"))) and stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            shutil.rmtree(path, ignore_errors=True)  # its rk is gone


class _Unsafe(str):
    pass


class _UnsafeDumper(yaml.SafeDumper):
    pass


_UnsafeDumper.add_representer(_Unsafe, lambda dumper, text: dumper.represent_scalar("!unsafe", str(text)))


def unsafe_yaml(data) -> str:
    """Extra vars as YAML with every string tagged !unsafe: Ansible never templates them.

    The values come from the user (--env, --cwd, --python, ...); as plain extra vars, a
    "{{ lookup('pipe', ...) }}" among them would run on the controller.
    """

    def tag(value):
        if isinstance(value, str):
            return _Unsafe(value)
        if isinstance(value, dict):
            return {tag(k): tag(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [tag(v) for v in value]
        return value

    return yaml.dump(tag(data), Dumper=_UnsafeDumper, default_flow_style=False)


def _apply_stats(result: RunResult, data: dict) -> None:
    result.data = data.get("artifact_data") or {}
    for host in data.get("processed", {}):
        outcome = result.hosts.setdefault(host, HostOutcome())
        if host in data.get("dark", {}):
            # ssh refusing the host's key is not a network problem: the host did answer.
            outcome.status = "hostkey" if explain_host_key(outcome.message) else "unreachable"
        elif host in data.get("failures", {}):
            outcome.status = "failed"
        else:
            outcome.status = "ok"
            outcome.message = ""  # failures that were rescued or ignored are not failures
        outcome.changed = host in data.get("changed", {})


def _message(res: dict) -> str:
    parts = [res.get("msg") or ""]
    for key in ("stderr", "module_stderr"):
        if res.get(key) and res[key] not in parts[0]:
            parts.append(res[key])
    return "\n".join(p for p in parts if p).strip()


class Inventory:
    """The user's inventories, parsed at most once (with rk's ansible.cfg) for one command.

    Answers are cached across commands (rk/inventory_cache.py) while the inventory files do
    not change: a command that finds its answers there never imports Ansible.
    """

    def __init__(self, sources: list[Path]):
        self._sources = sources
        self._parsed = None
        self._key = inventory_cache.key(sources)
        self._answers = inventory_cache.load(self._key) if self._key else {}

    def hosts(self, pattern: str) -> dict[str, dict]:
        """Hosts that `pattern` names, with their connection variables and groups."""
        if pattern not in self._answers:
            self._answers[pattern] = self._parse_hosts(pattern)
            if self._key:
                inventory_cache.save(self._key, self._answers)
        return self._answers[pattern]

    def _parse_hosts(self, pattern: str) -> dict[str, dict]:
        if self._parsed is None:
            os.environ.setdefault("ANSIBLE_CONFIG", str(content.ansible_cfg()))  # read when Ansible loads
            from ansible.inventory.manager import InventoryManager
            from ansible.parsing.dataloader import DataLoader
            from ansible.vars.manager import VariableManager

            loader = DataLoader()
            inventory = InventoryManager(loader=loader, sources=[str(p) for p in self._sources])
            self._parsed = (inventory, VariableManager(loader=loader, inventory=inventory))
        inventory, variables = self._parsed
        found = {}
        for host in inventory.list_hosts(pattern):
            if host.implicit:
                continue
            hv = variables.get_vars(host=host, include_hostvars=False)
            found[host.name] = {
                "groups": sorted(g.name for g in host.get_groups() if g.name not in ("all", "ungrouped")),
                **{k: _plain(hv[k]) for k in _CONNECTION_VARS if k in hv},
            }
        return found


def _plain(value):
    """Inventory values are Ansible's str/int subclasses; keep them JSON-able as plain types."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


_CONNECTION_VARS = (
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_connection",
    "ansible_ssh_private_key_file",
    "ansible_ssh_common_args",
    "ansible_become",
)
