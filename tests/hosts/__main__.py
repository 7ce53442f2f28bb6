"""Start and remove SSH test hosts from outside pytest (molecule's create and destroy).

    python -m tests.hosts up DIR [--image bare] [--user rk] [-n 1]   prints molecule's instance config as JSON
    python -m tests.hosts down DIR                                   removes the hosts started in DIR
    python -m tests.hosts wheelhouse                                 prints the wheelhouse directory
    python -m tests.hosts kernel-info --port P --user U --key K --known-hosts KH FILE
        asks the kernel of connection file FILE (on 127.0.0.1:P) for kernel_info through
        an SSH tunnel and prints the reply's content as JSON
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from jupyter_client import BlockingKernelClient

from tests.kernels import ssh_tunnel

from .hosts import Host, generate_key, remove_containers, start_hosts
from .images import RECIPES
from .wheelhouse import ensure_wheelhouse

SESSION = os.environ.get("RK_TEST_SESSION", "cli")


def up(directory: Path, image: str, user: str, n: int) -> list[dict]:
    down(directory)  # a host left by an earlier `up` in the same directory is replaced
    key = directory / "id_ed25519"
    if not key.exists():
        generate_key(key)
    group = start_hosts(directory, key, SESSION, n=n, image=image, user=user)
    (directory / "containers").write_text("".join(f"{h.container}\n" for h in group.hosts))
    return [{"instance": h.name, "address": "127.0.0.1", "port": h.port, "user": h.user,
             "identity_file": str(key)} for h in group.hosts]


def down(directory: Path) -> list[str]:
    listing = directory / "containers"
    if not listing.exists():
        return []
    containers = listing.read_text().split()
    remove_containers(containers)
    listing.unlink()
    return containers


def kernel_info(host: Host, connection_file: Path, timeout: float = 30) -> dict:
    with ssh_tunnel(host, connection_file) as local:
        client = BlockingKernelClient()
        client.load_connection_info(local)
        client.start_channels()
        try:
            return client.kernel_info(reply=True, timeout=timeout)["content"]
        finally:
            client.stop_channels()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hosts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start hosts; print their instance config")
    up_parser.add_argument("directory", type=Path)
    up_parser.add_argument("--image", choices=sorted(RECIPES), default="bare")
    up_parser.add_argument("--user", choices=["rk", "root"], default="rk")
    up_parser.add_argument("-n", type=int, default=1)
    down_parser = commands.add_parser("down", help="remove the hosts started in DIRECTORY")
    down_parser.add_argument("directory", type=Path)
    commands.add_parser("wheelhouse", help="print the directory of ipykernel wheels")
    info_parser = commands.add_parser("kernel-info", help="ask a kernel for kernel_info over SSH")
    info_parser.add_argument("--port", type=int, required=True)
    info_parser.add_argument("--user", required=True)
    info_parser.add_argument("--key", type=Path, required=True)
    info_parser.add_argument("--known-hosts", type=Path, required=True)
    info_parser.add_argument("connection_file", type=Path)
    args = parser.parse_args(argv)

    if args.command == "up":
        args.directory.mkdir(parents=True, exist_ok=True)
        print(json.dumps(up(args.directory, args.image, args.user, args.n)))
    elif args.command == "down":
        print(json.dumps(down(args.directory)))
    elif args.command == "wheelhouse":
        print(ensure_wheelhouse())
    else:
        host = Host("kernel-info", "", args.user, args.key, args.known_hosts, port=args.port)
        print(json.dumps(kernel_info(host, args.connection_file)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
