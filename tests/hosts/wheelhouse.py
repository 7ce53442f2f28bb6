"""A directory of wheels for installing ipykernel on a host that has no package index."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .images import cache_dir

# The test hosts run Debian bookworm: CPython 3.11 on glibc 2.36. pip matches --platform
# tags exactly (it only widens the legacy manylinux2014/2010 aliases), so every manylinux
# tag that runs on glibc 2.36 is listed.
PYTHON_VERSION = "3.11"
PLATFORMS = ["manylinux2014_x86_64",
             *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1))]
# pip is included so that a host without the venv module can still run pip from its wheel;
# spyder-kernels in the range of roles/rk_python/defaults/main.yml, for `rk up --spyder`.
REQUIREMENTS = ("ipykernel", "pip", "spyder-kernels>=3.1.0,<3.2.0")
# spyder-kernels 3.1 caps ipykernel below 7, so transport encryption (ipykernel >= 7.3) has its own.
CURVE_REQUIREMENTS = ("ipykernel>=7.3,<8", "pip")


def ensure_wheelhouse(requirements: tuple[str, ...] = REQUIREMENTS) -> Path:
    """Return a cached wheelhouse for `requirements`, downloading it once per spec."""
    argv = ["download", "--quiet", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", PYTHON_VERSION,
            *(f"--platform={platform}" for platform in PLATFORMS), *requirements]
    key = hashlib.sha256("\0".join(argv).encode()).hexdigest()[:16]
    target = cache_dir() / f"wheelhouse-{key}"
    with open(cache_dir() / f"wheelhouse-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            # Download beside the target and rename, so no one sees a half-filled directory.
            partial = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=cache_dir()))
            try:
                subprocess.run([sys.executable, "-m", "pip", *argv, "--dest", str(partial)],
                               check=True, capture_output=True, text=True)
                partial.chmod(0o755)  # mkdtemp's 0700 would follow the wheels onto hosts
                partial.rename(target)
            except subprocess.CalledProcessError as error:
                raise RuntimeError(f"pip download failed: {error.stderr}") from error
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    return target
