# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One host's row of the preflight report: its cells and its verdict; the logic is plugin_utils/preflight.py."""

from __future__ import annotations

from typing import Any, Dict, Mapping

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.preflight import judge_host, row

DOCUMENTATION = r"""
name: preflight_row
short_description: One workstation's row of the preflight report, judged by preflight_verdict
version_added: 0.1.0
description:
  - Turns the results one host registered in C(playbooks/preflight.yml) into its row of the report - GPUs, NVLink
    links active of those expected (and P2P), core/memory temperatures, PCIe links, driver, free disk - with the
    verdict, reasons and gates' messages of P(llmfleet.workstation.preflight_verdict#filter), and the host's engine
    line (the C(vllm) role's C(compat) verdict with its fixes, whether the engine serves and its KV cache, and the
    GPU copy bandwidth where it was measured).
  - Pure function, no I/O.
positional: limits
options:
  _input:
    description:
      - The host's registered results, as for P(llmfleet.workstation.preflight_verdict#filter), and C(host), the
        host's name.
    type: dict
    required: true
  limits:
    description: The limits, as for P(llmfleet.workstation.preflight_verdict#filter).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Judge the host and keep its row for the report
  ansible.builtin.set_fact:
    preflight_row: "{{ preflight_results | llmfleet.workstation.preflight_row(preflight_limits) }}"
"""

RETURN = r"""
_value:
  description: The row; every cell a string, C(-) where nothing could be read.
  type: dict
  contains:
    host:
      description: The host's name.
      type: str
      sample: ws-01
    gpus:
      description: The GPUs by name and count, C(none) where NVML lists none.
      type: str
      sample: 2x NVIDIA GeForce RTX 3090
    nvlink:
      description: Active of expected links per GPU, and P2P over NVLink of the pairs; C(none) without NVLink.
      type: str
      sample: 4/4, 4/4 (P2P ok)
    temps:
      description: Core/memory temperature per GPU, C(-) for a sensor NVML does not expose.
      type: str
      sample: 41/-, 41/-
    pcie:
      description: PCIe generation and width per GPU, with the width supported where the link is narrower.
      type: str
      sample: gen4 x16, gen4 x8/16
    driver:
      description: The driver version.
      type: str
      sample: "560.35.03"
    disk_free_gb:
      description: Free GB where the model cache lives, one decimal.
      type: str
      sample: "412.7"
    verdict:
      description: C(ok), C(warn), C(fail) or C(unreachable).
      type: str
      sample: ok
    reasons:
      description: The reasons, joined with C(; ).
      type: str
      sample: ""
    messages:
      description: The gates' own messages.
      type: list
      elements: str
      sample: []
    engine:
      description: The engine line.
      type: str
      sample: "ok: vLLM 0.26.0 on driver branch 580; engine not serving"
"""


def preflight_row(results: Mapping[str, Any], limits: Mapping[str, Any] | None = None) -> Dict[str, Any]:
    return judge_host("preflight_row", row, results, limits)


class FilterModule:
    """llmfleet.workstation's preflight row filter."""

    def filters(self):
        return {"preflight_row": preflight_row}
