"""Session-wide test plumbing: SSH test hosts, a wheelhouse, isolation of the user's dirs."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.hosts import HostGroup, generate_key, remove_session_containers, start_hosts
from tests.hosts.hosts import remove_containers
from tests.hosts.wheelhouse import ensure_wheelhouse

# Every container this session starts carries this label value, so the sweep at the end
# removes ours and never those of a concurrent session.
# tests/run sets RK_TEST_SESSION so it can check after the run that nothing was left behind.
SESSION = os.environ.get("RK_TEST_SESSION") or uuid.uuid4().hex[:12]
# Under pytest-xdist each worker sweeps only its own containers when it ends (the others may
# still be using theirs); tests/run's final check matches the prefix.
if os.environ.get("PYTEST_XDIST_WORKER"):
    SESSION = f"{SESSION}-{os.environ['PYTEST_XDIST_WORKER']}"


# The longest test files first: under pytest-xdist (tests/run: --dist loadfile) a long file
# that started last would run alone at the end.
LONGEST_FIRST = ("reliability/test_soak.py", "reliability/test_local_state.py", "reliability/test_scale.py",
                 "integration/test_frontends.py", "reliability/test_faults.py",
                 "integration/test_rk_commands.py", "integration/test_python_role.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = Path(str(item.fspath)).as_posix()
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith(name)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the usual order otherwise


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("RK_TESTS_REQUIRE_INSTALLED_RK"):
        _require_installed_rk()
    # pytest runs finalisers on KeyboardInterrupt, but SIGTERM (a CI timeout, `kill`)
    # would end the process without them and leave containers running.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def _require_installed_rk() -> None:
    # tests/run installs rk as a wheel; importing the checkout's rk/ instead would hide
    # packaging mistakes (rk/_content exists only in the wheel).
    import rk

    checkout = Path(__file__).resolve().parent.parent
    if Path(rk.__file__).resolve().is_relative_to(checkout / "rk"):
        raise pytest.UsageError(f"rk is imported from the checkout ({rk.__file__}), "
                                "not from the installed wheel")


@pytest.fixture(scope="session", autouse=True)
def _sweep_session_containers() -> Iterator[None]:
    yield
    if shutil.which("podman"):
        remove_session_containers(SESSION)


@pytest.fixture(autouse=True)
def _isolated_user_dirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point HOME, XDG and Jupyter dirs at a fresh directory for every test.

    A short path under /tmp, not tmp_path: ssh control sockets live under HOME and a
    unix socket path must stay under 108 bytes.
    """
    home = Path(tempfile.mkdtemp(prefix="rk-home-"))
    monkeypatch.setenv("HOME", str(home))
    for name, sub in [("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share"),
                      ("XDG_STATE_HOME", ".local/state"), ("XDG_CACHE_HOME", ".cache"),
                      ("JUPYTER_RUNTIME_DIR", ".local/share/jupyter/runtime")]:
        (home / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(home / sub))
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def test_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The private key of the client key pair authorised for root and rk on every host."""
    return generate_key(tmp_path_factory.mktemp("client-key") / "id_ed25519")


@pytest.fixture
def make_hosts(test_keys: Path, tmp_path: Path) -> Iterator[Callable[..., HostGroup]]:
    """A factory of SSH test host groups; every group is removed when the test ends.

    make_hosts(n=1, image="bare"|"python"|"novenv", user="rk"|"root", offline=False,
               ca=False, become=False, podman_args=()) -> HostGroup
    """
    groups: list[HostGroup] = []

    def make(**options) -> HostGroup:
        directory = tmp_path / f"hosts{len(groups) + 1}"
        group = start_hosts(directory, test_keys, SESSION, **options)
        groups.append(group)
        return group

    yield make
    remove_containers([host.container for group in groups for host in group.hosts])


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """Wheels of ipykernel (and pip) for CPython 3.11 manylinux x86_64: an air-gapped install."""
    return ensure_wheelhouse()
