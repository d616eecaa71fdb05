# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the model is: its config.json read as vLLM reads it, its weight format and the bytes of its parts."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.llmfleet.workstation.plugins.module_utils.planner import PlanError

QUANTIZED_4BIT = ("awq", "awq_marlin", "gptq", "gptq_marlin")

UNQUANTIZED = ("none", "fp16", "bf16")

# Bytes per value of a dtype as config.json (torch_dtype) or vLLM's --dtype names it.
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "half": 2, "float32": 4, "float": 4}

SERVED_DTYPES = ("auto", "float16", "bfloat16", "half", "float32", "float")

REQUIRED_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size", "intermediate_size")

# Context keys vLLM reads when max_position_embeddings is absent, in its order.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                "max_sequence_length", "max_seq_length", "seq_len")

CONFIG_FIX = "pass the model's config.json as a dict, e.g. lookup('ansible.builtin.file', path) | from_json"


def model_config(config: Any) -> Dict[str, Any]:
    """The text model's config: the top level overridden by a nested text_config (multimodal models)."""
    if not isinstance(config, dict):
        raise PlanError("vllm_plan: the input must be the model's config.json as a dict, got %s: %s"
                        % (type(config).__name__, CONFIG_FIX))
    merged = dict(config)
    text_config = config.get("text_config")
    if isinstance(text_config, dict):
        merged.update({key: value for key, value in text_config.items() if value is not None})
    for key in REQUIRED_KEYS:
        if merged.get(key) is None:
            raise PlanError(
                "vllm_plan: the model config lacks '%s' (nor has it in text_config): %s; for a model whose config "
                "names it differently, add '%s' to the dict before planning" % (key, CONFIG_FIX, key))
    return merged


def positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise PlanError("vllm_plan: %s must be a whole number, got %r" % (name, value)) from None
    if number <= 0 or number != float(value):
        raise PlanError("vllm_plan: %s must be a positive whole number, got %r" % (name, value))
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
            raise PlanError("vllm_plan: hidden_size %d is not a multiple of num_attention_heads %d and the "
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
        raise PlanError("vllm_plan: quantization must be one of auto, awq, awq_marlin, gptq, gptq_marlin, "
                        "none, fp16, bf16; got %r" % quantization)
    base = requested.replace("_marlin", "")
    if requested == "auto":
        method = declared or "none"
    elif base in ("awq", "gptq"):
        if declared and declared != base:
            raise PlanError(
                "vllm_plan: quantization %s was asked for but the model's config declares quant_method %s: "
                "set quantization to auto (or %s)" % (requested, declared, declared))
        method = base
        if not declared:
            notes.append("quantization %s assumed 4-bit weights in groups of 128: the config has no "
                         "quantization_config (vLLM will refuse a checkpoint that is not %s)" % (base, base))
    else:
        if declared:
            raise PlanError(
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
