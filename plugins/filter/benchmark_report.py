# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet's benchmark report: printed table, Markdown, CSV and SVG chart; the logic is plugin_utils/benchmark.py."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.benchmark import report, rows_for

DOCUMENTATION = r"""
name: benchmark_report
short_description: The fleet's benchmark report - the table as printed, Markdown, CSV and an SVG chart
version_added: 0.1.0
description:
  - Collects each host's C(benchmark_row) (P(llmfleet.workstation.benchmark_row#filter)) in the order given; a host
    without one (its benchmark stopped early) is an C(error) row saying so, not a gap. Then one row per extra
    endpoint, from the results of llm_benchmark looped over C(benchmark_extra_endpoints) (no KV cache, no roofline).
  - Renders the rows as the aligned text table followed by the failures' messages; as Markdown (title, settings,
    table, the chart, a Failures section); as CSV with the row keys as its header; and as an SVG bar chart of
    single-stream and aggregate tok/s per row, with each host's roofline as a red tick.
  - Pure function, no I/O.
positional: hostvars, timestamp, settings
options:
  _input:
    description: The hosts, in the report's order (C(ansible_play_hosts_all)).
    type: list
    elements: str
    required: true
  hostvars:
    description: Each host's variables (C(hostvars)); the row is their C(benchmark_row).
    type: dict
    required: true
  timestamp:
    description: The report's timestamp, in its title and the chart's file name.
    type: str
    required: true
  settings:
    description: One sentence on what was measured, under the Markdown title.
    type: str
    default: ""
  extra_results:
    description: The C(results) of llm_benchmark looped over the extra endpoints, each with its endpoint as C(item).
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
- name: Render the report
  ansible.builtin.set_fact:
    benchmark_report: >-
      {{ ansible_play_hosts_all | llmfleet.workstation.benchmark_report(hostvars, '20261202T050000Z',
         'prompt 1024 tokens', extra_results=benchmark_extra.results | default([])) }}
"""

RETURN = r"""
_value:
  description: The report.
  type: dict
  contains:
    rows:
      description: One row per host, then one per extra endpoint.
      type: list
      elements: dict
    printed:
      description: The table, then a blank line and the failures' messages, if any.
      type: list
      elements: str
    markdown:
      description: The Markdown report's lines.
      type: list
      elements: str
    csv:
      description: The CSV report's lines, every cell quoted.
      type: list
      elements: str
    svg:
      description: The chart, an SVG document.
      type: str
    messages:
      description: "C(host: message) of every row that failed."
      type: list
      elements: str
"""


def benchmark_report(hosts: List[str], hostvars: Mapping[str, Any], timestamp: str, settings: str = "",
                     extra_results: Sequence[Mapping[str, Any]] = ()) -> Dict[str, Any]:
    if not isinstance(hosts, (list, tuple)) or not isinstance(hostvars, Mapping):
        raise AnsibleFilterError("benchmark_report: give the hosts as a list and hostvars as a dictionary")
    if not isinstance(extra_results, (list, tuple)) or not all(isinstance(one, Mapping) for one in extra_results):
        raise AnsibleFilterError("benchmark_report: extra_results must be the list of a looped task's results")
    try:
        return report(rows_for(hosts, hostvars, extra_results), str(timestamp), str(settings or ""))
    except (KeyError, TypeError, ValueError) as error:
        raise AnsibleFilterError("benchmark_report: %s" % error) from error


class FilterModule:
    """llmfleet.workstation's benchmark report filter."""

    def filters(self):
        return {"benchmark_report": benchmark_report}
