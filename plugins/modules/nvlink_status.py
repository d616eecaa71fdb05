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
    misseated NVLink bridge; otherwise returns the facts as C(ansible_facts.llmfleet_nvlink). The facts are
    returned on failure too.
  - Link enumeration stops where the GPU's links end, where NVML answers InvalidArgument
    (after 4 links on an RTX 3090, 18 on an H100/H200 SXM). A GPU without NVLink (RTX 4090, RTX 5090) is reported
    as such (C(nvlink_present=false)) and fails only when I(require_nvlink=true).
  - On a single-GPU host there is nothing to link; the gate passes with a note unless
    I(expected_gpu_count) asks for more GPUs. A host where NVML finds no GPU at all fails while
    I(require_nvlink=true).
  - Never changes the host and never calls C(nvidia-smi).
options:
  expected_gpu_count:
    description:
      - Fail unless NVML reports exactly this many GPUs.
      - Unset accepts any count. Set it to C(2) on a pair so that a card that dropped off the bus
        fails the gate instead of passing as a single-GPU host.
    type: int
  min_active_links:
    description:
      - Minimum active links per GPU.
      - Unset requires every link the GPU reports (4 on an RTX 3090, 18 on an H100/H200 SXM) while
        I(require_nvlink=true), and no minimum while I(require_nvlink=false).
      - When set, it is enforced on every GPU that has NVLink, whatever I(require_nvlink) says.
    type: int
  require_nvlink:
    description:
      - Fail when a multi-GPU host has no NVLink, or when links are down.
      - Set C(false) for PCIe-only pairs (2x RTX 4090), including NVLink-capable cards run without a bridge;
        their links are then reported in C(notes), not gated (unless I(min_active_links) is set).
    type: bool
    default: true
  require_p2p:
    description:
      - Fail unless every GPU pair supports peer-to-peer access over NVLink (C(nvmlDeviceGetP2PStatus) with
        the NVLink capability).
      - With I(require_nvlink=false) it applies only to pairs whose GPUs both have active links, so a
        PCIe-only pair passes.
    type: bool
    default: true
  fail_on_errors:
    description:
      - Fail when any link's replay, recovery or CRC error counter is nonzero.
      - Counters NVML does not expose (it answers NotSupported on some GPUs and drivers) are reported as null and
        never fail the gate.
      - Off by default. On H200s (driver 580) the data-CRC counter read nonzero (5 to 58 per link) on idle,
        healthy links while C(nvidia-smi nvlink -e) showed 0 CRC errors; rising replay and recovery counts are
        what point at a bad bridge. Turn it on for bridged GeForce/RTX pairs after a reseat, to catch a bridge
        that is seated but marginal.
    type: bool
    default: false
notes:
  - NVLink on Ampere GeForce cards (RTX 3090) needs NVIDIA driver 550 or newer.
  - The bandwidth figures are B(estimates) from NVIDIA's published per-link figures by NVLink version, not
    measurements - 40 GB/s bidirectional per link for NVLink 1, 50 GB/s for NVLink 2 to 4 (A100, H100/H200
    18 links = 900 GB/s), 100 GB/s for NVLink 5 (Blackwell). GA102 cards (RTX 3090, RTX A6000) run NVLink 3
    over 4 narrower links, 112.5 GB/s bidirectional in all (about 14 GB/s each way per link).
  - C(nvidia-smi nvlink --status) prints the links' signalling rate (26.562 GB/s per direction on an H200),
    slightly above the specification figure used here.
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

- name: Also fail on link errors, tolerating one dead link per GPU
  llmfleet.workstation.nvlink_status:
    min_active_links: 3
    fail_on_errors: true

- name: Read the links without gating on them
  llmfleet.workstation.nvlink_status:
    require_nvlink: false
    require_p2p: false

- name: Show active links per GPU
  ansible.builtin.debug:
    msg: >-
      {{ ansible_facts.llmfleet_nvlink.active_links_per_gpu }} links active,
      about {{ ansible_facts.llmfleet_nvlink.estimated_total_bidirectional_bandwidth_gbps }} GB/s
