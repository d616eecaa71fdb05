# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What each GPU holds: the overhead model, calibrated on vLLM 0.26.0's own accounting, and the KV cache left."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.llmfleet.workstation.plugins.module_utils.planner import PlanError
from ansible_collections.llmfleet.workstation.plugins.module_utils.planner.layout import pp_layers

MIB = 1024 * 1024

GIB = 1024 * MIB

# CUDA sees less than NVML's total. On the H200 NVML reports 143771 MiB and CUDA 143155 MiB (616 MiB less); vLLM
# logs total_gpu_memory 23.58-23.69 GiB on 24576 MiB RTX 3090/4090 cards (up to 430 MiB less).
DRIVER_RESERVED_BYTES = 384 * MIB

DRIVER_RESERVED_BYTES_LARGE_GPU = 616 * MIB

# Non-torch memory that appears during the profile run (cuBLAS workspaces, allocator bookkeeping): 0.22 GiB on one
# H200 in every case measured ...
NON_TORCH_BYTES_ONE_GPU = 232 * MIB

# ... and with several GPUs NCCL communicators and custom all-reduce buffers come on top (0.2-0.25 GiB seen in vLLM
# logs of 24 GiB cards; not yet measured on two GPUs here).
NON_TORCH_BYTES_MULTI_GPU = 256 * MIB

# Weights in memory against their size on disk (or the config's estimate): AWQ/GPTQ layers repacked for the Marlin
# kernels took 2.4-3.2% more than their checkpoint bytes (Llama 3.3 70B: 37.88 GiB loaded for 37.04 GiB; Qwen2.5
# 72B: 39.56 for 38.74; Qwen2.5-Coder 32B: 18.49 for 18.00) ...
QUANTIZED_LAYER_OVERHEAD = 0.033

# ... and 16-bit weights 0.3% (Llama 3.1 8B: 15.00 GiB for 14.96; the rotary tables).
UNQUANTIZED_OVERHEAD = 0.003

# Activation peak of the profile run. Measured on the first start of each model (empty compile cache), the engine's
# peak was one 16-bit copy of the LM head's share of a GPU (vocab x hidden x 2 bytes / TP) plus 4 bytes per hidden
# value of each batched token, within 0.05 GiB in all 7 cases: Llama 3.1 8B 1.01 GiB at 2048 tokens and 1.10 at 8192,
# Qwen2.5-Coder 32B 1.50 at 2048 and 1.61 at 8192, Llama 3.3 70B 2.21 and Qwen2.5 72B 2.57 at 8192. Later starts
# can peak lower (Qwen2.5-Coder 32B 0.38 GiB at 2048 tokens on a warm cache, so its KV cache held 12% more); the
# plan is for the first start, the one that must not fail.
ACTIVATION_LM_HEAD_BYTES_PER_VALUE = 2

ACTIVATION_BYTES_PER_HIDDEN_VALUE = 4

# Kept out of the KV cache for what the formulas miss (at most 0.25 GiB of weights, 0.05 GiB of activations in the
# cases measured), so that the plan stays at or below the engine's capacity: 96-100% of it in every first start.
SAFETY_MARGIN_BYTES = 64 * MIB

# Outside the budget (must fit in memory x (1 - utilization)): the CUDA context of the worker process (torch,
# cuBLAS, the kernels vLLM loads; ~0.3-0.5 GiB per process as nvidia-smi shows it) and the CUDA graphs vLLM
# captures after allocating the KV cache ("Graph capturing finished in N secs, took 0.3-0.9 GiB" on consumer GPUs).
CUDA_CONTEXT_BYTES = 512 * MIB

CUDA_GRAPHS_BYTES = 512 * MIB

# vLLM's defaults for the OpenAI server (engine/arg_utils.py, _set_default_args): 2048 batched tokens and 256
# sequences on GPUs under 70 GiB and on the A100, 8192 tokens on larger cards (seen on the H200: the engine logs
# max_num_batched_tokens=8192); and its KV-cache block size (tokens).
VLLM_DEFAULT_MAX_NUM_SEQS = 256

VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS = 2048

VLLM_LARGE_GPU_MAX_NUM_BATCHED_TOKENS = 8192

VLLM_LARGE_GPU_BYTES = 70 * GIB

KV_BLOCK_TOKENS = 16

# Above this, the CUDA context and graphs that live outside the budget run out of memory under load.
MAX_GPU_MEMORY_UTILIZATION = 0.95

DEFAULT_GPU_MEMORY_UTILIZATION = 0.92

