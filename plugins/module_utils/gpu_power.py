# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Power limits: the wanted limit per GPU, checked against the card's range before any GPU changes, then set.

Shared by the gpu_power_limit module and the boot-time unit the gpu_power_limit role installs, so both refuse and
apply the same way. Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from typing import Any, Callable, Dict, Iterable, Optional

from ansible_collections.llmfleet.workstation.plugins.module_utils.nvml import (
    Gpu,
    NvmlSession,
    power_readings,
    set_power_limit,
)


def problem(code: str, message: str, *, gpu: Optional[int] = None, value: Any = None, limit: Any = None,
            fix: Optional[str] = None) -> Dict[str, Any]:
    """The same shape as the gates' problems (module_utils.gate.problem), without importing Ansible."""
    return {"code": code, "gpu": gpu, "value": value, "limit": limit, "fix": fix, "message": message}


class LimitError(Exception):
    """A wanted limit that cannot be applied; carries the structured problem."""

    def __init__(self, found: Dict[str, Any]) -> None:
        super().__init__(found["message"])
        self.problem = found


def format_watts(value: float) -> str:
    return ("%.1f" % value).rstrip("0").rstrip(".")


def wanted_limits(limit_w: Any, gpu_indexes: Iterable[int]) -> Dict[int, Optional[float]]:
    """limit_w (a number, a dict of index to number or null, or null) -> {index: W or None} for every GPU."""
    indexes = list(gpu_indexes)
    if limit_w is None:
        return dict((index, None) for index in indexes)
    if isinstance(limit_w, dict):
        wanted = dict((index, None) for index in indexes)
        for key, value in limit_w.items():
            try:
                index = int(key)
            except (TypeError, ValueError):
                index = None
            if index not in wanted:
                message = ("limit_w names GPU %r, which this host does not have (GPUs: %s): key the dict by NVML "
                           "index" % (key, ", ".join(str(i) for i in indexes) or "none"))
                raise LimitError(problem("limit_invalid", message, value=key, fix="key the dict by NVML index"))
            wanted[index] = None if value is None else watts(value, "limit_w[%s]" % key)
        return wanted
    value = watts(limit_w, "limit_w")
    return dict((index, value) for index in indexes)


def watts(value: Any, name: str) -> float:
    try:
        number = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number <= 0:
        message = "%s must be a positive number of watts (or null to keep the card's limit), got %r" % (name, value)
        raise LimitError(problem("limit_invalid", message, value=value, fix="set a number of watts, e.g. 280"))
    return number


def check_range(gpu: Gpu, wanted: float, readings: Dict[str, Optional[float]]) -> None:
    """Refuse a wanted limit outside the card's constraints, naming the range."""
    low, high = readings["min_limit_w"], readings["max_limit_w"]
    if low is None or high is None:
        fix = "this card or driver does not let its power limit be set: leave the limit null for it"
        message = "%s: NVML gives no power limit range, so %s W cannot be set: %s" % (
            gpu.label, format_watts(wanted), fix)
        raise LimitError(problem("power_limit_not_supported", message, gpu=gpu.index, value=wanted, fix=fix))
    if not low <= wanted <= high:
        fix = "choose a value from %s to %s W" % (format_watts(low), format_watts(high))
        message = "%s: power limit %s W is outside the card's range %s-%s W: %s" % (
            gpu.label, format_watts(wanted), format_watts(low), format_watts(high), fix)
        raise LimitError(problem("power_limit_out_of_range", message, gpu=gpu.index, value=wanted,
                                 limit=[low, high], fix=fix))


def apply_limits(session: NvmlSession, limit_w: Any, check_mode: bool,
                 setter: Callable[[Gpu, int], None] = set_power_limit) -> Dict[str, Any]:
    """Check every wanted limit, then set those that differ; returns changed, gpus, msg and diff."""
    gpus = session.gpus()
    wanted = wanted_limits(limit_w, [gpu.index for gpu in gpus])
    readings = dict((gpu.index, power_readings(session, gpu)) for gpu in gpus)
    for gpu in gpus:
        if wanted[gpu.index] is not None:
            check_range(gpu, wanted[gpu.index], readings[gpu.index])
    entries = []
    for gpu in gpus:
        before = readings[gpu.index]
        target = wanted[gpu.index]
        # NVML works in milliwatts; compare there so 280 and 280.0004 are the same limit.
        changed = target is not None and (before["limit_w"] is None
                                          or int(round(target * 1000)) != int(round(before["limit_w"] * 1000)))
        after_w = before["limit_w"]
        if changed and check_mode:
            after_w = target
        elif changed:
            setter(gpu, int(round(target * 1000)))
            after_w = power_readings(session, gpu)["limit_w"]
        entries.append({"index": gpu.index, "name": gpu.name, "wanted_w": target, "before_w": before["limit_w"],
                        "after_w": after_w, "min_limit_w": before["min_limit_w"],
                        "max_limit_w": before["max_limit_w"], "default_limit_w": before["default_limit_w"],
                        "changed": changed})
    changed_gpus = [entry for entry in entries if entry["changed"]]
    summary = "; ".join("GPU %d %s -> %s W" % (entry["index"], format_watts(entry["before_w"] or 0),
                                               format_watts(entry["after_w"] or 0)) for entry in changed_gpus)
    return {
        "changed": bool(changed_gpus),
        "gpus": entries,
        "problems": [],
        "msg": summary or "Every GPU already has the limit it should",
        "diff": {"before": dict((str(e["index"]), e["before_w"]) for e in entries),
                 "after": dict((str(e["index"]), e["after_w"]) for e in entries)},
    }
