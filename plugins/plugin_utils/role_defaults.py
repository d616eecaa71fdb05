# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A role's default, read from the role that owns it: pure functions over the collection's roles/ folder.

Each default has one owner, the role whose name prefixes it (gpu_gates_max_core_temp_c belongs to gpu_gates). A role
or playbook that needs it where the owner did not run reads it from the owner's defaults/main.yml instead of
repeating its value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable

import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"


def owner_of(variable: str, roles: Iterable[str]) -> str:
    """The role whose name prefixes the variable (the longest such name: vllm_service_port is vllm_service's)."""
    private = [role for role in roles if variable.startswith(role + "__")]
    if private:
        raise ValueError("%s is private to role %s (computed there, no default to share)" % (variable, private[0]))
    owners = [role for role in roles if variable.startswith(role + "_")]
    if not owners:
        raise ValueError("%s is no role's default: a default is named after its role (gpu_gates_..., vllm_...)"
                         % variable)
    return max(owners, key=len)


def role_defaults(role: str, roles_dir: Path = ROLES) -> Dict[str, Any]:
    path = roles_dir / role / "defaults" / "main.yml"
    try:
        return yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise ValueError("cannot read the defaults of role %s (%s): %s" % (role, path, error)) from error


def role_default(variable: str, roles_dir: Path = ROLES) -> Any:
    """The owner's default of the variable, as written in its defaults/main.yml (a templated one comes back as its
    template text, for Ansible to template)."""
    roles = [path.name for path in roles_dir.iterdir() if (path / "defaults" / "main.yml").is_file()]
    defaults = role_defaults(owner_of(variable, roles), roles_dir)
    if variable not in defaults:
        raise ValueError("%s is not in the defaults of role %s" % (variable, owner_of(variable, roles)))
    return defaults[variable]
