"""Checks on a connection file that came back from a host, before anyone uses it.

The file holds the kernel's HMAC key: whoever has it can run code as the user. A host could
hand back anything, so rk accepts only what it asked for.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

MAX_BYTES = 16 * 1024
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


class BadConnectionFile(ValueError):
    pass


def validate(path: Path) -> dict:
    """Return the parsed connection info, or raise BadConnectionFile saying what is wrong."""
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
        for name in PORT_NAMES:
            port = info.get(name)
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                raise BadConnectionFile(f"{name} is out of range")
    return info