"""

RETURN = r"""
problems:
  description:
    - What failed the gate, as data beside C(msg), so that callers judge without reading text. Empty when it passes.
    - C(code) is one of C(gpu_count) (the count in C(value), I(expected_gpu_count) in C(limit)), C(no_gpu),
      C(no_nvlink) (no GPU reports NVLink links while it is required), C(nvlink_unsupported) (one GPU reports no
      links), C(nvlink_links_down) (active links in C(value), the links required in C(limit)), C(no_p2p_nvlink)
      (one per pair, the NVML P2P status in C(value), C(ok) in C(limit), the pair's indexes in C(gpus)),
      C(nvlink_errors) (with I(fail_on_errors), one per link, the non-zero counters in C(value)), and where NVML
      cannot be read at all C(nvml_missing), C(driver_not_loaded), C(nvml_init_failed) or C(nvml_call_failed).
    - C(gpu) is the NVML index (the first of a pair), or null for the host; C(fix) what the operator does;
      C(message) the sentence.
  returned: always
  type: list
  elements: dict
  sample:
    - code: nvlink_links_down
      gpu: 0
      value: 0
      limit: 4
      fix: "Fix: power off the host, reseat the NVLink bridge firmly on both cards until it clicks, power on and
        re-run"
      message: "GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0) has 0 of 4 NVLink links active, 4 required
        (links 0-3 inactive). Fix: power off the host, reseat the NVLink bridge ..."
notes:
  description: Observations that did not fail the gate (single GPU, PCIe-only pair, links not gated).
  returned: always
  type: list
  elements: str
  sample: ["Single GPU: no NVLink pair to check"]
ansible_facts:
  description: Facts set on the host.
  returned: always, also when the gate fails on link state
  type: dict
  contains:
    llmfleet_nvlink:
      description: NVLink state of the host.
      returned: always
      type: dict
      contains:
        gpu_count:
          description: Number of GPUs.
          type: int
          sample: 2
        nvlink_present:
          description: Whether any GPU has NVLink links (active or not).
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
            - Highest per-GPU estimate of bidirectional NVLink bandwidth, GB/s (what one GPU moves over its
              active links), or null without NVLink.
          type: float
          sample: 112.5
        estimated_total_bidirectional_bandwidth_gbps:
          description:
            - Estimate for the whole host, GB/s. A link between two of the host's GPUs is counted once (a bridged
              pair of RTX 3090s has 112.5, not 225); links to an NVSwitch count per GPU (two H200s have 1800).
            - Null without NVLink.
          type: float
          sample: 112.5
        gpus:
          description: One entry per GPU, by NVML index.
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
              description: PCI bus id.
              type: str
              sample: "00000000:01:00.0"
            nvlink_supported:
              description: Whether the GPU has NVLink links.
              type: bool
              sample: true
            link_count:
              description: Links the GPU has (0 without NVLink).
              type: int
              sample: 4
            active_links:
              description: Links that are up.
              type: int
              sample: 4
            inactive_links:
              description: Numbers of the links that are down.
              type: list
              elements: int
              sample: []
            estimated_bidirectional_bandwidth_gbps:
              description:
                - Estimate over this GPU's active links, GB/s; 0.0 with every link down.
                - Null without NVLink, or for an NVLink version without a published figure.
              type: float
              sample: 112.5
            links:
              description:
                - One entry per link - C(link), C(active), C(version) (C("3.0") on an RTX 3090, C("4.0") on Hopper),
                  C(remote_pci_bus_id) (C(FFFFFFFF:FF:FF.0) for NVSwitch ports), C(remote_device_type) (C(gpu),
                  C(switch), C(ibmnpu), C(unknown)), C(p2p_supported) and C(errors) (C(replay), C(recovery),
                  C(crc_flit), C(crc_data)). Values NVML does not expose, and the remote end of a link that is
                  down, are null.
              type: list
              elements: dict
              sample:
                - link: 0
                  active: true
                  version: "3.0"
                  remote_pci_bus_id: "00000000:21:00.0"
                  remote_device_type: gpu
                  p2p_supported: true
                  errors: {replay: 0, recovery: 0, crc_flit: 0, crc_data: 0}
        pairs:
          description:
            - One entry per GPU pair - C(gpus) (the two indexes), C(p2p_nvlink) (C(ok), C(not_supported),
              C(chipset_not_supported), C(gpu_not_supported), C(ioh_topology_not_supported), C(disabled_by_regkey),
              C(unknown), or null where NVML does not say) and C(topology), the PCIe common ancestor (C(internal),
              C(single), C(multiple), C(hostbridge), C(node), C(system)).
          type: list
          elements: dict
          sample:
            - gpus: [0, 1]
              p2p_nvlink: ok
              topology: hostbridge
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmfleet.workstation.plugins.module_utils.gate import problem, run_gate
from ansible_collections.llmfleet.workstation.plugins.module_utils.nvml import (
    describe_gpu,
    format_ranges,
    link_bidirectional_gbps,
)

