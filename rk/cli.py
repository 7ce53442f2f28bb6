"""The `rk` command line: parse arguments, call rk.api, print. No work happens here.

Keep imports light: `rk --help` must not import Ansible or jupyter_client.
"""

from __future__ import annotations

import argparse
import os
import sys

from rk import __version__
from rk.exitcodes import ExitCode

EPILOG = """exit codes: 0 ok, 1 failure (or a host key refused), 2 usage error, 3 partial (some hosts
failed), 4 unreachable (no host answered), 130 interrupted, 141 output pipe closed"""


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-i", "--inventory", action="append", default=[], metavar="PATH",
        help="Ansible inventory (INI or YAML file, or directory); repeatable. "
        "Default: $RK_INVENTORY, ./inventory/, ~/.config/rk/inventory.yml",
    )
    parent.add_argument("--json", action="store_true", help="print one JSON document (schema 1) on stdout")
    parent.add_argument("-v", "--verbose", action="count", default=0, help="stream Ansible's output to stderr (-vvv: more)")
    parent.add_argument("--debug", action="store_true", help="show tracebacks")
    parent.add_argument("--keep-artifacts", action="store_true", help="keep ansible-runner's private data dir and print its path")
    parent.add_argument(
        "--accept-new-host-keys", action="store_true",
        help="trust a host's SSH key the first time it is seen (default: unknown hosts are refused)",
    )
    return parent


def _complete_hosts(prefix, parsed_args, **kwargs):
    from rk import completion

    return completion.hosts(prefix, parsed_args, **kwargs)


def _hosts(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--host", action="append", dest="hosts", required=required, metavar="HOST",
        help="inventory host, group or pattern, user@host[:port], an ssh alias, or localhost; repeatable"
        + ("" if required else ". Default: every inventory host"),
    ).completer = _complete_hosts


def _name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="default", help="kernel name (default: %(default)s)")


