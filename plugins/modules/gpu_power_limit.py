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
      - "The limit in watts for every GPU, or a dict of GPU index to watts (C({0: 280, 1: 300})); a GPU the dict
        leaves out, or whose value is null, keeps its limit."
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
from ansible_collections.llmfleet.workstation.plugins.module_utils.gpu_power import LimitError, apply_limits
from ansible_collections.llmfleet.workstation.plugins.module_utils.nvml import (
    HAS_PYNVML,
    NVML_MISSING_FIX,
    PYNVML_IMPORT_ERROR,
    NvmlError,
    NvmlSession,
)


def run(params, session, check_mode):
    """The module's work: apply_limits with the module's option."""
    return apply_limits(session, params["limit_w"], check_mode)


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