RESEAT_FIX = (
    "Fix: power off the host, reseat the NVLink bridge firmly on both cards until it clicks, power on and "
    "re-run; check both cards sit in slots that match the bridge spacing (3-slot bridge for the reference build)"
)


def read_gpu_links(session, gpu):
    """One GPU's links, counted and estimated."""
    link_count = session.nvlink_link_count(gpu)
    links = [session.nvlink_link(gpu, link) for link in range(link_count or 0)]
    active = [link for link in links if link["active"]]
    versions = [link["version"] for link in active if link["version"]]
    per_link = link_bidirectional_gbps(versions[0], len(links), gpu.name) if versions else None
    facts = gpu.identity()
    if per_link:
        bandwidth = round(per_link * len(active), 3)
    elif links and not active:
        bandwidth = 0.0  # every link down
    else:
        bandwidth = None  # no NVLink, or a version this module has no figure for
    facts.update(
        nvlink_supported=bool(link_count),
        link_count=link_count or 0,
        active_links=len(active),
        inactive_links=[link["link"] for link in links if not link["active"]],
        estimated_bidirectional_bandwidth_gbps=bandwidth,
        links=links,
    )
    return facts


def host_bandwidth(gpu_facts):
    """Total estimate: a link between two of this host's GPUs is seen from both ends, so it counts half
    at each; a link to an NVSwitch (or to a GPU we do not see) counts in full."""
    bus_ids = {gpu["pci_bus_id"].upper() for gpu in gpu_facts}
    total = None
    for gpu in gpu_facts:
        bandwidth = gpu["estimated_bidirectional_bandwidth_gbps"]
        if bandwidth is None:
            continue
        total = total or 0.0
        if not bandwidth:
            continue
        per_link = bandwidth / gpu["active_links"]
        for link in gpu["links"]:
            if not link["active"]:
                continue
            shared = (link["remote_device_type"] == "gpu"
                      and (link["remote_pci_bus_id"] or "").upper() in bus_ids)
            total += per_link / 2 if shared else per_link
    return None if total is None else round(total, 3)


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
    total = host_bandwidth(gpu_facts)
    bandwidths = [gpu["estimated_bidirectional_bandwidth_gbps"] for gpu in gpu_facts
                  if gpu["estimated_bidirectional_bandwidth_gbps"] is not None]
    return {
        "gpu_count": len(gpu_facts),
        "nvlink_present": any(gpu["nvlink_supported"] for gpu in gpu_facts),
        "active_links_per_gpu": [gpu["active_links"] for gpu in gpu_facts],
        "all_pairs_p2p_nvlink": bool(pairs) and all(pair["p2p_nvlink"] == "ok" for pair in pairs),
        "estimated_bidirectional_bandwidth_gbps": max(bandwidths) if bandwidths else None,
        "estimated_total_bidirectional_bandwidth_gbps": total,
        "gpus": gpu_facts,
        "pairs": pairs,
    }


def _names(gpus):
    return ", ".join(describe_gpu(gpu) for gpu in gpus)


