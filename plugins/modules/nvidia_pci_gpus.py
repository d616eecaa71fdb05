#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: nvidia_pci_gpus
short_description: List the NVIDIA GPUs on the PCI bus and their families, with or without a driver
version_added: 0.1.0
description:
  - Reads the vendor, device and class registers of every PCI function from sysfs and returns the NVIDIA display
    controllers (PCI class 0x03, vendor 0x10de) with the GPU family of their device ID (Ampere, Ada, Hopper,
    Blackwell, ...), from the collection's table (C(plugins/module_utils/compat.py)).
  - Works before any NVIDIA driver is installed, which NVML cannot; the C(nvidia_driver) role uses it to check
    C(nvidia_driver_branch) against the GPUs before installing anything.
  - Never changes the host. A device ID outside the table has family null; judge it with
    P(llmfleet.workstation.nvidia_branch_compat#filter).
options:
  devices_path:
    description: Directory with one entry per PCI function, each holding C(vendor), C(device) and C(class) files.
    type: path
    default: /sys/bus/pci/devices
author:
  - llmfleet.workstation contributors (@llmfleet)
"""

EXAMPLES = r"""
- name: Find the GPUs, driver or not
  llmfleet.workstation.nvidia_pci_gpus:
  register: found

- name: Show them
  ansible.builtin.debug:
    msg: "{{ item.pci_address }} 10de:{{ item.device_id }} {{ item.family }}"
  loop: "{{ found.gpus }}"
"""

RETURN = r"""
gpus:
  description: The NVIDIA display controllers, by PCI address.
  returned: success
  type: list
  elements: dict
  contains:
    pci_address:
      description: PCI address (domain:bus:device.function).
      type: str
      sample: "0000:01:00.0"
    device_id:
      description: PCI device ID, four hex digits.
      type: str
      sample: "2204"
    pci_class:
      description: PCI class code, six hex digits (030000 VGA, 030200 3D controller).
      type: str
      sample: "030000"
    family:
      description: GPU family of the device ID, or null where the table does not know it.
      type: str
      sample: ampere
gpu_count:
  description: Number of NVIDIA display controllers.
  returned: success
  type: int
  sample: 2
families:
  description: The distinct families found, sorted; unknown devices leave none.
  returned: success
  type: list
  elements: str
  sample: [ampere]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmfleet.workstation.plugins.module_utils.compat import pci_family


def read_register(path):
    """A sysfs register such as '0x10de\\n' as an int, or None where it cannot be read."""
    try:
        with open(path) as handle:
            return int(handle.read().strip(), 16)
    except (OSError, ValueError):
        return None


def scan(devices_path):
    """The module's result for one sysfs PCI devices directory."""
    gpus = []
    for address in sorted(os.listdir(devices_path)):
        registers = [read_register(os.path.join(devices_path, address, name)) for name in ("vendor", "device", "class")]
        if None in registers:
            continue
        vendor, device, device_class = registers
        is_gpu, family = pci_family(vendor, device, device_class)
        if is_gpu:
            gpus.append({"pci_address": address, "device_id": "%04x" % device, "pci_class": "%06x" % device_class,
                         "family": family})
    return {
        "changed": False,
        "gpus": gpus,
        "gpu_count": len(gpus),
        "families": sorted({gpu["family"] for gpu in gpus if gpu["family"]}),
    }


def main():
    module = AnsibleModule(
        argument_spec={"devices_path": {"type": "path", "default": "/sys/bus/pci/devices"}},
        supports_check_mode=True,
    )
    devices_path = module.params["devices_path"]
    if not os.path.isdir(devices_path):
        module.fail_json(msg="%s does not exist: this host has no sysfs PCI tree to read the GPUs from" % devices_path)
    module.exit_json(**scan(devices_path))


if __name__ == "__main__":
    main()
