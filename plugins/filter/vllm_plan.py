# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plan a vLLM service for one host: parallelism, KV cache, context length and concurrency.

Pure functions of a model's config.json and the host's llmfleet_gpu / llmfleet_nvlink facts; no I/O.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Tuple

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: vllm_plan
short_description: Plan a vLLM service for a host's GPUs - parallelism, KV cache, context length, concurrency
version_added: 0.1.0
description:
  - Takes a model's C(config.json) (as a dict) and the host's facts from
    M(llmfleet.workstation.gpu_facts) (C(llmfleet_gpu)) and M(llmfleet.workstation.nvlink_status)
    (C(llmfleet_nvlink)) and works out whether the model fits, with which tensor- and pipeline-parallel sizes,
    how much memory each GPU has left for the KV cache, the longest context that fits and how many sequences
    can run at once; it returns the C(vllm serve) flags for that plan.
  - Tensor parallelism is chosen where every GPU pair talks over NVLink (or on one GPU), pipeline parallelism
    over PCIe-only pairs. Tensor parallelism must divide the attention heads and the KV heads (and, for AWQ/GPTQ,
    keep each GPU's share of the quantized layers a whole number of groups); when it does not, the plan falls
    back to a smaller tensor-parallel size times a pipeline-parallel size and says so in RV(_value.notes).
  - 'The memory model follows vLLM: C(gpu_memory_utilization) times the memory CUDA sees is the budget of each
    GPU; weights, the activation peak of vLLM''s profile run and non-torch buffers come out of it, the rest is KV
    cache. The CUDA context and CUDA graphs live outside that budget, which is why utilization above 0.95 is
    refused (out of memory under load). Every overhead is a named constant in the plugin with its source; see
    docs/planning.md.'
  - Pure function, no I/O. Errors on bad input (a key missing from the config, no GPUs in the facts) name the key
    and the fix.
positional: gpu_facts, nvlink_facts
options:
  _input:
    description:
      - The model's C(config.json) as a dict, for example
        C(lookup('ansible.builtin.file', snapshot ~ '/config.json') | from_json).
      - Needs C(num_hidden_layers), C(hidden_size), C(num_attention_heads), C(vocab_size) and
        C(intermediate_size); reads C(num_key_value_heads) (default the attention heads), C(head_dim) (default
        C(hidden_size / num_attention_heads)), C(torch_dtype) or C(dtype), C(tie_word_embeddings),
        C(max_position_embeddings), C(rope_scaling) and C(quantization_config).
      - A nested C(text_config) (multimodal models) overrides the top level.
    type: dict
    required: true
  gpu_facts:
    description:
      - The host's C(ansible_facts.llmfleet_gpu) from M(llmfleet.workstation.gpu_facts); its C(gpus) list and
        each GPU's C(memory_total_mib) are used.
    type: dict
    required: true
  nvlink_facts:
    description:
      - The host's C(ansible_facts.llmfleet_nvlink) from M(llmfleet.workstation.nvlink_status).
      - Tensor parallelism across GPUs is preferred only when C(all_pairs_p2p_nvlink) is true; unset means
        PCIe-only (and a note says so).
    type: dict
  weight_bytes:
    description:
      - Size of the weights on disk, bytes (the sum of the C(*.safetensors) files, as M(llmfleet.workstation.hf_model)
        reports).
      - Unset estimates it from the config's parameter count and the quantization (RV(_value.weight_bytes_estimated)).
    type: int
  quantization:
    description:
      - C(auto) reads C(quantization_config.quant_method) from the config.
      - C(awq) and C(gptq) are 4-bit weights (bits and group size from C(quantization_config) when present) and
        become C(--quantization awq_marlin) / C(gptq_marlin) on Ampere and newer GPUs (vLLM uses the much slower
        plain kernel when told C(awq) explicitly), the plain method on older ones.
      - C(none), C(fp16) and C(bf16) are unquantized 16-bit weights (no C(--quantization) flag).
    type: str
    default: auto
    choices: [auto, awq, awq_marlin, gptq, gptq_marlin, none, fp16, bf16]
  kv_cache_dtype:
    description:
      - C(auto) stores the KV cache in the served dtype (O(dtype); 2 bytes per value, 4 for float32); C(fp8) (or
        C(fp8_e4m3), C(fp8_e5m2)) in 1 byte, doubling the tokens that fit.
    type: str
    default: auto
    choices: [auto, fp8, fp8_e4m3, fp8_e5m2]
  gpu_memory_utilization:
    description:
      - Fraction of each GPU's memory (as CUDA sees it) that vLLM may use; above 0.95 is refused because the CUDA
        context and CUDA graphs, which live outside this budget, then run out of memory under load.
    type: float
    default: 0.92
  max_model_len:
    description:
      - Context length (prompt plus output tokens) of one sequence, or C(auto) for the largest that fits in the
        KV cache, rounded down to a multiple of 1024 and capped by the model's own limit
        (C(max_position_embeddings), times the YaRN factor where the config has one).
    type: raw
    default: auto
  max_num_seqs:
    description:
      - Sequences vLLM runs at once, or C(auto) for the KV cache divided by O(typical_request_tokens) (between 1
        and O(max_num_seqs_cap)).
    type: raw
    default: auto
  max_num_seqs_cap:
    description:
      - Highest value O(max_num_seqs=auto) may choose; also the number of sequences whose logits the activation
        reserve holds when O(max_num_seqs=auto).
      - 256 is vLLM's own default. Lower it where each sequence costs more than GPU memory (a CPU build, a
        latency-bound service).
    type: int
    default: 256
  tensor_parallel_size:
    description: Tensor-parallel size, or C(auto) to choose it.
    type: raw
    default: auto
  pipeline_parallel_size:
    description: Pipeline-parallel size, or C(auto) to choose it.
    type: raw
    default: auto
  dtype:
    description:
      - The dtype vLLM serves in (its C(--dtype)). C(auto) is the checkpoint's C(torch_dtype), except that a
        C(float32) checkpoint is served in 16 bits, as vLLM does.
      - Sets the bytes of each KV-cache value (unless O(kv_cache_dtype) says otherwise) and of the activations, and,
        for unquantized checkpoints, the weights in memory (a float32 checkpoint served in 16 bits takes half its
        size on disk).
    type: str
    default: auto
    choices: [auto, float16, bfloat16, half, float32, float]
  max_num_batched_tokens:
    description:
      - Tokens in one forward pass of vLLM's profile run; sets the activation reserve. Always part of
        RV(vllm_args), so the engine profiles with the number the plan assumed.
      - C(auto) is vLLM's own default for the OpenAI server, which depends on the card - 8192 on GPUs with 70 GiB or
        more (except the A100), 2048 below.
    type: raw
    default: auto
  typical_request_tokens:
    description: Prompt plus output tokens of a typical request, used to size O(max_num_seqs=auto).
    type: int
    default: 2048
