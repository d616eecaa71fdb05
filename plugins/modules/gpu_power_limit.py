#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: gpu_power_limit
short_description: Set each NVIDIA GPU's power limit through NVML
version_added: 0.1.0
description:
  - Sets the power management limit of each GPU with C(nvmlDeviceSetPowerManagementLimit), the call behind
    C(nvidia-smi -pl).
  - Every wanted value is checked against the card's own range (C(nvmlDeviceGetPowerManagementLimitConstraints))
    before any GPU is changed; a value outside it is refused with the range in the message.
  - The driver forgets the limit at a reboot or a driver reload; the C(gpu_power_limit) role applies it again at
    every boot.
  - In check mode nothing is set; the result says which GPUs would change.
options:
  limit_w:
    description:
      - The limit in watts for every GPU, or a dict of GPU index to watts (C({0: 280, 1: 300})); a GPU the dict
        leaves out, or whose value is null, keeps its limit.
      - Null changes nothing.
    type: raw
    required: true
author:
  - llmfleet.workstation contributors (@llmfleet)
requirements:
  - nvidia-ml-py (module pynvml) on the target
  - root on the target (NVML answers C(NoPermission) otherwise)
"""

EXAMPLES = r"""
- name: Cap both RTX 3090s at 280 W
  llmfleet.workstation.gpu_power_limit:
    limit_w: 280
  become: true

- name: Cap only GPU 1, the inner card
  llmfleet.workstation.gpu_power_limit:
    limit_w: {1: 260}
  become: true
"""

RETURN = r"""
gpus:
  description: One entry per GPU, by NVML index, before and after.
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: NVML index.
      type: int
      sample: 1
    name:
      description: GPU name.
      type: str
      sample: NVIDIA GeForce RTX 3090
    wanted_w:
      description: The limit asked for, W; null where this GPU keeps its limit.
      type: float
      sample: 280.0
    before_w:
      description: The limit before, W.
      type: float
      sample: 350.0
    after_w:
      description: The limit read back after setting it (in check mode, what it would be), W.
      type: float
      sample: 280.0
    min_limit_w:
      description: Lowest limit the card accepts, W.
      type: float
      sample: 100.0
    max_limit_w:
      description: Highest limit the card accepts, W.
      type: float
      sample: 400.0
    default_limit_w:
      description: The card's default limit, W.
      type: float
      sample: 350.0
    changed:
      description: Whether this GPU's limit changed (or would, in check mode).
      type: bool
      sample: true
problems:
  description:
    - Why the limit was refused, as data. C(code) is one of C(limit_invalid) (the option itself),
      C(power_limit_out_of_range) (C(value) the wanted W, C(limit) the card's C([min, max])),
      C(power_limit_not_supported), C(power_limit_no_permission), or an NVML failure code
      (C(nvml_missing), C(driver_not_loaded), C(nvml_init_failed), C(nvml_call_failed)).
  returned: always
  type: list
  elements: dict
  sample:
    - code: power_limit_out_of_range
      gpu: 0
      value: 500.0
      limit: [100.0, 400.0]
      fix: choose a value from 100 to 400 W
      message: "GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0): power limit 500 W is outside the card's range
        100-400 W: choose a value from 100 to 400 W"
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.llmfleet.workstation.plugins.module_utils.gate import problem
from ansible_collections.llmfleet.workstation.plugins.module_utils.nvml import (
    HAS_PYNVML,
    NVML_MISSING_FIX,
    PYNVML_IMPORT_ERROR,
    NvmlError,
    NvmlSession,
    power_readings,
    set_power_limit,
)


class LimitError(Exception):
    """A wanted limit that cannot be applied; carries the structured problem."""

    def __init__(self, found):
        super().__init__(found["message"])
        self.problem = found


def format_watts(value):
    return ("%.1f" % value).rstrip("0").rstrip(".")


def wanted_limits(limit_w, indexes):
    """limit_w (a number, a dict of index to number or null, or null) -> {index: W or None} for every GPU."""
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


def watts(value, name):
    try:
        number = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number <= 0:
        message = "%s must be a positive number of watts (or null to keep the card's limit), got %r" % (name, value)
        raise LimitError(problem("limit_invalid", message, value=value, fix="set a number of watts, e.g. 280"))
    return number


def check_range(gpu, wanted, readings):
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


def run(params, session, check_mode, setter=set_power_limit):
    """Check every wanted limit, then set those that differ; returns the module result."""
    gpus = session.gpus()
    wanted = wanted_limits(params["limit_w"], [gpu.index for gpu in gpus])
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


def main():
    module = AnsibleModule(argument_spec={"limit_w": {"type": "raw", "required": True}}, supports_check_mode=True)
    if not HAS_PYNVML:
        message = missing_required_lib("nvidia-ml-py")
        module.fail_json(msg=message, exception=PYNVML_IMPORT_ERROR, changed=False, gpus=[],
                         problems=[problem("nvml_missing", message, fix=NVML_MISSING_FIX)])
    try:
        with NvmlSession() as session:
            result = run(module.params, session, module.check_mode)
    except LimitError as error:
        module.fail_json(msg=str(error), changed=False, gpus=[], problems=[error.problem])
    except NvmlError as error:
        module.fail_json(msg=str(error), changed=False, gpus=[],
                         problems=[problem(error.code, str(error), fix=error.fix)])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
