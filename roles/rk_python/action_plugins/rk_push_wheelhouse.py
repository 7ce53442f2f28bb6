"""Action plugin rk_push_wheelhouse: the controller's wheelhouse, unpacked in the host's cache.

What five tasks did (a pipe lookup that packed the tar, a set_fact naming the host directory,
ansible.builtin.file for the cache directory, ansible.builtin.copy of the tar and a command
that unpacked it), in one task: about 3.5 s of a cold provision, where the hand recipe's
`tar -cf - | ssh host 'tar -xf -'` takes 0.55 s. Each of those module tasks started Python on
the host; copy started it several times.

On the controller the wheelhouse is packed once into `<controller_cache>/wheelhouse-<hash>.tar`,
named by the directory's listing (names, sizes, mtimes) and written with fixed metadata through
a temporary file and a rename, so repeated runs and parallel hosts share one file.

On the host only shell commands run, through the connection (no Python needed): one that says
whether `<dest>/wheelhouse-<hash>` is already there (then nothing is sent), else one that makes
the 0700 cache directory if missing, unpacks the tar streamed on its stdin into
`wheelhouse-<hash>.part` (a stale one removed first) and renames that into place, so a cut run
never leaves a half directory under the final name. The ssh connection writes `in_data` to the
ssh process's stdin as bytes through a plain pipe (no pty when there is input), so the tar
arrives intact; the local connection hands it to `communicate()` the same way. But in_data is
one bytes object in memory, per host: a tar above `stream_limit` (64 MiB) is put beside its
directory by the connection's own file transfer (sftp or scp, from disk) after a command that
makes the cache directory, and the unpack command reads that file (two more round trips,
nothing beside a large transfer).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import tarfile
import tempfile
import time

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
module: rk_push_wheelhouse
short_description: Unpack a controller wheelhouse directory into the host's cache directory.
options:
  src: {description: Controller directory of wheels ("~" expanded)., type: str, required: true}
  controller_cache: {description: Controller directory for the packed tar ("~" expanded)., type: str, required: true}
  dest: {description: Absolute host path of the cache directory (made 0700 if missing)., type: str, required: true}
  stream_limit:
    description: Tars of more bytes go by the connection's file transfer, not held in memory for the ssh pipe.
    type: int
    default: 67108864
notes:
  - Returns C(path), the host directory holding the wheels.
  - Honours become as the task has it (rk_python runs it with ansible_become false).
"""

# The tar comes on stdin ($t empty) or, when it was put beside its directory by the
# connection's file transfer, from the file $t (removed afterwards, whatever happened).
# The whole stdin is written to the ssh process before its output is read: a command that
# stops early must still read it to the end, or the controller sees a broken pipe instead of
# the command's own error. Paths are absolute: nothing here expands "~".
UNPACK = r"""
fail() { if [ -n "$t" ]; then rm -f "$t"; else cat >/dev/null; fi; exit 1; }
umask 022
if [ ! -d "$c" ]; then (umask 077 && mkdir -p "$c") || fail; fi
rm -rf "$d.part" || fail
mkdir "$d.part" || fail
tar -xf "${t:--}" -C "$d.part" || fail
if [ -n "$t" ]; then rm -f "$t"; fi
if [ -d "$d" ]; then
  rm -rf "$d.part"
else
  mv "$d.part" "$d" || exit 1
fi
echo RK:unpacked
# Older wheelhouses (and what cut runs left) are litter once a new one is in place; one used
# lately may still feed another run's pip (CHECK touches a wheelhouse it finds): kept.
for old in "$c"/wheelhouse-*; do
  [ "$old" = "$d" ] && continue
  [ -n "$(find "$old" -maxdepth 0 -mmin +KEEP_MIN 2>/dev/null)" ] && rm -rf "$old"
done
exit 0
"""

# Before a file transfer: the cache directory it lands in.
MAKE_CACHE = r"""
if [ -d "$c" ] || (umask 077 && mkdir -p "$c"); then echo RK:cache; fi
"""

# Another wheelhouse (or tar) untouched this long is no run's: removed when a new one arrives.
KEEP_MIN = 60
UNPACK = UNPACK.replace("KEEP_MIN", str(KEEP_MIN))

# Above this size the tar goes by the connection's file transfer (sftp or scp, read from disk
# as it goes) instead of the ssh pipe, which holds the whole tar in memory, per host.
STREAM_LIMIT = 64 << 20

CHECK = r"""
if [ -d "$d" ]; then touch "$d" 2>/dev/null; echo RK:present
elif command -v tar >/dev/null 2>&1; then echo RK:absent
else echo RK:notar
fi
"""


def listing_digest(source: str) -> tuple[list[str], str]:
    """The wheelhouse's file names (sorted) and the hash of its listing that names the tar."""
    names = sorted(n for n in os.listdir(source) if os.path.isfile(os.path.join(source, n)))
    digest = hashlib.sha256()
    for name in names:
        st = os.stat(os.path.join(source, name))
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return names, f"wheelhouse-{digest.hexdigest()[:16]}"