notes:
  - The plan sizes memory the way vLLM does at start-up; the KV-cache size vLLM logs
    (C(Available KV cache memory)) can differ by a few hundred MiB with its version and kernels. The plan errs on
    the small side (CUDA graphs are kept out of the budget, the logits of 256 sequences are reserved).
  - Mixture-of-experts models need O(weight_bytes); only dense decoders are estimated from the config.
author:
  - llmfleet.workstation contributors (@llmfleet)
"""

EXAMPLES = r"""
- name: Plan the service from the snapshot's config and the host's facts
  ansible.builtin.set_fact:
    vllm_plan: >-
      {{ lookup('ansible.builtin.file', model_snapshot_dir ~ '/config.json') | from_json
         | llmfleet.workstation.vllm_plan(ansible_facts.llmfleet_gpu, ansible_facts.llmfleet_nvlink,
             weight_bytes=model_weight_bytes, max_model_len=8192) }}

- name: Stop when the model does not fit
  ansible.builtin.assert:
    that: vllm_plan.fits
    fail_msg: "{{ vllm_plan.reason }}"

- name: Show the flags for vllm serve
  ansible.builtin.debug:
    msg: "vllm serve {{ model }} {{ vllm_plan.vllm_argv | join(' ') }}"
"""

RETURN = r"""
_value:
  description: The plan.
  type: dict
  contains:
    fits:
      description: Whether the model runs on these GPUs with the requested settings.
      type: bool
      sample: true
    reason:
      description: One sentence with the numbers - why it does not fit, or the plan when it does.
      type: str
      sample: >-
        Does not fit: the weights take 37.0 GiB of GPU 0 (NVIDIA GeForce RTX 3090) but vLLM's budget there is
        21.7 GiB (0.92 of the 23.6 GiB CUDA sees) ...
    notes:
      description: Choices the planner made that the operator should know (fallbacks, assumptions).
      type: list
      elements: str
    tensor_parallel_size:
      description: GPUs each layer is split over.
      type: int
      sample: 2
    pipeline_parallel_size:
      description: Stages the layers are split into.
      type: int
      sample: 1
    gpus_used:
      description: GPUs the plan uses (tensor_parallel_size times pipeline_parallel_size).
      type: int
      sample: 2
    interconnect:
      description: C(nvlink), C(pcie) or C(single).
      type: str
      sample: nvlink
    quantization:
      description: Weight format the plan assumed (C(awq), C(gptq), C(none), or another quant_method).
      type: str
      sample: awq
    weight_bits:
      description: Bits per weight of the quantized layers (16 unquantized).
      type: int
      sample: 4
    weight_bytes:
      description: Weights of the whole model, bytes (given, or estimated).
      type: int
      sample: 40000000000
    weight_bytes_estimated:
      description: Whether weight_bytes was estimated from the config.
      type: bool
      sample: false
    gpu_memory_utilization:
      description: The utilization planned with.
      type: float
      sample: 0.92
    gpu_memory_bytes:
      description: Memory of the smallest GPU used, bytes, as NVML reports it.
      type: int
      sample: 25769803776
    cuda_visible_memory_bytes:
      description: What CUDA (and vLLM) sees of it, bytes (NVML's total less the driver's reserve).
      type: int
    budget_bytes_per_gpu:
      description: cuda_visible_memory_bytes times gpu_memory_utilization.
      type: int
    per_gpu:
      description:
        - The GPU that limits the KV cache (the fullest pipeline stage) - C(weights_bytes), C(reserve_bytes) and
          its parts C(activation_bytes), C(non_torch_bytes), C(kv_budget_bytes), C(kv_bytes_per_token),
          C(kv_tokens), C(layers).
      type: dict
    stages:
      description: The same numbers for each pipeline stage (one entry without pipeline parallelism).
      type: list
      elements: dict
    kv_bytes_per_token:
      description: KV cache of one token for the whole model, 2 x layers x KV heads x head_dim x dtype bytes.
      type: int
      sample: 327680
    kv_bytes_per_token_per_gpu:
      description: The share of one GPU of the limiting stage.
      type: int
      sample: 163840
    kv_cache_bytes:
      description:
        - KV cache the plan holds for the whole model, bytes (kv_cache_tokens x kv_bytes_per_token). With tensor
          parallelism it is the KV budget of every GPU together.
      type: int
    kv_cache_tokens:
      description: Tokens the KV cache holds (whole blocks of 16).
      type: int
    model_max_model_len:
      description: The model's own context limit from its config.
      type: int
      sample: 131072
    max_model_len:
      description: Planned context length (0 when it does not fit).
      type: int
      sample: 8192
    max_concurrency_at_max_model_len:
      description: Sequences of max_model_len tokens the KV cache holds at once (as vLLM logs it).
      type: float
      sample: 2.13
    max_num_seqs:
      description: Planned --max-num-seqs.
      type: int
      sample: 8
    max_num_batched_tokens:
      description: Planned --max-num-batched-tokens (always passed, so the engine profiles with it).
      type: int
      sample: 2048
    vllm_args:
      description: Flags for C(vllm serve), as a dict (empty when it does not fit).
      type: dict
      sample:
        --tensor-parallel-size: 2
        --pipeline-parallel-size: 1
        --max-model-len: 8192
        --max-num-seqs: 8
        --max-num-batched-tokens: 2048
        --gpu-memory-utilization: 0.92
        --quantization: awq_marlin
    vllm_argv:
      description: The same flags as a list of strings (empty when it does not fit).
      type: list
      elements: str
