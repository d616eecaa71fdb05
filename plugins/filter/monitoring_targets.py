# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""file_sd target groups for the GPU exporters and vLLM engines (logic: plugin_utils/monitoring.py)."""

from __future__ import annotations

from typing import Any, Dict

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.monitoring import require_mapping, scrape_targets

DOCUMENTATION = r"""
name: monitoring_targets
short_description: Prometheus file_sd target groups for the workstations' GPU exporters and vLLM engines
version_added: 0.1.0
description:
  - >-
    One target group per host for its GPU exporter (from C(gpu_exporter_url), which the gpu_exporter role's
    C(endpoint) entry point sets) and one for its engine (where the vllm_service role advertises it, by the rule of
    P(llmfleet.workstation.vllm_service_endpoint#filter)), each labelled C(host) with the inventory name.
  - >-
    Reads nothing but the vllm_service role's default port, where a host sets none.
options:
  _input:
    description: Each workstation's variables by inventory name (a slice of C(hostvars)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Use monitoring_targets
  ansible.builtin.set_fact:
    monitoring__targets: "{{ hosts_vars | llmfleet.workstation.monitoring_targets }}"
"""

RETURN = r"""
_value:
  description: C(gpu) and C(engine), lists of file_sd target groups, and C(without_exporter), the hosts without
    an advertised exporter.
  type: dict
"""


def monitoring_targets(hosts: Any) -> Dict[str, Any]:
    return scrape_targets(require_mapping(hosts, "the hosts' variables", "monitoring_targets"))


class FilterModule:
    """llmfleet.workstation's monitoring_targets filter."""

    def filters(self):
        return {"monitoring_targets": monitoring_targets}
