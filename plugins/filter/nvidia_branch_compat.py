# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Judge an NVIDIA driver branch against the GPUs on a host's PCI bus, from the table in module_utils/compat.py."""

from __future__ import annotations

from typing import Any, Dict

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.module_utils.compat import branch_verdict

DOCUMENTATION = r"""
name: nvidia_branch_compat
short_description: Whether an NVIDIA driver branch drives every GPU a host has
version_added: 0.1.0
description:
  - Compares a driver branch and its kernel-module flavour with the GPU families found on the PCI bus
    (M(llmfleet.workstation.nvidia_pci_gpus)), using the collection's table (C(plugins/module_utils/compat.py)) -
    the lowest branch of each family (Blackwell 570), the last one (Maxwell, Pascal and Volta end at 580), and
    the kernel modules it needs (Blackwell only runs the open ones, GPUs before Turing never do).
  - Pure function, no I/O. The C(nvidia_driver) role refuses on RV(_value.problems) before it touches a package.
positional: gpus, open_kernel_modules
options:
  _input:
    description: The driver branch, for example C(580) (C(nvidia_driver_branch)).
    type: raw
    required: true
  gpus:
    description:
      - The GPUs, each a dict with C(family) (null when unknown) and, to name them, C(pci_address) and
        C(device_id); the C(gpus) that M(llmfleet.workstation.nvidia_pci_gpus) returns.
    type: list
    elements: dict
    required: true
  open_kernel_modules:
    description: Whether the open kernel modules are to be installed (C(nvidia_driver_open_kernel_modules)).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Judge the branch against the GPUs found
  ansible.builtin.assert:
    that: verdict.ok
    fail_msg: "{{ verdict.msg }}"
  vars:
    verdict: "{{ nvidia_driver_branch | llmfleet.workstation.nvidia_branch_compat(found.gpus, false) }}"
"""

RETURN = r"""
_value:
  description: The verdict.
  type: dict
  contains:
    ok:
      description: Whether nothing stands in the way.
      type: bool
      sample: false
    msg:
      description: Every problem with its fix, in one string; empty when ok.
      type: str
      sample: >-
        nvidia_driver_branch 560 is too old for 0000:01:00.0 (10de:2b85, blackwell): blackwell needs branch 570 or
        newer. Fix: set nvidia_driver_branch to 570 or newer
    problems:
      description: >-
        Each with C(code) (C(branch_too_old_for_gpu), C(branch_too_new_for_gpu), C(open_modules_required),
        C(open_modules_unsupported)), C(message), C(value), C(limit) and C(fix).
      type: list
      elements: dict
    notes:
      description: Said, not refused (C(gpu_family_unknown), C(no_gpu_found)); same keys.
      type: list
      elements: dict
    families:
      description: The GPU families found.
      type: list
      elements: str
      sample: [ampere]
    lowest_branch:
      description: The lowest branch every GPU found accepts, or null.
      type: int
      sample: 450
    highest_branch:
      description: The highest branch every GPU found accepts, or null where none ends.
      type: int
      sample: 580
"""


def nvidia_branch_compat(branch: Any, gpus: Any, open_kernel_modules: Any = False) -> Dict[str, Any]:
    if not isinstance(gpus, (list, tuple)) or not all(isinstance(gpu, dict) for gpu in gpus):
        raise AnsibleFilterError("nvidia_branch_compat: gpus must be a list of dicts (nvidia_pci_gpus' gpus), got %r"
                                 % (gpus,))
    return branch_verdict(branch, gpus, bool(open_kernel_modules))


class FilterModule:
    """llmfleet.workstation's driver-branch compatibility filter."""

    def filters(self):
        return {"nvidia_branch_compat": nvidia_branch_compat}