"""

MIB = 1024 * 1024
GIB = 1024 * MIB

# --- The overhead model (per GPU), calibrated on vLLM 0.26.0's own accounting. vLLM gives the KV cache
#   budget - weights - activation peak - non-torch memory, where budget = gpu_memory_utilization x the GPU's CUDA
# total, and logs each term ("Model loading took ...", "Actual usage is X for weight, Y for peak activation, Z for
# non-torch memory, and W for CUDAGraph memory"). CUDA graphs are captured after the KV cache is allocated, outside
# the budget. Every constant below names its measurement: tests/hardware/check_engine.sh on one H200, 2026-12-02
# (tests/unit/plugins/filter/fixtures/engine_measurements.json, docs/hardware/2026-12-02-H200-engine.md).

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
# max_model_len=auto is rounded down to this, and must reach the minimum to count as fitting.
AUTO_MAX_MODEL_LEN_STEP = 1024
MIN_AUTO_MAX_MODEL_LEN = 2048
DEFAULT_TYPICAL_REQUEST_TOKENS = 2048

QUANTIZED_4BIT = ("awq", "awq_marlin", "gptq", "gptq_marlin")
UNQUANTIZED = ("none", "fp16", "bf16")
KV_DTYPE_BYTES = {"auto": None, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}
# Bytes per value of a dtype as config.json (torch_dtype) or vLLM's --dtype names it.
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "half": 2, "float32": 4, "float": 4}
SERVED_DTYPES = ("auto", "float16", "bfloat16", "half", "float32", "float")
REQUIRED_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size", "intermediate_size")
# Context keys vLLM reads when max_position_embeddings is absent, in its order.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                "max_sequence_length", "max_seq_length", "seq_len")
# Marlin kernels need compute capability 8.0 (Ampere); these GPUs are older.
PRE_AMPERE = re.compile(r"(GTX|RTX 20|TITAN RTX|Quadro RTX|\bT4\b|V100|P100|P40|P4\b|TITAN V)", re.IGNORECASE)
CONFIG_FIX = "pass the model's config.json as a dict, e.g. lookup('ansible.builtin.file', path) | from_json"


def gib(value: float) -> str:
    return "%.1f GiB" % (value / GIB)


def model_config(config: Any) -> Dict[str, Any]:
    """The text model's config: the top level overridden by a nested text_config (multimodal models)."""
    if not isinstance(config, dict):
        raise AnsibleFilterError("vllm_plan: the input must be the model's config.json as a dict, got %s: %s"
                                 % (type(config).__name__, CONFIG_FIX))
    merged = dict(config)
    text_config = config.get("text_config")
    if isinstance(text_config, dict):
        merged.update({key: value for key, value in text_config.items() if value is not None})
    for key in REQUIRED_KEYS:
        if merged.get(key) is None:
            raise AnsibleFilterError(
                "vllm_plan: the model config lacks '%s' (nor has it in text_config): %s; for a model whose config "
                "names it differently, add '%s' to the dict before planning" % (key, CONFIG_FIX, key))
    return merged


def positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise AnsibleFilterError("vllm_plan: %s must be a whole number, got %r" % (name, value)) from None
    if number <= 0 or number != float(value):
        raise AnsibleFilterError("vllm_plan: %s must be a positive whole number, got %r" % (name, value))
    return number


def auto_or_int(value: Any, name: str) -> Optional[int]:
    """None for auto (or unset), else a positive int."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("auto", "")):
        return None
    return positive_int(value, name)


def model_shape(config: Dict[str, Any]) -> Dict[str, int]:
    layers = positive_int(config["num_hidden_layers"], "num_hidden_layers")
    hidden = positive_int(config["hidden_size"], "hidden_size")
    heads = positive_int(config["num_attention_heads"], "num_attention_heads")
    kv_heads = config.get("num_key_value_heads")
    kv_heads = heads if kv_heads is None else positive_int(kv_heads, "num_key_value_heads")
    head_dim = config.get("head_dim")
    if head_dim is None:
        if hidden % heads:
            raise AnsibleFilterError("vllm_plan: hidden_size %d is not a multiple of num_attention_heads %d and the "
                                     "config has no head_dim: add head_dim to the config" % (hidden, heads))
        head_dim = hidden // heads
    intermediate = config["intermediate_size"]
    if isinstance(intermediate, list):  # a few configs list it per layer
        intermediate = max(intermediate)
    return {
        "layers": layers, "hidden": hidden, "heads": heads, "kv_heads": kv_heads,
        "head_dim": positive_int(head_dim, "head_dim"),
        "intermediate": positive_int(intermediate, "intermediate_size"),
        "vocab": positive_int(config["vocab_size"], "vocab_size"),
    }


def model_max_len(config: Dict[str, Any]) -> Optional[int]:
    """The model's own context limit as vLLM derives it (YaRN scales it by its factor)."""
    for key in CONTEXT_KEYS:
        if config.get(key):
            limit = int(config[key])
            break
    else:
        return None
    rope = config.get("rope_scaling") or {}
    if isinstance(rope, dict) and (rope.get("rope_type") or rope.get("type")) == "yarn" and rope.get("factor"):
        limit = int(rope.get("original_max_position_embeddings") or limit) * float(rope["factor"])
    return int(limit)


def weight_format(config: Dict[str, Any], quantization: str) -> Tuple[str, int, int, List[str]]:
    """(method, bits, group_size, notes) of the weights, checked against the config."""
    notes = []
    quant_config = config.get("quantization_config") or {}
    declared = str(quant_config.get("quant_method") or "").lower() or None
    requested = str(quantization or "auto").lower()
    if requested not in ("auto",) + QUANTIZED_4BIT + UNQUANTIZED:
        raise AnsibleFilterError("vllm_plan: quantization must be one of auto, awq, awq_marlin, gptq, gptq_marlin, "
                                 "none, fp16, bf16; got %r" % quantization)
    base = requested.replace("_marlin", "")
    if requested == "auto":
        method = declared or "none"
    elif base in ("awq", "gptq"):
        if declared and declared != base:
            raise AnsibleFilterError(
                "vllm_plan: quantization %s was asked for but the model's config declares quant_method %s: "
                "set quantization to auto (or %s)" % (requested, declared, declared))
        method = base
        if not declared:
            notes.append("quantization %s assumed 4-bit weights in groups of 128: the config has no "
                         "quantization_config (vLLM will refuse a checkpoint that is not %s)" % (base, base))
    else:
        if declared:
            raise AnsibleFilterError(
                "vllm_plan: quantization %s was asked for but the model's config declares quant_method %s (a "
                "quantized checkpoint): set quantization to auto or %s" % (requested, declared, declared))
        method = "none"
    if method in ("awq", "gptq"):
        bits = int(quant_config.get("bits") or quant_config.get("w_bit") or 4)
        group = int(quant_config.get("group_size") or quant_config.get("q_group_size") or 128)
        return method, bits, group, notes
    if method == "none":
        return method, 16, 0, notes
    bits = 8 if "fp8" in method else 0  # other methods: only fp8 has a known width
    return method, bits, 0, notes


