"""Corrupt or planted local state (issue 6, case 17): moved aside with a message, never followed.

The end-to-end form, through `rk status`, `rk up` and `rk stop --all`, is
tests/reliability/test_local_state.py.
"""

import json
import os
import stat

import pytest

from rk import paths
from rk import tunnel as tunnels

pytestmark = pytest.mark.fast


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    notes = paths.new_notes()
    return paths.ensure_private_dir(tmp_path / "runtime"), notes


def aside(directory, name):
    return [p for p in directory.iterdir() if p.name.startswith(f"{name}.corrupt-")]


@pytest.mark.parametrize("content", [b'{"key": "abc', b"", b"[1, 2]", b"\xff\xfe{", b" " * 70000])
def test_a_corrupt_connection_file_is_moved_aside_0600_with_a_message(runtime, content):
    directory, notes = runtime
    broken = directory / "kernel-rk-h1-x.json"
    broken.write_bytes(content)
    broken.chmod(0o644)
    assert paths.local_connection_files("h1") == {}
    (moved,) = aside(directory, broken.name)
    assert not broken.exists() and moved.read_bytes() == content
    assert stat.S_IMODE(moved.stat().st_mode) == 0o600
    (note,) = notes
    assert str(broken) in note and moved.name in note and "delete it" in note


def test_a_symlink_is_moved_aside_and_its_target_left_alone(runtime, tmp_path):
    directory, notes = runtime
    target = tmp_path / "target.json"
    target.write_text(json.dumps({"rk_host": "h1", "rk_kernel": "x", "key": "k" * 64}))
    target.chmod(0o644)
    link = directory / "kernel-rktunnel-h1-x.json"
    link.symlink_to(target)
    assert paths.local_connection_files("h1", paths.TUNNEL) == {}
    (moved,) = aside(directory, link.name)
    assert moved.is_symlink() and os.readlink(moved) == str(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert "symbolic link" in notes[0]


def test_a_fifo_is_moved_aside_without_blocking(runtime):
    directory, notes = runtime
    os.mkfifo(directory / "kernel-rk-h1-x.json")
    assert paths.local_connection_files("h1") == {}
    assert aside(directory, "kernel-rk-h1-x.json") and "not a regular file" in notes[0]


def test_writing_over_a_planted_symlink_never_writes_through_it(runtime, tmp_path):
    directory, notes = runtime
    target = tmp_path / "victim"
    target.write_text("untouched")
    link = directory / "kernel-rktunnel-h1-x.json"
    link.symlink_to(target)
    paths.write_private(link, "{}")
    assert target.read_text() == "untouched"
    assert not link.is_symlink() and link.read_text() == "{}"
    assert aside(directory, link.name) and "symbolic link" in notes[0]


@pytest.mark.parametrize("record", ['{"host": "h1", "kern', '{"host": "h1"}',
                                    '{"host": "h1", "kernel": "x", "argv": "ssh", "forwards": {}, "pid": null, "starttime": null}'])
def test_a_corrupt_tunnel_state_file_is_moved_aside(runtime, record):
    _, notes = runtime
    path = tunnels.state_file("h1", "x")
    path.write_text(record)
    assert tunnels.find("h1", "x") is None and tunnels.of_host("h1") == {}
    assert aside(path.parent, path.name) and str(path) in notes[0]


def test_temp_files_of_dead_writers_are_removed_and_live_ones_kept(runtime):
    directory, _ = runtime
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    mine = [directory / f".kernel-rk-h1-x.json.{os.getpid()}.tmp", directory / f".rk-fetch-{os.getpid()}-ab_c1"]
    theirs = [directory / f".kernel-rk-h1-x.json.{dead}.tmp", directory / f".rk-fetch-{dead}-ab_c1"]
    for path in mine + theirs:
        path.write_text('{"key": "half')
    paths.remove_stale_temp_files(directory)
    assert [p.exists() for p in mine + theirs] == [True, True, False, False]
