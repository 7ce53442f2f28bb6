"""The only door into Ansible: every ansible-runner call and inventory parse goes through here.

One playbook run = one fresh private data directory (0700) holding the ad hoc inventory and
ansible-runner's artifacts; it is removed afterwards (artifacts can hold secrets) unless the
caller asks to keep it. The verdict for each host comes from the final stats, never from
ansible-playbook's exit code. Data comes back through `set_stats` (artifact_data).
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rk import content, inventory_cache
from rk.errors import RkError, explain_host_key
from rk.paths import ensure_private_dir, pid_alive

# Added to ansible.cfg's ssh_args. BatchMode: a password or passphrase prompt would freeze rk,
# so fail instead. Host key checking is explicit: "ask" (ssh's default) would hang the same way.
# Keepalives: a reused ControlPersist master ignores ConnectTimeout, so a host that went silent
# (dropped packets, frozen) is noticed only by them, within about 2 s instead of a minute; then
# ssh falls back to a new connection, which waits the whole ConnectTimeout. Case 13's bound
# (ConnectTimeout + 5 s for all of `rk status`) leaves room for 1 s x 2 only: x 3 took 14.3 s
# on a quiet machine. The cost: sshd answers no keepalive while it sets up a login session, so
# a login slower than about 2 s (pam_systemd starting the user's systemd, slow LDAP) fails as
# unreachable. Open question in tests/reliability/README.md.
_SSH_RK_ARGS = "-o BatchMode=yes -o ServerAliveInterval=1 -o ServerAliveCountMax=2"


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
    on_task: Callable[[str, str], None] | None = None
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
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
    }


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


def run_playbook(
    name: str,
    *,
    limit: list[str],
    extravars: dict,
    adhoc_hosts: dict[str, dict] | None = None,
    options: RunOptions,
) -> RunResult:
    """Run playbooks/<name>.yml over `limit` and return per-host outcomes and set_stats data."""
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
            options.on_task(data.get("host", ""), data.get("task", ""))
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
