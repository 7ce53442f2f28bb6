"""Names of rk's local connection files, and files under older rk's names (issue 12, point 4)."""

import json
import os
import stat

import pytest

from rk import paths
from rk.commands.stop import _remove_unclaimed_fetched_files

pytestmark = pytest.mark.fast

COLLIDING = [("gpu", "2-default"), ("gpu-2", "default")]  # older rk: both kernel-rk-gpu-2-default.json


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def old_file(runtime, name, host, kernel, key="k" * 64):
    """A file as older rk left it: its old name, and the fields saying whose it is."""
    path = runtime / name
    paths.write_private(path, json.dumps({"key": key, "rk_host": host, "rk_kernel": kernel}))
    return path


def key_of(path):
    return json.loads(path.read_text())["key"]


@pytest.mark.parametrize("prefix", [paths.FETCHED, paths.TUNNEL])
def test_a_host_that_extends_another_hosts_name_gets_its_own_file_names(runtime, prefix):
    names = {paths.local_connection_file(host, kernel, prefix).name for host, kernel in COLLIDING}
    assert names == {f"{prefix}gpu@2-default.json", f"{prefix}gpu-2@default.json"}


def test_an_at_sign_in_a_host_name_is_mapped_like_every_unsafe_character(runtime):
    assert paths.local_connection_file("alice@gpu1:2222", "default").name == "kernel-rk-alice_gpu1_2222@default.json"


@pytest.mark.parametrize("prefix", [paths.FETCHED, paths.TUNNEL])
@pytest.mark.parametrize("host, kernel", COLLIDING)
def test_an_old_file_is_renamed_to_whoever_its_fields_name(runtime, prefix, host, kernel):
    old = old_file(runtime, f"{prefix}gpu-2-default.json", host, kernel, key="a" * 64)
    other = next(h for h, _ in COLLIDING if h != host)
    assert paths.local_connection_files(other, prefix) == {}
    new = runtime / f"{prefix}{host}@{kernel}.json"
    assert not old.exists() and key_of(new) == "a" * 64  # renamed while listing another host
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    assert paths.local_connection_files(host, prefix) == {kernel: new}
    assert sorted(p.name for p in runtime.iterdir()) == [new.name]  # once: nothing else made


def test_an_old_file_beside_the_same_kernels_new_one_with_the_same_key_goes(runtime):
    old = old_file(runtime, "kernel-rk-gpu-x.json", "gpu", "x")
    new = old_file(runtime, "kernel-rk-gpu@x.json", "gpu", "x")
    assert paths.local_connection_files("gpu") == {"x": new}
    assert not old.exists() and sorted(runtime.iterdir()) == [new]


def test_an_old_file_with_another_key_than_the_new_one_is_moved_aside_never_deleted(runtime):
    notes = paths.new_notes()
    old_file(runtime, "kernel-rktunnel-gpu-x.json", "gpu", "x", key="o" * 64)
    new = old_file(runtime, "kernel-rktunnel-gpu@x.json", "gpu", "x", key="n" * 64)
    assert paths.local_connection_files("gpu", paths.TUNNEL) == {"x": new}
    assert key_of(new) == "n" * 64  # the file this rk wrote wins
    (aside,) = runtime.glob("kernel-rktunnel-gpu-x.json.corrupt-*")
    assert key_of(aside) == "o" * 64 and stat.S_IMODE(aside.stat().st_mode) == 0o600
    assert "older copy of kernel-rktunnel-gpu@x.json" in notes[0]


def test_an_old_name_that_is_a_symlink_is_moved_aside_never_renamed_nor_followed(runtime, tmp_path_factory):
    target = tmp_path_factory.mktemp("elsewhere") / "target.json"
    target.write_text(json.dumps({"key": "t" * 64, "rk_host": "gpu", "rk_kernel": "x"}))
    (runtime / "kernel-rk-gpu-x.json").symlink_to(target)
    old_file(runtime, "kernel-rk-gpu-y.json", "gpu", "y")
    assert paths.local_connection_files("gpu") == {"y": runtime / "kernel-rk-gpu@y.json"}
    assert not (runtime / "kernel-rk-gpu@x.json").exists() and key_of(target) == "t" * 64
    (aside,) = runtime.glob("kernel-rk-gpu-x.json.corrupt-*")
    assert aside.is_symlink()


def test_a_copy_under_another_name_is_left_alone_and_the_own_name_wins(runtime):
    new = old_file(runtime, "kernel-rk-gpu@x.json", "gpu", "x")
    copy = old_file(runtime, "kernel-rk-gpu@x_copy.json", "gpu", "x")  # sorts after it
    assert paths.local_connection_files("gpu") == {"x": new}
    assert copy.exists()


def test_an_old_file_is_never_renamed_onto_another_hosts_file_of_the_same_safe_name(runtime):
    # "a b" and "a_b" share the safe name a_b: kernel x's new name is taken by the other host's file.
    theirs = old_file(runtime, "kernel-rk-a_b@x.json", "a_b", "x", key="t" * 64)
    mine = old_file(runtime, "kernel-rk-a_b-x.json", "a b", "x", key="m" * 64)
    old_file(runtime, "kernel-rk-a_b-y.json", "a b", "y", key="y" * 64)
    assert paths.local_connection_files("a b") == {"x": mine, "y": runtime / "kernel-rk-a_b@y.json"}
    assert paths.local_connection_files("a_b") == {"x": theirs}
    assert key_of(mine) == "m" * 64 and key_of(theirs) == "t" * 64


def test_stop_all_of_gpu_removes_its_unclaimed_files_and_never_gpu_2s(runtime):
    # Unclaimed: fetched by the Ansible worker of a killed rk, so without rk_host/rk_kernel.
    for host, kernel in COLLIDING:
        paths.local_connection_file(host, kernel).write_text(json.dumps({"key": "u" * 64}))
    _remove_unclaimed_fetched_files("gpu", [], all_kernels=True)
    assert [p.name for p in runtime.iterdir()] == ["kernel-rk-gpu-2@default.json"]

