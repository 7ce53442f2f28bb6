"""rk's importable API: what the command line calls, for scripts and tests."""

from rk.commands.base import CommandResult, HostResult, Options
from rk.commands import kernelspec
from rk.commands.clean import clean, clean_local
from rk.commands.console import console, console_argv
from rk.commands.doctor import doctor
from rk.commands.fetch import fetch
from rk.commands.hosts import hosts
from rk.commands.interrupt import interrupt
from rk.commands.provision import provision
from rk.commands.restart import restart
from rk.commands.status import status
from rk.commands.stop import stop
from rk.commands.tunnel import tunnel
from rk.commands.up import KernelSpec, up

__all__ = ["CommandResult", "HostResult", "KernelSpec", "Options", "clean", "clean_local", "console", "console_argv", "doctor", "fetch", "hosts",
           "interrupt", "kernelspec", "provision", "restart", "status", "stop", "tunnel", "up"]
