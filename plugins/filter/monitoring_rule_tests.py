# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""promtool unit tests for every alert rule of monitoring_rules; the logic is plugin_utils/monitoring.py."""

from __future__ import annotations

from typing import Any, Dict

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.monitoring import require_mapping, rule_tests

DOCUMENTATION = r"""
name: monitoring_rule_tests
short_description: promtool unit tests for every alert rule of monitoring_rules
version_added: 0.1.0
description:
  - >-
    One C(promtool test rules) document per rule group: each alert fires for a series past its threshold only after
    its C(for:) duration, and stays quiet at the threshold itself (a GPU at exactly its gate limit), for series it
    must ignore (a power cap beside thermal throttling, a down link where the profile expects no NVLink) and for
    healthy targets.
  - >-
    Pure function, no I/O.
positional: settings, rules_dir
options:
  _input:
    description: The limits, as for P(llmfleet.workstation.monitoring_rules#filter).
    type: dict
    required: true
  settings:
    description: The settings, as for P(llmfleet.workstation.monitoring_rules#filter).
    type: dict
    required: true
  rules_dir:
    description: The directory holding each group's rules as C(<group>.yml) (absolute, or relative to the tests).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Use monitoring_rule_tests
  ansible.builtin.set_fact:
    rule_tests: "{{ limits | llmfleet.workstation.monitoring_rule_tests(settings, '/etc/prometheus/llmfleet/rules') }}"
"""

RETURN = r"""
_value:
  description: Test documents by group name.
  type: dict
"""


def monitoring_rule_tests(limits: Any, settings: Any, rules_dir: Any) -> Dict[str, Any]:
    return rule_tests(require_mapping(limits, "the limits", "monitoring_rule_tests"),
                      require_mapping(settings, "settings", "monitoring_rule_tests"),
                      str(rules_dir))


class FilterModule:
    """llmfleet.workstation's monitoring_rule_tests filter."""

    def filters(self):
        return {"monitoring_rule_tests": monitoring_rule_tests}
