# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What preflight.yml decides and prints about a host, from its registered results: pure functions, no I/O.

The gate modules (gpu_facts, nvlink_status, gpu_junction_temp) judge the hardware and return `problems`
(code, gpu, value, limit, fix, message); this turns them, the disk read and the preflight's own limits into one
row of the report: its cells, a verdict (ok, warn, fail, unreachable), the reasons and the gates' messages.
Reasons come from the problems' codes and values, never from searching the messages' text.
"""

from __future__ import annotations

import re
from itertools import groupby
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible.errors import AnsibleFilterError
from ansible.module_utils.compat.version import LooseVersion

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.tables import csv_lines, markdown_table, text_table

NOT_SET = ("", None)
# What the columns say about a host the audit could not finish (its row was never set).
MISSING_ROW_CELLS = {"gpus": "-", "nvlink": "-", "temps": "-", "power": "-", "pcie": "-", "driver": "-",
                     "disk_free_gb": "-"}


def judge_host(filter_name: str, judge: Any, results: Any, limits: Any) -> Dict[str, Any]:
    """The entry of the per-host filters: checked arguments, and errors named after the filter."""
    if not isinstance(results, Mapping) or (limits is not None and not isinstance(limits, Mapping)):
        raise AnsibleFilterError("%s: the results and the limits must be dictionaries" % filter_name)
    try:
        return judge(results, limits or {})
    except (KeyError, TypeError, ValueError) as error:
        raise AnsibleFilterError("%s: %s" % (filter_name, error)) from error


def truncate(text: str, length: int, end: str = "...", leeway: int = 5) -> str:
    """Jinja's `truncate` filter (at a word, with its default leeway of 5), so reasons read as they always have."""
    if len(text) <= length + leeway:
        return text
    return text[: length - len(end)].rsplit(" ", 1)[0] + end


def _result(results: Mapping[str, Any], name: str) -> Dict[str, Any]:
    """A registered result, or {} where the task never registered one."""
    value = results.get(name)
    return dict(value) if isinstance(value, Mapping) else {}


def _fact(result: Mapping[str, Any], name: str) -> Optional[Dict[str, Any]]:
    facts = result.get("ansible_facts") or {}
    return facts.get(name) or None


def _codes(result: Mapping[str, Any], *codes: str) -> List[Dict[str, Any]]:
    return [item for item in result.get("problems") or [] if item.get("code") in codes]


def _int(value: Any) -> Optional[int]:
    return None if value in NOT_SET else int(value)


def parse_df(stdout_lines: Sequence[str]) -> Tuple[Optional[float], str]:
    """(free GB, mount point) from `df -P -k` of the cache directory and its parents: the first data line wins.

    df -P prints "Filesystem 1024-blocks Used Available Capacity Mounted on"; the first data line is the deepest
    existing directory of the cache path. (None, '') where df printed no such line.
    """
    fields = stdout_lines[1].split() if len(stdout_lines) > 1 else []
    if len(fields) <= 5:
        return None, ""
    return int(fields[3]) * 1024 / 1000000000, " ".join(fields[5:])


class Host:
    """One host's registered results and the limits it is judged by."""

    def __init__(self, results: Mapping[str, Any], limits: Mapping[str, Any]) -> None:
        self.results = results
        self.venv_python = _result(results, "venv_python")
        self.gpu_result = _result(results, "gpu")
        self.nvlink_result = _result(results, "nvlink")
        self.thermal_result = _result(results, "thermal")
        self.p2p_result = _result(results, "p2p")
        self.df_result = _result(results, "df")
        self.unreachable = bool(self.venv_python.get("unreachable") or self.df_result.get("unreachable"))
        self.prepared = bool((self.venv_python.get("stat") or {}).get("exists"))
        self.gpu = _fact(self.gpu_result, "llmfleet_gpu")
        self.nvlink = _fact(self.nvlink_result, "llmfleet_nvlink")
        self.thermal = _fact(self.thermal_result, "llmfleet_gpu_thermal")
        self.disk_free_gb, self.disk_mount = parse_df(self.df_result.get("stdout_lines") or [])
        self.venv = str(limits.get("venv") or "")
        self.cache_dir = str(limits.get("cache_dir") or "")
        self.expected_gpu_count = _int(limits.get("expected_gpu_count"))
        self.min_active_links = _int(limits.get("min_active_links")) or None
        self.max_core_c = int(limits.get("max_core_temp_c", 85))
        self.max_memory_c = int(limits.get("max_memory_temp_c", 100))
        self.margin_c = int(limits.get("temp_warn_margin_c", 5))
        self.min_free_gb = float(limits.get("min_free_gb", 50))
        self.min_driver = str(limits.get("min_driver_version", "550"))


