# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rows of dictionaries as an aligned text table, a Markdown table or CSV lines: pure functions, no I/O.

Shared by the report_table filter and the preflight and benchmark reports, so every report of the collection
aligns, escapes and quotes its cells the same way.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Sequence


def cells_of(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> List[List[str]]:
    return [[str(one_row[key]) for key in keys] for one_row in rows]


def text_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], keys: Sequence[str]) -> List[str]:
    """Columns left-aligned to their widest cell, two spaces apart, trailing spaces trimmed."""
    cells = cells_of(rows, keys)
    widths = [max(len(text) for text in [column] + [line[index] for line in cells])
              for index, column in enumerate(columns)]
    separator = ["-" * width for width in widths]
    return ["".join(cell.ljust(width) + "  " for cell, width in zip(line, widths)).rstrip()
            for line in [list(columns), separator] + cells]


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], keys: Sequence[str]) -> List[str]:
    """A GitHub table; a '|' in a cell is escaped."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _column in columns) + "|"]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |"
                    for line in cells_of(rows, keys)]


def csv_lines(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> List[str]:
    """The keys as the header, then every cell quoted, a '"' doubled."""
    return [",".join('"%s"' % cell.replace('"', '""') for cell in line)
            for line in [list(keys)] + cells_of(rows, keys)]


def render(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], keys: Sequence[str],
           style: str = "text") -> List[str]:
    if len(columns) != len(keys):
        raise ValueError("columns and keys differ in length (%d and %d)" % (len(columns), len(keys)))
    if style == "text":
        return text_table(rows, columns, keys)
    if style == "markdown":
        return markdown_table(rows, columns, keys)
    if style == "csv":
        return csv_lines(rows, keys)
    raise ValueError("style must be text, markdown or csv, not %r" % (style,))
