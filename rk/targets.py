"""Which hosts a command acts on: inventory sources, host patterns and ad hoc hosts.

Inventory sources, first found wins: -i/--inventory (repeatable), RK_INVENTORY (a
colon-separated list), ./inventory/, ~/.config/rk/inventory.yml. A --host that the inventory
does not know is taken ad hoc: `user@host[:port]`, `host:port`, or a name that ssh resolves
(for example an alias in ~/.ssh/config). `localhost` needs no inventory: it runs locally.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rk.errors import UsageError
from rk.paths import safe_name

_ADHOC = re.compile(r"^(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9_.-]*)@)?(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?$")
_PATTERN_CHARS = set("*?!&~,[]")


@dataclass
class Selection:
    """The resolved hosts: inventory names to run on, and the ad hoc ones' variables."""

    inventories: list[Path]
    limit: list[str] = field(default_factory=list)
    adhoc: dict[str, dict] = field(default_factory=dict)
    display: dict[str, str] = field(default_factory=dict)  # inventory name -> what the user typed
    known: dict[str, dict] = field(default_factory=dict)  # inventory hosts' connection variables

    def shown(self, name: str) -> str:
        return self.display.get(name, name)

    def hostvars(self, name: str) -> dict:
        """The connection variables of one selected host (inventory or ad hoc)."""
        return self.adhoc.get(name) or self.known.get(name, {})


def inventory_sources(explicit: list[str] | None) -> list[Path]:
    # Absolute: ansible-runner runs ansible-playbook from its own private directory.
    if explicit:
        paths = [Path(p).expanduser().absolute() for p in explicit]
    elif os.environ.get("RK_INVENTORY"):
        paths = [Path(p).expanduser().absolute() for p in os.environ["RK_INVENTORY"].split(os.pathsep) if p]
    else:
        candidates = [Path("inventory"), Path("~/.config/rk/inventory.yml").expanduser()]
        paths = [next((p for p in candidates if p.exists()), None)]
        paths = [p.resolve() for p in paths if p]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"inventory not found: {', '.join(missing)}", "check the -i path or RK_INVENTORY")
    return paths


def select(hosts: list[str] | None, inventories: list[Path]) -> Selection:
    """Resolve --host values (or every inventory host when none is given)."""
    selection = Selection(inventories=inventories)
    if not hosts:
        if not inventories:
            raise UsageError(
                "no host given and no inventory found",
                "name a host with --host (for example --host localhost or --host user@server) or give -i INVENTORY",
            )
        hosts = ["all"]
    inventory = None
    if inventories and any(_in_inventory_spelling(spec) for spec in hosts):
        from rk.runner import Inventory

        inventory = Inventory(inventories)  # parsed once for all --host values
    for spec in hosts:
        _add(selection, spec.strip(), inventory)
    return selection


def _add(selection: Selection, spec: str, inventory) -> None:
    if not spec:
        raise UsageError("empty --host value")
    known = inventory.hosts(spec) if inventory and _in_inventory_spelling(spec) else {}
    selection.known.update(known)
    if known:
        for name in known:
            if name not in selection.limit:
                selection.limit.append(name)
        return
    if spec == "localhost":
        selection.adhoc["localhost"] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        selection.limit.append("localhost")
        return
    match = _ADHOC.match(spec)
    if not match:
        where = ", ".join(str(p) for p in selection.inventories) or "no inventory"
        raise UsageError(f"host {spec!r} matches nothing in {where}", "check the name, or write it as user@host[:port]")
    name = safe_name(spec)
    hostvars = {"ansible_host": match["host"].strip("[]")}
    if match["user"]:
        hostvars["ansible_user"] = match["user"]
    if match["port"]:
        port = int(match["port"])
        if not 0 < port < 65536:
            raise UsageError(f"bad port in {spec!r}")
        hostvars["ansible_port"] = port
    selection.adhoc[name] = hostvars
    selection.limit.append(name)
    selection.display[name] = spec


def _in_inventory_spelling(spec: str) -> bool:
    """False for the ad hoc spellings user@host and host:port, which skip the inventory."""
    return "@" not in spec and not (":" in spec and not _PATTERN_CHARS & set(spec))