# ---- the verdict ------------------------------------------------------------------------------------------------


def _unreachable_reasons(host: Host) -> List[str]:
    text = re.sub(r"^Task failed: ", "", str(host.venv_python.get("msg") or ""))
    return ["cannot connect: " + truncate(re.sub(r"\s+", " ", text), 100)]


def _unread_gpu_reasons(host: Host) -> List[str]:
    """Why gpu_facts returned no GPUs: the code of the problem it reports, or its message where it has none."""
    if _codes(host.gpu_result, "driver_not_loaded"):
        return ["driver missing: NVIDIA driver not loaded"]
    if _codes(host.gpu_result, "nvml_missing"):
        return ["not prepared: the gates venv lacks nvidia-ml-py, run site.yml --tags gates"]
    return ["GPUs unreadable: " + truncate(str(host.gpu_result.get("msg", "no result")), 120)]


def _nvlink_reasons(host: Host) -> List[str]:
    if not host.nvlink_result.get("failed"):
        return []
    reasons = []
    down = _codes(host.nvlink_result, "nvlink_links_down")
    if down:
        reasons.append("NVLink bridge misseated: %s links active"
                       % ", ".join("GPU %d %d/%d" % (item["gpu"], item["value"], item["limit"]) for item in down))
    no_p2p = _codes(host.nvlink_result, "no_p2p_nvlink")
    if no_p2p:
        reasons.append("no P2P over NVLink (%s)" % (no_p2p[0]["value"] or "unavailable"))
    return reasons or [truncate(str(host.nvlink_result.get("msg", "NVLink gate failed")), 120)]


def _thermal_reasons(host: Host) -> List[str]:
    reasons = []
    for item in _codes(host.thermal_result, "core_temp", "memory_temp", "thermal_throttling"):
        if item["code"] == "core_temp":
            reasons.append("GPU %d core %d C above %d C" % (item["gpu"], item["value"], item["limit"]))
        elif item["code"] == "memory_temp":
            reasons.append("hot junction: GPU %d memory %d C above %d C" % (item["gpu"], item["value"], item["limit"]))
        else:
            reasons.append("GPU %d thermally throttling (%s)" % (item["gpu"], ", ".join(item["value"])))
    if host.thermal_result.get("failed") and not reasons:
        reasons.append(truncate(str(host.thermal_result.get("msg", "thermal gate failed")), 120))
    return reasons


def _hardware_fail_reasons(host: Host) -> List[str]:
    gpu = host.gpu or {}
    reasons = []
    if host.expected_gpu_count is not None and gpu["gpu_count"] < host.expected_gpu_count:
        reasons.append("GPU count %d, %d expected" % (gpu["gpu_count"], host.expected_gpu_count))
    reasons += _nvlink_reasons(host)
    reasons += _thermal_reasons(host)
    if host.p2p_result.get("failed"):
        reasons.append("GPU copies below the floor: " + truncate(str(host.p2p_result.get("msg", "")), 100))
    return reasons


def fail_reasons(host: Host) -> List[str]:
    """What makes the host unfit to serve, most fundamental first."""
    if host.unreachable:
        return _unreachable_reasons(host)
    if not host.prepared:
        reasons = ["not prepared: run site.yml --tags gates (no %s/bin/python)" % host.venv]
    elif not host.gpu:
        reasons = _unread_gpu_reasons(host)
    else:
        reasons = _hardware_fail_reasons(host)
    if host.disk_free_gb is not None and host.disk_free_gb < host.min_free_gb:
        reasons.append("low disk: %.1f GB free on %s for %s, below %g GB"
                       % (host.disk_free_gb, host.disk_mount, host.cache_dir, host.min_free_gb))
    return reasons


def _near(value: Optional[int], limit: int, margin: int) -> bool:
    return value is not None and limit - margin <= value <= limit


