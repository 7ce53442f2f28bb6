"""Local paths: Jupyter's runtime directory for connection files, XDG for rk's own state."""

import json
import os
import re
import stat
from pathlib import Path

from rk.errors import RkError


def runtime_dir() -> Path:
    """Jupyter's runtime dir as jupyter_core computes it (JUPYTER_RUNTIME_DIR honoured)."""
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir())


def safe_name(name: str) -> str:
    """A host or kernel name as it appears in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


# Fetched files (the host's ports, for front ends that tunnel themselves) and tunnel files
# (127.0.0.1 with rk's local ports: use as is). Both match Jupyter's `kernel-*.json`.
FETCHED = "kernel-rk-"
TUNNEL = "kernel-rktunnel-"


def local_connection_file(inventory_host: str, kernel: str, prefix: str = FETCHED) -> Path:
    return runtime_dir() / f"{prefix}{safe_name(inventory_host)}-{safe_name(kernel)}.json"


def tunnel_connection_file(inventory_host: str, kernel: str) -> Path:
    return local_connection_file(inventory_host, kernel, TUNNEL)


def state_dir() -> Path:
    """rk's own state on this machine (XDG_STATE_HOME honoured), 0700."""
    from platformdirs import user_state_dir

    return ensure_private_dir(Path(user_state_dir("rk")))


def ensure_private_dir(path: Path) -> Path:
    """Create `path` 0700 if missing; refuse one that others could tamper with.

    Missing parents are made 0700 as well: mkdir(parents=True) would make them 0777 minus the
    umask, world-writable under umask 000, and whoever can write a parent can swap `path`.
    """
    missing = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    for new in reversed(missing):
        try:
            os.mkdir(new, 0o700)
        except FileExistsError:
            continue  # made meanwhile by another rk; checked below when it is `path`
        os.chmod(new, 0o700)  # mkdir's mode is masked by the umask
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise RkError(f"{path} is a symbolic link", "rk keeps connection files only in a real directory you own")
    if st.st_uid != os.getuid():
        raise RkError(f"{path} is owned by someone else (uid {st.st_uid})", "use a directory you own (JUPYTER_RUNTIME_DIR)")
    if st.st_mode & 0o022:
        raise RkError(
            f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})",
            f"chmod 700 {path}",
        )
    return path


def local_connection_files(inventory_host: str, prefix: str = FETCHED) -> dict[str, Path]:
    """rk's connection files for one host in the runtime dir, by kernel name.

    Ownership is read from the `rk_host`/`rk_kernel` fields rk adds to each file it keeps: file
    names alone are ambiguous (host "a-b" kernel "c" and host "a" kernel "b-c" look alike).
    Unreadable or foreign files are skipped, never fatal.
    """
    runtime = runtime_dir()
    found = {}
    for path in sorted(runtime.glob(f"{prefix}*.json")) if runtime.is_dir() else []:
        try:
            if path.is_symlink() or path.stat().st_size > 65536:
                continue
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and info.get("rk_host") == inventory_host and isinstance(info.get("rk_kernel"), str):
            found[info["rk_kernel"]] = path
    return found


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with a 0600 file, whatever the umask."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
