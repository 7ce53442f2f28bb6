"""`pip install .` gives a working `rk` anywhere: the Ansible content ships inside the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_the_ansible_content(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("rk_kernels-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("rk/_content/ansible.cfg", "rk/_content/playbooks/up.yml",
                     "rk/_content/roles/rk_kernel/library/rk_kernel.py",
                     "rk/_content/roles/rk_python/tasks/main.yml"):
        assert expected in names, expected
    assert not [n for n in names if n.startswith(("playbooks/", "roles/", "tests/"))], "content outside the package"


def test_pip_install_into_a_new_venv_then_rk_help_from_another_directory(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(REPO)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    helped = subprocess.run([str(venv / "bin" / "rk"), "--help"], cwd=elsewhere, capture_output=True, text=True)
    assert helped.returncode == 0 and helped.stderr == "" and "provision" in helped.stdout
    located = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from rk import content; print(content.playbook('up'))"],
        cwd=elsewhere, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert located.startswith(str(venv)) and Path(located).is_file()