def warn_reasons(host: Host) -> List[str]:
    """What serves but deserves a look: more GPUs than expected, an old driver, a starved PCIe link, heat."""
    if host.unreachable:
        return []
    reasons = []
    if host.gpu:
        gpu = host.gpu
        if host.expected_gpu_count is not None and gpu["gpu_count"] > host.expected_gpu_count:
            reasons.append("GPU count %d, %d expected" % (gpu["gpu_count"], host.expected_gpu_count))
        driver = gpu.get("driver_version")
        if driver and LooseVersion(str(driver)) < LooseVersion(host.min_driver):
            reasons.append("driver %s below %s (NVLink on Ampere needs 550+)" % (driver, host.min_driver))
        for item in _codes(host.gpu_result, "pcie_lane_starved"):
            reasons.append("GPU %d PCIe x%d of x%d" % (item["gpu"], item["value"], item["limit"]))
        for card in (host.thermal or {}).get("gpus", []):
            for kind, limit in (("core", host.max_core_c), ("memory", host.max_memory_c)):
                reading = card.get("%s_temp_c" % kind)
                if _near(reading, limit, host.margin_c):
                    reasons.append("GPU %d %s %d C near its %d C limit" % (card["index"], kind, reading, limit))
    if host.disk_free_gb is None:
        reasons.append("free disk unknown (df printed nothing for %s)" % host.cache_dir)
    return reasons


def gate_messages(host: Host) -> List[str]:
    """The gates' own messages (each with the operator's fix), for under the table; skipped tasks have none."""
    results = [host.venv_python, host.gpu_result, host.nvlink_result, host.thermal_result]
    if host.p2p_result.get("failed"):
        results.append(host.p2p_result)
    return [str(result["msg"]).strip() for result in results if "msg" in result and "skipped" not in result]


def verdict(results: Mapping[str, Any], limits: Mapping[str, Any]) -> Dict[str, Any]:
    """{verdict, reasons, fail_reasons, warn_reasons, messages} for one host."""
    host = Host(results, limits)
    failing, warning = fail_reasons(host), warn_reasons(host)
    if host.unreachable:
        word = "unreachable"
    else:
        word = "fail" if failing else ("warn" if warning else "ok")
    return {"verdict": word, "reasons": failing + warning, "fail_reasons": failing, "warn_reasons": warning,
            "messages": gate_messages(host)}


# ---- the row's cells ------------------------------------------------------------------------------------------


def _or(value: Any, fallback: str) -> str:
    """Jinja's default(fallback, true): a falsy value shows as the fallback."""
    return str(value) if value else fallback


def gpus_cell(gpu: Optional[Mapping[str, Any]]) -> str:
    if not gpu:
        return "-"
    # As Jinja's groupby: sorted and grouped ignoring case, each group named as its first card.
    cards = sorted(gpu.get("gpus") or [], key=lambda card: str(card["name"]).lower())
    groups = [list(group) for _name, group in groupby(cards, key=lambda card: str(card["name"]).lower())]
    cells = ["%dx %s" % (len(group), group[0]["name"]) for group in groups]
    return ", ".join(cells) if cells else "none"


def nvlink_cell(nvlink: Optional[Mapping[str, Any]], min_active_links: Optional[int]) -> str:
    if not nvlink:
        return "-"
    if not nvlink.get("nvlink_present"):
        return "none"
    cells = ["%s/%s" % (card["active_links"], min_active_links or card["link_count"]) for card in nvlink["gpus"]]
    p2p = ""
    if nvlink.get("pairs"):
        if nvlink.get("all_pairs_p2p_nvlink"):
            status = "ok"
        else:
            status = _or([pair for pair in nvlink["pairs"] if pair["p2p_nvlink"] != "ok"][0]["p2p_nvlink"],
                         "unavailable")
        p2p = " (P2P %s)" % status
    return ", ".join(cells) + p2p


def temps_cell(thermal: Optional[Mapping[str, Any]]) -> str:
    cards = (thermal or {}).get("gpus") or []
    return ", ".join("%s/%s" % (_or(card["core_temp_c"], "-"), _or(card["memory_temp_c"], "-"))
                     for card in cards) or "-"


def _watts(value: Any) -> str:
    return "-" if value is None else "%d" % round(value)


