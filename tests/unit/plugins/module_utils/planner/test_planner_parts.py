"""The planner's parts, each alone: model shape, layout, memory model, and the vllm_service role's adapter.

The end-to-end plans (seed models on the reference hosts, the engine's measured capacity) are in
tests/unit/plugins/filter/test_vllm_plan*.py; these pin the pieces those plans are built from.
"""

import json
from pathlib import Path

import pytest

from ansible_collections.llmfleet.workstation.plugins.module_utils.planner import PlanError
from ansible_collections.llmfleet.workstation.plugins.module_utils.planner import layout, memory, plan, shape

FIXTURES = Path(__file__).resolve().parents[2] / "filter" / "fixtures"
# A Llama-shaped model small enough to reason about by hand.
TINY = {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 512, "torch_dtype": "float16"}
ONE_24G = {"gpus": [{"index": 0, "name": "NVIDIA GeForce RTX 3090", "memory_total_mib": 24576}]}
TWO_24G = {"gpus": [dict(ONE_24G["gpus"][0]), dict(ONE_24G["gpus"][0], index=1)]}


# ---- shape ----------------------------------------------------------------------------------------------------


def test_shape_reads_heads_and_derives_head_dim():
    assert shape.model_shape(TINY) == {"layers": 4, "hidden": 256, "heads": 4, "kv_heads": 2, "head_dim": 64,
                                       "intermediate": 512, "vocab": 1000}


def test_text_config_of_a_multimodal_model_overrides_the_top_level():
    merged = shape.model_config({"text_config": dict(TINY, hidden_size=512), "hidden_size": 1, **{
        key: value for key, value in TINY.items() if key != "hidden_size"}})
    assert merged["hidden_size"] == 512


def test_missing_key_names_it_and_the_fix():
    with pytest.raises(PlanError, match="lacks 'vocab_size'.*add 'vocab_size' to the dict"):
        shape.model_config({key: value for key, value in TINY.items() if key != "vocab_size"})


def test_yarn_scales_the_context_by_its_factor():
    yarn = dict(TINY, rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512})
    assert shape.model_max_len(TINY) == 512
    assert shape.model_max_len(yarn) == 2048


def test_weight_format_takes_the_declared_quantization_and_refuses_a_contradiction():
    awq = dict(TINY, quantization_config={"quant_method": "awq", "bits": 4, "group_size": 128})
    assert shape.weight_format(awq, "auto")[:3] == ("awq", 4, 128)
    assert shape.weight_format(TINY, "auto")[:3] == ("none", 16, 0)
    with pytest.raises(PlanError, match="declares quant_method awq"):
        shape.weight_format(awq, "gptq")


def test_sixteen_bit_layer_bytes_count_every_linear_weight_twice():
    components = shape.estimate_components(shape.model_shape(TINY), 16, 0, tied=True)
    # q, o: 256x256 each; k, v: 256x128 each; gate, up, down: 256x512 each; two norms of 256.
    linear = 2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 512
    assert components["layer"] == linear * 2.0 + 2 * 256 * 2.0
    assert components["lm_head"] == 0.0 and components["embedding"] == 1000 * 256 * 2.0


# ---- layout ---------------------------------------------------------------------------------------------------


def test_tensor_parallel_must_divide_heads_and_kv_heads():
    tiny = shape.model_shape(TINY)
    assert layout.tp_problem(tiny, 2, 0) is None
    assert "does not divide the 4 attention heads" in layout.tp_problem(tiny, 3, 0)


def test_nvlink_prefers_tensor_parallelism_and_pcie_pipeline_stages():
    tiny = shape.model_shape(TINY)
    assert layout.choose_layout(tiny, 2, "nvlink", group=0, tp_wanted=None, pp_wanted=None)[:3] == (2, 1, None)
    assert layout.choose_layout(tiny, 2, "pcie", group=0, tp_wanted=None, pp_wanted=None)[:3] == (1, 2, None)


def test_requested_sizes_that_need_more_gpus_are_a_problem():
    tiny = shape.model_shape(TINY)
    _tp, _pp, problem, _notes = layout.choose_layout(tiny, 2, "nvlink", group=0, tp_wanted=2, pp_wanted=2)
    assert problem == "tensor_parallel_size 2 x pipeline_parallel_size 2 needs 4 GPUs, the host has 2"


def test_interconnect_without_nvlink_facts_is_pcie_with_a_note():
    notes = []
    assert layout.interconnect_of(2, None, notes) == "pcie" and "no llmfleet_nvlink facts" in notes[0]
    assert layout.interconnect_of(1, None, []) == "single"
    assert layout.interconnect_of(2, {"all_pairs_p2p_nvlink": True}, []) == "nvlink"


# ---- memory ---------------------------------------------------------------------------------------------------


def test_gpu_memory_is_the_smallest_card():
    mixed = {"gpus": [ONE_24G["gpus"][0], dict(ONE_24G["gpus"][0], index=1, memory_total_mib=12288)]}
    assert memory.gpu_memory(mixed)[1] == 12288 * memory.MIB
    with pytest.raises(PlanError, match="no GPUs in gpu_facts"):
        memory.gpu_memory({"gpus": []})


def test_batched_tokens_default_follows_vllm_by_card_size():
    assert memory.default_batched_tokens(ONE_24G["gpus"], 24 * memory.GIB) == 2048
    assert memory.default_batched_tokens([{"name": "NVIDIA H200"}], 140 * memory.GIB) == 8192
    assert memory.default_batched_tokens([{"name": "NVIDIA A100-SXM4-80GB"}], 80 * memory.GIB) == 2048


