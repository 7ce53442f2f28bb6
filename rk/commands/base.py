"""What every command shares: options, per-host results, and running one playbook over targets."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from rk import paths, runner
from rk.errors import (UsageError, explain_failure, explain_host_key, explain_unreachable, first_line,
                       refused_session)
from rk.exitcodes import ExitCode
from rk.targets import Selection, inventory_sources, select

JSON_SCHEMA_VERSION = 1
_KERNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Options:
    """Flags shared by the commands that run a playbook."""

    inventory: list[str] = field(default_factory=list)
    verbosity: int = 0
    keep_artifacts: bool = False
    accept_new_host_keys: bool = False
    on_task: Callable[[str, str, str], None] | None = None  # (host, task name, task file path)
    on_output: Callable[[str], None] | None = None
    confirm: Callable[[str], bool] | None = None  # asks the user a yes/no question (rk clean)


@dataclass
class HostResult:
    host: str  # as the user wrote it (or the inventory name)
    status: str  # ok | failed | unreachable | hostkey (ssh refused the host's key: it answered)
    message: str = ""
    hint: str = ""
    changed: bool = False
    kernels: list[dict] = field(default_factory=list)
    python: dict | None = None
    connect: dict | None = None


@dataclass
class CommandResult:
    command: str
    hosts: list[HostResult] = field(default_factory=list)
    interrupted: bool = False
    artifacts: str | None = None
    # One sentence per local file rk moved aside (corrupt or planted) while the command ran.
    warnings: list[str] = field(default_factory=paths.new_notes)

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        statuses = {h.status for h in self.hosts}
        if "hostkey" in statuses:
            # Whatever the other hosts did: 3 and 4 say "retry may help", and a refused host key
            # (someone may be intercepting) needs a human. README, "Exit codes".
            return ExitCode.FAILURE
        if statuses <= {"ok"}:
            return ExitCode.OK
        if "ok" in statuses:
            return ExitCode.PARTIAL
        if statuses == {"unreachable"}:
            return ExitCode.UNREACHABLE
        return ExitCode.FAILURE

    def to_json(self) -> dict:
        return {
            "schema": JSON_SCHEMA_VERSION,
            "command": self.command,
            "ok": self.exit_code == ExitCode.OK,
            "exit_code": int(self.exit_code),
            "hosts": [asdict(h) for h in self.hosts],
            "error": None,
            "warnings": self.warnings,
        }


def check_name(name: str) -> None:
    if not _KERNEL_NAME.match(name):
        raise UsageError(
            f"bad kernel name {name!r}",
            "use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )


def resolve(hosts: list[str] | None, options: Options) -> Selection:
    return select(hosts, inventory_sources(options.inventory))


def run(
    playbook: str,
    selection: Selection,
    extravars: dict,
    options: Options,
    command: str,
    cancelled: Callable[[], bool] | None = None,
) -> tuple[CommandResult, dict]:
    """Run one playbook over the selection; return per-host results and the set_stats data."""
    outcome = runner.run_playbook(
        playbook,
        limit=selection.limit,
        extravars=extravars,
        adhoc_hosts=selection.adhoc,
        options=runner.RunOptions(
            inventories=selection.inventories,
            verbosity=options.verbosity,
            keep_artifacts=options.keep_artifacts,
            accept_new_host_keys=options.accept_new_host_keys,
            on_task=_shown_task(selection, options.on_task),
            on_output=options.on_output,
            cancelled=cancelled,
        ),
    )
    result = CommandResult(command=command, artifacts=str(outcome.artifacts) if outcome.artifacts else None)
    result.interrupted = outcome.status == "canceled"
    for name in selection.limit:
        host = outcome.hosts.get(name)
        shown = selection.shown(name)
        if host is None:
            if result.interrupted:
                why = "interrupted before it finished"
            else:
                why = _run_error(outcome.error) or f"the run ended early ({outcome.status or 'no result'})"
            result.hosts.append(HostResult(shown, "failed", why, "run again with -v to see Ansible's output"))
        elif host.status == "hostkey":
            result.hosts.append(HostResult(shown, "hostkey", *explain_host_key(host.message)))
        elif host.status == "unreachable":
            cause, hint = explain_unreachable(host.message)
            # A host that refused one more session answered: busy, not gone (exit 1 or 3, not 4).
            status = "failed" if refused_session(host.message) else "unreachable"
            result.hosts.append(HostResult(shown, status, cause, hint))
        elif host.status == "failed":
            result.hosts.append(HostResult(shown, "failed", *explain_failure(host.message)))
        else:
            result.hosts.append(HostResult(shown, "ok", changed=host.changed))
    return result, outcome.data


def _shown_task(selection: Selection, on_task):
    if on_task is None:
        return None
    return lambda host, task, path: on_task(selection.shown(host), task, path)


def _run_error(text: str) -> str:
    """The sentence of an Ansible [ERROR] block, without the file excerpt that follows it."""
    line = first_line(text.replace("[ERROR]:", "").replace("ERROR!", "").strip(), 300)
    return f"Ansible failed: {line}" if line else ""


def kernels_of(data: dict, selection: Selection, result: CommandResult) -> None:
    """Attach the rk_kernels and rk_python set_stats data to each host's result."""
    by_shown = {selection.shown(n): n for n in selection.limit}
    for host in result.hosts:
        name = by_shown[host.host]
        host.kernels = sorted(
            (dict(info, name=k) for k, info in (data.get("rk_kernels", {}).get(name) or {}).items()),
            key=lambda k: k["name"],
        )
        host.python = (data.get("rk_python") or {}).get(name)
        host.connect = (data.get("rk_connect") or {}).get(name)
