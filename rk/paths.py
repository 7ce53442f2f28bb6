"""Local paths: Jupyter's runtime directory for connection files, XDG for rk's own state."""

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


def local_connection_file(inventory_host: str, kernel: str) -> Path:
    return runtime_dir() / f"kernel-rk-{safe_name(inventory_host)}-{safe_name(kernel)}.json"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` 0700 if missing; refuse one that others could tamper with."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
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


def local_connection_files(inventory_host: str) -> dict[str, Path]:
    """rk's connection files for one host in the runtime dir, by kernel name."""
    prefix = f"kernel-rk-{safe_name(inventory_host)}-"
    runtime = runtime_dir()
    if not runtime.is_dir():
        return {}
    return {p.name[len(prefix) : -len(".json")]: p for p in sorted(runtime.glob(prefix + "*.json"))}
