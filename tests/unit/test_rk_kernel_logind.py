"""The rk_kernel module's reading of logind (reliability case 22): is this process in a login
session's scope, and does logind end the user's processes when that session ends.

The cgroup v1 lines are what /proc/<pid>/cgroup said in the "systemd" test image (podman, cgroup
v1 hybrid), the v2 ones the same paths as the unified hierarchy writes them; the kill rule is
logind's own manager_shall_kill. What the module then does on such a host is tests/reliability/test_logout.py.
"""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

MODULE_PATH = Path(__file__).resolve().parents[2] / "roles/rk_kernel/library/rk_kernel.py"
_spec = importlib.util.spec_from_file_location("rk_kernel", MODULE_PATH)
rk_kernel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rk_kernel)

PODMAN = "/libpod_parent/libpod-64dfa8804f52"
SSH_SESSION_V1 = (f"9:name=systemd:{PODMAN}/user.slice/user-1000.slice/session-1988.scope\n"
                  f"8:pids:{PODMAN}\n4:memory:{PODMAN}\n0::{PODMAN}\n")
USER_SCOPE_V1 = (f"9:name=systemd:{PODMAN}/user.slice/user-1000.slice/user@1000.service/app.slice/"
                 f"rk-kernel-lingering-1ec8cf85.scope\n8:pids:{PODMAN}\n0::{PODMAN}\n")
SSH_SESSION_V2 = "0::/user.slice/user-1000.slice/session-3.scope\n"
SSHD_SERVICE_V2 = "0::/system.slice/ssh.service\n"
PLAIN_CONTAINER_V1 = f"9:name=systemd:/\n4:memory:{PODMAN}\n0::/\n"


@pytest.mark.parametrize("cgroup, inside", [
    (SSH_SESSION_V1, True),
    (SSH_SESSION_V2, True),
    (USER_SCOPE_V1, False),
    (SSHD_SERVICE_V2, False),
    (PLAIN_CONTAINER_V1, False),
    ("", False),
])
def test_a_login_sessions_scope_is_recognised_in_either_cgroup_version(cgroup, inside):
    assert rk_kernel.in_session_scope(cgroup) is inside


@pytest.mark.parametrize("user, kill, only, exclude, kills", [
    ("rk", True, [], [], True),
    ("rk", False, [], [], False),
    ("rk", True, [], ["rk"], False),
    ("root", True, [], [], False),  # logind spares root unless KillExcludeUsers is set
    ("root", True, [], ["nobody"], True),
    ("rk", False, ["rk"], [], True),  # KillOnlyUsers kills its users whatever KillUserProcesses says
    ("rk", True, ["alice"], [], False),
    ("rk", True, ["rk"], ["rk"], False),
])
def test_who_logind_kills_at_logout_follows_its_own_rule(user, kill, only, exclude, kills):
    assert rk_kernel.logind_kills(user, kill, only, exclude) is kills
