#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: gpu_p2p_bandwidth
short_description: Gate on the copy bandwidth measured between every GPU pair and within each GPU
version_added: 0.2.0
description:
  - Measures, with CUDA through torch, how fast each GPU pair copies in each direction alone and in both
    directions at once, and how fast each GPU copies within its own memory. Links can be up while traffic still
    crosses PCIe (P2P disabled by the driver or a kernel setting, an IOMMU in the way); only a copy shows it.
  - The copies run in a child process under I(python), the engine venv's interpreter, which has torch; the
    gate itself runs under the gates venv, which has only the NVML bindings. The child runs a script shipped
    with the collection (C(plugins/module_utils/p2p_measure.py)), passed on its standard input, so nothing is
    written on the host.
  - Each figure is the median of I(repetitions) copies of I(buffer_size_mib) MiB after three warm-up copies,
    timed with CUDA events; the whole run takes a few seconds, most of it importing torch and starting CUDA.
  - Compares every pair's figures (each direction, alone and at once) with a floor, I(floor_fraction) of what the
    path NVML reports should carry per direction - NVLink - links between the pair (or to NVSwitch) times the
    per-link figure of their NVLink version (14.06 GB/s per direction on an RTX 3090's NVLink 3, 25 GB/s on
    NVLink 2 to 4, H100/H200); PCIe - the practical per-direction figure of the generation, scaled by the link
    width (x16 - 12 GB/s on 3.0, 25 on 4.0, 50 on 5.0). I(min_pair_gbps) replaces that floor.
  - Fails below the floor with the pair, the figure, the expected figure and the fix; also on a copy that
    errors, hangs past I(timeout) or delivers different bytes than were sent. Problems are returned as data
    (C(problems)) beside the message.
  - Reports C(not measured), with the reason, where it cannot measure - the interpreter is missing, torch is
    not installed or has no CUDA, a GPU lacks free memory for the buffers - and fails for that only with
    I(require_measurement=true). On one GPU there is no pair; the copy within the GPU is still measured.
  - Never changes the host and never calls C(nvidia-smi). It does load the GPUs for those seconds and takes
    2 x I(buffer_size_mib) MiB of memory on each, so run it before the engine starts, not beside it.
options:
  python:
    description:
      - Interpreter with a CUDA build of torch that runs the copies, normally the engine venv's
        (C(/opt/vllm/current/bin/python)).
      - Missing, or without torch or CUDA, the gate reports C(not measured).
    type: path
    required: true
  min_pair_gbps:
    description:
      - Floor in GB/s that every direction of every pair must reach, alone and with the other direction at once.
      - Unset takes I(floor_fraction) of the figure the path NVML reports should carry.
    type: float
  floor_fraction:
    description:
      - Share of the expected per-direction figure below which a pair fails, between 0 and 1.
      - At C(0.7), an RTX 3090 NVLink pair (56.25 GB/s per direction) must reach 39.4 GB/s, above what PCIe
        4.0 x16 carries, so a pair whose traffic falls back to PCIe fails.
    type: float
    default: 0.7
  min_gpu_copy_gbps:
    description:
      - Floor for the copy within each GPU, GB/s of bytes copied (the memory moves twice that, read and write).
      - Unset reports the figure without gating it.
    type: float
  require_measurement:
    description:
      - Fail when nothing, or some GPU or pair, could not be measured (interpreter or torch missing, no CUDA,
        too little free GPU memory) instead of reporting C(not measured).
    type: bool
    default: false
  buffer_size_mib:
    description: Bytes per copy, MiB. Each GPU holds two such buffers during the run.
    type: int
    default: 256
  repetitions:
    description: Timed copies per figure; the median is reported.
    type: int
    default: 5
  timeout:
    description:
      - Seconds the measurement may take, torch's start included, before the gate fails as hung.
      - A copy between GPUs that never finishes is the usual sign of P2P through an IOMMU.
    type: int
    default: 120
notes:
  - GB/s are decimal (10^9 bytes per second) and count bytes copied. A copy within one GPU reads and writes each
    byte, so its memory traffic (C(memory_traffic_gbps)) is twice its copy figure; tools that report memory
    bandwidth (an H200 moves about 4.3 TB/s of reads and writes) give the latter.
  - The child process runs with C(CUDA_DEVICE_ORDER=PCI_BUS_ID) unless the task's environment sets it, and GPUs
    are matched to NVML's by PCI address, so GPU numbers are NVML's and nvidia-smi's.
  - GeForce RTX 40- and 50-series cards offer no P2P with NVIDIA's drivers; their copies go through host memory.
    If such a pair stays below the PCIe floor while each GPU's PCIe link is healthy, set I(min_pair_gbps) to the
    figure the pair reaches.
