#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: nvlink_status
short_description: Gate on every NVLink link being active, with P2P over NVLink between the GPUs
version_added: 0.1.0
description:
  - Reads every NVLink link of every GPU through one NVML session (state, NVLink version, remote PCI bus
    id and device type, P2P capability, replay/recovery/CRC error counters) and every GPU pair
    (P2P over NVLink, PCIe topology level).
  - Fails with the fix when links are down, which on a two-card workstation almost always means a
    misseated NVLink bridge; otherwise returns the facts as C(ansible_facts.llmfleet_nvlink).
  - Link enumeration stops where the GPU's links end, where NVML answers InvalidArgument
    (after 4 links on an RTX 3090, 18 on an H100/H200 SXM). A GPU without NVLink (RTX 4090, RTX 5090) is reported as
    such and fails only when I(require_nvlink=true).
  - On a single-GPU host there is nothing to link; the gate passes with a note unless
    I(expected_gpu_count) asks for more GPUs.
  - Never changes the host and never calls C(nvidia-smi).
options:
  expected_gpu_count:
    description: Fail unless NVML reports exactly this many GPUs.
    type: int
  min_active_links:
    description:
      - Minimum active links per GPU.
      - Unset requires every link the GPU reports.
    type: int
  require_nvlink:
    description:
      - Fail when a multi-GPU host has no NVLink at all. Set C(false) for PCIe-only pairs.
    type: bool
    default: true
  require_p2p:
    description:
      - Fail unless every GPU pair supports peer-to-peer access over NVLink.
      - Ignored when I(require_nvlink=false) and the host has no NVLink.
    type: bool
    default: true
  fail_on_errors:
    description:
      - Fail when any link's replay, recovery or CRC error counter is nonzero.
      - Counters NVML does not expose (Hopper and later) are reported as null and never fail the gate.
    type: bool
    default: false
notes:
  - NVLink on Ampere GeForce cards (RTX 3090) needs NVIDIA driver 550 or newer.
  - The estimated bandwidth uses NVIDIA's per-link figures by NVLink version (50 GB/s bidirectional per link
    for NVLink 2-4, 100 GB/s for NVLink 5). GA102 cards (RTX 3090, RTX A6000) run NVLink 3 over 4 narrower
    links, 112.5 GB/s bidirectional in all. It is an estimate, not a measurement.
author:
  - llmfleet.workstation contributors (@llmfleet)
extends_documentation_fragment:
  - llmfleet.workstation.gate
"""

EXAMPLES = r"""
- name: Require both RTX 3090s joined by all 4 NVLink links
  llmfleet.workstation.nvlink_status:
    expected_gpu_count: 2

- name: Report, without gating, on a PCIe-only pair of RTX 4090s
  llmfleet.workstation.nvlink_status:
    require_nvlink: false
    require_p2p: false

- name: Also fail on link errors, tolerating one dead link per GPU
  llmfleet.workstation.nvlink_status:
    min_active_links: 3
    fail_on_errors: true
"""

RETURN = r"""
ansible_facts:
  description: Facts set on the host.
  returned: always, also when the gate fails on link state
  type: dict
  contains:
    llmfleet_nvlink:
      description: NVLink state of the host.
      type: dict
      contains:
        gpu_count:
          description: Number of GPUs.
          type: int
          sample: 2
        nvlink_present:
          description: Whether any GPU has NVLink links.
          type: bool
          sample: true
        active_links_per_gpu:
          description: Active links by GPU index.
          type: list
          elements: int
          sample: [4, 4]
        all_pairs_p2p_nvlink:
          description: Whether every GPU pair supports P2P over NVLink (false on a single GPU).
          type: bool
          sample: true
        estimated_bidirectional_bandwidth_gbps:
          description:
            - Highest per-GPU estimate of bidirectional NVLink bandwidth, GB/s (what one GPU moves over its links).
            - Not summed over GPUs, since on a bridged pair both GPUs count the same links.
          type: float
          sample: 112.5
        gpus:
          description: One entry per GPU.
          type: list
          elements: dict
          sample:
            - index: 0
              name: NVIDIA GeForce RTX 3090
              uuid: GPU-5f0c3d12-8a41-4c7e-9b2d-3090a0000001
              pci_bus_id: "00000000:01:00.0"
              nvlink_supported: true
              link_count: 4
              active_links: 4
              inactive_links: []
              estimated_bidirectional_bandwidth_gbps: 112.5
              links:
                - link: 0
                  active: true
                  version: "3.0"
                  remote_pci_bus_id: "00000000:21:00.0"
                  remote_device_type: gpu
                  p2p_supported: true
                  errors: {replay: 0, recovery: 0, crc_flit: 0, crc_data: 0}
        pairs:
          description: One entry per GPU pair.
          type: list
          elements: dict
          sample:
            - gpus: [0, 1]
              p2p_nvlink: ok
              topology: hostbridge
