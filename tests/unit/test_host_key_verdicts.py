"""A refused host key is its own outcome (`hostkey`), never "unreachable": how rk tells it from
ssh's words, in Ansible's verdict, in the status table and in a tunnel's log. No host is
contacted here; tests/integration/test_host_keys.py does it on real hosts."""

import pytest

from rk import render, runner, tunnel
from rk.commands.base import CommandResult, HostResult
from rk.errors import explain_host_key, explain_unreachable

pytestmark = pytest.mark.fast

# What OpenSSH 9.2 (Debian 12) writes, as Ansible hands it back in an unreachable result.
UNKNOWN = ("Failed to connect to the host via ssh: No ED25519 host key is known for [127.0.0.1]:2201 and you "
           "have requested strict checking.\r\nHost key verification failed.")
CHANGED = ("Failed to connect to the host via ssh: @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n"
           "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
           "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r\n"
           "Host key for [127.0.0.1]:2201 has changed and you have requested strict checking.\r\n"
           "Host key verification failed.")
NETWORK = [
    "Failed to connect to the host via ssh: ssh: connect to host 127.0.0.1 port 2201: Connection refused",
    "Failed to connect to the host via ssh: Connection timed out during banner exchange",
    "Failed to connect to the host via ssh: rk@127.0.0.1: Permission denied (publickey).",
    "Failed to connect to the host via ssh: ssh: Could not resolve hostname gpu9: Name or service not known",
]


def test_unknown_and_changed_keys_are_host_key_refusals_with_their_own_hint():
    assert explain_host_key(UNKNOWN) == explain_unreachable(UNKNOWN)
    cause, hint = explain_host_key(UNKNOWN)
    assert cause.startswith("unknown host key") and "--accept-new-host-keys" in hint
    cause, hint = explain_host_key(CHANGED)
    assert cause.startswith("host key mismatch") and "ssh-keygen -R" in hint
    assert "--accept-new-host-keys" not in hint  # it never fixes a changed key


@pytest.mark.parametrize("message", NETWORK)
def test_network_and_login_failures_are_not_host_key_refusals(message):
    assert explain_host_key(message) is None


def _verdict(message: str) -> str:
    result = runner.RunResult()
    result.hosts["h1"] = runner.HostOutcome(message=message)
    runner._apply_stats(result, {"processed": {"h1": 1}, "dark": {"h1": 1}})
    return result.hosts["h1"].status


def test_a_dark_host_whose_key_was_refused_is_hostkey_and_any_other_dark_host_unreachable():
    assert _verdict(UNKNOWN) == "hostkey"
    assert _verdict(CHANGED) == "hostkey"
    assert [_verdict(m) for m in NETWORK] == ["unreachable"] * len(NETWORK)


def test_the_status_table_says_hostkey_for_such_a_host():
    result = CommandResult("status", [HostResult("h1", "hostkey", "host key mismatch: ..."),
                                      HostResult("h2", "unreachable", "unreachable: connection refused")])
    assert [row[:3] for row in render.kernel_rows(result)] == [["h1", "", "hostkey"], ["h2", "", "unreachable"]]


def _tunnel_with_log(tmp_path, text: str) -> tunnel.Tunnel:
    path = tmp_path / "h1-default-00000000.json"
    path.with_suffix(".log").write_text(text)
    forwards = {name: [0, 0] for name in tunnel.PORT_NAMES}
    return tunnel.Tunnel("h1", "default", ["ssh"], forwards, path=str(path))


ENDED = "rk.tunnel: ssh ended with code 255; again in 2 s\n"


def test_a_tunnel_whose_last_ssh_attempt_was_refused_its_key_is_a_host_key_refusal(tmp_path):
    log = "Timeout, server 127.0.0.1 not responding.\n" + ENDED + UNKNOWN.split(": ", 1)[1] + "\n" + ENDED
    refused = tunnel.host_key_refusal(_tunnel_with_log(tmp_path, log))
    assert refused and refused[0].startswith("unknown host key")
    assert tunnel._log_tail(_tunnel_with_log(tmp_path, log)) == "Host key verification failed."


def test_a_tunnel_refused_once_then_cut_off_by_the_network_is_reconnecting_not_hostkey(tmp_path):
    log = CHANGED.split(": ", 1)[1] + "\n" + ENDED + "ssh: connect to host 127.0.0.1 port 2201: Connection refused\n" + ENDED
    assert tunnel.host_key_refusal(_tunnel_with_log(tmp_path, log)) is None
