"""A cache of what rk asked the user's inventory, so a command needs not import Ansible for it.

Parsing an inventory in-process costs about 0.7 s, nearly all of it importing Ansible, and
ansible-playbook parses it again anyway. The answers (host names, groups, connection variables)
are kept under the user's cache dir, keyed by everything they depend on: the content of every
inventory file and of the group_vars/host_vars beside it, the ANSIBLE_* environment, and the
versions of rk and Ansible. A dynamic source (an executable script or an inventory plugin's
config) can change without any file changing: it is never cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from rk import __version__
from rk.paths import ensure_private_dir

_KEEP = 16  # cache entries kept; older ones are removed when a new one is written
_VARS_DIRS = ("group_vars", "host_vars")
# Ansible's plugin-config inventories name their plugin at the top level.
_PLUGIN_MARK = b"\nplugin:"


def _cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return ensure_private_dir(Path(user_cache_dir("rk")) / "inventory")


def _files_of(source: Path) -> list[Path] | None:
    """Every file the answers for `source` depend on, or None when the source is dynamic."""
    if source.is_dir():
        inventory_files = [p for p in sorted(source.rglob("*")) if p.is_file()]
        dynamic = [p for p in inventory_files if not set(p.relative_to(source).parts[:1]) & set(_VARS_DIRS)]
        extra: list[Path] = []
    else:
        inventory_files = dynamic = [source]
        extra = [p for d in _VARS_DIRS for p in sorted((source.parent / d).rglob("*")) if p.is_file()]
    for path in dynamic:
        if os.stat(path).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
            return None  # an inventory script
        head = b"\n" + path.read_bytes()[:65536]
        if _PLUGIN_MARK in head:
            return None  # an inventory plugin (cloud, constructed, ...)
    return inventory_files + extra


def key(sources: list[Path]) -> str | None:
    """The cache key for these inventory sources, or None when they must not be cached."""
    digest = hashlib.sha256()
    try:  # ansible.release is a tiny module: this does not import Ansible itself
        from ansible.release import __version__ as ansible_version
    except ImportError:
        return None
    digest.update(f"rk {__version__} ansible {ansible_version}\n".encode())
    for name in sorted(os.environ):
        if name.startswith("ANSIBLE_"):
            digest.update(f"env {name}={os.environ[name]}\n".encode())
    for source in sources:
        try:
            files = _files_of(source)
            if files is None:
                return None
            digest.update(f"source {source}\n".encode())
            for path in files:
                digest.update(f"file {path} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
        except OSError:
            return None  # unreadable: let Ansible say what is wrong
    return digest.hexdigest()


def load(cache_key: str) -> dict[str, dict]:
    """{pattern: answer} saved under this key (empty when none, or damaged)."""
    try:
        path = _cache_dir() / f"{cache_key}.json"
        answers = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return answers if isinstance(answers, dict) else {}


def save(cache_key: str, answers: dict[str, dict]) -> None:
    """Write atomically (0600); drop the oldest entries beyond _KEEP. Failure only costs speed."""
    try:
        directory = _cache_dir()
        temporary = directory / f".{cache_key}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(answers, f)
        os.replace(temporary, directory / f"{cache_key}.json")
        entries = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[_KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass
