"""In-process tests of the command line: parsing, output and exit codes. No host is contacted."""

import json
import os
import subprocess
import sys

import pytest

from rk.cli import main
from rk.commands.base import CommandResult, HostResult
from rk.exitcodes import ExitCode

pytestmark = pytest.mark.fast


@pytest.fixture(autouse=True)
def no_inventory(tmp_path, monkeypatch):
    """Run from an empty directory with no inventory anywhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RK_INVENTORY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_help_exits_zero_and_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("up", "fetch", "stop", "status", "provision", "hosts"):
        assert verb in out
    assert "130 interrupted" in out


def test_help_does_not_import_ansible():
    code = "import sys; from rk.cli import main; main(['--help']); print(sorted(m for m in sys.modules if m.startswith(('ansible', 'jupyter', 'zmq'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_up_without_host_is_a_usage_error(capsys):
    assert main(["up"]) == ExitCode.USAGE
    assert "--host" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../x", "a;touch /tmp/pwned", "$(id)", "", "x" * 65, "dé"])
def test_up_refuses_a_bad_kernel_name(capsys, name):
    assert main(["up", "--host", "localhost", "--name", name]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("rk: bad kernel name") and "Traceback" not in err


def test_env_without_equals_is_a_usage_error(capsys):
    assert main(["up", "--host", "localhost", "--env", "NOVALUE"]) == ExitCode.USAGE
    assert "K=V" in capsys.readouterr().err


def test_bad_env_name_is_a_usage_error(capsys):
    assert main(["up", "--host", "localhost", "--env", "A-B=1"]) == ExitCode.USAGE
    assert "environment variable" in capsys.readouterr().err


def test_status_with_no_host_and_no_inventory_explains_what_to_do(capsys):
    assert main(["status"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "no host given and no inventory found" in err and "--host" in err


def test_missing_inventory_is_a_usage_error_with_the_path(capsys):
    assert main(["hosts", "-i", "/nonexistent/inv.yml"]) == ExitCode.USAGE
    assert "/nonexistent/inv.yml" in capsys.readouterr().err


def test_json_error_has_the_same_envelope(capsys):
    assert main(["status", "--json"]) == ExitCode.USAGE
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == 1 and doc["command"] == "status"
    assert doc["ok"] is False and doc["exit_code"] == 2 and doc["hosts"] == []
    assert "no inventory" in doc["error"]["message"]


def test_hosts_resolves_ad_hoc_spellings(capsys):
    assert main(["hosts", "--host", "alice@lab.example.org:2222", "--host", "localhost", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_host = {h["host"]: h["connect"] for h in doc["hosts"]}
    assert by_host["alice@lab.example.org:2222"] == {
        "address": "lab.example.org", "port": 2222, "user": "alice", "connection": "ssh", "groups": []}
    assert by_host["localhost"]["connection"] == "local"


@pytest.mark.parametrize(
    "statuses, code",
    [
        (["ok", "ok"], ExitCode.OK),
        (["ok", "unreachable"], ExitCode.PARTIAL),
        (["ok", "failed"], ExitCode.PARTIAL),
        (["unreachable", "unreachable"], ExitCode.UNREACHABLE),
        (["failed", "unreachable"], ExitCode.FAILURE),
        # A refused host key is 1 whatever the others did: never "partial", never "unreachable".
        (["hostkey"], ExitCode.FAILURE),
        (["ok", "hostkey"], ExitCode.FAILURE),
        (["unreachable", "hostkey"], ExitCode.FAILURE),
        (["ok", "unreachable", "failed", "hostkey"], ExitCode.FAILURE),
        ([], ExitCode.OK),
    ],
)
def test_exit_code_follows_host_outcomes(statuses, code):
    result = CommandResult("status", [HostResult(f"h{i}", s) for i, s in enumerate(statuses)])
    assert result.exit_code == code


def test_interrupted_wins_over_host_outcomes():
    result = CommandResult("up", [HostResult("h", "ok")], interrupted=True)
    assert result.exit_code == ExitCode.INTERRUPTED == 130


def test_version_names_the_libraries_rk_drives(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("rk ")
    for package in ("ansible-core", "ansible-runner", "jupyter_client"):
        assert f"{package} {version(package)}" in lines


@pytest.mark.parametrize("args", [["hosts", "--host", "localhost", "--json"], ["hosts", "--host", "localhost"]])
def test_a_closed_output_pipe_ends_rk_quietly(tmp_path, args):
    """`rk status --json | head`: the reader is gone before rk writes; no traceback, exit 141."""
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "rk", *args], stdout=write, stderr=subprocess.PIPE, text=True,
                          cwd=tmp_path, timeout=60)
    os.close(write)
    assert proc.stderr == ""
    assert proc.returncode == ExitCode.BROKEN_PIPE == 141
