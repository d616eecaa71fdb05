# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan: parallel layout, context length, concurrency and vLLM's flags for a model on a host's GPUs."""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.llmfleet.workstation.plugins.module_utils.planner import PlanError
from ansible_collections.llmfleet.workstation.plugins.module_utils.planner.layout import choose_layout, interconnect_of
from ansible_collections.llmfleet.workstation.plugins.module_utils.planner.memory import (
    CUDA_CONTEXT_BYTES, CUDA_GRAPHS_BYTES, DEFAULT_GPU_MEMORY_UTILIZATION, DRIVER_RESERVED_BYTES,
    DRIVER_RESERVED_BYTES_LARGE_GPU, KV_DTYPE_BYTES, MAX_GPU_MEMORY_UTILIZATION, VLLM_DEFAULT_MAX_NUM_SEQS,
    VLLM_LARGE_GPU_BYTES, default_batched_tokens, gib, gpu_memory, stage_plans)
from ansible_collections.llmfleet.workstation.plugins.module_utils.planner.shape import (
    CONTEXT_KEYS, DTYPE_BYTES, SERVED_DTYPES, auto_or_int, estimate_components, model_config, model_max_len,
    model_shape, positive_int, weight_format)

# max_model_len=auto is rounded down to this, and must reach the minimum to count as fitting.
AUTO_MAX_MODEL_LEN_STEP = 1024

MIN_AUTO_MAX_MODEL_LEN = 2048

DEFAULT_TYPICAL_REQUEST_TOKENS = 2048

# Marlin kernels need compute capability 8.0 (Ampere); these GPUs are older.
PRE_AMPERE = re.compile(r"(GTX|RTX 20|TITAN RTX|Quadro RTX|\bT4\b|V100|P100|P40|P4\b|TITAN V)", re.IGNORECASE)


def checked_utilization(gpu_memory_utilization: Any) -> float:
    try:
        utilization = float(gpu_memory_utilization)
    except (TypeError, ValueError):
        raise PlanError("vllm_plan: gpu_memory_utilization must be a number such as 0.92, got %r"
                        % (gpu_memory_utilization,)) from None
    if not 0 < utilization <= MAX_GPU_MEMORY_UTILIZATION:
        raise PlanError(
            "vllm_plan: gpu_memory_utilization %s is outside (0, %.2f]: above %.2f the CUDA context and CUDA graphs, "
            "which live outside vLLM's budget, run out of memory under load; use %.2f"
            % (gpu_memory_utilization, MAX_GPU_MEMORY_UTILIZATION, MAX_GPU_MEMORY_UTILIZATION,
               DEFAULT_GPU_MEMORY_UTILIZATION))
    return utilization


def checked_kv_dtype(kv_cache_dtype: Any) -> str:
    kv_dtype = str(kv_cache_dtype or "auto").lower()
    if kv_dtype not in KV_DTYPE_BYTES:
        raise PlanError("vllm_plan: kv_cache_dtype must be auto, fp8, fp8_e4m3 or fp8_e5m2, got %r"
                        % (kv_cache_dtype,))
    return kv_dtype


def checked_served_dtype(dtype: Any) -> str:
    served_dtype = str(dtype or "auto").lower().replace("torch.", "")
    if served_dtype not in SERVED_DTYPES:
        raise PlanError("vllm_plan: dtype must be one of %s (vLLM's --dtype), got %r"
                        % (", ".join(SERVED_DTYPES), dtype))
    return served_dtype


