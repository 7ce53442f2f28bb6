"""Local paths: Jupyter's runtime directory for connection files, XDG for rk's own state."""

import errno
import json
import os
import re
import stat
import time
from pathlib import Path

from rk.errors import RkError


def runtime_dir() -> Path:
    """Jupyter's runtime dir as jupyter_core computes it (JUPYTER_RUNTIME_DIR honoured)."""
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir())


def safe_name(name: str) -> str:
    """A host or kernel name as it appears in a file name ('@' included: see file_name)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


# Fetched files (the host's ports, for front ends that tunnel themselves) and tunnel files
# (127.0.0.1 with rk's local ports: use as is). Both match Jupyter's `kernel-*.json`.
FETCHED = "kernel-rk-"
TUNNEL = "kernel-rktunnel-"


def file_name(inventory_host: str, kernel: str, prefix: str = FETCHED) -> str:
    """`<prefix><host>@<kernel>.json`; roles/rk_kernel/tasks/fetch.yml builds the same name.

    '@' is in no safe name, so host "gpu" kernel "2-default" and host "gpu-2" kernel "default"
    get two names (with '-' between them they shared one, issue 12).
    """
    return _NAME.format(prefix=prefix, host=safe_name(inventory_host), kernel=safe_name(kernel))


def host_glob(inventory_host: str, prefix: str = FETCHED) -> str:
    """A glob of every file_name of one host: no other host's names match it."""
    return _NAME.format(prefix=prefix, host=safe_name(inventory_host), kernel="*")


_NAME = "{prefix}{host}@{kernel}.json"


def local_connection_file(inventory_host: str, kernel: str, prefix: str = FETCHED) -> Path:
    return runtime_dir() / file_name(inventory_host, kernel, prefix)


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

    Ownership is read from the `rk_host`/`rk_kernel` fields rk adds to each file it keeps, never
    from names (older rk named host "a-b" kernel "c" and host "a" kernel "b-c" alike; safe_name
    maps "a b" and "a_b" alike). Files under older rk's names are renamed on the way.
    Files of other hosts are skipped; corrupt ones (rk writes its files atomically, so a broken
    one is damage, not a write in progress) and symlinks are quarantined.
    """
    runtime = runtime_dir()
    found = {}
    for path in sorted(runtime.glob(f"{prefix}*.json")) if runtime.is_dir() else []:
        info = read_json_or_quarantine(path)
        if not (isinstance(info, dict) and isinstance(info.get("rk_host"), str) and isinstance(info.get("rk_kernel"), str)):
            continue
        host, kernel = info["rk_host"], info["rk_kernel"]
        path = _rename_old_name(path, host, kernel, info.get("key"), prefix)
        # A file under its own name beats a copy under another (a user's `cp`).
        if host == inventory_host and (kernel not in found or path.name == file_name(host, kernel, prefix)):
            found[kernel] = path
    return found


def _rename_old_name(path: Path, host: str, kernel: str, key, prefix: str) -> Path:
    """Move a file of older rk (`<prefix><host>-<kernel>.json`) to its file_name, once.

    os.link never replaces nor follows anything. A file already at the new name was written by
    this rk from the kernel's current state and wins: the old copy goes if it holds the same
    key, else it is moved aside (a key is never lost). Returns where the kernel's file is now.
    """
    wanted = path.with_name(file_name(host, kernel, prefix))
    if path.name != f"{prefix}{safe_name(host)}-{safe_name(kernel)}.json":
        return path  # not an old name (a current one, or a copy the user made: left alone)
    for _ in range(2):  # a second time if the file at the new name was quarantined
        try:
            os.link(path, wanted, follow_symlinks=False)
        except FileExistsError:
            current = read_json_or_quarantine(wanted)
            if current is None:
                continue
            if (current.get("rk_host"), current.get("rk_kernel")) != (host, kernel):
                return path  # another host's whose safe name is the same ("a b", "a_b"): keep both
            if current.get("key") == key:
                path.unlink(missing_ok=True)
            else:
                quarantine(path, f"is an older copy of {wanted.name}, with another key")
            return wanted
        except OSError:
            return path  # no hard links here: the file keeps its old name (its fields still count)
        path.unlink(missing_ok=True)  # already gone if another rk renamed it at the same time
        return wanted
    return path


MAX_STATE_BYTES = 65536

# Messages about files rk moved aside, collected for the command that runs (see new_notes).
_notes: list[str] = []


def new_notes() -> list[str]:
    """Collect the quarantine messages from now on in a new list (one command's) and return it."""
    global _notes
    _notes = []
    return _notes


def read_json_or_quarantine(path: Path) -> dict | None:
    """A JSON object rk wrote, or None when `path` is missing or was quarantined.

    Never follows a symlink and never opens anything but a regular file (a FIFO would block).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            quarantine(path, "is a symbolic link")
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        elif st.st_size > MAX_STATE_BYTES:
            problem = f"is larger than {MAX_STATE_BYTES} bytes"
        else:
            data, problem = _parse_object(f.read())
            if problem is None:
                return data
    quarantine(path, problem)
    return None


def _parse_object(raw: bytes) -> tuple[dict | None, str | None]:
    if not raw.strip():
        return None, "is empty"
    try:
        data = json.loads(raw)
    except ValueError:  # UnicodeDecodeError included
        return None, "is not valid JSON (truncated?)"
    if not isinstance(data, dict):
        return None, "is not a JSON object"
    return data, None


def quarantine(path: Path, problem: str) -> Path | None:
    """Move a corrupt or planted file aside (never deleted: it may hold a key) and note it.

    The new name, `<name>.corrupt-<UTC time>`, matches none of rk's or Jupyter's globs. A
    symlink is moved as a link; its target is never touched.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(100):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}" + (f"-{n}" if n else ""))
        if os.path.lexists(aside):
            continue
        try:
            os.rename(path, aside)  # rename moves the link itself, never its target
        except FileNotFoundError:
            return None  # another rk moved it first
        except OSError as exc:
            _notes.append(f"{path} {problem} and could not be moved aside ({exc.strerror}); rk ignores it: remove it")
            return None
        if not os.path.islink(aside):
            os.chmod(aside, 0o600)
        _notes.append(f"{path} {problem}: moved it aside to {aside.name} (it may hold a kernel's key: "
                      "delete it once you have looked); `rk up` writes a new one")
        return aside
    return None


def remove_stale_temp_files(directory: Path) -> None:
    """Remove rk's temporary files whose writer died (a killed rk): `.<name>.<pid>.tmp` of
    write_private and `.rk-fetch-<pid>-*` of the fetch. They may hold a key, half written."""
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        match = _TEMP.match(path.name)
        if match and not pid_alive(int(match.group("pid") or match.group("fetcher"))):
            path.unlink(missing_ok=True)


_TEMP = re.compile(r"^\.(?:.+\.(?P<pid>[0-9]+)\.tmp|rk-fetch-(?P<fetcher>[0-9]+)-.*)$")


def pid_alive(pid: int) -> bool:
    """Is a process of this pid running (someone else's counts)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with a 0600 file, whatever the umask.

    A symlink planted at `path` is quarantined first (os.replace would only replace it, never
    write through it, but its owner should hear of it).
    """
    if path.is_symlink():
        quarantine(path, "is a symbolic link")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
