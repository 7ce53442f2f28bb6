"""The README's "Provisioning lab machines from CI" commands, run exactly as written.

The commands are read from README.md's fenced block, so the test and the documentation cannot
drift apart; only the inventory path and the host limit are replaced by the test host's.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.kernels import execute, ssh_tunnel

pytestmark = pytest.mark.hosts

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECTION = "## Provisioning lab machines from CI"
# The only two things replaced in the README's commands, each with the test host's value.
README_INVENTORY = "-i inventory/hosts.yml"
README_LIMIT = "-l gpu1"


def readme_commands() -> list[str]:
    """The command lines of the first ```sh block of the README's CI section."""
    text = (REPO / "README.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```sh\n(.*?)^```", section, re.M | re.S)
    assert block, f"no ```sh block in README.md's {SECTION!r}"
    return [line for line in block.group(1).splitlines() if line.strip()]


def for_test_host(command: str, inventory: Path, host: str) -> str:
    assert command.count(README_INVENTORY) == 1, command
    command = command.replace(README_INVENTORY, f"-i {inventory}")
    return command.replace(README_LIMIT, f"-l {host}")


@pytest.mark.parametrize("image", ["bare", "novenv"])  # no python3 / Debian's python3, no ipykernel
def test_the_readme_ci_commands_compose_on_a_fresh_host(make_hosts, wheelhouse, tmp_path, image):
    commands = readme_commands()
    # What the README shows, in order; a new or reordered command fails here, visibly.
    assert [re.search(r"playbooks/(\S+)", c).group(1) for c in commands] == [
        "provision.yml", "start_kernel.yml", "fetch_kernel.yml", "status.yml", "stop_kernel.yml"]
    group = make_hosts(n=1, image=image)
    host = group.hosts[0]
    # pip on the test hosts cannot verify PyPI (the proxy's CA): the wheelhouse comes from the
    # inventory, as for an air-gapped lab host (README: rk_python_wheelhouse), not from an -e.
    inventory = yaml.safe_load(group.inventory.read_text())
    inventory["all"]["children"]["testhosts"]["hosts"][host.name]["rk_python_wheelhouse"] = str(wheelhouse)
    inventory_file = tmp_path / "hosts.yml"
    inventory_file.write_text(yaml.safe_dump(inventory))
    # A checkout of its own (the repository's files, linked), so $PWD/kernels is this test's.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("ansible.cfg", "playbooks", "roles"):
        (checkout / name).symlink_to(REPO / name)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("ANSIBLE_CONFIG", None)

    outputs = {}
    stopped = False
    try:
        for command in commands:
            command = for_test_host(command, inventory_file, host.name)
            run = subprocess.run(["bash", "-c", command], cwd=checkout, env=env, capture_output=True,
                                 text=True, timeout=600, stdin=subprocess.DEVNULL)
            playbook = re.search(r"playbooks/(\S+)", command).group(1)
            outputs[playbook] = run.stdout + run.stderr
            stopped = stopped or playbook == "stop_kernel.yml"
            assert run.returncode == 0, f"{command}\n{run.stdout[-4000:]}{run.stderr[-2000:]}"
            if playbook == "fetch_kernel.yml":
                local = checkout / "kernels" / f"kernel-rk-{host.name}@default.json"
                assert stat.S_IMODE(local.stat().st_mode) == 0o600
                key = json.loads(local.read_text())["key"]
                with ssh_tunnel(host, local) as info:
                    ran = execute(info, "import sys, ipykernel; print(sys.executable)")
                # The kernel runs from the venv provision.yml made, not the host's python3.
                assert ran.strip() == "/home/rk/.local/share/rk/venv/bin/python"
            if playbook == "status.yml":
                assert "state: alive" in run.stdout, run.stdout[-3000:]
    finally:
        if not stopped:
            subprocess.run(["bash", "-c", for_test_host(commands[-1], inventory_file, host.name)],
                           cwd=checkout, env=env, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    assert all(key not in out for out in outputs.values())
    assert "ipykernel" not in host.exec("ps -u rk -o args=", check=False).stdout
    left = host.exec("ls -A /home/rk/.local/state/rk/*/", check=False).stdout.split()
    assert "default" not in left, left