author:
  - llmfleet.workstation contributors (@llmfleet)
extends_documentation_fragment:
  - llmfleet.workstation.gate
"""

EXAMPLES = r"""
- name: Measure the NVLink pair with the engine's torch, floors from what NVML reports
  llmfleet.workstation.gpu_p2p_bandwidth:
    python: /opt/vllm/current/bin/python

- name: Require at least 20 GB/s per direction on a PCIe-only pair, and a measurement
  llmfleet.workstation.gpu_p2p_bandwidth:
    python: /opt/vllm/current/bin/python
    min_pair_gbps: 20
    require_measurement: true

- name: Measure, and keep going whatever it finds
  llmfleet.workstation.gpu_p2p_bandwidth:
    python: /opt/vllm/current/bin/python
  register: p2p
  ignore_errors: true

- name: Show the lowest figure of each pair against its floor
  ansible.builtin.debug:
    msg: "GPU {{ item.gpus | join('<->') }}: {{ item.min_gbps }} GB/s, floor {{ item.floor_gbps }} ({{ item.path }})"
  loop: "{{ p2p.ansible_facts.llmfleet_p2p_bandwidth.pairs }}"
"""

RETURN = r"""
msg:
  description: On success a summary of the figures; on failure every problem with its fix.
  returned: always
  type: str
  sample: "GPU 0<->1 52.1/52 GB/s one way, 100.4 GB/s both ways at once (nvlink, floor 39.38); within each GPU ..."
notes:
  description: Observations that did not fail the gate (not measured, single GPU, a pair without a floor).
  returned: always
  type: list
  elements: str
  sample: ["Single GPU: no pair to measure; the copy within the GPU was measured"]
problems:
  description:
    - What failed the gate, one entry each - C(code) (C(pair_below_floor), C(pair_copy_error),
      C(pair_data_mismatch), C(gpu_copy_error), C(gpu_data_mismatch), C(gpu_copy_below_floor),
      C(measurement_timeout), C(measurement_error), C(not_measured)), C(gpu) (NVML index or null), C(pair)
      (two NVML indexes or null), C(value) and C(limit) (GB/s, or null), C(message) and C(fix).
    - C(pair_below_floor) also has C(direction) (C("1->0")), C(mode) (C(unidirectional) or C(bidirectional)),
      C(expected) (GB/s) and C(path) (C(nvlink) or C(pcie)).
  returned: always
  type: list
  elements: dict
  sample:
    - code: pair_below_floor
      gpu: null
      pair: [0, 1]
      value: 24.3
      limit: 39.38
      direction: "0->1"
      mode: unidirectional
      expected: 56.25
      path: nvlink
      message: "GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0) and GPU 1 (...) copy at 24.3 GB/s per direction ..."
      fix: "NVLink is up but traffic crosses PCIe or another slower path: check P2P is enabled ..."