def power_cell(gpu: Optional[Mapping[str, Any]]) -> str:
    """Each GPU's draw beside its enforced limit, W ("301/280"): a cap (gpu_power_limit_w) shows here."""
    cards = (gpu or {}).get("gpus") or []
    return ", ".join("%s/%s" % (_watts(card.get("power_draw_w")), _watts(card.get("power_limit_w")))
                     for card in cards) or "-"


def pcie_cell(gpu: Optional[Mapping[str, Any]]) -> str:
    cards = (gpu or {}).get("gpus") or []
    return ", ".join(
        "gen%s x%s%s" % (_or(card["pcie_current_generation"], "?"), _or(card["pcie_current_width"], "?"),
                         "/%s" % card["pcie_max_width"] if card["pcie_lane_starved"] else "")
        for card in cards
    ) or "-"


def engine_cell(host: Host) -> str:
    """The vllm role's compat verdict (with its fixes), whether the engine serves, and the GPU copy bandwidth."""
    compat = host.results.get("compat")
    if compat is not None and not host.unreachable:
        fixes = [str(item["fix"]) for item in compat.get("problems") or []]
        text = str(compat["summary"]) + (" (%s)" % "; ".join(fixes) if fixes else "")
    else:
        text = "-"
    engine = _result(host.results, "engine")
    if engine.get("ready"):
        text += "; serving, KV cache %s tokens" % (engine.get("engine") or {}).get("kv_cache_tokens", "?")
    else:
        text += "; engine not serving"
    if host.p2p_result.get("msg"):
        text += "; GPU copies: %s" % host.p2p_result["msg"]
    return text


def row(results: Mapping[str, Any], limits: Mapping[str, Any]) -> Dict[str, Any]:
    """The host's row of the report: its cells, verdict, reasons (one string), messages and engine line."""
    host = Host(results, limits)
    judged = verdict(results, limits)
    return {
        "host": str(results.get("host", "")),
        "gpus": gpus_cell(host.gpu),
        "nvlink": nvlink_cell(host.nvlink, host.min_active_links),
        "temps": temps_cell(host.thermal),
        "power": power_cell(host.gpu),
        "pcie": pcie_cell(host.gpu),
        "driver": _or(host.gpu.get("driver_version"), "-") if host.gpu else "-",
        "disk_free_gb": "-" if host.disk_free_gb is None else "%.1f" % host.disk_free_gb,
        "verdict": judged["verdict"],
        "reasons": "; ".join(judged["reasons"]),
        "messages": judged["messages"],
        "engine": engine_cell(host),
    }


def rows_for(hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]],
             fact: str = "preflight_row") -> List[Dict[str, Any]]:
    """Each host's `fact` in order; a host without one (its audit broke) is a row saying so, not a gap."""
    missing = dict(MISSING_ROW_CELLS, verdict="fail", reasons="no result: the audit of this host stopped early",
                   messages=[], engine="-")
    rows = []
    for name in hosts:
        host_vars = hostvars.get(name) or {}
        rows.append(dict(host_vars.get(fact) or dict(missing, host=name)))
    return rows


# ---- report ---------------------------------------------------------------------------------------------------


def report(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], keys: Sequence[str],
           title: str) -> Dict[str, Any]:
    """The preflight's printed lines, Markdown and CSV: the table, the gates' messages, each host's engine line."""
    if len(columns) != len(keys):
        raise ValueError("columns and keys differ in length (%d and %d)" % (len(columns), len(keys)))
    messages = ["%s: %s" % (one_row["host"], re.sub(r"\s*\n\s*", " ", str(message)))
                for one_row in rows for message in one_row.get("messages") or []]
    engines = ["%s: %s" % (one_row["host"], one_row.get("engine", "-")) for one_row in rows]
    printed = text_table(rows, columns, keys) + ([""] + messages if messages else [])
    printed += ["", "Engine release against the driver:"] + engines
    markdown = ["# " + title, ""] + markdown_table(rows, columns, keys)
    if messages:
        markdown += ["", "## Messages from the gates", ""] + ["- " + line for line in messages]
    markdown += ["", "## Engine release against the driver", ""] + ["- " + line for line in engines]
    return {"rows": [dict(one_row) for one_row in rows], "printed": printed, "markdown": markdown,
            "csv": csv_lines(rows, keys)}
