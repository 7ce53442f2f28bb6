"""Checks on a connection file that came back from a host, before anyone uses it.

The file holds the kernel's HMAC key: whoever has it can run code as the user. A host could
hand back anything, so rk accepts only what it asked for: tcp on loopback, or (the hardened
mode) ipc sockets inside the kernel's own directory on the host, which rk's tunnel forwards to.
"""

from __future__ import annotations

import ipaddress
import json
import os
import posixpath
import re
from pathlib import Path

MAX_BYTES = 16 * 1024
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


class BadConnectionFile(ValueError):
    pass


# The rk_kernel module names ipc sockets "<kernel dir>/k-<n>"; nothing else is accepted, and no
# path that ssh's -L syntax could read differently (":", spaces, controls, brackets).
_IPC_NAME = "k"
_UNFORWARDABLE = re.compile(r"[:\s\x00-\x1f\x7f\\\[\]]")
# A CurveZMQ key in Z85 (32 bytes -> 40 characters of ZeroMQ's alphabet).
_Z85_KEY = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_CURVE_FIELDS = ("curve_publickey", "curve_secretkey")


def validate(path: Path, kernel_dir: str | None = None) -> dict:
    """Return the parsed connection info, or raise BadConnectionFile saying what is wrong.

    `kernel_dir` is the kernel's directory on the host (the module's result says where its
    kernel.json is); an ipc kernel is accepted only with its sockets directly inside it.
    """
    if os.path.getsize(path) > MAX_BYTES:
        raise BadConnectionFile(f"connection file is larger than {MAX_BYTES} bytes")
    try:
        info = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadConnectionFile(f"connection file is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(info, dict):
        raise BadConnectionFile("connection file is not a JSON object")
    key = info.get("key")
    if not isinstance(key, str) or len(key) < 32:
        raise BadConnectionFile("connection key is missing or shorter than 32 characters")
    if info.get("signature_scheme") != "hmac-sha256":
        raise BadConnectionFile("signature scheme is not hmac-sha256")
    transport = info.get("transport")
    if transport not in ("tcp", "ipc"):
        raise BadConnectionFile(f"unknown transport {transport!r}")
    if transport == "tcp":
        try:
            loopback = ipaddress.ip_address(str(info.get("ip"))).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise BadConnectionFile("kernel does not listen on loopback only")
    else:
        _check_ipc_prefix(info.get("ip"), kernel_dir)
    _check_curve(info)
    for name in PORT_NAMES:
        port = info.get(name)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise BadConnectionFile(f"{name} is out of range")
    return info


def _check_ipc_prefix(ip: object, kernel_dir: str | None) -> None:
    """The sockets "<ip>-<port>" must be in the kernel's own 0700 directory, nowhere else."""
    if kernel_dir is None:
        raise BadConnectionFile("ipc transport, but rk does not know the kernel's directory")
    if not isinstance(ip, str) or not posixpath.isabs(ip) or posixpath.normpath(ip) != ip:
        raise BadConnectionFile("ipc socket path is not a plain absolute path")
    if _UNFORWARDABLE.search(ip):
        raise BadConnectionFile("ipc socket path has characters ssh's forwarding cannot carry")
    directory, name = posixpath.split(ip)
    if directory != posixpath.normpath(kernel_dir) or name != _IPC_NAME:
        raise BadConnectionFile("ipc sockets are not inside the kernel's own directory")


def _check_curve(info: dict) -> None:
    """Transport encryption: both CurveZMQ keys, well formed, or neither."""
    present = [name for name in _CURVE_FIELDS if name in info]
    if present and (len(present) != 2 or not all(isinstance(info[n], str) and _Z85_KEY.match(info[n])
                                                 for n in _CURVE_FIELDS)):
        raise BadConnectionFile("CurveZMQ keys are incomplete or not 40-character Z85 keys")
