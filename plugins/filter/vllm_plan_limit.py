# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One of the planner's limits, so that roles check a setting against the number the planner uses."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.module_utils.planner import memory

DOCUMENTATION = r"""
name: vllm_plan_limit
short_description: One of the vLLM planner's limits, by name
version_added: 0.1.0
description:
  - The planner (P(llmfleet.workstation.vllm_plan#filter)) owns its limits; a role that checks a setting before
    planning reads the same number here instead of repeating it.
  - C(max_gpu_memory_utilization) - the highest share of a GPU vLLM may take (0.95; above it the CUDA context and
    graphs, which live outside vLLM's budget, run out of memory under load). C(default_gpu_memory_utilization) -
    the planner's default share (0.92).
options:
  _input:
    description: The limit's name.
    type: str
    required: true
    choices: [max_gpu_memory_utilization, default_gpu_memory_utilization]
"""

EXAMPLES = r"""
- name: Refuse a share above the planner's ceiling
  ansible.builtin.assert:
    that: >-
      vllm_service_gpu_memory_utilization | float
      <= 'max_gpu_memory_utilization' | llmfleet.workstation.vllm_plan_limit
"""

RETURN = r"""
_value:
  description: The limit.
  type: float
  sample: 0.95
"""

LIMITS = {
    "max_gpu_memory_utilization": memory.MAX_GPU_MEMORY_UTILIZATION,
    "default_gpu_memory_utilization": memory.DEFAULT_GPU_MEMORY_UTILIZATION,
}


def vllm_plan_limit(name: Any) -> float:
    if name not in LIMITS:
        raise AnsibleFilterError("vllm_plan_limit: %r is not one of the planner's limits (%s)"
                                 % (name, ", ".join(sorted(LIMITS))))
    return LIMITS[name]


class FilterModule:
    """llmfleet.workstation's planner limit filter."""

    def filters(self):
        return {"vllm_plan_limit": vllm_plan_limit}
