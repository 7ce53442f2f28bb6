"""rk's local connection files: whose they are, and what happens to broken ones."""

import json
import os
import stat

import pytest

from rk import paths

pytestmark = pytest.mark.fast


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def keep(runtime, host, kernel):
    path = paths.local_connection_file(host, kernel)
    paths.write_private(path, json.dumps({"key": "k" * 64, "rk_host": host, "rk_kernel": kernel}))
    return path


def test_hosts_whose_names_prefix_each_other_keep_their_own_files(runtime):
    mine = keep(runtime, "gpu", "x")
    theirs = keep(runtime, "gpu-2", "default")  # older rk: kernel-rk-gpu-2-default.json, like gpu's
    assert paths.local_connection_files("gpu") == {"x": mine}
    assert paths.local_connection_files("gpu-2") == {"default": theirs}


def test_foreign_files_are_skipped_and_broken_ones_moved_aside(runtime):
    good = keep(runtime, "h1", "default")
    (runtime / "kernel-rk-h1-trunc.json").write_text('{"key": "abc')
    (runtime / "kernel-rk-h1-list.json").write_text("[1, 2]")
    (runtime / "kernel-rk-h1-link.json").symlink_to(good)
    (runtime / "kernel-12345.json").write_text("{}")
    assert paths.local_connection_files("h1") == {"default": good}
    assert len(list(runtime.glob("kernel-rk-h1-*.json.corrupt-*"))) == 3  # tests/unit/test_quarantine.py
    assert (runtime / "kernel-12345.json").exists()  # Jupyter's own files are not rk's business


def test_private_files_are_0600_even_under_umask_000(runtime):
    old = os.umask(0)
    try:
        path = keep(runtime, "h1", "default")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_runtime_dir_others_can_write_is_refused(tmp_path, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(paths.RkError, match="writable by other users"):
        paths.ensure_private_dir(shared)


def test_a_symlinked_runtime_dir_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(paths.RkError, match="symbolic link"):
        paths.ensure_private_dir(tmp_path / "link")