def pack(source: str, names: list[str], target: str) -> None:
    """Write the tar once, atomically, with fixed metadata (mode 0644, owner 0, mtime 0)."""
    if os.path.exists(target):
        os.utime(target)  # in use: prune() of another run keeps it
        return
    cache = os.path.dirname(target)
    os.makedirs(cache, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=cache, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w") as tar:
            for name in names:
                info = tar.gettarinfo(os.path.join(source, name), arcname=name)
                info.mtime, info.mode = 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(os.path.join(source, name), "rb") as wheel:
                    tar.addfile(info, wheel)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    prune(cache, keep=os.path.basename(target))


def prune(cache: str, keep: str) -> None:
    """Remove the controller's other wheelhouse tars (and killed runs' partial files) untouched for KEEP_MIN."""
    horizon = time.time() - KEEP_MIN * 60
    for name in os.listdir(cache):
        path = os.path.join(cache, name)
        if name == keep or not (name.startswith("wheelhouse-") and name.endswith(".tar") or name.endswith(".part")):
            continue
        with contextlib.suppress(OSError):
            if os.lstat(path).st_mtime < horizon:
                os.unlink(path)


def tail(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-2:]) if lines else "no output"


class ActionModule(ActionBase):
    # No remote temporary directory: nothing is copied as a file, and making one costs a round trip.
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("src", "controller_cache", "dest", "stream_limit"))

    def _shell(self, script: str, in_data: bytes | None = None, **values: str) -> dict:
        assignments = "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())
        # Stripped: Ansible appends " && sleep 0", which must not start a line of its own.
        # sudoable only when the task escalates: it then runs as become_user, as modules do.
        # Without become it is False, so ssh gets no -tt (a pty would mix stderr into stdout).
        return self._low_level_execute_command(
            (assignments + script).strip(), in_data=in_data,
            sudoable=self._connection.become is not None)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        missing = [name for name in ("src", "controller_cache", "dest") if not args.get(name)]
        if missing:
            raise AnsibleActionFail(f"rk_push_wheelhouse needs {', '.join(missing)}")
        source = os.path.expanduser(str(args["src"]))
        cache = os.path.expanduser(str(args["controller_cache"]))
        dest = str(args["dest"]).rstrip("/") or "/"
        host = (task_vars or {}).get("inventory_hostname", "the host")
        if not os.path.isdir(source):
            raise AnsibleActionFail(f"the wheelhouse {source} is not a directory on the controller")
        if not dest.startswith("/"):
            raise AnsibleActionFail(f"dest must be an absolute path on the host, not {dest!r}")

        names, name = listing_digest(source)
        path = f"{dest}/{name}" if dest != "/" else f"/{name}"
        result.update(path=path, changed=False)

        check = self._shell(CHECK, d=path)
        said = check["stdout"].split()
        if "RK:present" in said:
            return result
        if "RK:notar" in said:
            raise AnsibleActionFail(
                f"tar is missing on {host}, and rk unpacks the wheelhouse with it. "
                f"Fix: install tar on the host.")
        if "RK:absent" not in said:
            raise AnsibleActionFail(
                f"could not look for {path} on {host} "
                f"(rc {check['rc']}: {tail(check['stderr'] or check['stdout'])})")
        result["changed"] = True
        if self._task.check_mode:
            return result

        tar = os.path.join(cache, name + ".tar")
        try:
            pack(source, names, tar)
            size = os.path.getsize(tar)
            limit = int(args.get("stream_limit", STREAM_LIMIT))
            data = None
            if size <= limit:
                with open(tar, "rb") as packed:
                    data = packed.read()
        except (OSError, ValueError) as exc:
            raise AnsibleActionFail(
                f"could not pack the wheelhouse {source} into {tar} on the controller ({exc}). "
                f"Fix: make rk_python_controller_cache a writable directory with free space.") from None
        result["tar"] = tar
        fix = (f"Fix: free space there and make {dest} writable by the connecting user, "
               f"or set rk_python_cache_dir to such a directory.")
        if data is not None:
            unpack = self._shell(UNPACK, in_data=data, d=path, c=dest, t="")
        else:
            made = self._shell(MAKE_CACHE, c=dest)
            if "RK:cache" not in made["stdout"].split():
                raise AnsibleActionFail(
                    f"could not make the directory {dest} on {host} "
                    f"(rc {made['rc']}: {tail(made['stderr'] or made['stdout'])}). {fix}")
            try:
                self._connection.put_file(tar, f"{path}.tar.part")
            except AnsibleError as exc:
                raise AnsibleActionFail(
                    f"could not send the wheelhouse to {path}.tar.part on {host} ({tail(str(exc))}). "
                    f"{fix}") from None
            unpack = self._shell(UNPACK, d=path, c=dest, t=f"{path}.tar.part")
        if "RK:unpacked" not in unpack["stdout"].split():
            raise AnsibleActionFail(
                f"could not unpack the wheelhouse into {path} on {host} "
                f"(rc {unpack['rc']}: {tail(unpack['stderr'] or unpack['stdout'])}). {fix}")
        return result
