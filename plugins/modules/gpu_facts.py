#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Report a workstation's NVIDIA driver, GPUs, PCIe links and power limits
version_added: 0.1.0
description:
  - Reads the NVIDIA driver and every GPU through one NVML session and returns them as
    C(ansible_facts.llmfleet_gpu) for later roles (engine sizing, tensor parallelism, service checks).
  - Flags PCIe lane starvation, a GPU running at fewer lanes than it supports (for example x8 of x16),
    which slows tensor-parallel traffic on pairs without NVLink.
  - Never changes the host and never calls C(nvidia-smi).
options:
  expected_gpu_count:
    description:
      - Fail unless NVML reports exactly this many GPUs.
      - Unset reports whatever is present.
    type: int
notes:
  - Idle GPUs lower their PCIe link B(generation) to save power, so a lower current generation is reported
    (C(pcie_generation_downshifted), informational) but not flagged as a fault; only a narrower link B(width) is
    (C(pcie_lane_starved), with a warning naming the GPU). Read the generation under load to judge it.
  - C(pcie_max_generation) is the most the GPU and the slot together allow; C(pcie_gpu_max_generation) is the
    GPU's own maximum, so a Gen4 card in a Gen3 slot shows 3 and 4.
author:
  - llmfleet.workstation contributors (@llmfleet)
extends_documentation_fragment:
  - llmfleet.workstation.gate
"""

EXAMPLES = r"""
- name: Read the GPUs
  llmfleet.workstation.gpu_facts:

- name: Require both RTX 3090s
  llmfleet.workstation.gpu_facts:
    expected_gpu_count: 2

- name: Show each GPU's PCIe link
  ansible.builtin.debug:
    msg: "{{ item.name }}: PCIe gen {{ item.pcie_current_generation }} x{{ item.pcie_current_width }}"
  loop: "{{ ansible_facts.llmfleet_gpu.gpus }}"
"""

RETURN = r"""
problems:
  description:
    - What the gate found wrong, as data beside its message and warnings, so that callers judge without reading
      text. Empty on a healthy host.
    - C(code) is one of C(gpu_count) (fewer or more GPUs than I(expected_gpu_count), the count in C(value), the
      expected in C(limit)), C(pcie_lane_starved) (a warning; the lanes in use in C(value), the lanes the GPU
      supports in C(limit)), and where NVML cannot be read at all C(nvml_missing) (nvidia-ml-py not installed),
      C(driver_not_loaded), C(nvml_init_failed) or C(nvml_call_failed).
    - C(gpu) is the NVML index, or null for the host; C(fix) what the operator does; C(message) the sentence.
  returned: always
  type: list
  elements: dict
  sample:
    - code: pcie_lane_starved
      gpu: 1
      value: 8
      limit: 16
      fix: move it to a slot wired for x16, or expect slower tensor-parallel traffic over PCIe
      message: "GPU 1 (NVIDIA GeForce RTX 3090, 00000000:21:00.0) runs PCIe x8 of x16: move it to a slot wired
        for x16, or expect slower tensor-parallel traffic over PCIe"
ansible_facts:
  description: Facts set on the host.
  returned: success
  type: dict
  contains:
    llmfleet_gpu:
      description: The driver and every GPU NVML reports.
      returned: success
      type: dict
      contains:
        driver_version:
          description: NVIDIA driver version.
          type: str
          sample: "560.35.03"
        cuda_driver_version:
          description: Highest CUDA version the driver supports, or null where NVML does not say.
          type: str
          sample: "12.6"
        nvml_version:
          description: NVML library version.
          type: str
          sample: "12.560.35.03"
        gpu_count:
          description: Number of GPUs.
          type: int
          sample: 2
        lane_starved_gpus:
          description: Indexes of GPUs whose PCIe link is narrower than the GPU supports.
          type: list
          elements: int
          sample: [1]
        gpus:
          description: One entry per GPU, by NVML index. Values a GPU does not expose are null.
          type: list
          elements: dict
          contains:
            index:
              description: NVML index.
              type: int
              sample: 0
            name:
              description: GPU name.
              type: str
              sample: NVIDIA GeForce RTX 3090
            uuid:
              description: GPU UUID.
              type: str
              sample: GPU-5f0c3d12-8a41-4c7e-9b2d-3090a0000001
            pci_bus_id:
              description: PCI bus id, as NVML and nvidia-smi print it.
              type: str
              sample: "00000000:01:00.0"
            memory_total_mib:
              description: Total GPU memory, MiB.
              type: int
              sample: 24576
            memory_used_mib:
              description: GPU memory in use, MiB.
              type: int
              sample: 1
            pcie_current_generation:
              description: PCIe link generation now (drops when idle).
              type: int
              sample: 4
            pcie_max_generation:
              description: Highest PCIe generation the GPU and slot together allow.
              type: int
              sample: 4
            pcie_gpu_max_generation:
              description: The GPU's own highest PCIe generation.
              type: int
              sample: 4
            pcie_current_width:
              description: PCIe lanes in use now.
              type: int
              sample: 16
            pcie_max_width:
              description: PCIe lanes the GPU supports.
              type: int
              sample: 16
            pcie_lane_starved:
              description: Whether the link runs at fewer lanes than the GPU supports (x8 of x16), a fault.
              type: bool
              sample: false
            pcie_generation_downshifted:
              description:
                - Whether the link runs below its highest generation.
                - Informational - idle GPUs do it to save power.
              type: bool
              sample: false
            persistence_mode:
              description: Whether persistence mode is on.
              type: bool
              sample: true
            power_limit_w:
              description: Enforced power limit, W.
              type: float
              sample: 350.0
            power_default_limit_w:
              description: Default power limit, W.
              type: float
              sample: 350.0
            power_min_limit_w:
              description: Lowest power limit that can be set, W.
              type: float
              sample: 100.0
            power_max_limit_w:
              description: Highest power limit that can be set, W.
              type: float
              sample: 400.0
            power_draw_w:
              description: Power draw when read, W.
              type: float
              sample: 301.0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmfleet.workstation.plugins.module_utils.gate import problem, run_gate
