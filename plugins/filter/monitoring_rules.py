# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus alert rule files for the fleet, thresholds from the gates' limits (logic: plugin_utils/monitoring.py)."""

from __future__ import annotations

from typing import Any, Dict

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.monitoring import alert_rules, require_mapping

DOCUMENTATION = r"""
name: monitoring_rules
short_description: Prometheus alert rule files for the fleet, thresholds from the gates' limits
version_added: 0.1.0
description:
  - >-
    Rule documents by group (C(llmfleet_gpu), C(llmfleet_exporter), C(llmfleet_engine)): memory junction and core
    over the host's gate limit, thermal throttling, power brake and power cap, NVLink links down where expected,
    exporter or NVML down, engine down, KV cache full, requests waiting. Hosts with the same limit share a rule.
  - >-
    Durations and thresholds are checked; a bad one is refused naming the role variable.
  - >-
    Pure function, no I/O.
positional: settings
options:
  _input:
    description: The limits, as P(llmfleet.workstation.monitoring_gate_limits#filter) returns them.
    type: dict
    required: true
  settings:
    description:
      - >-
        C(temperature_for), C(throttle_for), C(power_cap_for), C(nvlink_for), C(down_for), C(kv_cache_for),
        C(waiting_for) (Prometheus durations), C(kv_cache_threshold) (0-1) and C(waiting_threshold) (requests).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Use monitoring_rules
  ansible.builtin.set_fact:
    content: "{{ monitoring__limits | llmfleet.workstation.monitoring_rules(monitoring__alert_settings) }}"
"""

RETURN = r"""
_value:
  description: Rule documents by group name.
  type: dict
"""


def monitoring_rules(limits: Any, settings: Any) -> Dict[str, Any]:
    return alert_rules(require_mapping(limits, "the limits", "monitoring_rules"),
                       require_mapping(settings, "settings", "monitoring_rules"))


class FilterModule:
    """llmfleet.workstation's monitoring_rules filter."""

    def filters(self):
        return {"monitoring_rules": monitoring_rules}
