# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The vllm_service role's plan from its own settings; the logic is plugins/module_utils/planner/plan.py."""

from __future__ import annotations

from typing import Any, Dict, Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.module_utils.planner import PlanError
from ansible_collections.llmfleet.workstation.plugins.module_utils.planner.plan import service_plan

DOCUMENTATION = r"""
name: vllm_service_plan
short_description: The vllm_service role's plan, from the role's settings as they are
version_added: 0.1.0
description:
  - P(llmfleet.workstation.vllm_plan#filter) for the C(vllm_service) role. Takes the role's variables without their
    C(vllm_service_) prefix and maps them to the planner's arguments, so the task that calls it passes values, not
    logic.
  - C(cuda_visible_devices) given as GPU indices (C(0,1)) limits the plan to those GPUs; UUIDs or empty plan on all.
  - C(nvlink_required) true plans tensor parallelism over NVLink (the NVLink gate then checks the links before a
    start); false plans from the C(llmfleet_nvlink) facts as read.
  - A C(quantization) other than awq, awq_marlin, gptq, gptq_marlin, none, fp16 or bf16 (empty, or a method the
    planner does not model) plans with C(auto); likewise a C(dtype) vLLM's C(--dtype) does not name. A null
    C(max_num_seqs) plans with C(auto).
  - Pure function, no I/O. Errors are the planner's, naming the setting and the fix.
positional: gpu_facts, nvlink_facts, settings
options:
  _input:
    description: The model's config.json as a dict.
    type: dict
    required: true
  gpu_facts:
    description: The host's C(llmfleet_gpu) fact.
    type: dict
    required: true
  nvlink_facts:
    description: The host's C(llmfleet_nvlink) fact, or null.
    type: dict
  settings:
    description:
      - weight_bytes, quantization, dtype, kv_cache_dtype, gpu_memory_utilization, tensor_parallel_size,
        pipeline_parallel_size, max_model_len, max_num_seqs, max_num_batched_tokens, max_num_seqs_cap (the role's
        C(vllm_service_plan_max_num_seqs)), cuda_visible_devices, nvlink_required.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Plan the service
  ansible.builtin.set_fact:
    plan: >-
      {{ config | llmfleet.workstation.vllm_service_plan(llmfleet_gpu, llmfleet_nvlink | default(none),
         {'max_model_len': 'auto', 'tensor_parallel_size': 'auto', 'nvlink_required': true}) }}
"""

RETURN = r"""
_value:
  description: The plan, as P(llmfleet.workstation.vllm_plan#filter) returns it.
  type: dict
"""


def vllm_service_plan(config: Any, gpu_facts: Any, nvlink_facts: Any, settings: Mapping[str, Any]) -> Dict[str, Any]:
    if not isinstance(settings, Mapping):
        raise AnsibleFilterError("vllm_service_plan: settings must be a dict of the role's settings, got %s"
                                 % type(settings).__name__)
    try:
        return service_plan(config, gpu_facts, nvlink_facts, dict(settings))
    except PlanError as error:
        raise AnsibleFilterError(str(error)) from error


class FilterModule:
    """llmfleet.workstation's vllm_service planning filter."""

    def filters(self):
        return {"vllm_service_plan": vllm_service_plan}
