"""An interpreter that can run CurveZMQ-encrypted kernels (ipykernel >= 7.3) on this machine.

The test venv cannot be it: spyder-kernels 3.1, which the Spyder tests need, caps ipykernel
below 7. So a venv of its own is made once from the curve wheelhouse (cp311 manylinux wheels,
which this Debian 12 controller runs too) and cached beside the wheelhouses.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

from tests.hosts.images import cache_dir
from tests.hosts.wheelhouse import CURVE_REQUIREMENTS, ensure_wheelhouse


def curve_wheelhouse() -> Path:
    return ensure_wheelhouse(CURVE_REQUIREMENTS)


def curve_python() -> Path:
    """The python of a cached venv with ipykernel >= 7.3, made once from curve_wheelhouse()."""
    wheels = curve_wheelhouse()
    venv = cache_dir() / f"venv-{wheels.name}"
    python = venv / "bin" / "python"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
                            str(wheels), *CURVE_REQUIREMENTS], check=True, capture_output=True)
            (venv / ".complete").touch()
    return python
