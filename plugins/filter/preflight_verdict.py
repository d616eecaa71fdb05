# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Judge one host of the preflight audit from its gates' structured problems; the logic is plugin_utils/preflight.py."""

from __future__ import annotations

from typing import Any, Dict, Mapping

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.preflight import judge_host, verdict

DOCUMENTATION = r"""
name: preflight_verdict
short_description: Whether a workstation is fit to serve, from its gates' results, its free disk and the limits
version_added: 0.1.0
description:
  - Judges one host of C(playbooks/preflight.yml) from the results it registered - the gates venv's C(stat), the
    C(gpu_facts), C(nvlink_status), C(gpu_junction_temp) and C(gpu_p2p_bandwidth) gates, C(df) of the model cache
    directory - and the limits below.
  - Reads the gates' C(problems) (their codes, GPUs, values and limits), never their messages' text.
  - C(fail) - unfit to serve - for a host not prepared (no gates venv, or no nvidia-ml-py in it), without a loaded
    driver, with fewer GPUs than expected, NVLink links down or no P2P over NVLink where it is required, a GPU above
    its temperature limit or thermally throttling, GPU copies below their floor, or less free disk than
    O(limits.min_free_gb).
  - C(warn) - serves, but look - for a temperature within O(limits.temp_warn_margin_c) of its limit, a PCIe link
    narrower than the GPU supports, more GPUs than expected, a driver below O(limits.min_driver_version), or free
    disk that could not be read. Otherwise C(ok); C(unreachable) for a host Ansible could not reach.
  - Pure function, no I/O.
positional: limits
options:
  _input:
    description:
      - The host's registered results, by name - C(venv_python) (C(ansible.builtin.stat) of the gates venv's
        Python), C(gpu), C(nvlink), C(thermal), C(p2p) (the gates), C(df) (C(df -P -k) of the cache directory and
        its parents, deepest first), C(engine) (M(llmfleet.workstation.vllm_engine_status)) and C(compat) (the
        C(vllm) role's C(vllm_compat) fact, or null). A result the host never registered may be left out.
    type: dict
    required: true
  limits:
    description: What the host is judged against; the keys below, each optional.
    type: dict
    default: {}
    suboptions:
      venv:
        description: The gates venv, named in the C(not prepared) reason.
        type: str
      cache_dir:
        description: The model cache directory, named in the disk reasons.
        type: str
      expected_gpu_count:
        description: GPUs the host must have; fewer fails, more warns. Null checks nothing.
        type: int
      min_active_links:
        description: Active NVLink links each GPU must have (the C(NVLink) cell's denominator); null means all.
        type: int
      max_core_temp_c:
        description: Core temperature limit, as given to C(gpu_junction_temp).
        type: int
        default: 85
      max_memory_temp_c:
        description: Memory-junction temperature limit, as given to C(gpu_junction_temp).
        type: int
        default: 100
      temp_warn_margin_c:
        description: A temperature this close to its limit (or closer) warns.
        type: int
        default: 5
      min_free_gb:
        description: Free disk, GB, the model cache's filesystem must have.
        type: float
        default: 50
      min_driver_version:
        description: A driver below this version warns.
        type: str
        default: "550"
"""

EXAMPLES = r"""
- name: Judge the host
  ansible.builtin.set_fact:
    host_verdict: >-
      {{ {'venv_python': venv_stat, 'gpu': gpu_result, 'nvlink': nvlink_result, 'thermal': thermal_result,
          'df': df_result} | llmfleet.workstation.preflight_verdict({'expected_gpu_count': 2, 'min_free_gb': 80}) }}

- name: Stop on an unfit host
  ansible.builtin.assert:
    that: host_verdict.verdict in ['ok', 'warn']
    fail_msg: "{{ host_verdict.reasons | join('; ') }}"
"""

RETURN = r"""
_value:
  description: The verdict.
  type: dict
  contains:
    verdict:
      description: C(ok), C(warn), C(fail) or C(unreachable).
      type: str
      sample: fail
    reasons:
      description: Why, failures first, then warnings; empty when ok.
      type: list
      elements: str
      sample: ["NVLink bridge misseated: GPU 0 0/4, GPU 1 0/4 links active", "no P2P over NVLink (not_supported)"]
    fail_reasons:
      description: The reasons that make the verdict C(fail) (or, alone, C(unreachable)).
      type: list
      elements: str
      sample: ["hot junction: GPU 1 memory 106 C above 100 C"]
    warn_reasons:
      description: The reasons that make the verdict C(warn).
      type: list
      elements: str
      sample: ["GPU 1 PCIe x8 of x16"]
    messages:
      description: The gates' own messages, each with the operator's fix (skipped gates have none).
      type: list
      elements: str
      sample: ["NVLink gate failed: GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0) has 0 of 4 NVLink links ..."]
"""


def preflight_verdict(results: Mapping[str, Any], limits: Mapping[str, Any] | None = None) -> Dict[str, Any]:
    return judge_host("preflight_verdict", verdict, results, limits)


class FilterModule:
    """llmfleet.workstation's preflight verdict filter."""

    def filters(self):
        return {"preflight_verdict": preflight_verdict}
