# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What benchmark.yml reports about each endpoint, from llm_benchmark's result: pure functions, no I/O.

One row per workstation (its engine's KV cache beside the plan's, its roofline) and per extra endpoint (a router or
any OpenAI-compatible server: no engine, no roofline), then the fleet's report: the printed table, Markdown, CSV
and an SVG bar chart of single-stream and aggregate tok/s with each host's roofline as a tick.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.tables import csv_lines, markdown_table, text_table

COLUMNS = ["host", "model", "KV tokens engine (plan)", "prompt tokens", "TTFT ms", "single-stream tok/s",
           "aggregate tok/s", "roofline tok/s", "of roofline", "envelope"]
CELL_KEYS = ["host", "model", "kv_tokens", "prompt_tokens", "ttft_ms", "single_tps", "aggregates", "ceiling_tps",
             "of_ceiling", "envelope"]
# A host whose benchmark never set its row (the play stopped early for it) is a row saying so, not a gap.
MISSING_ROW = {"model": "-", "url": "-", "ok": False, "message": "no result: the benchmark of this host stopped early",
               "prompt_tokens": None, "ttft_ms": None, "single_tps": None, "single_concurrency": None,
               "aggregate_tps": None, "aggregate_concurrency": None, "aggregates": "", "ceiling_tps": None,
               "ceiling_fraction": None, "envelope": "error", "kv_tokens": "-"}

# The chart's geometry, in pixels: one group of two bars per row.
BAR_HEIGHT = 16
GROUP_HEIGHT = 50
LEFT = 200
PLOT = 480
TOP = 40
SINGLE_COLOUR = "#3b6ea5"
AGGREGATE_COLOUR = "#4f9a5a"
ROOFLINE_COLOUR = "#c0392b"


def _number(value: Any) -> Optional[float]:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _positive_int(value: Any) -> int:
    """An integer setting, 0 for anything else ('auto' planned in an earlier run: unknown)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _median(level: Mapping[str, Any], key: str) -> Any:
    return (level.get(key) or {}).get("median")


def roofline(bandwidth_gbps: Any, weight_gb: Any, tensor_parallel_size: Any) -> Optional[float]:
    """Decode ceiling of one stream: each GPU reads its share of the weights once per token, GB/s / GB = tok/s.
    None where the weight size or the tensor-parallel size is unknown."""
    bandwidth, weight, ranks = _number(bandwidth_gbps), _number(weight_gb), _positive_int(tensor_parallel_size)
    if bandwidth is None or weight is None or weight <= 0 or ranks < 1:
        return None
    return round(bandwidth / (weight / ranks), 1)


def kv_tokens_cell(engine: Optional[Mapping[str, Any]]) -> str:
    """The engine's KV cache in tokens, with the plan's in parentheses where the plan gave one."""
    engine = engine or {}
    cell = str((engine.get("engine") or {}).get("kv_cache_tokens", "-"))
    planned = (engine.get("kv") or {}).get("planned_kv_tokens")
    return cell + (" (plan %s)" % planned if planned else "")


def envelope_verdict(result: Mapping[str, Any]) -> str:
    checks = result.get("envelope") or []
    if checks:
        return "pass" if all(check.get("passed") for check in checks) else "fail"
    return "error" if result.get("failed") else "-"


def row(result: Mapping[str, Any], host: str, model: Any, url: str, *, engine: Optional[Mapping[str, Any]] = None,
        ceiling_tps: Optional[float] = None) -> Dict[str, Any]:
    """One endpoint's row: llm_benchmark's result (registered with ignore_errors) read at its lowest and highest
    concurrency, with the ceiling as a fraction of the measured single-stream decode."""
    levels = sorted(result.get("levels") or [], key=lambda level: level["concurrency"])
    first = levels[0] if levels else {}
    last = levels[-1] if levels else {}
    single = (first.get("decode_tokens_per_second") or {}).get("median")
    failed = bool(result.get("failed"))
    return {
        "host": host,
        "kv_tokens": kv_tokens_cell(engine),
        "model": model if model not in (None, "") else "-",
        "url": url,
        "ok": not failed,
        "message": str(result.get("msg") or "") if failed else "",
        "prompt_tokens": first.get("prompt_tokens"),
        "ttft_ms": (first.get("ttft_ms") or {}).get("median"),
        "single_tps": single,
        "single_concurrency": first.get("concurrency"),
        "aggregate_tps": (last.get("aggregate_tokens_per_second") or {}).get("median"),
        "aggregate_concurrency": last.get("concurrency"),
        # In the order measured, as llm_benchmark returns them.
        "aggregates": ", ".join("c=%s: %s" % (level["concurrency"], _median(level, "aggregate_tokens_per_second"))
                                for level in result.get("levels") or []),
        "ceiling_tps": ceiling_tps,
        "ceiling_fraction": round(single / ceiling_tps, 2) if ceiling_tps and single is not None else None,
        "envelope": envelope_verdict(result),
    }


def rows_for(hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]],
             extra_results: Sequence[Mapping[str, Any]] = (), fact: str = "benchmark_row") -> List[Dict[str, Any]]:
    """Each host's `fact` in order (a host without one is a row saying so), then one row per extra endpoint from the
    looped llm_benchmark results (each carries its endpoint as `item`)."""
    rows = [dict((hostvars.get(name) or {}).get(fact) or dict(MISSING_ROW, host=name)) for name in hosts]
    for result in extra_results:
        endpoint = result.get("item") or {}
        rows.append(row(result, str(endpoint.get("name", "-")), endpoint.get("model"), str(endpoint.get("base_url"))))
    return rows


def _dash(value: Any) -> str:
    """Jinja's default('-', true): an empty, zero or missing value shows as '-'."""
    return str(value) if value else "-"


