# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Judge a vLLM release against a host's NVIDIA driver and GPUs, from the table in module_utils/compat.py."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.module_utils.compat import engine_verdict, loaded_driver_version

DOCUMENTATION = r"""
name: vllm_compat
short_description: Whether a vLLM release runs on a host's NVIDIA driver and GPUs, and which releases would
version_added: 0.1.0
description:
  - Looks the release up in the collection's compatibility table (C(plugins/module_utils/compat.py)) - the torch
    and CUDA its default wheel ships, the driver branch that CUDA needs - and compares it with the loaded driver
    and the GPUs' families.
  - A driver below the branch of the wheel's CUDA toolkit is refused, even where CUDA minor-version compatibility
    would let torch start, because vLLM's kernels then fail at the first PTX they need.
  - Pure function, no I/O. The C(vllm) role refuses on RV(_value.problems) before it creates a venv;
    C(preflight.yml) shows RV(_value.summary) per host.
positional: driver, gpu_names
options:
  _input:
    description: The vLLM release, for example C(0.26.0) (C(vllm_version)).
    type: str
    required: true
  driver:
    description:
      - The loaded driver's version (C(ansible_facts.llmfleet_gpu.driver_version), for example C(580.159.04)), a
        branch (C(580)), or the loaded kernel module's report (the content of C(/proc/driver/nvidia/version)).
      - Empty when no driver is loaded, which is a problem of its own (C(driver_missing)).
    type: raw
    required: true
  gpu_names:
    description: The GPUs' names as NVML reports them (C(ansible_facts.llmfleet_gpu.gpus | map(attribute='name'))).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Judge the engine release against the driver
  ansible.builtin.set_fact:
    engine_verdict: >-
      {{ vllm_version | llmfleet.workstation.vllm_compat(ansible_facts.llmfleet_gpu.driver_version,
         ansible_facts.llmfleet_gpu.gpus | map(attribute='name') | list) }}

- name: Refuse a release the driver cannot run
  ansible.builtin.assert:
    that: engine_verdict.ok
    fail_msg: "{{ engine_verdict.msg }}"
"""

RETURN = r"""
_value:
  description: The verdict.
  type: dict
  contains:
    ok:
      description: Whether nothing stands in the way (RV(_value.problems) is empty).
      type: bool
      sample: false
    msg:
      description: Every problem with its fix, in one string; empty when ok.
      type: str
      sample: >-
        vllm_version 0.26.0 ships torch 2.11.0 with CUDA 13.0, which needs NVIDIA driver branch 580 or newer; this
        host runs driver 560.35.03 (branch 560): torch will see no GPU at all. Fix: set nvidia_driver_branch to 580 ...
    summary:
      description: One short cell for a report.
      type: str
      sample: "fail: vLLM 0.26.0 needs 580+, driver branch 560"
    problems:
      description: What refuses the release, each with C(code), C(message), C(value), C(limit) and C(fix).
      type: list
      elements: dict
      sample:
        - code: driver_too_old
          value: 560
          limit: 580
          message: vllm_version 0.26.0 ships torch 2.11.0 with CUDA 13.0, which needs NVIDIA driver branch 580 ...
          fix: set nvidia_driver_branch to 580 or newer and update the driver first ...
    notes:
      description: >-
        What is said but not refused, same keys: a release newer or older than the table
        (C(vllm_version_newer_than_table), C(vllm_version_not_in_table)), a table row not confirmed
        (C(cuda_not_confirmed)), a GPU the table does not know (C(gpu_family_unknown)).
      type: list
      elements: dict
    release:
      description: >-
        The table row (C(since), C(torch), C(torch_cuda), C(cuda), C(cuda_major), C(min_branch), C(confirmed)),
        or null.
      type: dict
    required_branch:
      description: The lowest driver branch for this release on these GPUs.
      type: int
      sample: 580
    driver_branch:
      description: The branch of the loaded driver, or null without one.
      type: int
      sample: 560
    releases_that_run:
      description: The newest release of each line that this driver runs on these GPUs, oldest first.
      type: list
      elements: str
      sample: ["0.8.5.post1"]
    gpus:
      description: Each GPU with its C(name), C(family) and the C(min_branch) of the family.
      type: list
      elements: dict
"""


def vllm_compat(vllm_version: Any, driver: Any, gpu_names: Optional[Any] = None) -> Dict[str, Any]:
    if gpu_names is not None and not isinstance(gpu_names, (list, tuple)):
        raise AnsibleFilterError("vllm_compat: gpu_names must be a list of GPU names, got %r" % (gpu_names,))
    if isinstance(driver, str) and "NVRM" in driver:
        driver = loaded_driver_version(driver)
    return engine_verdict(vllm_version, driver, gpu_names or [])


class FilterModule:
    """llmfleet.workstation's engine compatibility filter."""

    def filters(self):
        return {"vllm_compat": vllm_compat}