notes:
  description: Observations that did not fail the gate.
  returned: always
  type: list
  elements: str
  sample: ["Single GPU: no NVLink pair to check"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmfleet.workstation.plugins.module_utils.gate import run_gate
from ansible_collections.llmfleet.workstation.plugins.module_utils.nvml import (
    describe_gpu,
    format_ranges,
    link_bidirectional_gbps,
)

RESEAT_FIX = (
    "Fix: power off the host, reseat the NVLink bridge firmly on both cards until it clicks, check that the "
    "cards sit in slots matching the bridge spacing (3-slot bridge for the reference build), power on and re-run"
)


def read_gpu_links(session, gpu):
    link_count = session.nvlink_link_count(gpu)
    links = [session.nvlink_link(gpu, link) for link in range(link_count or 0)]
    active = [link for link in links if link["active"]]
    per_link = link_bidirectional_gbps(active[0]["version"], len(links)) if active else None
    facts = gpu.identity()
    if per_link:
        bandwidth = round(per_link * len(active), 3)
    else:
        bandwidth = 0.0 if links else None  # links all down: zero; no NVLink at all: not applicable
    facts.update(
        nvlink_supported=link_count is not None,
        link_count=link_count or 0,
        active_links=len(active),
        inactive_links=[link["link"] for link in links if not link["active"]],
        estimated_bidirectional_bandwidth_gbps=bandwidth,
        links=links,
    )
    return facts


def collect_nvlink(session):
    gpus = session.gpus()
    gpu_facts = [read_gpu_links(session, gpu) for gpu in gpus]
    pairs = []
    for position, first in enumerate(gpus):
        for second in gpus[position + 1:]:
            pairs.append({
                "gpus": [first.index, second.index],
                "p2p_nvlink": session.p2p_nvlink_status(first, second),
                "topology": session.topology_level(first, second),
            })
    bandwidths = [gpu["estimated_bidirectional_bandwidth_gbps"] for gpu in gpu_facts
                  if gpu["estimated_bidirectional_bandwidth_gbps"] is not None]
    return {
        "gpu_count": len(gpu_facts),
        "nvlink_present": any(gpu["nvlink_supported"] for gpu in gpu_facts),
        "active_links_per_gpu": [gpu["active_links"] for gpu in gpu_facts],
        "all_pairs_p2p_nvlink": bool(pairs) and all(pair["p2p_nvlink"] == "ok" for pair in pairs),
        # Per GPU, not summed: on a bridged pair both GPUs count the same links.
        "estimated_bidirectional_bandwidth_gbps": max(bandwidths) if bandwidths else None,
        "gpus": gpu_facts,
        "pairs": pairs,
    }


def evaluate(facts, params):
    """Return (problems, notes): what fails the gate, worded for the operator, and what only informs."""
    problems, notes = [], []
    expected = params.get("expected_gpu_count")
    if expected is not None and facts["gpu_count"] != expected:
        problems.append("expected %d GPUs, NVML reports %d" % (expected, facts["gpu_count"]))
    if facts["gpu_count"] < 2:
        notes.append("Single GPU: no NVLink pair to check" if facts["gpu_count"] else "No GPU found")
        return problems, notes

    if not facts["nvlink_present"]:
        names = ", ".join(describe_gpu(gpu) for gpu in facts["gpus"])
        if params["require_nvlink"]:
            problems.append(
                "no NVLink on %s: these GPUs report no NVLink links (RTX 40- and 50-series have none). For a "
                "PCIe-only pair set require_nvlink: false (gpu_gates_nvlink_required: false) and prefer pipeline "
                "parallelism" % names
            )
        else:
            notes.append("No NVLink on %s: GPUs talk over PCIe" % names)
        return problems, notes

    link_problems = []
    for gpu in facts["gpus"]:
        if not gpu["nvlink_supported"]:
            link_problems.append("%s reports no NVLink links" % describe_gpu(gpu))
            continue
        required = params.get("min_active_links")
        required = gpu["link_count"] if required is None else required
        if gpu["active_links"] < required:
            link_problems.append(
                "%s has %d of %d NVLink links active, %d required (links %s inactive)"
                % (describe_gpu(gpu), gpu["active_links"], gpu["link_count"], required,
                   format_ranges(gpu["inactive_links"]))
            )
    if link_problems:
        problems.append("; ".join(link_problems) + ". " + RESEAT_FIX)

    if params["require_p2p"]:
        for pair in facts["pairs"]:
            if pair["p2p_nvlink"] != "ok":
                first, second = (facts["gpus"][index] for index in pair["gpus"])
                problems.append(
                    "P2P over NVLink between %s and %s is %s (topology %s)%s"
                    % (describe_gpu(first), describe_gpu(second), pair["p2p_nvlink"] or "unavailable", pair["topology"],
                       "" if link_problems else ". Check the driver is 550+ and the bridge connects these two GPUs")
                )

    if params["fail_on_errors"]:
        for gpu in facts["gpus"]:
            for link in gpu["links"]:
                counted = ", ".join("%s=%d" % item for item in sorted(link["errors"].items()) if item[1])
                if counted:
                    problems.append(
                        "%s link %d has NVLink errors %s: reseat the bridge, and replace it if they keep rising"
                        % (describe_gpu(gpu), link["link"], counted)
                    )
    return problems, notes


def run(params, session):
    facts = collect_nvlink(session)
    problems, notes = evaluate(facts, params)
    result = {"changed": False, "ansible_facts": {"llmfleet_nvlink": facts}, "notes": notes}
    if problems:
        result["failed"] = True
        result["msg"] = "NVLink gate failed: " + " | ".join(problems)
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            "expected_gpu_count": {"type": "int"},
            "min_active_links": {"type": "int"},
            "require_nvlink": {"type": "bool", "default": True},
            "require_p2p": {"type": "bool", "default": True},
            "fail_on_errors": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    run_gate(module, run)


if __name__ == "__main__":
    main()
