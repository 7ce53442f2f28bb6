"""rk doctor: every layer rk uses, checked per host in the order rk uses them, plus this machine.

Read-only: starts no kernel, installs nothing, moves no file (checks in rk/doctor_checks.py).
Hosts run in parallel, each bounded by PER_HOST_S; a layer that fails skips the ones after it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, requires, version

import yaml

from rk import content, doctor_checks as dc, inventory_cache, paths
from rk.commands import base
from rk.doctor_checks import Check
from rk.ssh import Target

PER_HOST_S = 60.0
LAYERS = ("inventory", "ssh", "sshd", "python", "runtime")


@dataclass
class DoctorHost(base.HostResult):
    checks: list[dict] = field(default_factory=list)  # Check.to_json(), in the order rk uses the layers


def doctor(hosts: list[str] | None, options: base.Options | None = None) -> base.CommandResult:
    options = options or base.Options()
    selection = base.resolve(hosts, options)
    result = base.CommandResult("doctor")
    progress = options.on_task or (lambda host, task, path: None)

    def one(name: str) -> base.HostResult:
        shown = selection.shown(name)
        progress(shown, "checking every layer", __file__)
        checks = host_checks(name, selection, options)
        return _host_result(shown, checks)

    with ThreadPoolExecutor(max_workers=max(1, min(len(selection.limit), 16))) as pool:
        result.hosts = list(pool.map(one, selection.limit))
    result.hosts.append(_host_result("(this machine)", controller_checks(selection)))
    return result


def _host_result(shown: str, checks: list[Check]) -> base.HostResult:
    failed = [c for c in checks if c.status == "failed"]
    host = DoctorHost(shown, "failed" if failed else "ok")
    if failed:
        host.message, host.hint = f"{failed[0].name}: {failed[0].message}", failed[0].fix
    host.checks = [c.to_json() for c in checks]
    return host


def host_checks(name: str, selection, options: base.Options) -> list[Check]:
    hostvars = selection.hostvars(name)
    source = "ad hoc" if name in selection.adhoc else "inventory " + ", ".join(str(p) for p in selection.inventories)
    if hostvars.get("ansible_connection") == "local":
        checks = [Check("inventory", "connection", "ok", f"local (no ssh) via {source}")]
        facts = dc.parse(_local_script())
        return checks + python_checks(facts) + runtime_checks(facts)
    target = Target.from_hostvars(name, hostvars)
    checks = []
    inventory, config = dc.inventory_check(name, source, target)
    checks.append(inventory)
    tcp = dc.tcp_check(config)
    checks.append(tcp)
    if tcp.status == "failed":
        return checks + _skipped("ssh", "host key", "authentication", "login time") + _skipped_after("sshd")
    hostkey = dc.hostkey_check(config)
    checks.append(hostkey)
    login, facts = dc.login_and_probe(target, options.accept_new_host_keys, PER_HOST_S - 10)
    if hostkey.status == "failed" and options.accept_new_host_keys:
        hostkey.status, hostkey.message = "warning", hostkey.message + "; --accept-new-host-keys trusts it"
    checks += login
    if not facts:
        return checks + _skipped_after("sshd")
    checks.append(dc.forwarding_check(target, str(facts.get("sshd_port", ""))))
    checks.append(_sessions_check(facts))
    return checks + python_checks(facts) + runtime_checks(facts)


def _local_script() -> str:
    return subprocess.run(["sh", "-c", dc.remote_script()], capture_output=True, text=True, timeout=PER_HOST_S,
                          stdin=subprocess.DEVNULL).stdout


def _skipped(layer: str, *names: str) -> list[Check]:
    return [Check(layer, n, "skipped", message="skipped: an earlier check failed") for n in names]


def _skipped_after(layer: str) -> list[Check]:
    return [Check(later, "all checks", "skipped", message="skipped: an earlier check failed")
            for later in LAYERS[LAYERS.index(layer):]]


def _sessions_check(facts: dict) -> Check:
    value = facts.get("max_sessions") or "10 (sshd's default)"
    number = int(value.split()[0]) if value.split()[0].isdigit() else 10
    check = Check("sshd", "MaxSessions", "ok", value)
    if number < 2:  # Ansible's ControlMaster and rk's tunnel each want a session
        check.status, check.message = "warning", "MaxSessions below 2: Ansible's shared connection and a tunnel compete"
        check.fix = "an administrator raises MaxSessions in sshd_config (10 is sshd's default)"
    return check


def python_checks(facts: dict) -> list[Check]:
    python = facts.get("kernel_python")
    venv = str(facts.get("venv", ""))
    if not python:
        if facts.get("base") and facts.get("base_venv"):
            return [Check("python", "interpreter", "ok", f"none yet; rk up makes a venv from {facts['base']} "
                          f"(Python {facts.get('base_version')})")]
        can = facts.get("uid") == "0" or facts.get("sudo")
        if can:
            return [Check("python", "interpreter", "ok", "bare host: rk up installs python3 with sudo")]
        return [Check("python", "interpreter", "failed", "", "no usable python3 (with venv) and no sudo to install it",
                      "ask an administrator to install python3 and python3-venv, or set ansible_python_interpreter "
                      "and `rk up --python PATH` to a Python with ipykernel")]
    mine = python == f"{venv}/bin/python"
    checks = [Check("python", "interpreter", "ok", f"{python} (Python {facts.get('kernel_version', '?')}, "
                    + ("rk's venv)" if mine else "yours)"))]
    if facts.get("import_error"):
        checks.append(Check("python", "ipykernel", "failed", "", f"{python} cannot import ipykernel ({facts['import_error']})",
                            "`rk provision --host H` installs it" if mine else f"`{python} -m pip install ipykernel`, or "
                            "`rk provision` for rk's own venv"))
        return checks + _skipped("runtime", "ipykernel import time")
    checks.append(Check("python", "ipykernel", "ok", facts.get("kernel_ipykernel", "")))
    if mine:
        checks.append(_fingerprint_check(facts))
    checks.append(_spyder_check(facts))
    return checks


def _fingerprint_check(facts: dict) -> Check:
    defaults = yaml.safe_load((content.content_dir() / "roles/rk_python/defaults/main.yml").read_text())
    recorded = str(facts.get("fingerprint", "")).split()
    fix = "`rk provision --host H` (add --spyder / --packages as you use them) brings it up to date"
    if len(recorded) != 2:
        return Check("python", "venv fingerprint", "warning", "", "rk's venv has no fingerprint: the next rk up re-checks it", fix)
    if recorded[1] != facts.get("kernel_version"):
        return Check("python", "venv fingerprint", "warning", "", f"stale: made for Python {recorded[1]}, "
                     f"the venv now runs {facts.get('kernel_version')}", fix)
    known = {dc.specs_sha256(defaults, False): "rk's defaults", dc.specs_sha256(defaults, True): "rk's defaults with --spyder"}
    return Check("python", "venv fingerprint", "ok", f"up to date ({known.get(recorded[0], 'made with --packages')})")


def spyder_range() -> tuple[str, str]:
    """The spyder-kernels range the local Spyder accepts, else the one rk installs (its default)."""
    try:
        for requirement in requires("spyder") or []:
            name, _, spec = requirement.partition(";")[0].replace(" ", "").partition("spyder-kernels")
            if not name and spec:
                return spec.strip("()"), f"the local Spyder {version('spyder')}"
    except PackageNotFoundError:
        pass
    defaults = yaml.safe_load((content.content_dir() / "roles/rk_python/defaults/main.yml").read_text())
    return defaults["rk_python_spyder_kernels_version"], "rk's default, no Spyder here"


def _spyder_check(facts: dict) -> Check:
    found = facts.get("spyder_kernels")
    if not found:
        return Check("python", "spyder-kernels", "ok", "not installed (only rk up --spyder needs it)")
    from packaging.specifiers import SpecifierSet

    spec, whose = spyder_range()
    if found in SpecifierSet(spec):
        return Check("python", "spyder-kernels", "ok", f"{found}, in {spec} ({whose})")
    return Check("python", "spyder-kernels", "failed", found, f"spyder-kernels {found} is outside {spec} ({whose}): "
                 "Spyder will refuse the kernel", f"`rk provision --host H --spyder` installs spyder-kernels{spec}")


def runtime_checks(facts: dict) -> list[Check]:
    checks = []
    free, inodes = int(facts.get("free_kib") or 0), int(facts.get("free_inodes") or 0)
    disk = Check("runtime", "state directory space", "ok", f"{free // 1024} MiB, {inodes} inodes free in {facts.get('state_dir')}")
    if free < dc.FREE_WARN_KIB or (inodes and inodes < dc.INODES_WARN):
        disk.status = "failed" if free < 1024 or (inodes and inodes < 10) else "warning"
        disk.message = "little room for kernel state and logs: a kernel may fail to start"
        disk.fix = f"free space on {facts.get('state_dir')} (rk clean --host H removes rk's own files)"
    checks.append(disk)
    kills = facts.get("kill_user_processes")
    if kills is None:
        checks.append(Check("runtime", "logind", "ok", "no logind answer (nothing kills processes at logout)"))
    elif kills == "true" and not facts.get("linger") and facts.get("uid") != "0":
        checks.append(Check("runtime", "logind", "failed", "KillUserProcesses=yes, no linger",
                            f"logind kills {facts.get('user')}'s processes at logout and they do not linger: rk up refuses "
                            "to start a kernel that would die with the SSH session",
                            f"an administrator runs `loginctl enable-linger {facts.get('user')}` on the host"))
    else:
        checks.append(Check("runtime", "logind", "ok", f"KillUserProcesses={'yes' if kills == 'true' else 'no'}"
                            + (", lingers" if facts.get("linger") else "")))
    if facts.get("import_s"):
        seconds = float(facts["import_s"])
        check = Check("runtime", "ipykernel import time", "ok", f"{seconds:.2f} s")
        if seconds > dc.IMPORT_WARN_S:
            check.status, check.message = "warning", f"the kernel's Python takes over {dc.IMPORT_WARN_S:.0f} s to import ipykernel"
            check.fix = "a slow (network) file system under the venv: put rk_python_venv on a local disk"
        checks.append(check)
    if facts.get("nvidia_smi"):
        gpus = facts.get("gpu") or []
        broken = any("fail" in g.lower() or "error" in g.lower() for g in gpus)
        checks.append(Check("runtime", "GPUs", "warning" if broken else "ok", "; ".join(gpus) or "none",
                            "nvidia-smi fails" if broken else "", "check the NVIDIA driver on the host" if broken else ""))
    return checks


def controller_checks(selection) -> list[Check]:
    checks = []
    for package in ("ansible-core", "ansible-runner", "jupyter_client"):
        try:
            checks.append(Check("controller", package, "ok", version(package)))
        except PackageNotFoundError:
            checks.append(Check("controller", package, "failed", "", f"{package} is not installed", "reinstall rk"))
    checks.append(_runtime_dir_check())
    checks.append(_tunnels_check())
    key = inventory_cache.key(selection.inventories) if selection.inventories else None
    cached = key and (inventory_cache._cache_dir() / f"{key}.json").is_file()
    checks.append(Check("controller", "inventory cache", "ok",
                        "not cached (a dynamic inventory, or none)" if not key else
                        "up to date" if cached else "not cached yet (the next command parses the inventory)"))
    return checks


def _runtime_dir_check() -> Check:
    runtime = paths.runtime_dir()
    if not runtime.exists():
        return Check("controller", "Jupyter runtime directory", "ok", f"{runtime} (made on first use)")
    st = os.lstat(runtime)
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022 or not os.access(runtime, os.W_OK):
        return Check("controller", "Jupyter runtime directory", "failed", f"{runtime} {stat.S_IMODE(st.st_mode):04o}",
                     "not a directory you own and can write, closed to other writers: rk refuses to keep keys there",
                     f"chmod 700 {runtime} (or point JUPYTER_RUNTIME_DIR at one you own)")
    bad = []
    for path in sorted(runtime.glob("kernel-rk*.json")):
        try:
            data = json.loads(path.read_text()) if not path.is_symlink() else None
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or os.lstat(path).st_mode & 0o077:
            bad.append(path.name)
    aside = sorted(p.name for p in runtime.glob("kernel-rk*.corrupt-*"))
    if bad or aside:
        return Check("controller", "Jupyter runtime directory", "warning", str(runtime),
                     f"corrupt or unsafe rk files: {', '.join(bad + aside)}",
                     "`rk status` moves corrupt ones aside; delete the .corrupt-* files once you have looked")
    return Check("controller", "Jupyter runtime directory", "ok", f"{runtime} (private, writable)")


def _tunnels_check() -> Check:
    from rk import tunnel as tunnels

    directory = paths.state_dir() / "tunnels"
    recorded = [t for t in (tunnels.load(p) for p in sorted(directory.glob("*.json"))) if t] if directory.is_dir() else []
    dead = [f"{t.host}/{t.kernel}" for t in recorded if not tunnels.alive(t)]
    if dead:
        return Check("controller", "tunnels", "warning", f"{len(recorded)} recorded", f"dead tunnels: {', '.join(dead)}",
                     "`rk tunnel --host H --name K` re-opens one; `rk status` lists their kernels")
    return Check("controller", "tunnels", "ok", f"{len(recorded)} recorded, all alive")


def render(result) -> str:
    marks = {"ok": "ok", "warning": "WARN", "failed": "FAIL", "skipped": "skip"}
    lines = []
    for host in result.hosts:
        lines.append(f"{host.host}:")
        for c in host.checks:
            text = f"  {marks[c['status']]:<4}  {c['layer']:<10} {c['name']}"
            text += f": {c['figure']}" if c["figure"] else ""
            text += f" -- {c['message']}" if c["message"] and c["status"] != "skipped" else ""
            lines.append(text)
            if c["fix"] and c["status"] in ("warning", "failed"):
                lines.append(f"        fix: {c['fix']}")
    return "\n".join(lines)
