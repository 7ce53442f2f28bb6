"""Where the shipped Ansible content (playbooks, roles, ansible.cfg) lives.

In an installed wheel it sits in the package as `rk/_content`; in a source checkout it is the
top of the repository. Neither depends on the current directory.
"""

from functools import cache
from importlib import resources
from pathlib import Path


@cache
def content_dir() -> Path:
    shipped = Path(str(resources.files("rk") / "_content"))
    if (shipped / "playbooks").is_dir():
        return shipped
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "playbooks").is_dir():
        return checkout
    raise FileNotFoundError("rk's Ansible content is missing: reinstall rk")


def playbook(name: str) -> Path:
    return content_dir() / "playbooks" / f"{name}.yml"


def ansible_cfg() -> Path:
    return content_dir() / "ansible.cfg"
