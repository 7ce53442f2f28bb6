"""rk's importable API: what the command line calls, for scripts and tests."""

from rk.commands.base import CommandResult, HostResult, Options
from rk.commands.fetch import fetch
from rk.commands.hosts import hosts
from rk.commands.provision import provision
from rk.commands.status import status
from rk.commands.stop import stop
from rk.commands.up import KernelSpec, up

__all__ = ["CommandResult", "HostResult", "KernelSpec", "Options", "fetch", "hosts", "provision", "status", "stop", "up"]