from ansible_collections.llmfleet.workstation.plugins.module_utils.nvml import (
    describe_gpu,
    milliwatts_to_watts,
)

MIB = 1024 * 1024


def read_gpu(session, gpu):
    """Everything gpu_facts reports about one GPU."""
    memory = session.optional(gpu.label, "nvmlDeviceGetMemoryInfo", gpu.handle)
    current_gen = session.optional(gpu.label, "nvmlDeviceGetCurrPcieLinkGeneration", gpu.handle)
    max_gen = session.optional(gpu.label, "nvmlDeviceGetMaxPcieLinkGeneration", gpu.handle)
    gpu_max_gen = session.optional(gpu.label, "nvmlDeviceGetGpuMaxPcieLinkGeneration", gpu.handle)
    current_width = session.optional(gpu.label, "nvmlDeviceGetCurrPcieLinkWidth", gpu.handle)
    max_width = session.optional(gpu.label, "nvmlDeviceGetMaxPcieLinkWidth", gpu.handle)
    persistence = session.optional(gpu.label, "nvmlDeviceGetPersistenceMode", gpu.handle)
    constraints = session.optional(gpu.label, "nvmlDeviceGetPowerManagementLimitConstraints", gpu.handle)
    facts = gpu.identity()
    facts.update(
        memory_total_mib=int(memory.total // MIB) if memory is not None else None,
        memory_used_mib=int(memory.used // MIB) if memory is not None else None,
        pcie_current_generation=current_gen,
        pcie_max_generation=max_gen,
        pcie_gpu_max_generation=gpu_max_gen,
        pcie_current_width=current_width,
        pcie_max_width=max_width,
        pcie_lane_starved=bool(current_width is not None and max_width and current_width < max_width),
        pcie_generation_downshifted=bool(current_gen is not None and max_gen and current_gen < max_gen),
        persistence_mode=None if persistence is None else persistence == 1,
        power_limit_w=milliwatts_to_watts(session.optional(gpu.label, "nvmlDeviceGetEnforcedPowerLimit", gpu.handle)),
        power_default_limit_w=milliwatts_to_watts(
            session.optional(gpu.label, "nvmlDeviceGetPowerManagementDefaultLimit", gpu.handle)
        ),
        power_min_limit_w=milliwatts_to_watts(constraints[0]) if constraints else None,
        power_max_limit_w=milliwatts_to_watts(constraints[1]) if constraints else None,
        power_draw_w=milliwatts_to_watts(session.optional(gpu.label, "nvmlDeviceGetPowerUsage", gpu.handle)),
    )
    return facts


def collect_gpu_facts(session):
    gpus = [read_gpu(session, gpu) for gpu in session.gpus()]
    return {
        "driver_version": session.driver_version(),
        "cuda_driver_version": session.cuda_driver_version(),
        "nvml_version": session.nvml_version(),
        "gpu_count": len(gpus),
        "lane_starved_gpus": [gpu["index"] for gpu in gpus if gpu["pcie_lane_starved"]],
        "gpus": gpus,
    }


def run(params, session):
    """Read the facts and judge them against params; returns the module result."""
    facts = collect_gpu_facts(session)
    result = {"changed": False, "ansible_facts": {"llmfleet_gpu": facts}, "warnings": [], "problems": []}
    for gpu in facts["gpus"]:
        if gpu["pcie_lane_starved"]:
            width, most = gpu["pcie_current_width"], gpu["pcie_max_width"]
            fix = "move it to a slot wired for x%d, or expect slower tensor-parallel traffic over PCIe" % most
            message = "%s runs PCIe x%d of x%d: %s" % (describe_gpu(gpu), width, most, fix)
            result["warnings"].append(message)
            result["problems"].append(problem("pcie_lane_starved", message, gpu=gpu["index"], value=width, limit=most,
                                              fix=fix))
    expected = params.get("expected_gpu_count")
    if expected is not None and facts["gpu_count"] != expected:
        seen = ", ".join("%d: %s" % (gpu["index"], gpu["name"]) for gpu in facts["gpus"]) or "none"
        fix = ("Check that every card is seated and powered (both PCIe power connectors), that it shows in lspci, "
               "and that nvidia-smi lists it")
        result["failed"] = True
        result["msg"] = "Expected %d GPUs, NVML reports %d (%s). %s" % (expected, facts["gpu_count"], seen, fix)
        result["problems"].append(problem("gpu_count", result["msg"], value=facts["gpu_count"], limit=expected,
                                          fix=fix))
    return result


def main():
    module = AnsibleModule(argument_spec={"expected_gpu_count": {"type": "int"}}, supports_check_mode=True)
    run_gate(module, run)


if __name__ == "__main__":
    main()
