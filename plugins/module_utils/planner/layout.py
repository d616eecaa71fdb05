# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How the GPUs split the model: tensor parallelism across NVLink-joined GPUs, pipeline stages across PCIe."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple


def tp_problem(shape: Dict[str, int], tp: int, group: int) -> Optional[str]:
    """Why this tensor-parallel size cannot split the model, or None."""
    if shape["heads"] % tp:
        return "TP %d does not divide the %d attention heads" % (tp, shape["heads"])
    kv_heads = shape["kv_heads"]
    if (kv_heads >= tp and kv_heads % tp) or (kv_heads < tp and tp % kv_heads):
        return "TP %d does not divide the %d KV heads (nor is a multiple of them)" % (tp, kv_heads)
    if group and tp > 1:
        for name, width in (("intermediate_size", shape["intermediate"]),
                            ("attention output", shape["heads"] * shape["head_dim"])):
            if (width // tp) % group:
                return ("TP %d leaves %d of the %s's %d inputs per GPU, not a whole number of %d-weight "
                        "quantization groups" % (tp, width // tp, name, width, group))
    return None


def pp_layers(layers: int, pp: int) -> List[int]:
    """Layers per pipeline stage, as vLLM splits them (the remainder goes to the stages before the last)."""
    partitions = [layers // pp] * pp
    for index in range(2, layers % pp + 2):
        partitions[-index] += 1
    return partitions


def choose_layout(shape: Dict[str, int], gpu_count: int, interconnect: str, *, group: int,
                  tp_wanted: Optional[int], pp_wanted: Optional[int]) -> Tuple[int, int, Optional[str], List[str]]:
    """(tp, pp, problem, notes): problem is why no layout works with the requested sizes."""
    notes = []
    if tp_wanted or pp_wanted:
        tp = tp_wanted or (gpu_count // pp_wanted if gpu_count % pp_wanted == 0 else 0)
        pp = pp_wanted or (gpu_count // tp_wanted if gpu_count % tp_wanted == 0 else 0)
        if not tp or not pp:
            return tp_wanted or 1, pp_wanted or 1, (
                "the %d GPUs cannot be split into the requested tensor_parallel_size %s x pipeline_parallel_size %s"
                % (gpu_count, tp_wanted or "auto", pp_wanted or "auto")), notes
        if tp * pp > gpu_count:
            return tp, pp, ("tensor_parallel_size %d x pipeline_parallel_size %d needs %d GPUs, the host has %d"
                            % (tp, pp, tp * pp, gpu_count)), notes
        problem = tp_problem(shape, tp, group)
        if problem is None and pp > shape["layers"]:
            problem = "pipeline_parallel_size %d is more than the %d layers" % (pp, shape["layers"])
        if tp > 1 and interconnect == "pcie":
            notes.append("tensor parallelism %d over PCIe (no NVLink between every pair): every layer's "
                         "all-reduce crosses PCIe; pipeline parallelism is usually faster there" % tp)
        return tp, pp, problem, notes
    divisors = [size for size in range(1, gpu_count + 1) if gpu_count % size == 0]
    # NVLink (or one GPU): as much tensor parallelism as the heads allow. PCIe: pipeline stages first.
    candidates = sorted(divisors, reverse=interconnect != "pcie")
    rejected = []
    for tp in candidates:
        pp = gpu_count // tp
        problem = tp_problem(shape, tp, group)
        if problem is None and pp > shape["layers"]:
            problem = "PP %d is more than the %d layers" % (pp, shape["layers"])
        if problem is None:
            if rejected:
                notes.append("%s; using TP %d x PP %d instead" % ("; ".join(rejected), tp, pp))
            return tp, pp, None, notes
        rejected.append(problem)
    return 1, 1, "no split of %d GPUs works: %s" % (gpu_count, "; ".join(rejected)), notes


def interconnect_of(gpu_count: int, nvlink_facts: Any, notes: List[str]) -> str:
    if gpu_count == 1:
        return "single"
    if not isinstance(nvlink_facts, dict):
        notes.append("no llmfleet_nvlink facts given: the GPUs are assumed to talk over PCIe only")
        return "pcie"
    return "nvlink" if nvlink_facts.get("all_pairs_p2p_nvlink") else "pcie"
