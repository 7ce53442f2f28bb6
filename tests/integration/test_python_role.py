"""The rk_python role through real ansible-playbook runs (playbooks/provision.yml) on SSH hosts.

Hosts are Debian bookworm containers: `bare` has no Python at all, `novenv` has python3
without its venv module (no ensurepip), `python` has python3 with Debian's ipykernel.
Results are read the way rk reads them: ansible-runner runs ansible-playbook, the role's
set_stats data arrives as artifact_data, and changes are counted from the runner's stats.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import ansible_runner
import pytest

pytestmark = pytest.mark.hosts

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The repository's ansible.cfg, and this interpreter's ansible-playbook first on PATH.
ANSIBLE_ENV = {"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
CONTROLLER_CA = "/etc/ssl/certs/ca-certificates.crt"
VENV = "/home/rk/.local/share/rk/venv"
ROOT_VENV = "/root/.local/share/rk/venv"
CACHE = "/home/rk/.cache/rk"
PUSH = "Push the wheelhouse"
PROBE = "Probe the host with raw (works before Python exists)"


@dataclass
class Run:
    ok: bool
    changed: int
    result: dict | None  # this host's rk_python entry from set_stats
    messages: str  # every failure message of the run, joined
    output: str
    # (task name, result) of every task that ran on the host (ok, changed or failed)
    tasks: list[tuple[str, dict]] = field(default_factory=list)

    def task(self, name: str) -> dict:
        """The result of the one run of task `name` (fails the test if it ran more or less)."""
        (result,) = [res for task, res in self.tasks if task == name]
        return result


def provision(group, *cmdline: str, **extravars) -> Run:
    """Run playbooks/provision.yml on the group's single host."""
    return run_playbook(group, REPO / "playbooks" / "provision.yml", cmdline, extravars)


def run_playbook(group, playbook: Path, cmdline, extravars, env=None) -> Run:
    host = group.hosts[0].name
    data_dir = tempfile.mkdtemp(prefix="runner-", dir=group.directory)
    runner = ansible_runner.run(
        private_data_dir=data_dir, playbook=str(playbook),
        inventory=str(group.inventory), extravars=extravars, cmdline=" ".join(cmdline) or None,
        quiet=True, envvars={**ANSIBLE_ENV, **(env or {})}, timeout=600)
    (stats,) = [e["event_data"] for e in runner.events if e["event"] == "playbook_on_stats"]
    failures = [e["event_data"]["res"].get("msg", "") for e in runner.events
                if e["event"] in ("runner_on_failed", "runner_on_unreachable")
                and not e["event_data"].get("ignore_errors")]
    ok = not stats["failures"].get(host) and not stats["dark"].get(host)
    tasks = [(e["event_data"]["task"], e["event_data"]["res"]) for e in runner.events
             if e["event"] in ("runner_on_ok", "runner_on_failed")
             and e["event_data"].get("host") == host]
    return Run(ok, stats["changed"].get(host, 0),
               stats.get("artifact_data", {}).get("rk_python", {}).get(host),
               "\n".join(str(m) for m in failures), runner.stdout.read()[-6000:], tasks)


def wheelhouse_dir(wheelhouse: Path, cache: str = CACHE) -> str:
    """The host directory rk_push_wheelhouse unpacks `wheelhouse` into (named by its listing)."""
    path = REPO / "roles" / "rk_python" / "action_plugins" / "rk_push_wheelhouse.py"
    spec = importlib.util.spec_from_file_location("rk_push_wheelhouse", path)
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    return f"{cache}/{plugin.listing_digest(str(wheelhouse))[1]}"


def stat(host, *paths: str) -> list[str]:
    """`mode owner` of each path, as root sees it."""
    out = host.exec("stat -c '%a %U' " + " ".join(paths)).stdout
    return out.strip().splitlines()


def remove_sudo(host) -> None:
    host.exec("rm -f /etc/sudoers.d/rk")


