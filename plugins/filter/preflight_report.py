# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The preflight report of a fleet: printed table, Markdown and CSV; the logic is plugin_utils/preflight.py."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.preflight import report, rows_for

DOCUMENTATION = r"""
name: preflight_report
short_description: The fleet's preflight report - the table as printed, as Markdown and as CSV
version_added: 0.1.0
description:
  - Collects each host's C(preflight_row) (P(llmfleet.workstation.preflight_row#filter)) in the order given; a host
    without one (its audit stopped early) is a C(fail) row saying so, not a gap.
  - Renders the rows as the aligned text table, followed by the gates' messages and one engine line per host; as
    Markdown with the same sections; and as CSV with the keys as its header.
  - Pure function, no I/O.
positional: hostvars, columns, keys, title
options:
  _input:
    description: The hosts, in the report's order (C(ansible_play_hosts_all)).
    type: list
    elements: str
    required: true
  hostvars:
    description: Each host's variables (C(hostvars)); the row is their C(preflight_row).
    type: dict
    required: true
  columns:
    description: The table's headings.
    type: list
    elements: str
    required: true
  keys:
    description: The row's key shown under each heading, and the CSV's header.
    type: list
    elements: str
    required: true
  title:
    description: The Markdown report's title.
    type: str
    default: Preflight
"""

EXAMPLES = r"""
- name: Render the report
  ansible.builtin.set_fact:
    report: >-
      {{ ansible_play_hosts_all | llmfleet.workstation.preflight_report(hostvars, ['host', 'verdict', 'reasons'],
         ['host', 'verdict', 'reasons'], 'Preflight ' ~ now(utc=true, fmt='%Y%m%dT%H%M%SZ')) }}

- name: Print it
  ansible.builtin.debug:
    msg: "{{ report.printed }}"
"""

RETURN = r"""
_value:
  description: The report.
  type: dict
  contains:
    rows:
      description: One row per host, in order.
      type: list
      elements: dict
    printed:
      description: The table, a blank line and the gates' messages (if any), then the engine lines.
      type: list
      elements: str
      sample:
        - "host   verdict  reasons"
        - "-----  -------  -------"
        - "ws-01  ok"
        - ""
        - "Engine release against the driver:"
        - "ws-01: ok: vLLM 0.26.0 on driver branch 580; engine not serving"
    markdown:
      description: The Markdown report's lines.
      type: list
      elements: str
    csv:
      description: The CSV report's lines, every cell quoted.
      type: list
      elements: str
      sample: ['"host","verdict","reasons"', '"ws-01","ok",""']
"""


def preflight_report(hosts: List[str], hostvars: Mapping[str, Any], columns: List[str], keys: List[str],
                     title: str = "Preflight") -> Dict[str, Any]:
    if not isinstance(hosts, (list, tuple)) or not isinstance(hostvars, Mapping):
        raise AnsibleFilterError("preflight_report: give the hosts as a list and hostvars as a dictionary")
    try:
        return report(rows_for(hosts, hostvars), columns, keys, str(title))
    except (KeyError, TypeError, ValueError) as error:
        raise AnsibleFilterError("preflight_report: %s" % error) from error


class FilterModule:
    """llmfleet.workstation's preflight report filter."""

    def filters(self):
        return {"preflight_report": preflight_report}