def weights_in_memory(config: Dict[str, Any], shape: Dict[str, int], weight_bytes: Any, *, method: str, bits: int,
                      group: int, served_dtype: str, notes: List[str]) -> Dict[str, Any]:
    """The weights' bytes as served (the files' size, else the config's estimate), the per-part estimate they scale,
    and the bytes per value of the served dtype."""
    dtype_name = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16").lower().replace("torch.", "")
    checkpoint_dtype_bytes = DTYPE_BYTES.get(dtype_name, 2)
    # vLLM's --dtype auto serves a float32 checkpoint in 16 bits (and a 16-bit one as it is).
    served_dtype_bytes = min(checkpoint_dtype_bytes, 2) if served_dtype == "auto" else DTYPE_BYTES[served_dtype]
    tied = bool(config.get("tie_word_embeddings", False))
    is_moe = any(config.get(key) for key in ("num_local_experts", "num_experts", "n_routed_experts"))
    estimated = weight_bytes in (None, "", 0)
    if estimated and (is_moe or not bits):
        raise PlanError(
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
    if estimated:
        notes.append("weights estimated from the config at %s (%d-bit%s): pass weight_bytes for the real size"
                     % (gib(total_weights), bits, " %s" % method if method != "none" else ""))
    return {"components": components, "total": total_weights, "estimated": estimated,
            "scale": total_weights / estimate, "served_dtype_bytes": served_dtype_bytes}


def memory_problem(stages: List[Dict[str, int]], *, loaded_weights: int, tp: int, pp: int, gpu_count: int,
                   budget: int, where: str, budget_text: str) -> str:
    """Why the weights and buffers leave no KV cache, with the GPUs of this size that would do."""
    worst = min(stages, key=lambda stage: stage["kv_budget_bytes"])
    needed = loaded_weights + worst["reserve_bytes"] * tp * pp
    minimum = next((size for size in (2, 4, 8, 16) if size > gpu_count
                    and loaded_weights / size + worst["reserve_bytes"] < budget), None)
    return (
        "Does not fit: on %s the weights take %s per GPU (%s in all, TP %d x PP %d) and activations and buffers "
        "%s, but %s, leaving %s for the KV cache; the model needs about %s of vLLM budget in all%s"
        % (where, gib(worst["weights_bytes"]), gib(loaded_weights), tp, pp, gib(worst["reserve_bytes"]),
           budget_text, gib(worst["kv_budget_bytes"]), gib(needed),
           (": use at least %d GPUs of this size" % minimum) if minimum else ""))


def context_length(wanted_len: Optional[int], limit: Optional[int], *, kv_tokens: int, kv_per_token: int,
                   kv_cache_bytes: int, kv_dtype: str, where: str, loaded_weights: int) -> Tuple[int, Optional[str]]:
    """(max_model_len, problem): the requested context checked against the model and the KV cache, or the longest
    the KV cache holds (rounded down to AUTO_MAX_MODEL_LEN_STEP) when it is auto."""
    if wanted_len is not None:
        if limit is not None and wanted_len > limit:
            return 0, ("Does not fit: max_model_len %d is longer than the model's own limit of %d tokens "
                       "(max_position_embeddings): lower max_model_len to %d or less" % (wanted_len, limit, limit))
        if wanted_len > kv_tokens:
            return 0, ("Does not fit: max_model_len %d needs %s of KV cache (%d bytes per token) but the KV cache "
                       "holds %d tokens (%s in all on %s after weights of %s): lower max_model_len to %d or less%s"
                       % (wanted_len, gib(wanted_len * kv_per_token), kv_per_token, kv_tokens, gib(kv_cache_bytes),
                          where, gib(loaded_weights), kv_tokens // AUTO_MAX_MODEL_LEN_STEP * AUTO_MAX_MODEL_LEN_STEP
                          or kv_tokens, "" if kv_dtype != "auto" else ", or set kv_cache_dtype fp8 to double it"))
        return wanted_len, None
    planned_len = kv_tokens if limit is not None and kv_tokens >= limit else (
        kv_tokens // AUTO_MAX_MODEL_LEN_STEP * AUTO_MAX_MODEL_LEN_STEP)
    if limit is not None:
        planned_len = min(planned_len, limit)
    # A model whose own limit is shorter than the minimum (a small test model) fits at its limit.
    minimum_len = min(MIN_AUTO_MAX_MODEL_LEN, limit) if limit is not None else MIN_AUTO_MAX_MODEL_LEN
    if planned_len < minimum_len:
        return 0, ("Does not fit: the KV cache left on %s holds only %d tokens (%s after weights of %s), "
                   "less than the %d-token minimum context: use more GPUs%s"
                   % (where, kv_tokens, gib(kv_cache_bytes), gib(loaded_weights), minimum_len,
                      "" if kv_dtype != "auto" else " or set kv_cache_dtype fp8"))
    return planned_len, None


def outside_budget_problem(utilization: float, *, outside: int, gpu_bytes: int, cuda_visible: int) -> Optional[str]:
    """Why the share left outside vLLM's budget cannot hold the CUDA context and graphs, or None."""
    context_needed = CUDA_CONTEXT_BYTES + CUDA_GRAPHS_BYTES
    if outside >= context_needed:
        return None
    return ("Does not fit: gpu_memory_utilization %.2f leaves %s of each %s GPU outside vLLM's budget, but the "
            "CUDA context and CUDA graphs need about %s there: lower gpu_memory_utilization to %.2f"
            % (utilization, gib(outside), gib(gpu_bytes), gib(context_needed),
               math.floor((1 - context_needed / cuda_visible) * 100) / 100))


def quantization_flag(method: str, gpus: List[Dict[str, Any]], gpu_name: str, notes: List[str]) -> Optional[str]:
    """vLLM's --quantization for 4-bit weights: the Marlin kernels from Ampere on, the plain ones before."""
    if method not in ("awq", "gptq"):
        return None
    old_gpu = any(PRE_AMPERE.search(str(card.get("name", ""))) for card in gpus)
    if old_gpu:
        notes.append("%s: the Marlin kernels need an Ampere or newer GPU, so the plain %s kernel is used"
                     % (gpu_name, method))
    return method if old_gpu else method + "_marlin"


def plan(
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
    """The plan (see the vllm_plan filter's RETURN), in steps: the settings checked, the GPUs and their layout, the
    weights in memory, each pipeline stage's KV cache, the context and concurrency it allows, vLLM's flags."""
    config = model_config(config)
    shape = model_shape(config)
    utilization = checked_utilization(gpu_memory_utilization)
    kv_dtype = checked_kv_dtype(kv_cache_dtype)
    wanted_len = auto_or_int(max_model_len, "max_model_len")
    wanted_seqs = auto_or_int(max_num_seqs, "max_num_seqs")
    tp_wanted = auto_or_int(tensor_parallel_size, "tensor_parallel_size")
    pp_wanted = auto_or_int(pipeline_parallel_size, "pipeline_parallel_size")
    wanted_batched_tokens = auto_or_int(max_num_batched_tokens, "max_num_batched_tokens")
    typical_tokens = positive_int(typical_request_tokens, "typical_request_tokens")
    seqs_cap = positive_int(max_num_seqs_cap, "max_num_seqs_cap")
    served_dtype = checked_served_dtype(dtype)

    # The GPUs and how they split the model.
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

    # The weights, then what each pipeline stage's GPUs hold.
    weights = weights_in_memory(config, shape, weight_bytes, method=method, bits=bits, group=group,
                                served_dtype=served_dtype, notes=notes)
    kv_value_bytes = KV_DTYPE_BYTES[kv_dtype] or weights["served_dtype_bytes"]
    cuda_visible = gpu_bytes - (DRIVER_RESERVED_BYTES_LARGE_GPU if gpu_bytes >= VLLM_LARGE_GPU_BYTES
                                else DRIVER_RESERVED_BYTES)
    budget = int(cuda_visible * utilization)
    outside = cuda_visible - budget
    stages = stage_plans(shape, weights["components"], scale=weights["scale"], tp=tp, pp=pp, quantized=bits < 16,
                         kv_value_bytes=kv_value_bytes,
                         budget=budget, batched_tokens=batched_tokens,
                         activation_value_bytes=weights["served_dtype_bytes"])
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
        raise PlanError("vllm_plan: the model config has no max_position_embeddings (nor %s): set "
                        "max_model_len explicitly" % ", ".join(CONTEXT_KEYS[1:]))

    # Whether it fits, and the context it is served with.
    gpu_name = gpus[0].get("name", "GPU")
    where = "%d x %s (%s each)" % (gpu_count, gpu_name, gib(gpu_bytes)) if gpu_count > 1 else "one %s (%s)" % (
        gpu_name, gib(gpu_bytes))
    budget_text = "vLLM's budget per GPU is %s (%.2f of the %s CUDA sees)" % (
        gib(budget), utilization, gib(cuda_visible))
    planned_len = 0
    if layout_problem:
        problem = "Does not fit: %s on %s" % (layout_problem, where)
    elif limiting["kv_budget_bytes"] <= 0 or kv_tokens == 0:
        problem = memory_problem(stages, loaded_weights=loaded_weights, tp=tp, pp=pp, gpu_count=gpu_count,
                                 budget=budget, where=where, budget_text=budget_text)
    else:
        planned_len, problem = context_length(wanted_len, limit, kv_tokens=kv_tokens, kv_per_token=kv_per_token,
                                              kv_cache_bytes=kv_cache_bytes, kv_dtype=kv_dtype, where=where,
                                              loaded_weights=loaded_weights)
    if problem is None:
        problem = outside_budget_problem(utilization, outside=outside, gpu_bytes=gpu_bytes, cuda_visible=cuda_visible)

    # Concurrency.
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

    # vLLM's flags, only for a plan that fits.
    quant_flag = quantization_flag(method, gpus, gpu_name, notes)
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
        "weight_bytes": weights["total"],
        "weight_bytes_estimated": weights["estimated"],
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


# What the vllm_service role passes through as the planner's own choice when its setting is one of these; any other
# value (an engine-specific flag) leaves the planner at auto and goes to the engine as it is.
SERVICE_QUANTIZATIONS = ("awq", "awq_marlin", "gptq", "gptq_marlin", "none", "fp16", "bf16")
VISIBLE_INDICES = re.compile(r"^[0-9]+(,[0-9]+)*$")


def service_gpus(gpu_facts: Any, cuda_visible_devices: Any) -> Any:
    """The GPUs the engine will see: CUDA_VISIBLE_DEVICES as indices limits the plan to those (UUIDs or empty: all)."""
    visible = str(cuda_visible_devices or "").replace(" ", "")
    if not isinstance(gpu_facts, dict) or not VISIBLE_INDICES.match(visible):
        return gpu_facts
    indices = {int(index) for index in visible.split(",")}
    return dict(gpu_facts, gpus=[card for card in gpu_facts.get("gpus") or []
                                 if isinstance(card, dict) and card.get("index") in indices])


def service_links(nvlink_facts: Any, nvlink_required: Any) -> Any:
    """Where the inventory requires NVLink, the plan puts tensor parallelism over it (the NVLink gate then checks the
    links before the engine starts, so a misseated bridge stops the play there, with the fix)."""
    if str(nvlink_required).lower() in ("true", "1", "yes", "on", "y", "t"):
        return dict(nvlink_facts or {}, all_pairs_p2p_nvlink=True)
    return nvlink_facts


def service_plan(config: Any, gpu_facts: Any, nvlink_facts: Any, settings: Dict[str, Any]) -> Dict[str, Any]:
    """The plan for the vllm_service role, from its settings (the role's variables without the prefix)."""
    def setting(name: str, default: Any = "auto") -> Any:
        value = settings.get(name)
        return default if value is None else value

    quantization = str(setting("quantization", ""))
    dtype = str(setting("dtype", ""))
    return plan(
        config, service_gpus(gpu_facts, settings.get("cuda_visible_devices")),
        service_links(nvlink_facts, settings.get("nvlink_required", True)),
        weight_bytes=int(settings.get("weight_bytes") or 0) or None,
        quantization=quantization if quantization in SERVICE_QUANTIZATIONS else "auto",
        dtype=dtype if dtype in SERVED_DTYPES else "auto",
        kv_cache_dtype=setting("kv_cache_dtype"),
        gpu_memory_utilization=setting("gpu_memory_utilization", DEFAULT_GPU_MEMORY_UTILIZATION),
        tensor_parallel_size=str(setting("tensor_parallel_size")),
        pipeline_parallel_size=str(setting("pipeline_parallel_size")),
        max_model_len=str(setting("max_model_len")),
        max_num_seqs=str(setting("max_num_seqs")),
        max_num_batched_tokens=str(setting("max_num_batched_tokens")),
        max_num_seqs_cap=setting("max_num_seqs_cap", VLLM_DEFAULT_MAX_NUM_SEQS),
    )