KV_DTYPE_BYTES = {"auto": None, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


def gib(value: float) -> str:
    return "%.1f GiB" % (value / GIB)


def gpu_memory(gpu_facts: Any, count: Optional[int] = None) -> Tuple[List[Dict[str, Any]], int]:
    if not isinstance(gpu_facts, dict):
        raise PlanError("vllm_plan: gpu_facts must be the host's ansible_facts.llmfleet_gpu (a dict) from "
                        "llmfleet.workstation.gpu_facts, got %s" % type(gpu_facts).__name__)
    gpus = gpu_facts.get("gpus") or []
    if not gpus:
        raise PlanError("vllm_plan: no GPUs in gpu_facts: run llmfleet.workstation.gpu_facts on the host "
                        "first (role gpu_gates) and pass ansible_facts.llmfleet_gpu; a host without an "
                        "NVIDIA GPU cannot serve with vLLM's CUDA build")
    gpus = gpus[:count] if count else gpus
    for position, card in enumerate(gpus):
        if not isinstance(card, dict) or not card.get("memory_total_mib"):
            raise PlanError(
                "vllm_plan: GPU %s (%s) has no memory_total_mib in gpu_facts: NVML did not report its memory; "
                "check the driver with nvidia-smi and gather llmfleet.workstation.gpu_facts again"
                % (card.get("index", position) if isinstance(card, dict) else position,
                   card.get("name", "unknown") if isinstance(card, dict) else "unknown"))
    return gpus, min(int(card["memory_total_mib"]) for card in gpus) * MIB


def default_batched_tokens(gpus: List[Dict[str, Any]], gpu_bytes: int) -> int:
    """vLLM's own max_num_batched_tokens for the OpenAI server on these GPUs."""
    large = gpu_bytes >= VLLM_LARGE_GPU_BYTES and not any("A100" in str(card.get("name", "")) for card in gpus)
    return VLLM_LARGE_GPU_MAX_NUM_BATCHED_TOKENS if large else VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS


def stage_plans(shape: Dict[str, int], components: Dict[str, float], *, scale: float, tp: int, pp: int,
                quantized: bool,
                kv_value_bytes: int, budget: int,
                batched_tokens: int, activation_value_bytes: int = 2) -> List[Dict[str, int]]:
    """Per-GPU numbers of each pipeline stage."""
    stages = []
    layer_counts = pp_layers(shape["layers"], pp)
    kv_heads_per_gpu = max(1, shape["kv_heads"] // tp)  # fewer KV heads than GPUs: each GPU keeps a copy of one
    for index, layers in enumerate(layer_counts):
        first, last = index == 0, index == pp - 1
        # Quantized layers grow when repacked for Marlin; embeddings and the LM head stay 16-bit as loaded.
        weights = layers * components["layer"] * (1 + (QUANTIZED_LAYER_OVERHEAD if quantized else UNQUANTIZED_OVERHEAD))
        if first:
            weights += components["embedding"]
        if last:
            # A tied LM head shares the embedding on one stage; the last stage of a pipeline needs its own copy.
            weights += components["lm_head"] if (components["lm_head"] or not pp > 1) else components["embedding"]
        weights_per_gpu = int(weights * scale / tp)
        # The LM head's term on the stage that computes the logits (pipeline stages are not measured yet).
        activations = batched_tokens * shape["hidden"] * ACTIVATION_BYTES_PER_HIDDEN_VALUE * max(
            1, activation_value_bytes // 2)
        if last:
            activations += shape["vocab"] * shape["hidden"] * ACTIVATION_LM_HEAD_BYTES_PER_VALUE // tp
        non_torch = NON_TORCH_BYTES_MULTI_GPU if tp * pp > 1 else NON_TORCH_BYTES_ONE_GPU
        reserve = activations + non_torch + SAFETY_MARGIN_BYTES
        kv_per_token = 2 * layers * kv_heads_per_gpu * shape["head_dim"] * kv_value_bytes
        kv_budget = budget - weights_per_gpu - reserve
        stages.append({
            "stage": index, "layers": layers, "weights_bytes": weights_per_gpu, "activation_bytes": int(activations),
            "non_torch_bytes": non_torch, "reserve_bytes": int(reserve), "kv_budget_bytes": int(kv_budget),
            "kv_bytes_per_token": kv_per_token,
            "kv_tokens": max(0, kv_budget) // (kv_per_token * KV_BLOCK_TOKENS) * KV_BLOCK_TOKENS,
        })
    return stages
