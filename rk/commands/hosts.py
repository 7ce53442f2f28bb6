"""rk hosts: what the inventory (and ad hoc --host values) resolve to. Runs nothing."""

from __future__ import annotations

from rk.commands import base


def hosts(patterns: list[str] | None, options: base.Options | None = None) -> base.CommandResult:
    options = options or base.Options()
    selection = base.resolve(patterns, options)
    result = base.CommandResult(command="hosts")
    for name in selection.limit:
        hostvars = selection.hostvars(name)
        result.hosts.append(
            base.HostResult(
                selection.shown(name),
                "ok",
                connect={
                    "address": hostvars.get("ansible_host", name),
                    "port": hostvars.get("ansible_port"),
                    "user": hostvars.get("ansible_user"),
                    "connection": hostvars.get("ansible_connection", "ssh"),
                    "groups": hostvars.get("groups", []),
                },
            )
        )
    return result