def cells(one_row: Mapping[str, Any]) -> Dict[str, str]:
    fraction = one_row.get("ceiling_fraction")
    return {
        "host": str(one_row["host"]),
        "model": str(one_row.get("model", "-")),
        "kv_tokens": str(one_row.get("kv_tokens") or "-"),
        "prompt_tokens": _dash(one_row.get("prompt_tokens")),
        "ttft_ms": _dash(one_row.get("ttft_ms")),
        "single_tps": _dash(one_row.get("single_tps")),
        "aggregates": _dash(one_row.get("aggregates")),
        "ceiling_tps": _dash(one_row.get("ceiling_tps")),
        # Rounded, not cut: 0.58 is 58%, where float arithmetic makes it 57.99999.
        "of_ceiling": "%d%%" % round(float(fraction) * 100) if fraction is not None else "-",
        "envelope": str(one_row.get("envelope", "-")),
    }


def messages(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    return ["%s: %s" % (one_row["host"], re.sub(r"\s*\n\s*", " ", str(one_row["message"])))
            for one_row in rows if one_row.get("message")]


def svg_chart(rows: Sequence[Mapping[str, Any]], timestamp: str) -> str:
    """Horizontal bars per row: single-stream decode and aggregate at the highest concurrency, the roofline a
    tick; one scale for all, from 0 to the largest value."""
    values = [_number(one_row.get(key)) for one_row in rows for key in ("single_tps", "aggregate_tps", "ceiling_tps")]
    peak = max([1.0] + [value for value in values if value is not None])
    height = TOP + GROUP_HEIGHT * len(rows) + 30
    lines = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">'
        % (LEFT + PLOT + 120, height),
        '<text x="10" y="20" font-size="14" font-weight="bold">tok/s per host (%s)</text>' % escape(timestamp),
        '<rect x="%d" y="26" width="10" height="10" fill="%s"/>' % (LEFT, SINGLE_COLOUR),
        '<text x="%d" y="35">single stream</text>' % (LEFT + 14),
        '<rect x="%d" y="26" width="10" height="10" fill="%s"/>' % (LEFT + 110, AGGREGATE_COLOUR),
        '<text x="%d" y="35">aggregate, highest concurrency</text>' % (LEFT + 124),
        '<line x1="%d" y1="26" x2="%d" y2="36" stroke="%s" stroke-width="2"/>' % (LEFT + 330, LEFT + 330,
                                                                                  ROOFLINE_COLOUR),
        '<text x="%d" y="35">roofline</text>' % (LEFT + 336),
    ]
    for index, one_row in enumerate(rows):
        y = TOP + GROUP_HEIGHT * index
        single = _number(one_row.get("single_tps")) or 0.0
        aggregate = _number(one_row.get("aggregate_tps")) or 0.0
        single_width = round(PLOT * single / peak, 1)
        aggregate_width = round(PLOT * aggregate / peak, 1)
        aggregate_label = ("%s (c=%s)" % (aggregate, one_row.get("aggregate_concurrency"))) if aggregate else ""
        lines += [
            '<text x="%d" y="%d" text-anchor="end">%s</text>' % (LEFT - 8, y + BAR_HEIGHT + 4,
                                                                 escape(str(one_row["host"]))),
            '<rect x="%d" y="%d" width="%s" height="%d" fill="%s"/>' % (LEFT, y + 2, single_width, BAR_HEIGHT,
                                                                        SINGLE_COLOUR),
            '<text x="%s" y="%d">%s</text>' % (LEFT + single_width + 4, y + 14, single if single else "no result"),
            '<rect x="%d" y="%d" width="%s" height="%d" fill="%s"/>' % (LEFT, y + BAR_HEIGHT + 4, aggregate_width,
                                                                        BAR_HEIGHT, AGGREGATE_COLOUR),
            '<text x="%s" y="%d">%s</text>' % (LEFT + aggregate_width + 4, y + BAR_HEIGHT + 16,
                                               escape(aggregate_label)),
        ]
        ceiling = _number(one_row.get("ceiling_tps"))
        if ceiling is not None:
            x = LEFT + round(PLOT * ceiling / peak, 1)
            lines.append('<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="%s" stroke-width="2"/>'
                         % (x, y, x, y + BAR_HEIGHT + 2, ROOFLINE_COLOUR))
    lines += [
        '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>' % (LEFT, TOP - 2, LEFT, height - 24),
        '<text x="%d" y="%d">0</text>' % (LEFT, height - 8),
        '<text x="%d" y="%d" text-anchor="end">%s tok/s</text>' % (LEFT + PLOT, height - 8, round(peak, 1)),
        "</svg>",
    ]
    return "\n".join(lines)


def report(rows: Sequence[Mapping[str, Any]], timestamp: str, settings: str) -> Dict[str, Any]:
    """The fleet's report: printed lines, Markdown lines, CSV lines, the SVG chart, the failures' messages and the
    names of the extra endpoints' rows that failed."""
    table_rows = [cells(one_row) for one_row in rows]
    failures = messages(rows)
    markdown = ["# Benchmark " + timestamp, "", re.sub(r"\s+", " ", settings).strip(), ""]
    markdown += markdown_table(table_rows, COLUMNS, CELL_KEYS)
    markdown += ["", "![single-stream and aggregate tok/s per host](benchmark-%s.svg)" % timestamp]
    if failures:
        markdown += ["", "## Failures", ""] + ["- " + line for line in failures]
    return {
        "rows": [dict(one_row) for one_row in rows],
        "printed": text_table(table_rows, COLUMNS, CELL_KEYS) + ([""] + failures if failures else []),
        "markdown": markdown,
        "csv": csv_lines(table_rows, CELL_KEYS),
        "svg": svg_chart(rows, timestamp),
        "messages": failures,
    }
