"""The ssh that Ansible runs for rk (its ssh_executable): a reused master must answer first.

sshd says nothing between accepting the key and finishing the login's PAM session
(pam_systemd, SSSD, an NFS home: 8 s and more on lab servers), so the keepalives of the
connection that becomes the ControlPersist master must let a slow login through (rk/runner.py:
5 s x 3). A master whose host went silent since it was last used would then hold each new
session for up to 20 s before ssh gave up on it and tried a new connection. So before a
master is reused, a session through it must come back within PROBE_S; if not, the master
stops taking sessions (`-O stop`: sessions already on it are left alone) and ssh connects
anew, bounded by ConnectTimeout. Measured in tests/reliability/README.md (case 13, slow logins).

Only the standard library: this runs once per ssh command of every playbook.
"""

from __future__ import annotations

import os
import subprocess
import sys

# A session of `true` through a master takes about 5 ms to a host on the LAN.
PROBE_S = 1.0
# ssh(1)'s options that take an argument.
_WITH_ARGUMENT = set("BbcDEeFIiJLlmOoPpQRSWw")


def split(argv: list[str]) -> tuple[list[str], list[str]]:
    """ssh's argv as (options, [destination, command...]), by ssh's own getopt rules."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return argv[:i], argv[i + 1:]
        if not word.startswith("-") or word == "-":
            break
        for j, letter in enumerate(word[1:], start=1):
            if letter in _WITH_ARGUMENT:
                if j == len(word) - 1:
                    i += 1  # its argument is the next word
                break
        i += 1
    return argv[:i], argv[i:]


def _ssh(options: list[str], *more: str, timeout: float | None = None) -> int:
    run = subprocess.run(["ssh", *options, *more], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, timeout=timeout, check=False)
    return run.returncode


def check_master(options: list[str], destination: str) -> bool:
    """False when a master exists but did not answer a session in time (it is stopped then)."""
    if _ssh(options, "-O", "check", destination) != 0:
        return True  # no master: ssh connects and becomes one itself
    # ControlMaster=no first (ssh keeps an option's first value): the probe never becomes a master.
    probe = ["-o", "ControlMaster=no", "-T", *(o for o in options if o not in ("-t", "-tt"))]
    try:
        _ssh(probe, destination, "true", timeout=PROBE_S)
        return True
    except subprocess.TimeoutExpired as late:
        # A master whose host refused the session (MaxSessions) answered: ssh then tried a new
        # connection, which is what was slow. That master is busy, not silent: keep it.
        if b"Session open refused by peer" in (late.stderr or b""):
            return True
        _ssh(options, "-O", "stop", destination)
        return False


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    options, rest = split(argv)
    if rest and not any(o.startswith("-O") for o in options):  # not Ansible's own -O check/stop
        check_master(options, rest[0])
    os.execvp("ssh", ["ssh", *argv])


if __name__ == "__main__":
    main()
