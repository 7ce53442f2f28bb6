"""The rk_kernel module's transport encryption (CurveZMQ), against real ipykernel 7.4 kernels on
this machine (tests/curve_env.py), and its refusal of an ipykernel too old to encrypt (the test
venv's own, which spyder-kernels keeps below 7)."""

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests import kernels
from tests.curve_env import curve_python

MODULE_PATH = Path(__file__).resolve().parents[2] / "roles/rk_kernel/library/rk_kernel.py"
_spec = importlib.util.spec_from_file_location("rk_kernel_encryption", MODULE_PATH)
rk_kernel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rk_kernel)


@pytest.fixture
def root(tmp_path):
    state_root = Path(os.path.realpath(os.environ.get("TMPDIR", "/tmp"))) / f"rke-{os.getpid()}-{tmp_path.name[-8:]}"
    yield state_root
    rk_kernel.run({"state": "stopped", "all": True, "state_root": str(state_root), "stop_timeout": 1})
    shutil.rmtree(state_root, ignore_errors=True)


def run(root, **params):
    return rk_kernel.run({"name": "k", "state_root": str(root), **params})["kernels"]["k"]


def mechanisms(root, kernel):
    handle = rk_kernel.Kernel(os.path.dirname(os.path.dirname(kernel["connection_file"])), "k")
    return [rk_kernel.zmtp_mechanism(*handle.address(n)) for n in kernel["ports"].values()]


def test_an_encrypted_kernel_has_curve_on_every_channel_runs_code_and_keeps_its_keys_on_restart(root):
    result = rk_kernel.run({"name": "k", "python": str(curve_python()), "state_root": str(root),
                            "transport_encryption": True})
    kernel = result["kernels"]["k"]
    info = json.loads(Path(kernel["connection_file"]).read_text())
    assert kernel["encrypted"] is True
    assert len(info["curve_publickey"]) == len(info["curve_secretkey"]) == 40
    assert os.stat(kernel["connection_file"]).st_mode & 0o777 == 0o600
    # Neither secret leaves the module.
    assert info["curve_secretkey"] not in json.dumps(result) and info["key"] not in json.dumps(result)
    assert mechanisms(root, kernel) == ["CURVE"] * 5
    assert kernels.execute(Path(kernel["connection_file"]), "print(6 * 7)").strip() == "42"  # jupyter_client 8.10
    assert run(root, state="status")["state"] == "alive"  # the heartbeat probe still sees it greet

    restarted = run(root, state="restarted")
    again = json.loads(Path(restarted["connection_file"]).read_text())
    assert restarted["pid"] != kernel["pid"] and restarted["encrypted"] is True
    assert (again["curve_publickey"], again["curve_secretkey"]) == (info["curve_publickey"], info["curve_secretkey"])
    assert mechanisms(root, restarted) == ["CURVE"] * 5
    assert kernels.execute(Path(restarted["connection_file"]), "print(7 * 6)").strip() == "42"


def test_an_ipykernel_too_old_to_encrypt_is_refused_in_one_sentence_and_nothing_starts(root):
    with pytest.raises(rk_kernel.KernelError) as refused:
        run(root, python=sys.executable, transport_encryption=True)
    first, hint = str(refused.value).split("\n")
    assert "CurveZMQ needs ipykernel >= 7.3" in first and "ipykernel 6." in first
    assert hint.startswith("hint: ") and "pip install 'ipykernel>=7.3'" in hint
    assert run(root, state="status")["state"] == "absent"


def test_an_encrypted_start_never_hands_back_a_running_unencrypted_kernel(root):
    plain = run(root, python=str(curve_python()))
    assert plain["encrypted"] is False and mechanisms(root, plain) == ["NULL"] * 5
    with pytest.raises(rk_kernel.KernelError, match="runs without transport encryption"):
        run(root, python=str(curve_python()), transport_encryption=True)
    assert run(root, state="status")["pid"] == plain["pid"]  # left as it was
