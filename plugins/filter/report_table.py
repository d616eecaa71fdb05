# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rows of dictionaries as an aligned text table, Markdown or CSV; the logic is plugin_utils/tables.py."""

from __future__ import annotations

from typing import Any, List, Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.tables import render

DOCUMENTATION = r"""
name: report_table
short_description: Rows of dictionaries as an aligned text table, a Markdown table or CSV lines
version_added: 0.1.0
description:
  - Shows the value of each of O(keys) under the matching heading of O(columns), one line per row.
  - C(text) aligns every column to its widest cell, two spaces apart, with a line of dashes under the headings and
    no trailing spaces; C(markdown) escapes a C(|) inside a cell; C(csv) has the keys as its header and quotes
    every cell, doubling a C(").
  - Pure function, no I/O. Returns lines, to join with a newline or print as a list.
positional: columns, keys, style
options:
  _input:
    description: The rows.
    type: list
    elements: dict
    required: true
  columns:
    description: The headings.
    type: list
    elements: str
    required: true
  keys:
    description: The key shown under each heading, in the same order.
    type: list
    elements: str
    required: true
  style:
    description: How to render.
    type: str
    default: text
    choices: [text, markdown, csv]
"""

EXAMPLES = r"""
- name: Print the hosts as a table
  ansible.builtin.debug:
    msg: "{{ rows | llmfleet.workstation.report_table(['host', 'state'], ['name', 'state']) }}"
  vars:
    rows: [{name: ws-01, state: ok}, {name: ws-02, state: fail}]
    # host   state
    # -----  -----
    # ws-01  ok
    # ws-02  fail

- name: Write them as CSV
  ansible.builtin.copy:
    content: "{{ rows | llmfleet.workstation.report_table(['host', 'state'], ['name', 'state'], 'csv') | join('\n') }}"
    dest: /tmp/hosts.csv
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The lines.
  type: list
  elements: str
  sample: ["host   state", "-----  -----", "ws-01  ok", "ws-02  fail"]
"""


def report_table(rows: List[Mapping[str, Any]], columns: List[str], keys: List[str], style: str = "text") -> List[str]:
    if not isinstance(rows, (list, tuple)) or not all(isinstance(one_row, Mapping) for one_row in rows):
        raise AnsibleFilterError("report_table: the rows must be a list of dictionaries")
    try:
        return render(rows, columns, keys, style)
    except (KeyError, ValueError) as error:
        raise AnsibleFilterError("report_table: %s" % error) from error


class FilterModule:
    """llmfleet.workstation's table renderer."""

    def filters(self):
        return {"report_table": report_table}
