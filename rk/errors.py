"""Errors rk reports as one readable line, and the hints that go with host failures."""

from __future__ import annotations

import re


class RkError(Exception):
    """A failure the user can act on; printed as one line, no traceback."""

    exit_code = 1
    status = "failed"  # what a host this error is about shows in results

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(RkError):
    exit_code = 2


# sshd's MaxSessions (sessions on one, shared ControlMaster connection) and MaxStartups
# (connections still in their handshake), as ssh 9.2 words them: the host is busy, not gone,
# and rk's runner tries again (tests/reliability/README.md, case 20).
_MAX_SESSIONS = r"Session open refused by peer"
_MAX_STARTUPS = r"kex_exchange_identification: (?:read: Connection reset by peer|Connection closed by remote host)"


class HostKeyError(RkError):
    """ssh refused the host's key (unknown or changed): the host answered, the network works."""

    status = "hostkey"


# (pattern in ssh's or Ansible's message, short cause, hint). First match wins.
# A refused host key is its own status (`hostkey`), never "unreachable": the host answered,
# and someone may be intercepting the connection.
_HOST_KEY_CAUSES = [
    (r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed",
     "host key mismatch: the host's SSH key is not the one in known_hosts",
     "if the host was reinstalled, remove its old key (ssh-keygen -R HOST); otherwise suspect a man in the middle"),
    (r"No \S+ host key is known|Host key verification failed",
     "unknown host key: the host is not in known_hosts",
     "check the fingerprint and connect once with ssh, or pass --accept-new-host-keys to trust it on first use"),
]
_SSH_CAUSES = _HOST_KEY_CAUSES + [
    (r"Permission denied|Too many authentication failures|no mutual signature",
     "authentication failed",
     "check the user and key (ansible_user, ansible_ssh_private_key_file) or load the key into ssh-agent"),
    (r"Could not resolve hostname|Name or service not known|Temporary failure in name resolution",
     "unreachable: the host name does not resolve",
     "check the name, or set ansible_host in the inventory"),
    (r"Connection refused",
     "unreachable: connection refused",
     "is sshd running on that host and port?"),
    (_MAX_SESSIONS,
     "the host refused another SSH session (MaxSessions)",
     "too many SSH sessions at once to this host: try again later, or raise MaxSessions in its sshd_config"),
    (_MAX_STARTUPS,
     "the host refused another SSH connection (MaxStartups)",
     "too many SSH connections being set up at once to this host: try again later, or raise MaxStartups"),
    (r"timed out|Connection timed out|No route to host|Network is unreachable|Connection reset|closed by remote host|Broken pipe",
     "unreachable: the host did not answer",
     "check the network, VPN or jump host (ProxyJump) to that host"),
]


def refused_session(raw: str) -> bool:
    """Whether ssh's words say the host refused another session or connection (busy, not gone)."""
    return bool(re.search(f"{_MAX_SESSIONS}|{_MAX_STARTUPS}", raw or "", re.IGNORECASE))


def explain_host_key(raw: str) -> tuple[str, str] | None:
    """(cause, hint) when ssh's words say it refused the host's key, else None."""
    return _explain(raw or "", _HOST_KEY_CAUSES)


def explain_unreachable(raw: str) -> tuple[str, str]:
    """Turn ssh's words about an unreachable host into (cause, hint)."""
    return _explain(raw, _SSH_CAUSES) or ("unreachable: " + first_line(raw), "try `ssh` to the host by hand to see why")


# Failures whose words from Ansible are true but not helpful: (pattern, cause, hint).
_FAILURE_CAUSES = [
    (r"module interpreter '([^']+)' was not found|/usr/bin/python3?: (?:not found|No such file)",
     "no Python on the host",
     "`rk provision` installs python3 (it needs sudo there), or set ansible_python_interpreter"),
]


def explain_failure(raw: str) -> tuple[str, str]:
    """Turn a failed task's message into (cause, hint)."""
    return _explain(raw, _FAILURE_CAUSES) or (first_line(raw, 500), own_hint(raw) or "run again with -v to see Ansible's output")


def own_hint(raw: str) -> str:
    """The `hint: ...` line under a module's or role's message (what to do), if it has one."""
    for line in reversed((raw or "").splitlines()):
        if line.strip().startswith("hint: "):
            return line.strip()[len("hint: "):]
    return ""


def _explain(raw: str, table: list[tuple[str, str, str]]) -> tuple[str, str] | None:
    for pattern, cause, hint in table:
        if re.search(pattern, raw, re.IGNORECASE):
            return cause, hint
    return None


def first_line(text: str, limit: int = 300) -> str:
    for line in (text or "").splitlines():
        line = line.strip()
        if line:
            return line[:limit]
    return ""
