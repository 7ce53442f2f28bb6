"""The rk_kernel module on a full or read-only disk (reliability case 18's module branches).

Each case runs the module file as Ansible does, inside its own mount namespace
(`unshare --map-root-user --mount`) where rk's state root is a tmpfs of 16 pages: full but for
0, 1 or 2 pages, or mounted read-only. The kernel is real (this interpreter's ipykernel), so are
the ENOSPC and EROFS. What the module left is listed from inside the namespace before it ends;
kernel processes are looked for in /proc, outside.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rk.errors import explain_failure

MODULE_PATH = Path(__file__).resolve().parents[2] / "roles/rk_kernel/library/rk_kernel.py"
PAGE = os.sysconf("SC_PAGE_SIZE")
DISK_PAGES = 16
SEPARATOR = "--- left on the disk ---"


def on_a_small_disk(tmp_path, mount_options, before="", **args):
    """Run the module (state=started, name k) with its state root on a fresh tmpfs.

    Returns (module result, files left on the tmpfs other than the .lock, the mount point).
    """
    disk = tmp_path / "disk"
    disk.mkdir()
    argfile = tmp_path / "args.json"
    module_args = {"name": "k", "python": sys.executable, "state_root": str(disk / "rk"),
                   "start_timeout": 20}
    module_args.update(args)
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    script = (f"mount -t tmpfs -o {mount_options},size={DISK_PAGES * PAGE} tmpfs {disk} && "
              f"cd {disk} && {before} "
              f"{shlex.quote(sys.executable)} {MODULE_PATH} {argfile}; "
              f"echo {shlex.quote(SEPARATOR)}; find {disk} -type f ! -name .lock ! -name filler")
    out = subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", script],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                         check=False)
    assert SEPARATOR in out.stdout, out.stderr
    result, left = out.stdout.split(SEPARATOR)
    return json.loads(result), left.split(), disk


def kernels_using(disk):
    """Pids of live processes whose command line names a file under `disk`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if f"{disk}/" in argv:
                found.append(int(entry.name))
    return found


@pytest.fixture
def no_orphans():
    """Kills whatever a failed assertion would otherwise leave running."""
    disks = []
    yield disks.append
    for disk in disks:
        for pid in kernels_using(disk):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.fast
# 2 pages free is not here: whether the kernel's own writes (its log, the ports in kernel.json)
# then still fit varies from run to run (a clean-clone CI run saw a kernel start). The
# end-to-end form (tests/reliability/test_remote_faults.py) keeps that case.
@pytest.mark.parametrize("free_pages", [0, 1], ids=lambda n: f"{n}-pages-free")
def test_a_full_disk_is_one_sentence_with_a_hint_and_leaves_no_process_and_no_file(tmp_path, no_orphans, free_pages):
    # 0: kernel.json cannot be written; 1: the kernel runs but state.json cannot be written.
    filler = (DISK_PAGES - free_pages) * PAGE
    result, left, disk = on_a_small_disk(tmp_path, "rw,mode=0700", before=f"fallocate -l {filler} filler &&")
    no_orphans(disk)
    assert result.get("failed"), result
    first, *_, last = result["msg"].splitlines()
    assert "no space left on its disk" in first or "is full" in first, first
    assert last == ("hint: free some space there, or set rk_kernel_state_root to a directory on "
                    "another disk")
    assert left == []
    assert kernels_using(disk) == []


@pytest.mark.fast
def test_a_read_only_state_root_is_one_sentence_with_a_hint(tmp_path):
    result, left, _ = on_a_small_disk(tmp_path, "ro")
    assert result.get("failed"), result
    assert result["msg"] == (f"cannot write {tmp_path}/disk/rk on {os.uname().nodename}: its file system "
                             "is read-only\nhint: set rk_kernel_state_root to a directory of yours on a "
                             "writable disk")
    assert left == []


@pytest.mark.fast
def test_a_hint_line_under_a_module_message_becomes_rks_hint():
    assert explain_failure("cannot write /s on h: its file system is read-only\nhint: set X") == \
        ("cannot write /s on h: its file system is read-only", "set X")
    assert explain_failure("something odd happened")[1] == "run again with -v to see Ansible's output"