def imports_ipykernel(host, python: str, user: str) -> str:
    """ipykernel's version as `user` sees it through `python` (fails the test if it can't)."""
    result = host.exec(f"su {user} -s /bin/sh -c '{python} -c \"import ipykernel; "
                       f"print(ipykernel.__version__)\"'", check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize("user", ["root", "rk"])
def test_bare_host_gets_a_venv_from_the_wheelhouse_and_a_second_run_changes_nothing(
        make_hosts, wheelhouse, user):
    # The host has apt (for python3) but pip never sees an index: --no-index from the wheelhouse.
    group = make_hosts(image="bare", user=user)
    venv = ROOT_VENV if user == "root" else VENV

    first = provision(group, rk_python_wheelhouse=str(wheelhouse))
    assert first.ok, first.output
    assert first.changed > 0
    assert first.result["executable"] == f"{venv}/bin/python"
    assert first.result["changed"] is True
    assert first.result["version"].startswith("3.11.")
    assert imports_ipykernel(group.hosts[0], f"{venv}/bin/python", user) == first.result["ipykernel"]

    second = provision(group, rk_python_wheelhouse=str(wheelhouse))
    assert second.ok, second.output
    assert second.changed == 0, second.output
    assert second.result == {**first.result, "changed": False}


def test_check_mode_on_a_fresh_host_changes_nothing(make_hosts, wheelhouse):
    group = make_hosts(image="novenv", offline=True)
    host = group.hosts[0]

    # Ansible's own remote working directory (~/.ansible/tmp) aside, nothing may appear.
    listing = "find /home/rk /tmp /usr -path /home/rk/.ansible -prune -o -print | sort"
    before = host.exec(listing).stdout

    run = provision(group, "--check", rk_python_wheelhouse=str(wheelhouse))

    assert run.ok, run.output
    assert host.exec(listing).stdout == before
    # The wheelhouse would be sent: its task says so, with the directory it would make.
    assert run.task(PUSH)["changed"] is True
    assert run.task(PUSH)["path"] == wheelhouse_dir(wheelhouse)


def test_user_without_sudo_on_python_without_venv_gets_a_working_venv(make_hosts, wheelhouse):
    # No root, no python3-venv, no network: venv --without-pip, then pip from its own wheel.
    group = make_hosts(image="novenv", offline=True)
    host = group.hosts[0]
    remove_sudo(host)

    first = provision(group, rk_python_wheelhouse=str(wheelhouse))
    assert first.ok, first.output
    assert imports_ipykernel(host, f"{VENV}/bin/python", "rk") == first.result["ipykernel"]
    assert host.exec(f"stat -c %U {VENV} {VENV}/bin/pip").stdout.split() == ["rk", "rk"]
    assert host.exec("dpkg -s python3-venv", check=False).returncode != 0

    second = provision(group, rk_python_wheelhouse=str(wheelhouse))
    assert second.ok and second.changed == 0, second.output


def test_existing_interpreter_with_ipykernel_is_used_as_is(make_hosts):
    group = make_hosts(image="python")

    run = provision(group, rk_python_interpreter="/usr/bin/python3")

    assert run.ok, run.output
    assert run.changed == 0
    assert run.result["executable"] == "/usr/bin/python3"
    assert run.result["ipykernel"] == imports_ipykernel(group.hosts[0], "/usr/bin/python3", "rk")
    assert group.hosts[0].exec(f"test -e {VENV}", check=False).returncode != 0


def test_existing_interpreter_without_ipykernel_fails_with_a_sentence(make_hosts):
    group = make_hosts(image="novenv")

    run = provision(group, rk_python_interpreter="/usr/bin/python3")

    assert not run.ok
    assert "ipykernel is not importable by /usr/bin/python3" in run.messages
    assert "unset rk_python_interpreter to let rk make its own venv" in run.messages


def test_bare_host_without_sudo_names_python3_and_the_fix(make_hosts, wheelhouse):
    group = make_hosts(image="bare")
    remove_sudo(group.hosts[0])

    run = provision(group, rk_python_wheelhouse=str(wheelhouse))

    assert not run.ok
    assert "python3 is missing on h1 and rk cannot install it" in run.messages, run.messages
    assert "apt-get install python3 python3-venv" in run.messages


def test_typo_in_extra_vars_is_reported_before_touching_the_host(make_hosts):
    group = make_hosts(image="novenv")

    run = provision(group, rk_python_spyder="maybe")

    assert not run.ok
    assert "rk_python_spyder" in run.messages
    assert group.hosts[0].exec("test -e /home/rk/.local/share/rk", check=False).returncode != 0


@pytest.mark.slow
def test_index_through_a_ca_bundle_installs_spyder_kernels(make_hosts):
    # The host reaches PyPI only through the controller's TLS-intercepting proxy, whose CA
    # it does not trust: rk_python_ca_bundle pushes the controller's bundle for pip --cert.
    group = make_hosts(image="novenv", ca=True)

    run = provision(group, rk_python_ca_bundle=CONTROLLER_CA, rk_python_spyder=True)

    assert run.ok, run.output
    host = group.hosts[0]
    imports_ipykernel(host, f"{VENV}/bin/python", "rk")
    version = host.exec(f"{VENV}/bin/python -c 'import spyder_kernels; print(spyder_kernels.__version__)'")
    assert version.stdout.startswith("3.1."), version.stdout


def test_venv_belongs_to_the_connecting_user_when_the_inventory_sets_become(make_hosts, wheelhouse):
    # Only the package install escalates: python3-venv comes from apt through sudo, the venv
    # is rk's even though the inventory says ansible_become: true.
    group = make_hosts(image="novenv", become=True)
    host = group.hosts[0]

    run = provision(group, rk_python_wheelhouse=str(wheelhouse))

    assert run.ok, run.output
    assert host.exec("dpkg -s python3-venv", check=False).returncode == 0
    assert host.exec(f"stat -c %U {VENV} {VENV}/bin/pip").stdout.split() == ["rk", "rk"]
    assert host.exec(f"test -e {ROOT_VENV}", check=False).returncode != 0
    # The wheelhouse's push runs its shell commands as rk too, not through sudo.
    assert stat(host, CACHE, wheelhouse_dir(wheelhouse)) == ["700 rk", "755 rk"]
    assert host.exec("test -e /root/.cache/rk", check=False).returncode != 0


def test_wheelhouse_crosses_once_and_the_fingerprint_leaves_one_probe(make_hosts, wheelhouse):
    # novenv without sudo and offline: venv --without-pip, pip from its wheel, the rest from
    # the wheelhouse. A cut earlier run left a half-unpacked wheelhouse behind.
    group = make_hosts(image="novenv", offline=True)
    host = group.hosts[0]
    remove_sudo(host)
    unpacked = wheelhouse_dir(wheelhouse)
    host.exec(f"mkdir -p {unpacked}.part && echo half > {unpacked}.part/junk.whl "
              f"&& chown -R rk:rk /home/rk/.cache")

    first = provision(group, rk_python_wheelhouse=str(wheelhouse))

    assert first.ok, first.output
    push = first.task(PUSH)
    assert push["changed"] is True and push["path"] == unpacked
    assert imports_ipykernel(host, f"{VENV}/bin/python", "rk") == first.result["ipykernel"]
    # The stale .part is gone, not merged; the tar was streamed, never stored on the host.
    pip_wheel = Path(first.task("Push the pip wheel")["dest"]).name
    assert sorted(host.exec(f"ls -A {CACHE}").stdout.split()) == sorted([Path(unpacked).name, pip_wheel])
    wheels = host.exec(f"ls {unpacked}").stdout.split()
    assert "junk.whl" not in wheels
    assert sorted(wheels) == sorted(p.name for p in wheelhouse.iterdir() if p.is_file())
    assert stat(host, CACHE, unpacked, f"{unpacked}/{wheels[0]}") == ["700 rk", "755 rk", "644 rk"]
    # The merged version task wrote the fingerprint whole, 0644, and left no temporary file.
    fingerprint = host.exec(f"cat {VENV}/.rk-fingerprint").stdout
    assert fingerprint.endswith(f" {first.result['version']}\n")
    assert len(fingerprint.split()[0]) == 64
    assert stat(host, f"{VENV}/.rk-fingerprint") == ["644 rk"]
    assert [n for n in host.exec(f"ls -A {VENV}").stdout.split() if n.startswith(".rk-")] == [".rk-fingerprint"]

    # The fingerprint matches: the raw probe is the only task that reaches the host.
    second = provision(group, rk_python_wheelhouse=str(wheelhouse))
    assert second.ok and second.changed == 0, second.output
    assert [task for task, _ in second.tasks].count(PROBE) == 1
    assert PUSH not in [task for task, _ in second.tasks]
    assert second.result == {**first.result, "changed": False}

    # Without the fingerprint the slow path runs again, but the wheelhouse is not sent again:
    # a file planted in the unpacked directory survives, and the task reports no change.
    host.exec(f"rm {VENV}/.rk-fingerprint && touch {unpacked}/planted")
    third = provision(group, rk_python_wheelhouse=str(wheelhouse))
    assert third.ok and third.changed == 0, third.output
    assert third.task(PUSH)["changed"] is False
    assert "tar" not in third.task(PUSH)
    assert host.exec(f"test -e {unpacked}/planted", check=False).returncode == 0
    assert host.exec(f"cat {VENV}/.rk-fingerprint").stdout == fingerprint


def test_wheelhouse_push_failures_are_one_sentence(make_hosts, wheelhouse):
    group = make_hosts(image="novenv", offline=True)
    host = group.hosts[0]
    remove_sudo(host)

    # No tar on the host: said before anything is sent.
    host.exec("mv /usr/bin/tar /usr/bin/tar.away")
    run = provision(group, rk_python_wheelhouse=str(wheelhouse))
    assert not run.ok
    assert "tar is missing on h1, and rk unpacks the wheelhouse with it" in run.messages, run.messages
    assert "wheelhouse-" not in host.exec(f"ls -A {CACHE}").stdout
    host.exec("mv /usr/bin/tar.away /usr/bin/tar")

    # A stale .part the connecting user cannot remove (root's): the host's own words, no traceback.
    unpacked = wheelhouse_dir(wheelhouse)
    host.exec(f"mkdir -p {unpacked}.part && touch {unpacked}.part/junk.whl")
    run = provision(group, rk_python_wheelhouse=str(wheelhouse))
    assert not run.ok
    assert f"could not unpack the wheelhouse into {unpacked} on h1" in run.messages, run.messages
    assert "Permission denied" in run.messages, run.messages
    assert "Traceback" not in run.messages
    assert host.exec(f"test -e {unpacked}", check=False).returncode != 0


PUSH_PLAYBOOK = """
- name: Push a wheelhouse with the action plugin alone
  hosts: all
  gather_facts: false
  tasks:
    - name: Push the wheelhouse
      rk_push_wheelhouse:
        src: "{{ src }}"
        controller_cache: "{{ controller_cache }}"
        dest: "{{ dest }}"
        stream_limit: "{{ stream_limit }}"
"""


def test_wheelhouse_push_needs_no_python_and_large_tars_go_by_file_transfer(make_hosts, wheelhouse):
    # A bare host has no Python at all: the plugin runs only shell commands there.
    group = make_hosts(image="bare")
    host = group.hosts[0]
    playbook = group.directory / "push.yml"
    playbook.write_text(PUSH_PLAYBOOK)
    env = {"ANSIBLE_ACTION_PLUGINS": str(REPO / "roles" / "rk_python" / "action_plugins")}
    wheels = sorted(p.name for p in wheelhouse.iterdir() if p.is_file())

    def push(dest: str, stream_limit: int, *cmdline: str) -> Run:
        return run_playbook(group, playbook, cmdline, {
            "src": str(wheelhouse), "controller_cache": str(group.directory / "tars"),
            "dest": dest, "stream_limit": stream_limit}, env)

    # Through the ssh pipe (the default), and by sftp/scp when the tar is above the limit.
    for dest, limit in (("/home/rk/piped/cache", 64 << 20), ("/home/rk/put/cache", 0)):
        unpacked = wheelhouse_dir(wheelhouse, dest)
        check = push(dest, limit, "--check")
        assert check.ok and check.task(PUSH)["changed"] is True, check.output
        assert host.exec(f"test -e {dest}", check=False).returncode != 0

        run = push(dest, limit)
        assert run.ok, run.output
        assert run.task(PUSH) | {"path": unpacked, "changed": True} == run.task(PUSH)
        assert sorted(host.exec(f"ls -A {dest}").stdout.split()) == [Path(unpacked).name]
        assert sorted(host.exec(f"ls -A {unpacked}").stdout.split()) == wheels
        assert stat(host, dest, unpacked) == ["700 rk", "755 rk"]
        # Byte for byte: the host's checksums are the controller's.
        sums = host.exec(f"cd {unpacked} && sha256sum *").stdout
        assert sums == "".join(f"{hashlib.sha256((wheelhouse / w).read_bytes()).hexdigest()}  {w}\n"
                               for w in wheels)

        again = push(dest, limit)
        assert again.ok and again.task(PUSH)["changed"] is False, again.output
        assert "tar" not in again.task(PUSH)
    assert host.exec("command -v python3 || command -v python", check=False).returncode != 0


def test_a_new_wheelhouse_removes_the_old_ones_on_both_ends_but_not_one_in_use(make_hosts, wheelhouse, tmp_path):
    """Each wheelhouse version left a tar on the controller and a directory on the host, for ever."""
    group = make_hosts(image="novenv", offline=True)
    host = group.hosts[0]
    controller_cache = tmp_path / "controller-cache"

    def version(name: str, stamp: int) -> Path:
        """A copy of the wheelhouse whose listing (so whose name) differs by one mtime."""
        copy = tmp_path / name
        shutil.copytree(wheelhouse, copy)
        os.utime(next(copy.iterdir()), (stamp, stamp))
        return copy

    old, young, new = version("old", 1_000_000), version("young", 2_000_000), version("new", 3_000_000)
    for wheels in (old, young):
        host.exec(f"rm -f {VENV}/.rk-fingerprint", check=False)
        assert provision(group, rk_python_wheelhouse=str(wheels),
                         rk_python_controller_cache=str(controller_cache)).ok
    # `old` was last used two hours ago; `young` a moment ago (another run may still use it).
    old_dir, young_dir, new_dir = (wheelhouse_dir(w) for w in (old, young, new))
    host.exec(f"touch -d '2 hours ago' {old_dir}")
    two_hours_ago = time.time() - 7200
    os.utime(controller_cache / (Path(old_dir).name + ".tar"), (two_hours_ago, two_hours_ago))

    host.exec(f"rm -f {VENV}/.rk-fingerprint")
    run = provision(group, rk_python_wheelhouse=str(new), rk_python_controller_cache=str(controller_cache))

    assert run.ok, run.output
    on_host = set(host.exec(f"ls -A {CACHE}").stdout.split())
    assert Path(new_dir).name in on_host and Path(young_dir).name in on_host
    assert Path(old_dir).name not in on_host
    tars = sorted(p.name for p in controller_cache.iterdir() if p.name.endswith(".tar"))
    assert tars == sorted(Path(d).name + ".tar" for d in (young_dir, new_dir))
