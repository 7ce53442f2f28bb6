"""What a SIGKILLed rk leaves behind, and how the next rk deals with it (issue 6, case 16).

The end-to-end form, 30 kills of `rk up` at random points, is
tests/reliability/test_local_state.py.
"""

import json
import os
import subprocess
import sys

import pytest

from rk import runner
from rk import tunnel as tunnels
from tests.waiting import wait_until

pytestmark = pytest.mark.fast


def dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_run_dirs_of_killed_runs_are_removed_and_live_or_kept_ones_stay(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(runner.tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    killed = tmp_path / f"rk-run-{dead_pid()}-ab_12"
    live = tmp_path / f"rk-run-{os.getppid()}-cd_34"
    kept = tmp_path / "rk-artifacts-ef_56"  # --keep-artifacts: the user asked for it
    for path in (killed, live, kept):
        path.mkdir(mode=0o700)
        (path / "extravars.yml").write_text("rk_kernel_env: {TOKEN: secret}\n")
    runner.remove_abandoned_run_dirs()
    assert [p.exists() for p in (killed, live, kept)] == [False, True, True]


def test_a_supervisor_whose_starter_died_before_recording_it_records_itself(tmp_path, monkeypatch):
    """rk writes the state file, starts the supervisor, then records its pid: killed in between,
    the file would name no process and the supervisor would belong to nobody."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    path = tunnels.state_file("h1", "orphan")
    forwards = {name: [1, 2] for name in tunnels.PORT_NAMES}
    path.write_text(json.dumps({"host": "h1", "kernel": "orphan", "argv": ["sleep", "60"], "forwards": forwards,
                                "pid": None, "starttime": None}))
    proc = subprocess.Popen([sys.executable, "-m", "rk.tunnel", str(path)], env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        recorded = wait_until(lambda: tunnels.find("h1", "orphan").pid, "the supervisor records itself", timeout=10)
        assert recorded == proc.pid
        assert tunnels.alive(tunnels.find("h1", "orphan"))
        tunnels.stop(tunnels.find("h1", "orphan"))  # so rk can stop it like any other
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
