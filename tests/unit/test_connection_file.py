"""A connection file coming back from a host is checked before rk keeps it."""

import json

import pytest

from rk import connection
from rk.connection import BadConnectionFile, validate

pytestmark = pytest.mark.fast

GOOD = {
    "key": "a" * 64,
    "signature_scheme": "hmac-sha256",
    "transport": "tcp",
    "ip": "127.0.0.1",
    "shell_port": 50001,
    "iopub_port": 50002,
    "stdin_port": 50003,
    "control_port": 50004,
    "hb_port": 50005,
    "kernel_name": "",
}


def write(tmp_path, info):
    path = tmp_path / "kernel.json"
    path.write_text(info if isinstance(info, str) else json.dumps(info))
    return path


def test_a_well_formed_file_is_accepted(tmp_path):
    assert validate(write(tmp_path, GOOD))["shell_port"] == 50001


@pytest.mark.parametrize(
    "change, why",
    [
        ({"key": ""}, "key"),
        ({"key": "abc123"}, "key"),
        ({"key": None}, "key"),
        ({"signature_scheme": "hmac-md5"}, "signature"),
        ({"signature_scheme": ""}, "signature"),
        ({"ip": "0.0.0.0"}, "loopback"),
        ({"ip": "10.1.2.3"}, "loopback"),
        ({"ip": "not-an-ip"}, "loopback"),
        ({"transport": "udp"}, "transport"),
        ({"shell_port": 0}, "shell_port"),
        ({"hb_port": 70000}, "hb_port"),
        ({"iopub_port": "50002"}, "iopub_port"),
        ({"control_port": True}, "control_port"),
    ],
)
def test_hostile_values_are_rejected(tmp_path, change, why):
    with pytest.raises(BadConnectionFile, match=why):
        validate(write(tmp_path, GOOD | change))


def test_an_oversized_file_is_rejected(tmp_path):
    with pytest.raises(BadConnectionFile, match="larger"):
        validate(write(tmp_path, GOOD | {"padding": "x" * 20000}))


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", "\"key\""])
def test_garbage_is_rejected(tmp_path, text):
    with pytest.raises(BadConnectionFile):
        validate(write(tmp_path, text))


def test_rejection_never_quotes_the_key(tmp_path):
    secret = "s3cr3t" * 3
    with pytest.raises(BadConnectionFile) as caught:
        validate(write(tmp_path, GOOD | {"key": secret}))
    assert secret not in str(caught.value)


KERNEL_DIR = "/home/ana/.local/state/rk/gpu1/k"
IPC = GOOD | {"transport": "ipc", "ip": KERNEL_DIR + "/k", "shell_port": 1, "iopub_port": 2,
              "stdin_port": 3, "control_port": 4, "hb_port": 5}


def test_ipc_sockets_in_the_kernels_own_directory_are_accepted(tmp_path):
    assert validate(write(tmp_path, IPC), kernel_dir=KERNEL_DIR)["ip"] == KERNEL_DIR + "/k"


@pytest.mark.parametrize(
    "change, kernel_dir, why",
    [
        ({}, None, "directory"),  # rk must know where the kernel lives
        ({"ip": "/tmp/k"}, KERNEL_DIR, "own directory"),
        ({"ip": KERNEL_DIR + "/../other/k"}, KERNEL_DIR, "plain"),
        ({"ip": KERNEL_DIR + "/sub/k"}, KERNEL_DIR, "own directory"),
        ({"ip": KERNEL_DIR}, KERNEL_DIR, "own directory"),
        ({"ip": "k"}, KERNEL_DIR, "plain"),
        ({"ip": "/run/docker.sock"}, "/run", "own directory"),  # the dir too must be the kernel's
        ({"ip": "/h/a:b/k"}, "/h/a:b", "characters"),
        ({"ip": KERNEL_DIR + "/k x"}, KERNEL_DIR, "characters"),
        ({"ip": KERNEL_DIR + "/k\n"}, KERNEL_DIR, "characters"),
        ({"ip": ["/x"]}, KERNEL_DIR, "plain"),
        ({"shell_port": 0}, KERNEL_DIR, "shell_port"),
        ({"hb_port": "5"}, KERNEL_DIR, "hb_port"),
    ],
)
def test_hostile_ipc_values_are_rejected(tmp_path, change, kernel_dir, why):
    with pytest.raises(BadConnectionFile, match=why):
        validate(write(tmp_path, IPC | change), kernel_dir=kernel_dir)


def _curve_file(tmp_path, **curve):
    info = {"key": "a" * 64, "signature_scheme": "hmac-sha256", "transport": "tcp", "ip": "127.0.0.1",
            **{name: 40000 + i for i, name in enumerate(connection.PORT_NAMES)}, **curve}
    path = tmp_path / "kernel.json"
    path.write_text(json.dumps(info))
    return path


def test_curve_keys_are_accepted_in_pairs_of_z85_and_refused_otherwise(tmp_path):
    good = {"curve_publickey": "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", "curve_secretkey": "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"}
    assert connection.validate(_curve_file(tmp_path, **good))["curve_publickey"] == good["curve_publickey"]
    for bad in ({"curve_publickey": good["curve_publickey"]}, {**good, "curve_secretkey": "short"},
                {**good, "curve_publickey": "\"" * 40}, {**good, "curve_secretkey": 12}):
        with pytest.raises(connection.BadConnectionFile, match="CurveZMQ keys"):
            connection.validate(_curve_file(tmp_path, **bad))
