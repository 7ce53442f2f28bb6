"""Shell completion: bash for real (rk's own shell code, bash's completion variables), and zsh
through the same protocol its code speaks to rk (_ARGCOMPLETE_SHELL=zsh)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

RK = str(Path(sys.executable).with_name("rk"))

INVENTORY = """\
all:
  children:
    gpu:
      hosts:
        gpu1: {ansible_host: 127.0.0.1, ansible_port: 1}
        gpu2: {ansible_host: 127.0.0.1, ansible_port: 1}
"""

BASH = r"""
eval "$("$RK" completion bash)"
COMP_LINE="$LINE"; COMP_POINT=${#COMP_LINE}; read -ra COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
_python_argcomplete rk "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


@pytest.fixture
def checkout(tmp_path):
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "hosts.yml").write_text(INVENTORY)
    return tmp_path


def bash_complete(line: str, cwd: Path) -> list[str]:
    env = dict(os.environ, RK=RK, LINE=line, PATH=f"{Path(RK).parent}:{os.environ['PATH']}")
    out = subprocess.run(["bash", "--norc", "-c", BASH], capture_output=True, text=True, cwd=cwd, env=env,
                         timeout=60, check=True).stdout
    return [word.strip() for word in out.splitlines() if word.strip()]


def test_bash_completes_commands(checkout):
    assert bash_complete("rk st", checkout) == ["stop", "status"]


def test_bash_completes_flags(checkout):
    assert "--no-tunnel" in bash_complete("rk up --no-t", checkout)


def test_bash_completes_host_names_and_groups_from_the_inventory(checkout):
    assert bash_complete("rk up --host ", checkout) == ["gpu", "gpu1", "gpu2", "localhost"]
    assert bash_complete("rk status --host gpu", checkout) == ["gpu", "gpu1", "gpu2"]


def test_zsh_gets_host_names_through_its_protocol(checkout, tmp_path):
    out = tmp_path / "completions"
    line = "rk stop --host gp"
    env = dict(os.environ, _ARGCOMPLETE="1", _ARGCOMPLETE_SHELL="zsh", COMP_LINE=line, COMP_POINT=str(len(line)),
               _ARGCOMPLETE_STDOUT_FILENAME=str(out), _ARGCOMPLETE_IFS="\n")
    subprocess.run([RK], cwd=checkout, env=env, timeout=60, check=True, capture_output=True)
    assert sorted(item.split(":")[0] for item in out.read_text().split("\n") if item) == ["gpu", "gpu1", "gpu2"]


def test_completion_code_for_zsh_is_a_compdef():
    result = subprocess.run([RK, "completion", "zsh"], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.startswith("#compdef rk")
