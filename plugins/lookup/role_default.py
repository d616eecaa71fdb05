# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A role's default, read from the role that owns it; the logic is plugins/plugin_utils/role_defaults.py."""

from __future__ import annotations

DOCUMENTATION = r"""
name: role_default
short_description: The default of a variable, read from the role of this collection that owns it
version_added: 0.1.0
description:
  - Each default has one owner, the role whose name prefixes it (C(gpu_gates_max_core_temp_c) belongs to
    C(gpu_gates)). Where the owner did not run in the play, its variables are undefined; this reads the owner's
    C(defaults/main.yml) so other roles and playbooks refer to the value instead of repeating it.
  - Use it as the fallback of the variable itself, so an inventory value still wins -
    C(gpu_gates_venv | default(lookup('llmfleet.workstation.role_default', 'gpu_gates_venv'))).
  - Fails naming the variable when no role owns it or its owner has no such default.
options:
  _terms:
    description: Variable names.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Show the gates' core temperature limit
  ansible.builtin.debug:
    msg: >-
      {{ gpu_gates_max_core_temp_c
         | default(lookup('llmfleet.workstation.role_default', 'gpu_gates_max_core_temp_c')) }}
"""

RETURN = r"""
_raw:
  description: The defaults, one per term, as the owner's defaults/main.yml writes them.
  type: list
  elements: raw
"""

# Plugins import after DOCUMENTATION/EXAMPLES/RETURN, as modules do (ansible-test validate-modules).
from ansible.errors import AnsibleLookupError  # noqa: E402
from ansible.plugins.lookup import LookupBase  # noqa: E402

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.role_defaults import role_default  # noqa: E402


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        try:
            return [role_default(str(term)) for term in terms]
        except ValueError as error:
            raise AnsibleLookupError("role_default: %s" % error) from error
