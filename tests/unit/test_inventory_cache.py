"""The inventory answers cache: a hit never imports Ansible, and any change to what the answers
depend on (inventory files, group_vars/host_vars, ANSIBLE_* settings) is a miss."""

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rk import inventory_cache
from rk.runner import Inventory

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = textwrap.dedent(
    """\
    all:
      children:
        gpu:
          hosts:
            gpu1: {ansible_host: 192.0.2.10, ansible_user: alice, ansible_port: 2200}
    """
)

# A fresh process: does asking the inventory import Ansible, and what does it answer?
ASK = """
import json, sys
from pathlib import Path
from rk.runner import Inventory
answer = Inventory([Path(sys.argv[1])]).hosts(sys.argv[2])
print(json.dumps({"answer": answer, "ansible_imported": "ansible.inventory.manager" in sys.modules}))
"""


def ask(source: Path, pattern: str = "gpu") -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    out = subprocess.run([sys.executable, "-c", ASK, str(source), pattern], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inv" / "hosts.yml"
    path.parent.mkdir()
    path.write_text(INVENTORY)
    return path


def test_the_second_command_answers_from_the_cache_without_importing_ansible(inventory):
    first = ask(inventory)
    second = ask(inventory)
    assert first["ansible_imported"] is True
    assert second["ansible_imported"] is False
    assert second["answer"] == first["answer"]
    assert first["answer"]["gpu1"]["ansible_port"] == 2200
    assert first["answer"]["gpu1"]["groups"] == ["gpu"]


def test_an_edited_inventory_is_parsed_again(inventory):
    ask(inventory)
    inventory.write_text(INVENTORY.replace("alice", "bob"))
    again = ask(inventory)
    assert again["ansible_imported"] is True
    assert again["answer"]["gpu1"]["ansible_user"] == "bob"


def test_a_changed_group_vars_file_is_parsed_again(inventory):
    (inventory.parent / "group_vars").mkdir()
    (inventory.parent / "group_vars" / "gpu.yml").write_text("ansible_user: carol\n")
    assert ask(inventory)["answer"]["gpu1"]["ansible_user"] == "alice"  # host vars win
    (inventory.parent / "group_vars" / "gpu.yml").write_text("ansible_ssh_common_args: -o ProxyJump=gw\n")
    again = ask(inventory)
    assert again["ansible_imported"] is True
    assert again["answer"]["gpu1"]["ansible_ssh_common_args"] == "-o ProxyJump=gw"


def test_an_ansible_setting_in_the_environment_is_part_of_the_key(inventory, monkeypatch):
    ask(inventory)
    monkeypatch.setenv("ANSIBLE_INVENTORY_ENABLED", "yaml")
    assert ask(inventory)["ansible_imported"] is True


def test_an_inventory_script_is_never_cached(tmp_path):
    script = tmp_path / "inventory.py"
    script.write_text("#!/bin/sh\necho '{\"gpu\": {\"hosts\": [\"gpu9\"]}, \"_meta\": {\"hostvars\": {}}}'\n")
    script.chmod(0o700)
    assert inventory_cache.key([script]) is None
    assert ask(script)["answer"] == {"gpu9": {"groups": ["gpu"]}}
    assert ask(script)["ansible_imported"] is True


def test_an_inventory_plugin_config_is_never_cached(tmp_path):
    config = tmp_path / "inventory.yml"
    config.write_text("plugin: ansible.builtin.constructed\nstrict: false\n")
    assert inventory_cache.key([config]) is None


def test_the_cache_is_private_and_a_damaged_entry_is_only_a_miss(inventory):
    ask(inventory)
    cache_key = inventory_cache.key([inventory])
    entry = next(Path(os.environ["XDG_CACHE_HOME"], "rk", "inventory").glob(f"{cache_key}.json"))
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert stat.S_IMODE(entry.parent.stat().st_mode) == 0o700
    entry.write_text("{not json")
    assert Inventory([inventory]).hosts("gpu")["gpu1"]["ansible_user"] == "alice"
