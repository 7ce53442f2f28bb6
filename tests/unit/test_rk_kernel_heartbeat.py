"""The rk_kernel module's heartbeat probe: a ZeroMQ greeting, without a key, within a deadline."""

import importlib.util
import socket
import threading
from pathlib import Path

import pytest
import zmq

MODULE_PATH = Path(__file__).resolve().parents[2] / "roles/rk_kernel/library/rk_kernel.py"
_spec = importlib.util.spec_from_file_location("rk_kernel_heartbeat", MODULE_PATH)
rk_kernel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rk_kernel)

pytestmark = pytest.mark.fast


def test_a_zeromq_socket_greets_over_tcp_and_ipc(tmp_path):
    context = zmq.Context()
    try:
        rep = context.socket(zmq.REP)  # what ipykernel's heartbeat binds
        port = rep.bind_to_random_port("tcp://127.0.0.1")
        path = str(tmp_path / "k-5")
        rep.bind(f"ipc://{path}")
        assert rk_kernel.zmtp_greets(socket.AF_INET, ("127.0.0.1", port), deadline=10)
        assert rk_kernel.zmtp_greets(socket.AF_UNIX, path, deadline=10)
    finally:
        context.destroy(linger=0)


def test_a_listener_that_accepts_but_never_greets_is_not_responsive():
    # What a frozen process's socket does: the OS accepts the connection, nobody speaks.
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        assert not rk_kernel.zmtp_greets(socket.AF_INET, mute.getsockname(), deadline=0.5)


def test_a_peer_that_speaks_something_else_is_not_a_zeromq_greeting():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def talk():
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

        threading.Thread(target=talk, daemon=True).start()
        assert not rk_kernel.zmtp_greets(socket.AF_INET, server.getsockname(), deadline=5)


def test_nothing_listening_is_not_responsive(tmp_path):
    assert not rk_kernel.zmtp_greets(socket.AF_UNIX, str(tmp_path / "gone"), deadline=1)