def _add_up(sub, common) -> None:
    p = sub.add_parser("up", parents=[common], help="provision if needed, start or reuse a kernel, fetch its file")
    _hosts(p, required=True)
    _name(p)
    p.add_argument("--spyder", action="store_true", help="a spyder-kernels kernel, for Spyder's variable explorer and debugger")
    p.add_argument("--python", metavar="PATH", help="use this interpreter on the host as it is (it must have ipykernel)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="environment variable for the kernel; repeatable")
    p.add_argument("--cwd", metavar="DIR", help="working directory of the kernel on the host")
    p.add_argument("--gpus", metavar="0,1", help="CUDA_VISIBLE_DEVICES for the kernel")
    p.add_argument("--packages", metavar="A,B", default="", help="extra pip packages for the environment (numpy,torch)")
    p.add_argument("--no-tunnel", action="store_true", help="keep no SSH tunnel (front ends tunnel themselves)")
    p.add_argument("--hardened", action="store_true",
                   help="unix sockets in the kernel's private directory instead of 127.0.0.1 ports, "
                   "so other users of the host cannot even read its output (needs rk's tunnel)")
    p.add_argument("--encrypt", action="store_true",
                   help="CurveZMQ-encrypt the kernel's channels, so other users of the host can neither "
                   "read its output nor connect (ipykernel >= 7.3 on the host, jupyter_client >= 8.9 in the front end)")


def _cmd_up(args, options):
    from rk import api

    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            raise _usage(f"--env wants K=V, got {item!r}")
        env[key] = value
    kernel = api.KernelSpec(
        name=args.name, spyder=args.spyder, python=args.python, env=env, cwd=args.cwd, gpus=args.gpus,
        packages=[p for p in args.packages.split(",") if p], hardened=args.hardened,
        encrypt=args.encrypt,
    )
    return api.up(args.hosts, kernel, options, tunnel=not args.no_tunnel)


def _add_fetch(sub, common) -> None:
    p = sub.add_parser("fetch", parents=[common], help="copy a running kernel's connection file here")
    _hosts(p, required=False)
    _name(p)


def _cmd_fetch(args, options):
    from rk import api

    return api.fetch(args.hosts, args.name, options)


def _add_stop(sub, common) -> None:
    p = sub.add_parser("stop", parents=[common], help="stop a kernel and remove its connection files")
    _hosts(p, required=False)
    _name(p)
    p.add_argument("--all", action="store_true", dest="all_kernels", help="stop every kernel on the hosts")


def _cmd_stop(args, options):
    from rk import api

    return api.stop(args.hosts, args.name, args.all_kernels, options)


def _add_status(sub, common) -> None:
    p = sub.add_parser("status", parents=[common], help="kernels on the hosts, and stale local files")
    _hosts(p, required=False)


def _cmd_status(args, options):
    from rk import api

    return api.status(args.hosts, options)


def _add_provision(sub, common) -> None:
    p = sub.add_parser("provision", parents=[common], help="ensure Python and ipykernel on the hosts; start nothing")
    _hosts(p, required=False)
    p.add_argument("--spyder", action="store_true", help="also install spyder-kernels")
    p.add_argument("--python", metavar="PATH", help="check this interpreter instead of making rk's venv")
    p.add_argument("--packages", metavar="A,B", default="", help="extra pip packages")


def _cmd_provision(args, options):
    from rk import api

    return api.provision(args.hosts, args.python, args.spyder, [p for p in args.packages.split(",") if p], options)


def _add_tunnel(sub, common) -> None:
    p = sub.add_parser("tunnel", parents=[common], help="keep a supervised SSH tunnel to a kernel and a local file using it")
    _hosts(p, required=False)
    _name(p)
    p.add_argument("--stop", action="store_true", help="close the tunnel and remove its file (the kernel keeps running)")


def _cmd_tunnel(args, options):
    from rk import api

    return api.tunnel(args.hosts, args.name, args.stop, options)


def _add_interrupt(sub, common) -> None:
    p = sub.add_parser("interrupt", parents=[common], help="interrupt what the kernel runs (SIGINT), whatever front end is attached")
    _hosts(p, required=True)
    _name(p)


def _cmd_interrupt(args, options):
    from rk import api

    return api.interrupt(args.hosts, args.name, options)


def _add_restart(sub, common) -> None:
    p = sub.add_parser("restart", parents=[common], help="restart the kernel, keeping its name, key and tunnel")
    _hosts(p, required=True)
    _name(p)


def _cmd_restart(args, options):
    from rk import api

    return api.restart(args.hosts, args.name, options)


def _add_console(sub, common) -> None:
    p = sub.add_parser("console", parents=[common], help="open jupyter console on the kernel (through rk's tunnel)")
    p.add_argument("--host", required=True, metavar="HOST", help="the kernel's host").completer = _complete_hosts
    _name(p)


def _cmd_console(args, options):
    from rk import api

    api.console(args.host, args.name, options)  # only returns by raising


def _add_kernelspec(sub, common) -> None:
    p = sub.add_parser("kernelspec", help="Jupyter kernelspecs that run a kernel on a host (JupyterLab, VS Code, ...)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    install = actions.add_parser("install", parents=[common], help="provision the host and register a kernelspec")
    install.add_argument("--host", required=True, metavar="HOST",
                         help="the host the kernels run on").completer = _complete_hosts
    _name(install)
    install.add_argument("--display-name", help="what front ends show (default: 'Python (NAME on HOST, rk)')")
    install.add_argument("--spyder", action="store_true", help="run spyder-kernels (Spyder's variable explorer, debugger)")
    install.add_argument("--python", metavar="PATH", help="use this interpreter on the host as it is")
    install.add_argument("--lease", type=float, default=300, metavar="S",
                         help="seconds a kernel outlives its front end's silence before the host stops it (default: %(default)s)")
    actions.add_parser("list", parents=[common], help="rk's kernelspecs")
    remove = actions.add_parser("remove", parents=[common], help="unregister a kernelspec (running kernels stay)")
    remove.add_argument("--host", required=True, metavar="HOST").completer = _complete_hosts
    _name(remove)


def _cmd_kernelspec(args, options):
    from rk import api

    if args.action == "install":
        return api.kernelspec.install(args.host, args.name, args.display_name, args.spyder, args.python, args.lease, options)
    if args.action == "list":
        return api.kernelspec.list_specs()
    return api.kernelspec.remove(args.host, args.name)


def _add_hosts(sub, common) -> None:
    p = sub.add_parser("hosts", parents=[common], help="what the inventory resolves to (contacts no host)")
    _hosts(p, required=False)


def _cmd_hosts(args, options):
    from rk import api

    return api.hosts(args.hosts, options)


def _add_clean(sub, common) -> None:
    p = sub.add_parser("clean", parents=[common], help="remove everything rk put on hosts (--host) or here (--local)")
    p.add_argument("--host", action="append", dest="hosts", metavar="HOST",
                   help="stop its kernels, remove rk's venv, state and caches there, and its local files, "
                   "tunnels and kernelspecs; repeatable").completer = _complete_hosts
    p.add_argument("--local", action="store_true",
                   help="remove rk's tunnels, connection files, kernelspecs, state and cache on this machine")
    p.add_argument("--yes", action="store_true", help="do not ask first when kernels still run (or files remain)")


def _cmd_clean(args, options):
    from rk import api

    if not (args.hosts or args.local):
        raise _usage("rk clean needs --host H (a host's files) or --local (this machine's)")
    confirm = options.confirm
    result = api.clean(args.hosts, options, args.yes, confirm) if args.hosts else api.CommandResult("clean")
    if args.local:
        api.clean_local(args.yes, confirm)
    return result


def _confirm(question: str) -> bool:
    """Ask on the terminal; off a terminal the answer is no (scripts pass --yes)."""
    if not sys.stdin.isatty():
        return False
    sys.stderr.write(f"rk: {question} [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _add_doctor(sub, common) -> None:
    p = sub.add_parser("doctor", parents=[common], help="check every layer rk uses, per host, and say what to fix (changes nothing)")
    _hosts(p, required=False)


def _cmd_doctor(args, options):
    from rk import api

    return api.doctor(args.hosts, options)


def _add_completion(sub, common) -> None:
    p = sub.add_parser("completion", help="print the shell code for completion: eval \"$(rk completion bash)\"")
    p.add_argument("shell", choices=["bash", "zsh"])


def _cmd_completion(args, options):
    """Prints shell code, not a result: main() runs it before anything else."""
    from rk import completion

    print(completion.shellcode(args.shell))


COMMANDS = {
    "up": (_add_up, _cmd_up),
    "fetch": (_add_fetch, _cmd_fetch),
    "stop": (_add_stop, _cmd_stop),
    "status": (_add_status, _cmd_status),
    "provision": (_add_provision, _cmd_provision),
    "hosts": (_add_hosts, _cmd_hosts),
    "tunnel": (_add_tunnel, _cmd_tunnel),
    "interrupt": (_add_interrupt, _cmd_interrupt),
    "restart": (_add_restart, _cmd_restart),
    "console": (_add_console, _cmd_console),
    "kernelspec": (_add_kernelspec, _cmd_kernelspec),
    "clean": (_add_clean, _cmd_clean),
    "doctor": (_add_doctor, _cmd_doctor),
    "completion": (_add_completion, _cmd_completion),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rk", description="Run Jupyter kernels on remote servers over SSH.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common()
    for add, _ in COMMANDS.values():
        add(sub, common)
    return parser


def _version() -> str:
    """rk's version and those of the libraries it drives (from package metadata: imports nothing)."""
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"rk {__version__}"]
    for package in ("ansible-core", "ansible-runner", "jupyter_client"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} missing")
    return "\n".join(parts)


def _usage(message: str) -> Exception:
    from rk.errors import UsageError

    return UsageError(message)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions: answer and exit
        from rk import completion

        completion.complete(parser)
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse: --help/--version exit 0, bad usage exits 2
            return int(exc.code or 0)
        if args.command == "completion":
            _cmd_completion(args, None)
            code = ExitCode.OK
        else:
            code = _run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        return _reader_went_away()


def _reader_went_away() -> int:
    """`rk status | head`: the reader left. Quiet, like other Unix tools, and 128 + SIGPIPE."""
    # Python flushes the streams once more at exit: point them at /dev/null so that cannot fail
    # (with `2>&1 | head` stderr went too).
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        os.dup2(devnull, stream.fileno())
    os.close(devnull)
    return ExitCode.BROKEN_PIPE


def _run(args) -> int:
    from rk import render
    from rk.commands.base import CommandResult, Options
    from rk.errors import RkError

    progress = render.Progress(enabled=not args.verbose)
    options = Options(
        inventory=args.inventory,
        verbosity=args.verbose,
        keep_artifacts=args.keep_artifacts,
        accept_new_host_keys=args.accept_new_host_keys,
        on_task=progress.task,
        confirm=progress.asking(_confirm),
        on_output=(lambda text: print(text, file=sys.stderr, flush=True)) if args.verbose else None,
    )
    try:
        with progress:
            result = COMMANDS[args.command][1](args, options)
    except KeyboardInterrupt:
        print("rk: interrupted; `rk status` shows what is running", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except RkError as exc:
        if args.debug:
            raise
        hint = f" (hint: {exc.hint})" if exc.hint else ""
        print(f"rk: {exc.message}{hint}", file=sys.stderr)
        if args.json:
            render.print_json(CommandResult(command=args.command), error=exc)
        return exc.exit_code
    _print(args, result)
    return result.exit_code


def _print(args, result) -> None:
    from rk import render

    if args.json:
        render.print_json(result)
    elif args.command == "hosts":
        rows = [
            [h.host, h.connect["address"], h.connect["port"] or "", h.connect["user"] or "", h.connect["connection"],
             ",".join(h.connect["groups"])]
            for h in result.hosts
        ]
        print(render.table(rows, ["HOST", "ADDRESS", "PORT", "USER", "CONNECTION", "GROUPS"]))
    elif args.command == "clean":
        for host in result.hosts:
            if host.status == "ok":
                print(f"{host.host}: stopped its kernels; removed rk's venv, state and cache there, "
                      "and its local files, tunnels and kernelspecs")
        if args.local:
            print("this machine: removed rk's tunnels, connection files, kernelspecs, state and cache")
    elif args.command == "doctor":
        from rk.commands.doctor import render as render_doctor

        print(render_doctor(result))
        return  # each failed check names its fix on its own line: no second list on stderr
    elif args.command == "kernelspec":
        rows = [[h.host, k.get("name"), k.get("kernelspec"), k.get("kernelspec_dir", "")] for h in result.hosts for k in h.kernels]
        print(render.table(rows, ["HOST", "KERNEL", "KERNELSPEC", "DIRECTORY"]))
    else:
        print(render.table(render.kernel_rows(result), render.KERNEL_HEADER))
        if args.command in ("up", "fetch", "tunnel", "restart"):
            for host in result.hosts:
                text = render.connect_instructions(host)
                if text:
                    print(text)
    render.print_failures(result)
    if result.artifacts:
        print(f"rk: ansible-runner artifacts kept in {result.artifacts}", file=sys.stderr)
    if result.interrupted:
        print("rk: interrupted; `rk status` shows what is running", file=sys.stderr)