def estimate_components(shape: Dict[str, int], bits: int, group: int, tied: bool) -> Dict[str, float]:
    """Bytes of the embedding, the LM head and one decoder layer (dense, gated MLP; biases ignored)."""
    hidden, q_out = shape["hidden"], shape["heads"] * shape["head_dim"]
    kv_out = shape["kv_heads"] * shape["head_dim"]
    linear_params = hidden * (q_out + 2 * kv_out) + q_out * hidden + 3 * hidden * shape["intermediate"]
    if bits < 16:
        # Packed weights, one fp16 scale and one packed zero point per group of `group` inputs.
        bytes_per_weight = bits / 8.0 + ((2 + bits / 8.0) / group if group else 0)
    else:
        bytes_per_weight = 2.0
    embedding = shape["vocab"] * hidden * 2.0  # embeddings and the LM head stay 16-bit in AWQ/GPTQ checkpoints
    return {
        "embedding": embedding,
        "lm_head": 0.0 if tied else embedding,
        "layer": linear_params * bytes_per_weight + 2 * hidden * 2.0,
    }


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


def gpu_memory(gpu_facts: Any, count: Optional[int] = None) -> Tuple[List[Dict[str, Any]], int]:
    if not isinstance(gpu_facts, dict):
        raise AnsibleFilterError("vllm_plan: gpu_facts must be the host's ansible_facts.llmfleet_gpu (a dict) from "
                                 "llmfleet.workstation.gpu_facts, got %s" % type(gpu_facts).__name__)
    gpus = gpu_facts.get("gpus") or []
    if not gpus:
        raise AnsibleFilterError("vllm_plan: no GPUs in gpu_facts: run llmfleet.workstation.gpu_facts on the host "
                                 "first (role gpu_gates) and pass ansible_facts.llmfleet_gpu; a host without an "
                                 "NVIDIA GPU cannot serve with vLLM's CUDA build")
    gpus = gpus[:count] if count else gpus
    for position, card in enumerate(gpus):
        if not isinstance(card, dict) or not card.get("memory_total_mib"):
            raise AnsibleFilterError(
                "vllm_plan: GPU %s (%s) has no memory_total_mib in gpu_facts: NVML did not report its memory; "
                "check the driver with nvidia-smi and gather llmfleet.workstation.gpu_facts again"
                % (card.get("index", position) if isinstance(card, dict) else position,
                   card.get("name", "unknown") if isinstance(card, dict) else "unknown"))
    return gpus, min(int(card["memory_total_mib"]) for card in gpus) * MIB


def default_batched_tokens(gpus: List[Dict[str, Any]], gpu_bytes: int) -> int:
    """vLLM's own max_num_batched_tokens for the OpenAI server on these GPUs."""
    large = gpu_bytes >= VLLM_LARGE_GPU_BYTES and not any("A100" in str(card.get("name", "")) for card in gpus)
    return VLLM_LARGE_GPU_MAX_NUM_BATCHED_TOKENS if large else VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS


def interconnect_of(gpu_count: int, nvlink_facts: Any, notes: List[str]) -> str:
    if gpu_count == 1:
        return "single"
    if not isinstance(nvlink_facts, dict):
        notes.append("no llmfleet_nvlink facts given: the GPUs are assumed to talk over PCIe only")
        return "pcie"
    return "nvlink" if nvlink_facts.get("all_pairs_p2p_nvlink") else "pcie"


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


