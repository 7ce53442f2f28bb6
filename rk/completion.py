"""Shell completion for bash and zsh (argcomplete): commands, flags, and inventory host names.

Imported only while a shell asks for completions (`_ARGCOMPLETE` set) or by `rk completion`,
so an ordinary rk command pays nothing for it.
"""

from __future__ import annotations


def hosts(prefix: str, parsed_args, **_) -> list[str]:
    """--host values: inventory hosts and groups (from the inventory cache when it can), localhost."""
    from rk.runner import Inventory
    from rk.targets import inventory_sources

    names = {"localhost"}
    try:
        sources = inventory_sources(getattr(parsed_args, "inventory", None) or [])
        if sources:
            for name, info in Inventory(sources).hosts("all").items():
                names.add(name)
                names.update(info.get("groups", ()))
    except Exception:  # a broken inventory must not break the shell: offer what is known
        pass
    return sorted(n for n in names if n.startswith(prefix))


def complete(parser) -> None:
    """Answer the shell's completion request and exit (argcomplete's protocol)."""
    import argcomplete

    argcomplete.autocomplete(parser)


def shellcode(shell: str) -> str:
    """What `eval "$(rk completion bash)"` (or zsh) loads."""
    import argcomplete

    return argcomplete.shellcode(["rk"], shell=shell)
