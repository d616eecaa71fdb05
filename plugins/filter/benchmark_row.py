# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One endpoint's row of the benchmark report; the logic is plugin_utils/benchmark.py."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.benchmark import roofline, row

DOCUMENTATION = r"""
name: benchmark_row
short_description: One host's row of the benchmark report, from llm_benchmark's result
version_added: 0.1.0
description:
  - Reads the result of P(llmfleet.workstation.llm_benchmark#module) (registered with C(ignore_errors)) at its lowest
    concurrency (prompt tokens, median TTFT, median single-stream decode) and its highest (median aggregate), lists
    every level's aggregate, and judges the envelope (C(pass), C(fail), C(error) when the benchmark could not run,
    C(-) without one).
  - With O(weight_gb) and O(tensor_parallel_size), adds the roofline (per-GPU memory bandwidth / per-GPU weight bytes,
    in tok/s) and the measured single-stream decode as a fraction of it.
  - With O(engine) (the result of P(llmfleet.workstation.vllm_engine_status#module)), the engine's KV cache in
    tokens, the plan's in parentheses.
  - Pure function, no I/O.
positional: host, model, url
options:
  _input:
    description: The registered result of llm_benchmark.
    type: dict
    required: true
  host:
    description: The row's name (the inventory host).
    type: str
    required: true
  model:
    description: The served model's name.
    type: str
    required: true
  url:
    description: The base URL measured.
    type: str
    required: true
  engine:
    description: The registered result of vllm_engine_status, if any.
    type: dict
  bandwidth_gbps:
    description: Memory bandwidth of one GPU, GB/s.
    type: float
  weight_gb:
    description: Bytes of the model's weights, GB; 0 or unset leaves the roofline out.
    type: float
  tensor_parallel_size:
    description: GPUs the weights are split over; anything but a positive integer leaves the roofline out.
    type: raw
"""

EXAMPLES = r"""
- name: Keep the host's row for the report
  ansible.builtin.set_fact:
    benchmark_row: >-
      {{ benchmark_result | llmfleet.workstation.benchmark_row(inventory_hostname, 'llama', benchmark_base_url,
         engine=benchmark_engine, bandwidth_gbps=936, weight_gb=40, tensor_parallel_size=2) }}
"""

RETURN = r"""
_value:
  description: The row.
  type: dict
  sample:
    host: ws-3090-a
    model: llama
    url: http://10.0.0.11:8000/v1
    ok: true
    message: ""
    kv_tokens: 52416 (plan 51200)
    prompt_tokens: 1024
    ttft_ms: 291.4
    single_tps: 27.31
    single_concurrency: 1
    aggregate_tps: 81.2
    aggregate_concurrency: 4
    aggregates: "c=1: 27.1, c=4: 81.2"
    ceiling_tps: 46.8
    ceiling_fraction: 0.58
    envelope: pass
"""


def benchmark_row(result: Mapping[str, Any], host: str, model: Any, url: str, *,
                  engine: Optional[Mapping[str, Any]] = None, bandwidth_gbps: Any = None, weight_gb: Any = None,
                  tensor_parallel_size: Any = None) -> Dict[str, Any]:
    if not isinstance(result, Mapping) or (engine is not None and not isinstance(engine, Mapping)):
        raise AnsibleFilterError("benchmark_row: the llm_benchmark and vllm_engine_status results must be dictionaries")
    try:
        return row(result, str(host), model, str(url), engine=engine,
                   ceiling_tps=roofline(bandwidth_gbps, weight_gb, tensor_parallel_size))
    except (KeyError, TypeError, ValueError) as error:
        raise AnsibleFilterError("benchmark_row: %s" % error) from error


class FilterModule:
    """llmfleet.workstation's benchmark row filter."""

    def filters(self):
        return {"benchmark_row": benchmark_row}
