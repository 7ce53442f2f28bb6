"""Progress off a terminal: one line per host and phase, from the files of the tasks Ansible runs."""

import io

import pytest

from rk import content, render
from rk.commands import tunnel

pytestmark = pytest.mark.fast

ROLES = content.playbook("up").parent.parent / "roles"


def task_path(role_file: str, line: int = 3) -> str:
    path = ROLES / role_file
    assert path.is_file(), path  # a renamed task file must be renamed in render._PHASES too
    return f"{path}:{line}"


def test_a_line_per_host_and_phase_with_the_elapsed_time():
    stream = io.StringIO()
    progress = render.Progress(stream=stream)
    events = [
        ("gpu1", "Validating arguments against arg spec 'start'", task_path("rk_kernel/tasks/validate.yml")),
        ("gpu1", "Probe the Python", task_path("rk_python/tasks/probe.yml")),
        ("gpu2", "Probe the Python", task_path("rk_python/tasks/probe.yml")),
        ("gpu1", "Install ipykernel and the requested packages", task_path("rk_python/tasks/venv.yml")),
        ("gpu1", "Start the kernel, or find it running", task_path("rk_kernel/tasks/start.yml")),
        ("gpu1", "Take the kernel's state from whichever said it", task_path("rk_kernel/tasks/fetch.yml")),
        ("gpu1", "Report the kernel", task_path("rk_kernel/tasks/report.yml")),
        ("gpu1", "Open the SSH tunnel to default", tunnel.__file__),
    ]
    for host, task, path in events:
        progress.task(host, task, path)
    lines = stream.getvalue().splitlines()
    assert [line.rsplit(" (", 1)[0] for line in lines] == [
        "rk: [gpu1] provisioning Python",
        "rk: [gpu2] provisioning Python",
        "rk: [gpu1] starting the kernel",
        "rk: [gpu1] fetching the connection file",
        "rk: [gpu1] opening the SSH tunnel",
    ]
    assert all(line.endswith(" s)") for line in lines)


def test_tasks_outside_the_roles_start_no_phase():
    stream = io.StringIO()
    progress = render.Progress(stream=stream)
    progress.task("h", "Report how to reach the host", str(content.playbook("up")) + ":30")
    assert stream.getvalue() == ""