ansible_facts:
  description: Facts set on the host.
  returned: always, also when the gate fails
  type: dict
  contains:
    llmfleet_p2p_bandwidth:
      description: The measurement and the floors.
      returned: always
      type: dict
      contains:
        measured:
          description: Whether the measurement ran (false with C(reason) when it could not).
          type: bool
          sample: true
        reason:
          description:
            - Why nothing was measured - C(python_missing), C(torch_missing), C(torch_unusable),
              C(cuda_unavailable), C(no_gpu), C(timeout), C(measurement_error); null when measured.
          type: str
          sample: null
        detail:
          description: The reason in words, or null.
          type: str
          sample: null
        python:
          description: The interpreter that ran the copies.
          type: str
          sample: /opt/vllm/current/bin/python
        torch_version:
          description: torch's version in that interpreter, or null.
          type: str
          sample: "2.8.0+cu128"
        cuda_version:
          description: The CUDA version torch was built for, or null.
          type: str
          sample: "12.8"
        buffer_bytes:
          description: Bytes per copy, or null when not measured.
          type: int
          sample: 268435456
        repetitions:
          description: Timed copies per figure, or null when not measured.
          type: int
          sample: 5
        elapsed_seconds:
          description: Time the measurement took in the child process, torch's import included.
          type: float
          sample: 4.2
        units:
          description: What the figures count.
          type: str
          sample: "GB/s = 10^9 bytes copied per second; memory_traffic_gbps counts each copied byte twice ..."
        gpus:
          description:
            - One entry per GPU, by NVML index - C(index), C(name), C(uuid), C(pci_bus_id), C(status)
              (C(measured), C(not_measured), C(error)), C(reason) and C(detail) when not measured, C(copy_gbps)
              (bytes copied per second within the GPU), C(memory_traffic_gbps) (read plus write, twice
              C(copy_gbps)), C(data_ok) (the copy arrived intact) and C(error).
          type: list
          elements: dict
          sample:
            - index: 0
              name: NVIDIA H200
              uuid: GPU-5f0c3d12-8a41-4c7e-9b2d-h200a0000001
              pci_bus_id: "00000000:18:00.0"
              status: measured
              reason: null
              detail: null
              copy_gbps: 2150.3
              memory_traffic_gbps: 4300.6
              data_ok: true
              error: null
        pairs:
          description:
            - One entry per GPU pair - C(gpus), C(path) (C(nvlink) or C(pcie), from NVML), C(nvlink_links) (links
              that carry the pair's traffic), C(p2p_nvlink) (NVML's P2P-over-NVLink status), C(expected_gbps)
              (what the path carries per direction), C(floor_gbps) and C(floor_source), C(status), C(reason),
              C(detail), C(peer_access) (CUDA can enable P2P in both directions), C(directions), C(min_gbps)
              (the lowest of the pair's four figures), C(bidirectional_total_gbps) (both directions' bytes over
              the time they took together), C(data_ok) and C(error).
            - Each of C(directions) has C(source), C(destination), C(direction) (C("0->1")), C(peer_access),
              C(unidirectional_gbps) (this direction alone) and C(bidirectional_gbps) (this direction while the
              other runs).
          type: list
          elements: dict
          sample:
            - gpus: [0, 1]
              path: nvlink
              nvlink_links: 4
              p2p_nvlink: ok
              expected_gbps: 56.25
              floor_gbps: 39.38
              floor_source: "70% of NVLink 3.0, 4 links between the GPUs, 14.06 GB/s per link per direction"
              status: measured
              reason: null
              detail: null
              peer_access: true
              directions:
                - {source: 0, destination: 1, direction: "0->1", peer_access: true, unidirectional_gbps: 52.1,
                   bidirectional_gbps: 50.2}
                - {source: 1, destination: 0, direction: "1->0", peer_access: true, unidirectional_gbps: 52.0,
                   bidirectional_gbps: 50.3}
              min_gbps: 50.2
              bidirectional_total_gbps: 100.4
              data_ok: true
              error: null
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmfleet.workstation.plugins.module_utils.gate import run_gate
from ansible_collections.llmfleet.workstation.plugins.module_utils.p2p_bandwidth import run


def check_params(params):
    """Limits argument_spec cannot express; a list of messages, empty when the options are usable."""
    errors = []
    if not 0 < params["floor_fraction"] <= 1:
        errors.append("floor_fraction must be above 0 and at most 1, got %s" % params["floor_fraction"])
    for name in ("buffer_size_mib", "repetitions", "timeout"):
        if params[name] < 1:
            errors.append("%s must be at least 1, got %s" % (name, params[name]))
    for name in ("min_pair_gbps", "min_gpu_copy_gbps"):
        if params.get(name) is not None and params[name] < 0:
            errors.append("%s must not be negative, got %s" % (name, params[name]))
    return errors


def main():
    module = AnsibleModule(
        argument_spec={
            "python": {"type": "path", "required": True},
            "min_pair_gbps": {"type": "float"},
            "floor_fraction": {"type": "float", "default": 0.7},
            "min_gpu_copy_gbps": {"type": "float"},
            "require_measurement": {"type": "bool", "default": False},
            "buffer_size_mib": {"type": "int", "default": 256},
            "repetitions": {"type": "int", "default": 5},
            "timeout": {"type": "int", "default": 120},
        },
        supports_check_mode=True,
    )
    errors = check_params(module.params)
    if errors:
        module.fail_json(msg="; ".join(errors), changed=False)
    run_gate(module, run)


if __name__ == "__main__":
    main()