def vllm_plan(
    config: Dict[str, Any],
    gpu_facts: Dict[str, Any],
    nvlink_facts: Optional[Dict[str, Any]] = None,
    *,
    weight_bytes: Optional[int] = None,
    quantization: str = "auto",
    kv_cache_dtype: str = "auto",
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
    max_model_len: Any = "auto",
    max_num_seqs: Any = "auto",
    tensor_parallel_size: Any = "auto",
    pipeline_parallel_size: Any = "auto",
    max_num_batched_tokens: Any = "auto",
    typical_request_tokens: int = DEFAULT_TYPICAL_REQUEST_TOKENS,
    max_num_seqs_cap: int = VLLM_DEFAULT_MAX_NUM_SEQS,
    dtype: str = "auto",
) -> Dict[str, Any]:
    """The plan (see RETURN)."""
    config = model_config(config)
    shape = model_shape(config)
    try:
        utilization = float(gpu_memory_utilization)
    except (TypeError, ValueError):
        raise AnsibleFilterError("vllm_plan: gpu_memory_utilization must be a number such as 0.92, got %r"
                                 % (gpu_memory_utilization,)) from None
    if not 0 < utilization <= MAX_GPU_MEMORY_UTILIZATION:
        raise AnsibleFilterError(
            "vllm_plan: gpu_memory_utilization %s is outside (0, %.2f]: above %.2f the CUDA context and CUDA graphs, "
            "which live outside vLLM's budget, run out of memory under load; use %.2f"
            % (gpu_memory_utilization, MAX_GPU_MEMORY_UTILIZATION, MAX_GPU_MEMORY_UTILIZATION,
               DEFAULT_GPU_MEMORY_UTILIZATION))
    kv_dtype = str(kv_cache_dtype or "auto").lower()
    if kv_dtype not in KV_DTYPE_BYTES:
        raise AnsibleFilterError("vllm_plan: kv_cache_dtype must be auto, fp8, fp8_e4m3 or fp8_e5m2, got %r"
                                 % (kv_cache_dtype,))
    wanted_len = auto_or_int(max_model_len, "max_model_len")
    wanted_seqs = auto_or_int(max_num_seqs, "max_num_seqs")
    tp_wanted = auto_or_int(tensor_parallel_size, "tensor_parallel_size")
    pp_wanted = auto_or_int(pipeline_parallel_size, "pipeline_parallel_size")
    wanted_batched_tokens = auto_or_int(max_num_batched_tokens, "max_num_batched_tokens")
    typical_tokens = positive_int(typical_request_tokens, "typical_request_tokens")
    seqs_cap = positive_int(max_num_seqs_cap, "max_num_seqs_cap")
    served_dtype = str(dtype or "auto").lower().replace("torch.", "")
    if served_dtype not in SERVED_DTYPES:
        raise AnsibleFilterError("vllm_plan: dtype must be one of %s (vLLM's --dtype), got %r"
                                 % (", ".join(SERVED_DTYPES), dtype))

    method, bits, group, notes = weight_format(config, quantization)
    all_gpus, _memory = gpu_memory(gpu_facts)
    gpu_count = len(all_gpus)
    if tp_wanted and pp_wanted and tp_wanted * pp_wanted <= gpu_count:
        gpu_count = tp_wanted * pp_wanted  # the first tp x pp GPUs
    gpus, gpu_bytes = gpu_memory(gpu_facts, gpu_count)
    batched_tokens = wanted_batched_tokens or default_batched_tokens(gpus, gpu_bytes)
    interconnect = interconnect_of(gpu_count, nvlink_facts, notes)
    tp, pp, layout_problem, layout_notes = choose_layout(
        shape, gpu_count, interconnect, group=group, tp_wanted=tp_wanted, pp_wanted=pp_wanted)
    notes.extend(layout_notes)

    dtype_name = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16").lower().replace("torch.", "")
    checkpoint_dtype_bytes = DTYPE_BYTES.get(dtype_name, 2)
    # vLLM's --dtype auto serves a float32 checkpoint in 16 bits (and a 16-bit one as it is).
    served_dtype_bytes = min(checkpoint_dtype_bytes, 2) if served_dtype == "auto" else DTYPE_BYTES[served_dtype]
    kv_value_bytes = KV_DTYPE_BYTES[kv_dtype] or served_dtype_bytes
    tied = bool(config.get("tie_word_embeddings", False))

    is_moe = any(config.get(key) for key in ("num_local_experts", "num_experts", "n_routed_experts"))
    estimated = weight_bytes in (None, "", 0)
    if estimated and (is_moe or not bits):
        raise AnsibleFilterError(
            "vllm_plan: cannot estimate the weights of this model (%s): pass weight_bytes, the size of its "
            "*.safetensors files" % ("mixture of experts" if is_moe else "quantization %s" % method))
    components = estimate_components(shape, bits or 16, group, tied)
    estimate = components["embedding"] + components["lm_head"] + shape["layers"] * components["layer"]
    if estimated:
        total_weights = int(estimate * (served_dtype_bytes / 2.0 if method == "none" else 1))
    else:
        total_weights = positive_int(weight_bytes, "weight_bytes")
        if method == "none" and served_dtype_bytes != checkpoint_dtype_bytes:
            # Unquantized weights are loaded in the served dtype: a float32 checkpoint served in 16 bits takes half
            # its size on disk.
            notes.append("the %s checkpoint's %s on disk are served as %d-byte values: %s in GPU memory"
                         % (dtype_name, gib(total_weights), served_dtype_bytes,
                            gib(total_weights * served_dtype_bytes // checkpoint_dtype_bytes)))
            total_weights = total_weights * served_dtype_bytes // checkpoint_dtype_bytes
    scale = total_weights / estimate
    if estimated:
        notes.append("weights estimated from the config at %s (%d-bit%s): pass weight_bytes for the real size"
                     % (gib(total_weights), bits, " %s" % method if method != "none" else ""))

    cuda_visible = gpu_bytes - (DRIVER_RESERVED_BYTES_LARGE_GPU if gpu_bytes >= VLLM_LARGE_GPU_BYTES
                                else DRIVER_RESERVED_BYTES)
    budget = int(cuda_visible * utilization)
    outside = cuda_visible - budget
    stages = stage_plans(shape, components, scale=scale, tp=tp, pp=pp, quantized=bits < 16,
                         kv_value_bytes=kv_value_bytes,
                         budget=budget, batched_tokens=batched_tokens,
                         activation_value_bytes=served_dtype_bytes)
    # Weights as loaded (repacked for Marlin), every GPU together.
    loaded_weights = sum(stage["weights_bytes"] for stage in stages) * tp
    limiting = min(stages, key=lambda stage: (stage["kv_tokens"], stage["kv_budget_bytes"]))
    kv_tokens = limiting["kv_tokens"]
    kv_per_token = 2 * shape["layers"] * shape["kv_heads"] * shape["head_dim"] * kv_value_bytes
    # What the KV cache holds for the whole model; with pipeline stages of unequal weight the fuller stage limits
    # the tokens, and the spare memory of the others goes unused.
    kv_cache_bytes = kv_tokens * kv_per_token
    limit = model_max_len(config)
    if limit is None and wanted_len is None:
        raise AnsibleFilterError("vllm_plan: the model config has no max_position_embeddings (nor %s): set "
                                 "max_model_len explicitly" % ", ".join(CONTEXT_KEYS[1:]))

    gpu_name = gpus[0].get("name", "GPU")
    where = "%d x %s (%s each)" % (gpu_count, gpu_name, gib(gpu_bytes)) if gpu_count > 1 else "one %s (%s)" % (
        gpu_name, gib(gpu_bytes))
    budget_text = "vLLM's budget per GPU is %s (%.2f of the %s CUDA sees)" % (
        gib(budget), utilization, gib(cuda_visible))
    problem = None
    planned_len = 0
    if layout_problem:
        problem = "Does not fit: %s on %s" % (layout_problem, where)
    elif limiting["kv_budget_bytes"] <= 0 or kv_tokens == 0:
        worst = min(stages, key=lambda stage: stage["kv_budget_bytes"])
        needed = loaded_weights + worst["reserve_bytes"] * tp * pp
        minimum = next((size for size in (2, 4, 8, 16) if size > gpu_count
                        and loaded_weights / size + worst["reserve_bytes"] < budget), None)
        problem = (
            "Does not fit: on %s the weights take %s per GPU (%s in all, TP %d x PP %d) and activations and buffers "
            "%s, but %s, leaving %s for the KV cache; the model needs about %s of vLLM budget in all%s"
            % (where, gib(worst["weights_bytes"]), gib(loaded_weights), tp, pp, gib(worst["reserve_bytes"]),
               budget_text, gib(worst["kv_budget_bytes"]), gib(needed),
               (": use at least %d GPUs of this size" % minimum) if minimum else ""))
    elif wanted_len is not None:
        if limit is not None and wanted_len > limit:
            problem = ("Does not fit: max_model_len %d is longer than the model's own limit of %d tokens "
                       "(max_position_embeddings): lower max_model_len to %d or less" % (wanted_len, limit, limit))
        elif wanted_len > kv_tokens:
            problem = ("Does not fit: max_model_len %d needs %s of KV cache (%d bytes per token) but the KV cache "
                       "holds %d tokens (%s in all on %s after weights of %s): lower max_model_len to %d or less%s"
                       % (wanted_len, gib(wanted_len * kv_per_token), kv_per_token, kv_tokens, gib(kv_cache_bytes),
                          where, gib(loaded_weights), kv_tokens // AUTO_MAX_MODEL_LEN_STEP * AUTO_MAX_MODEL_LEN_STEP
                          or kv_tokens, "" if kv_dtype != "auto" else ", or set kv_cache_dtype fp8 to double it"))
        else:
            planned_len = wanted_len
    else:
        planned_len = kv_tokens if limit is not None and kv_tokens >= limit else (
            kv_tokens // AUTO_MAX_MODEL_LEN_STEP * AUTO_MAX_MODEL_LEN_STEP)
        if limit is not None:
            planned_len = min(planned_len, limit)
        # A model whose own limit is shorter than the minimum (a small test model) fits at its limit.
        minimum_len = min(MIN_AUTO_MAX_MODEL_LEN, limit) if limit is not None else MIN_AUTO_MAX_MODEL_LEN
        if planned_len < minimum_len:
            problem = ("Does not fit: the KV cache left on %s holds only %d tokens (%s after weights of %s), "
                       "less than the %d-token minimum context: use more GPUs%s"
                       % (where, kv_tokens, gib(kv_cache_bytes), gib(loaded_weights), minimum_len,
                          "" if kv_dtype != "auto" else " or set kv_cache_dtype fp8"))
            planned_len = 0
    context_needed = CUDA_CONTEXT_BYTES + CUDA_GRAPHS_BYTES
    if problem is None and outside < context_needed:
        problem = ("Does not fit: gpu_memory_utilization %.2f leaves %s of each %s GPU outside vLLM's budget, but the "
                   "CUDA context and CUDA graphs need about %s there: lower gpu_memory_utilization to %.2f"
                   % (utilization, gib(outside), gib(gpu_bytes), gib(context_needed),
                      math.floor((1 - context_needed / cuda_visible) * 100) / 100))

    concurrency = round(kv_tokens / planned_len, 2) if planned_len else 0.0
    if planned_len:
        seqs = wanted_seqs or max(1, min(seqs_cap, kv_tokens // min(planned_len, typical_tokens)))
    else:
        seqs = 0
    if wanted_seqs and planned_len and wanted_seqs * min(planned_len, typical_tokens) > kv_tokens:
        notes.append("max_num_seqs %d x %d tokens is more than the %d the KV cache holds: vLLM will queue or preempt "
                     "sequences beyond that" % (wanted_seqs, min(planned_len, typical_tokens), kv_tokens))
    if len({card.get("memory_total_mib") for card in gpus}) > 1:
        notes.append("the GPUs differ in memory: every GPU is planned as the smallest (%s), as vLLM does"
                     % gib(gpu_bytes))

    quant_flag = None
    if method in ("awq", "gptq"):
        old_gpu = any(PRE_AMPERE.search(str(card.get("name", ""))) for card in gpus)
        quant_flag = method if old_gpu else method + "_marlin"
        if old_gpu:
            notes.append("%s: the Marlin kernels need an Ampere or newer GPU, so the plain %s kernel is used"
                         % (gpu_name, method))

    fits = problem is None
    vllm_args = {}
    if fits:
        vllm_args = {
            "--tensor-parallel-size": tp,
            "--pipeline-parallel-size": pp,
            "--max-model-len": planned_len,
            "--max-num-seqs": seqs,
            "--max-num-batched-tokens": batched_tokens,
            "--gpu-memory-utilization": utilization,
        }
        if quant_flag:
            vllm_args["--quantization"] = quant_flag
        if kv_dtype != "auto":
            vllm_args["--kv-cache-dtype"] = kv_dtype
    argv = []
    for flag, value in vllm_args.items():
        argv.extend([flag, str(value)])
    if fits:
        link = {"nvlink": " over NVLink", "pcie": " over PCIe"}.get(interconnect, "")
        reason = ("Fits on %s with TP %d x PP %d%s: weights %s per GPU, %s of KV cache in all (%d tokens at "
                  "%d bytes per token), max_model_len %d (%.2f sequences at full length), max_num_seqs %d"
                  % (where, tp, pp, link, gib(limiting["weights_bytes"]), gib(kv_cache_bytes), kv_tokens,
                     kv_per_token, planned_len, concurrency, seqs))
    else:
        reason = problem
    per_gpu = dict(limiting)
    per_gpu.pop("stage")
    return {
        "fits": fits,
        "reason": reason,
        "notes": notes,
        "tensor_parallel_size": tp,
        "pipeline_parallel_size": pp,
        "gpus_used": tp * pp,
        "interconnect": interconnect,
        "quantization": method,
        "weight_bits": bits,
        "weight_bytes": total_weights,
        "weight_bytes_estimated": estimated,
        "gpu_memory_utilization": utilization,
        "gpu_memory_bytes": gpu_bytes,
        "cuda_visible_memory_bytes": cuda_visible,
        "budget_bytes_per_gpu": budget,
        "per_gpu": per_gpu,
        "stages": stages,
        "kv_bytes_per_token": kv_per_token,
        "kv_bytes_per_token_per_gpu": limiting["kv_bytes_per_token"],
        "kv_cache_bytes": kv_cache_bytes,
        "kv_cache_tokens": kv_tokens,
        "model_max_model_len": limit,
        "max_model_len": planned_len,
        "max_concurrency_at_max_model_len": concurrency,
        "max_num_seqs": seqs,
        "max_num_batched_tokens": batched_tokens,
        "vllm_args": vllm_args,
        "vllm_argv": argv,
    }


class FilterModule:
    """llmfleet.workstation's planning filters."""

    def filters(self):
        return {"vllm_plan": vllm_plan}
