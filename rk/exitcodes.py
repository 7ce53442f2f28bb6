"""The exit codes of `rk`: documented in the README and stable across releases."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # every host did what was asked
    FAILURE = 1  # every host failed, a host's key was refused (whatever the others did), or rk could not run
    USAGE = 2  # bad flags, bad values, no inventory where one is needed
    PARTIAL = 3  # some hosts succeeded, others failed or were unreachable
    UNREACHABLE = 4  # no host could be reached (a refused host key is 1: that host answered)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    BROKEN_PIPE = 141  # stdout's reader went away, as in `rk status | head` (128 + SIGPIPE)