def evaluate(facts, params, found=None):
    """Return (problems, notes): what fails the gate, worded for the operator, and what only informs.

    `found`, a list, receives the same problems as data (gate.problem), one per GPU, pair or link where the
    message groups them.
    """
    problems, notes = [], []
    found = [] if found is None else found
    gpus = facts["gpus"]
    require_nvlink = params["require_nvlink"]
    min_active_links = params.get("min_active_links")
    expected = params.get("expected_gpu_count")
    if expected is not None and facts["gpu_count"] != expected:
        problems.append("expected %d GPUs, NVML reports %d (%s). Check that every card is seated and powered and "
                        "that nvidia-smi lists it" % (expected, facts["gpu_count"], _names(gpus) or "none"))
        found.append(problem("gpu_count", problems[-1], value=facts["gpu_count"], limit=expected,
                             fix="Check that every card is seated and powered and that nvidia-smi lists it"))
    if not gpus:
        if require_nvlink and not problems:
            problems.append("NVML reports no GPU, so there is no NVLink to check. Check that the cards are seated "
                            "and powered and that nvidia-smi lists them")
            found.append(problem("no_gpu", problems[-1], value=0,
                                 fix="Check that the cards are seated and powered and that nvidia-smi lists them"))
        notes.append("No GPU found")
        return problems, notes
    if len(gpus) == 1:
        notes.append("Single GPU: no NVLink pair to check")
        return problems, notes

    if not facts["nvlink_present"]:
        if require_nvlink:
            problems.append(
                "no NVLink on %s: these GPUs report no NVLink links (RTX 40- and 50-series have none). For a "
                "PCIe-only pair set require_nvlink: false (gpu_gates_nvlink_required: false) and prefer pipeline "
                "parallelism" % _names(gpus)
            )
            found.append(problem("no_nvlink", problems[-1], fix="For a PCIe-only pair set require_nvlink: false "
                                 "(gpu_gates_nvlink_required: false) and prefer pipeline parallelism"))
        else:
            notes.append("No NVLink on %s: GPUs talk over PCIe" % _names(gpus))
        return problems, notes

    # Link state is gated while NVLink is required, or when the operator set a minimum explicitly.
    gate_links = require_nvlink or min_active_links is not None
    linked = [gpu for gpu in gpus if gpu["active_links"]]
    if not gate_links and not linked:
        notes.append("NVLink links present but none active on %s (no bridge fitted, or it is unseated): GPUs talk "
                     "over PCIe" % _names(gpus))
    link_problems = []
    for gpu in gpus:
        if not gpu["nvlink_supported"]:
            if require_nvlink:
                link_problems.append("%s reports no NVLink links" % describe_gpu(gpu))
                found.append(problem("nvlink_unsupported", link_problems[-1] + ". " + RESEAT_FIX, gpu=gpu["index"],
                                     value=0, fix=RESEAT_FIX))
            continue
        required = gpu["link_count"] if min_active_links is None else min_active_links
        if gpu["active_links"] >= required:
            continue
        seen = "%s has %d of %d NVLink links active" % (describe_gpu(gpu), gpu["active_links"], gpu["link_count"])
        inactive = "links %s inactive" % format_ranges(gpu["inactive_links"])
        if gate_links:
            link_problems.append("%s, %d required (%s)" % (seen, required, inactive))
            found.append(problem("nvlink_links_down", link_problems[-1] + ". " + RESEAT_FIX, gpu=gpu["index"],
                                 value=gpu["active_links"], limit=required, fix=RESEAT_FIX))
        elif linked:
            notes.append("%s (%s); not gated (require_nvlink: false)" % (seen, inactive))
    if link_problems:
        problems.append("; ".join(link_problems) + ". " + RESEAT_FIX)

    if params["require_p2p"]:
        linked_indexes = {gpu["index"] for gpu in linked}
        for pair in facts["pairs"]:
            if pair["p2p_nvlink"] == "ok":
                continue
            if not require_nvlink and not linked_indexes.issuperset(pair["gpus"]):
                continue  # NVLink optional and this pair has no live links: PCIe is expected
            first, second = (gpus[index] for index in pair["gpus"])
            fix = RESEAT_FIX if link_problems else "Check the driver is 550+ and the bridge connects these two GPUs"
            problems.append(
                "P2P over NVLink between %s and %s is %s (topology %s)%s"
                % (describe_gpu(first), describe_gpu(second), pair["p2p_nvlink"] or "unavailable",
                   pair["topology"] or "unavailable",
                   "" if link_problems else ". Check the driver is 550+ and the bridge connects these two GPUs")
            )
            found.append(problem("no_p2p_nvlink", problems[-1], gpu=first["index"],
                                 value=pair["p2p_nvlink"] or "unavailable", limit="ok", fix=fix))
            found[-1]["gpus"] = list(pair["gpus"])

    if params["fail_on_errors"]:
        for gpu in gpus:
            for link in gpu["links"]:
                counted = ", ".join("%s=%d" % item for item in sorted(link["errors"].items()) if item[1])
                if counted:
                    problems.append(
                        "%s link %d has NVLink errors %s: reseat the bridge, and replace it if they keep rising"
                        % (describe_gpu(gpu), link["link"], counted)
                    )
                    found.append(problem("nvlink_errors", problems[-1], gpu=gpu["index"],
                                         value=dict((key, count) for key, count in link["errors"].items() if count),
                                         limit=0, fix="reseat the bridge, and replace it if they keep rising"))
    return problems, notes


def run(params, session):
    """Read every link and pair in `session`, judge them against `params`; returns the module result."""
    facts = collect_nvlink(session)
    found = []
    problems, notes = evaluate(facts, params, found)
    result = {"changed": False, "ansible_facts": {"llmfleet_nvlink": facts}, "notes": notes, "problems": found}
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
