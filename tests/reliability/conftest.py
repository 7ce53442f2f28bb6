"""Host groups and user homes shared by the tests of one module (starting hosts is the slow part)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import SESSION
from tests.hosts import HostGroup, start_hosts
from tests.reliability.support import new_home, rk, user_env


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.hosts)


@pytest.fixture(scope="module")
def module_hosts(test_keys: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., HostGroup]]:
    """Like conftest's make_hosts, for the whole module: make(**options) -> HostGroup."""
    groups: list[HostGroup] = []

    def make(**options) -> HostGroup:
        group = start_hosts(tmp_path_factory.mktemp("hosts"), test_keys, SESSION, **options)
        groups.append(group)
        return group

    yield make
    for group in groups:
        group.destroy()


@pytest.fixture(scope="module")
def module_user() -> Iterator[Callable[..., dict]]:
    """Users of the controller for the whole module: make(*inventories) -> env; each one's
    kernels on those inventories are stopped and its home removed at the end."""
    made: list[tuple[Path, dict, tuple]] = []

    def make(*inventories: Path) -> dict:
        home = new_home()
        env = user_env(home)
        made.append((home, env, inventories))
        return env

    yield make
    for home, env, inventories in made:
        for inventory in inventories:
            rk(env, "stop", "-i", str(inventory), "--all", timeout=120)
        shutil.rmtree(home, ignore_errors=True)


# A test module defines `group` (its hosts); these derive what most of its tests need.
@pytest.fixture(scope="module")
def host(group: HostGroup):
    return group.hosts[0]


@pytest.fixture(scope="module")
def inv(group: HostGroup) -> str:
    return str(group.inventory)


@pytest.fixture(scope="module")
def env(module_user, group: HostGroup) -> dict:
    """The module's controller user, whose kernels on `group` are stopped at the end."""
    return module_user(Path(group.inventory))
