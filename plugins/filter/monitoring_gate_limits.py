# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each workstation's temperature limits, from the gates' own variables; the logic is plugin_utils/monitoring.py."""

from __future__ import annotations

from typing import Any, Dict

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.monitoring import gate_limits, require_mapping

DOCUMENTATION = r"""
name: monitoring_gate_limits
short_description: Each workstation's temperature limits, from the gates' own variables
version_added: 0.1.0
description:
  - >-
    Per host, C(core) and C(memory) limits in degrees C: the host's C(gpu_gates_max_core_temp_c) and
    C(gpu_gates_max_memory_temp_c), else the gpu_gates role's defaults (read from that role). A value that is not a
    whole number of degrees is refused, naming the variable and the host.
options:
  _input:
    description: Each workstation's variables by inventory name (a slice of C(hostvars)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Use monitoring_gate_limits
  ansible.builtin.set_fact:
    monitoring__limits: "{{ hosts_vars | llmfleet.workstation.monitoring_gate_limits }}"
"""

RETURN = r"""
_value:
  description: The limits by host, then by sensor (C(core), C(memory)).
  type: dict
"""


def monitoring_gate_limits(hosts: Any) -> Dict[str, Dict[str, int]]:
    return gate_limits(require_mapping(hosts, "the hosts' variables", "monitoring_gate_limits"))


class FilterModule:
    """llmfleet.workstation's monitoring_gate_limits filter."""

    def filters(self):
        return {"monitoring_gate_limits": monitoring_gate_limits}