def test_stage_kv_cache_is_the_budget_left_in_whole_blocks():
    tiny = shape.model_shape(TINY)
    components = shape.estimate_components(tiny, 16, 0, tied=True)
    [stage] = memory.stage_plans(tiny, components, scale=1.0, tp=1, pp=1, quantized=False, kv_value_bytes=2,
                                 budget=memory.GIB, batched_tokens=2048)
    assert stage["kv_bytes_per_token"] == 2 * 4 * 2 * 64 * 2
    assert stage["kv_budget_bytes"] == memory.GIB - stage["weights_bytes"] - stage["reserve_bytes"]
    assert stage["kv_tokens"] % memory.KV_BLOCK_TOKENS == 0
    assert 0 <= stage["kv_budget_bytes"] - stage["kv_tokens"] * stage["kv_bytes_per_token"] < (
        memory.KV_BLOCK_TOKENS * stage["kv_bytes_per_token"])


# ---- the vllm_service role's adapter ------------------------------------------------------------------------


def test_visible_devices_as_indices_limit_the_gpus_and_uuids_do_not():
    assert [card["index"] for card in plan.service_gpus(TWO_24G, "1")["gpus"]] == [1]
    assert plan.service_gpus(TWO_24G, "GPU-0f3c") is TWO_24G
    assert plan.service_gpus(TWO_24G, "") is TWO_24G


def test_required_nvlink_plans_tensor_parallelism_over_it():
    assert plan.service_links({"all_pairs_p2p_nvlink": False}, True)["all_pairs_p2p_nvlink"] is True
    assert plan.service_links(None, "false") is None


def test_service_plan_maps_the_roles_settings_like_the_filter_arguments():
    settings = {"quantization": "", "dtype": "", "kv_cache_dtype": "auto", "gpu_memory_utilization": 0.92,
                "tensor_parallel_size": "auto", "pipeline_parallel_size": "auto", "max_model_len": "auto",
                "max_num_seqs": None, "max_num_batched_tokens": "auto", "max_num_seqs_cap": 8,
                "cuda_visible_devices": "0", "nvlink_required": True, "weight_bytes": 0}
    planned = plan.service_plan(TINY, TWO_24G, None, settings)
    direct = plan.plan(TINY, ONE_24G, {"all_pairs_p2p_nvlink": True}, max_num_seqs_cap=8)
    assert planned == direct
    assert planned["gpus_used"] == 1 and planned["max_model_len"] == 512 and planned["max_num_seqs"] == 8


def test_service_plan_leaves_unknown_quantization_and_dtype_to_auto():
    settings = {"quantization": "fp8", "dtype": "something", "nvlink_required": False}
    assert plan.service_plan(TINY, ONE_24G, None, settings) == plan.plan(TINY, ONE_24G, None)


def test_the_reference_model_plans_the_same_through_the_adapter():
    config = json.loads((FIXTURES / "llama-3.3-70b-instruct-awq.json").read_text())
    settings = {"tensor_parallel_size": 2, "nvlink_required": True, "weight_bytes": 39_770_000_000}
    planned = plan.service_plan(config, TWO_24G, None, settings)
    assert planned == plan.plan(config, TWO_24G, {"all_pairs_p2p_nvlink": True}, weight_bytes=39_770_000_000,
                                tensor_parallel_size="2")
    assert planned["tensor_parallel_size"] == 2 and planned["interconnect"] == "nvlink"


# ---- plan's steps -----------------------------------------------------------------------------------------------


def test_auto_context_is_the_kv_cache_rounded_down_and_bounded_by_the_model():
    common = {"kv_per_token": 1024, "kv_cache_bytes": 0, "kv_dtype": "auto", "where": "one GPU", "loaded_weights": 0}
    assert plan.context_length(None, 131072, kv_tokens=70000, **common) == (69632, None)
    assert plan.context_length(None, 8192, kv_tokens=70000, **common) == (8192, None)
    length, problem = plan.context_length(None, 131072, kv_tokens=1500, **common)
    assert length == 0 and "less than the 2048-token minimum context" in problem


def test_requested_context_is_checked_against_the_model_and_the_kv_cache():
    common = {"kv_per_token": 1024, "kv_cache_bytes": 0, "kv_dtype": "fp8", "where": "one GPU", "loaded_weights": 0}
    assert plan.context_length(8192, 131072, kv_tokens=70000, **common) == (8192, None)
    _length, problem = plan.context_length(8192, 4096, kv_tokens=70000, **common)
    assert "longer than the model's own limit of 4096" in problem
    assert "lower max_model_len to 5120 or less" in plan.context_length(8192, 131072, kv_tokens=5500, **common)[1]


def test_the_share_outside_the_budget_must_hold_the_cuda_context_and_graphs():
    gib = memory.GIB
    assert plan.outside_budget_problem(0.92, outside=2 * gib, gpu_bytes=24 * gib, cuda_visible=23 * gib) is None
    problem = plan.outside_budget_problem(0.99, outside=gib // 4, gpu_bytes=24 * gib, cuda_visible=23 * gib)
    assert "lower gpu_memory_utilization to 0.95" in problem


def test_marlin_kernels_from_ampere_on():
    notes = []
    assert plan.quantization_flag("awq", [{"name": "NVIDIA GeForce RTX 3090"}], "RTX 3090", notes) == "awq_marlin"
    assert plan.quantization_flag("gptq", [{"name": "Tesla V100"}], "Tesla V100", notes) == "gptq"
    assert plan.quantization_flag("none", [], "x", notes) is None
    assert len(notes) == 1 and "Marlin kernels need an Ampere" in notes[0]
