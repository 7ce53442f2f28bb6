"""Action plugin rk_validate_vars: check every rk_kernel_ variable against the role's inputs.

What validate.yml's assert plus ansible.builtin.validate_argument_spec did, in one task and
without Jinja: those two tasks read and parsed meta/argument_specs.yml through templated
variables several times per host, which made them cost more controller CPU than the module
call they guarded (bench/NOTES.md: 1.9 s of CPU for `rk status` over 8 hosts).
"""

from __future__ import annotations

import yaml
from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
module: rk_validate_vars
short_description: Refuse unknown rk_kernel_ variables and check the types and values of the known ones.
options:
  argument_specs: {description: Path of the role's meta/argument_specs.yml., type: path, required: true}
  prefix: {description: Only variables starting with this are checked., type: str, default: rk_kernel_}
"""


def _union_of_entry_points(specs: dict) -> dict:
    """Every entry point's options in one spec; "required" is left to each entry point."""
    options: dict = {}
    for entry in (specs.get("argument_specs") or {}).values():
        for name, attrs in (entry.get("options") or {}).items():
            options[name] = dict(attrs, required=False)
    return options


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset(("argument_specs", "prefix"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        path = self._task.args.get("argument_specs")
        prefix = self._task.args.get("prefix", "rk_kernel_")
        if not path:
            raise AnsibleActionFail("argument_specs is required")
        try:
            with open(path, encoding="utf-8") as handle:
                options = _union_of_entry_points(yaml.safe_load(handle) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise AnsibleActionFail(f"cannot read the argument specs {path}: {exc}") from exc

        given = sorted(name for name in task_vars if name.startswith(prefix))
        unknown = [name for name in given if name not in options]
        if unknown:
            known = ", ".join(sorted(options))
            return dict(result, failed=True, msg=f"unknown variable {', '.join(unknown)}; rk_kernel knows {known}")

        # Only the variables that are set are templated: the rest keep the spec's defaults.
        values = self._templar.template({name: task_vars[name] for name in given})
        checked = ArgumentSpecValidator(options).validate(values, validate_role_argument_spec=True)
        if checked.error_messages:
            return dict(result, failed=True, argument_errors=checked.error_messages,
                        msg="Validation of arguments failed:\n" + "\n".join(checked.error_messages))
        return dict(result, changed=False, msg="the rk_kernel_ variables are valid")
