"""Where rk reads its inventory from, and how --host values resolve (real Ansible parsing)."""

import textwrap

import pytest

from rk.errors import UsageError
from rk.targets import inventory_sources, select

pytestmark = pytest.mark.fast

YAML = textwrap.dedent(
    """\
    all:
      children:
        gpu:
          hosts:
            gpu1: {ansible_host: 192.0.2.10, ansible_user: alice}
            gpu2: {ansible_host: 192.0.2.11, ansible_port: 2200}
      hosts:
        cpu1: {ansible_host: 192.0.2.20}
    """
)
INI = textwrap.dedent(
    """\
    [gpu]
    gpu1 ansible_host=192.0.2.10 ansible_user=alice
    gpu2 ansible_host=192.0.2.11 ansible_port=2200
    [cpu]
    cpu1 ansible_host=192.0.2.20
    """
)


@pytest.fixture(autouse=True)
def clean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RK_INVENTORY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_explicit_inventory_wins_over_environment(tmp_path, monkeypatch):
    a = write(tmp_path, "a.yml", YAML)
    b = write(tmp_path, "b.ini", INI)
    monkeypatch.setenv("RK_INVENTORY", str(b))
    assert inventory_sources([str(a)]) == [a]
    assert inventory_sources(None) == [b]


def test_inventory_dir_then_user_config(tmp_path):
    config = tmp_path / "home/.config/rk/inventory.yml"
    config.parent.mkdir(parents=True)
    config.write_text(YAML)
    assert inventory_sources(None) == [config]
    (tmp_path / "inventory").mkdir()
    assert inventory_sources(None) == [(tmp_path / "inventory").resolve()]


def test_no_inventory_anywhere_is_empty():
    assert inventory_sources(None) == []


@pytest.mark.parametrize("name, text", [("inv.yml", YAML), ("inv.ini", INI)])
def test_group_resolves_to_its_hosts(tmp_path, name, text):
    inv = write(tmp_path, name, text)
    selection = select(["gpu"], [inv])
    assert selection.limit == ["gpu1", "gpu2"] and selection.adhoc == {}


def test_pattern_and_host_do_not_repeat(tmp_path):
    inv = write(tmp_path, "inv.yml", YAML)
    assert select(["gpu*", "gpu1", "cpu1"], [inv]).limit == ["gpu1", "gpu2", "cpu1"]


def test_unknown_plain_name_is_taken_as_an_ssh_alias(tmp_path):
    inv = write(tmp_path, "inv.yml", YAML)
    selection = select(["myalias"], [inv])
    assert selection.adhoc == {"myalias": {"ansible_host": "myalias"}}


def test_user_at_host_port_is_ad_hoc_even_with_an_inventory(tmp_path):
    inv = write(tmp_path, "inv.yml", YAML)
    selection = select(["bob@192.0.2.5:2222"], [inv])
    (name,) = selection.limit
    assert selection.adhoc[name] == {"ansible_host": "192.0.2.5", "ansible_user": "bob", "ansible_port": 2222}
    assert selection.shown(name) == "bob@192.0.2.5:2222"


def test_localhost_runs_locally_without_inventory():
    selection = select(["localhost"], [])
    assert selection.adhoc["localhost"]["ansible_connection"] == "local"


@pytest.mark.parametrize("spec", ["a b", "x;y", "$(id)", "h:99999", "gpu[0"])
def test_malformed_host_is_a_usage_error(spec):
    with pytest.raises(UsageError):
        select([spec], [])


def test_no_host_means_every_inventory_host(tmp_path):
    inv = write(tmp_path, "inv.ini", INI)
    assert sorted(select(None, [inv]).limit) == ["cpu1", "gpu1", "gpu2"]


def test_a_relative_inventory_path_becomes_absolute(tmp_path):
    # ansible-playbook runs from ansible-runner's private directory, not from here.
    write(tmp_path, "inv.yml", YAML)
    (source,) = inventory_sources(["inv.yml"])
    assert source.is_absolute() and source == tmp_path / "inv.yml"
