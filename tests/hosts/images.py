"""Local podman images for SSH test hosts, built from a debootstrapped Debian rootfs.

No image registry is reachable, so every image is built here: `bare` from a debootstrap
rootfs imported with `podman import`, the others derived from it by running apt in a
container and committing it. An image's tag is a hash of its recipe (and of its parent's
tag), so a changed recipe builds a new image and an unchanged one is reused between runs.
A file lock per image keeps two concurrent test sessions from building the same one twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = "localhost/rk-test"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Flags every `podman run` needs on these machines: crun fails on hybrid cgroups,
# and runc is denied setrlimit without explicit limits.
RUN_FLAGS = ("--runtime", "runc")
ULIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")

BARE_PACKAGES = ("openssh-server", "sudo", "ca-certificates", "iproute2")

# Run inside the debootstrapped rootfs (chroot) before it is imported.
BARE_SETUP = r"""
set -eu
useradd --create-home --home-dir /home/rk --shell /bin/bash rk
printf 'rk ALL=(ALL) NOPASSWD:ALL\n' > /etc/sudoers.d/rk
chmod 0440 /etc/sudoers.d/rk
# Each host gets its own host key when it is created; none is baked into the image.
rm -f /etc/ssh/ssh_host_*
# Client keys live outside home directories so a test may mount any home it likes.
cat > /etc/ssh/sshd_config.d/rk-test.conf <<'CONF'
HostKey /etc/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /etc/ssh/rk-test-authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
CONF
apt-get clean
rm -rf /var/lib/apt/lists/*
"""

# UserStopDelaySec=infinity: on this cgroup v1 machine the container's systemd never hears that
# a cgroup emptied (podman masks release_agent), so stopping a user's systemd after their last
# logout hangs for its 2 min stop timeout, and every login of that user waits for it.
SYSTEMD_SETUP = r"""
mkdir -p /etc/systemd/logind.conf.d
printf '[Login]\nKillUserProcesses=yes\nUserStopDelaySec=infinity\n' > /etc/systemd/logind.conf.d/rk-test.conf
"""

APT_INSTALL = (
    "set -eu; apt-get update -qq; "
    "DEBIAN_FRONTEND=noninteractive apt-get install -qq -y --no-install-recommends {packages}"
    " >/dev/null; apt-get clean; rm -rf /var/lib/apt/lists/*"
)


@dataclass(frozen=True)
class Recipe:
    """How to build one image: either the bare base or apt packages on top of a parent,
    then an optional shell `setup` run in the same container."""

    name: str
    parent: str | None = None
    packages: tuple[str, ...] = ()
    setup: str = ""


RECIPES = {
    "bare": Recipe("bare"),
    "python": Recipe("python", parent="bare",
                     packages=("python3", "python3-venv", "python3-ipykernel")),
    # python3 without the venv module (and so without ensurepip), as on many servers
    # where the user cannot install python3-venv.
    "novenv": Recipe("novenv", parent="bare", packages=("python3",)),
    # systemd as PID 1 with logind, and sshd sessions registered by pam_systemd; logind kills
    # a user's processes when their session ends (start it with start_hosts(systemd=True)).
    "systemd": Recipe("systemd", parent="python",
                      packages=("systemd", "systemd-sysv", "dbus", "libpam-systemd"),
                      setup=SYSTEMD_SETUP),
}


# Resolved at import, before any test points HOME elsewhere, so that concurrent sessions
# share the same locks and caches.
CACHE_DIR = Path(os.environ.get("RK_TEST_CACHE") or Path.home() / ".cache" / "rk-tests")


def cache_dir() -> Path:
    """Where test artefacts that outlive a session are kept (locks, wheelhouses)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return CACHE_DIR


def podman(*args: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("check", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("capture_output", True)
    try:
        return subprocess.run(["podman", *args], **kwargs)
    except subprocess.CalledProcessError as error:
        raise RuntimeError(
            f"podman {' '.join(args[:3])} ... failed ({error.returncode}): {error.stderr}"
        ) from error


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def image_tag(name: str) -> str:
    """The recipe hash of an image: changes whenever it or any ancestor's recipe does."""
    recipe = RECIPES[name]
    if recipe.parent is None:
        return _digest(SUITE, MIRROR, *BARE_PACKAGES, BARE_SETUP)
    # The setup joins the hash only when there is one: older recipes keep their tags.
    return _digest(image_ref(recipe.parent), APT_INSTALL, *recipe.packages,
                   *((recipe.setup,) if recipe.setup else ()))


def image_ref(name: str) -> str:
    return f"{REPOSITORY}-{name}:{image_tag(name)}"


def ensure_image(name: str) -> str:
    """Return the reference of image `name`, building it (and its parents) if missing."""
    recipe = RECIPES[name]
    if recipe.parent is not None:
        ensure_image(recipe.parent)
    ref = image_ref(name)
    if _exists(ref):
        return ref
    lock_path = cache_dir() / f"image-{name}-{image_tag(name)}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _exists(ref):  # another session may have built it while we waited
            if recipe.parent is None:
                _build_bare(ref)
            else:
                _build_derived(ref, image_ref(recipe.parent), recipe.packages, recipe.setup)
    return ref


def _exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


def _build_bare(ref: str) -> None:
    # /var/tmp, not /tmp: the rootfs is a few hundred MB and /tmp may be a small tmpfs.
    rootfs = Path(tempfile.mkdtemp(prefix="rk-test-rootfs-", dir="/var/tmp"))
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BARE_PACKAGES)}",
             SUITE, str(rootfs), MIRROR],
            check=True, capture_output=True, text=True,
        )
        subprocess.run(["chroot", str(rootfs), "sh", "-c", BARE_SETUP],
                       check=True, capture_output=True, text=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            podman("import", "-", ref, stdin=tar.stdout)
        finally:
            tar.stdout.close()
            if tar.wait() != 0:
                raise RuntimeError(f"tar of {rootfs} failed")
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"building {ref} failed: {error.stderr}") from error
    finally:
        _remove_rootfs(rootfs)


def _remove_rootfs(rootfs: Path) -> None:
    # A debootstrap that died midway can leave /proc or /sys mounted inside the rootfs;
    # unmount them first so rmtree never walks into a live filesystem.
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mountpoint in sorted((m for m in mounts if m.startswith(f"{rootfs}/")), reverse=True):
        subprocess.run(["umount", "-l", mountpoint], check=False)
    shutil.rmtree(rootfs, ignore_errors=True)


def _build_derived(ref: str, parent_ref: str, packages: tuple[str, ...], setup: str = "") -> None:
    builder = f"rk-test-build-{uuid.uuid4().hex[:8]}"
    script = APT_INSTALL.format(packages=" ".join(packages)) + "\n" + setup
    try:
        podman(*RUN_FLAGS, "run", *ULIMITS, "--name", builder, parent_ref, "sh", "-c", script)
        podman("commit", "--quiet", builder, ref)
    finally:
        podman("rm", "--force", "--ignore", builder, check=False)
