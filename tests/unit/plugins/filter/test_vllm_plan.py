"""vllm_plan: the seed models on the reference and variant hosts, the layout rules, and the errors.

Model configs are the real config.json files of those models (fixtures/); GPU facts are shaped like
llmfleet.workstation.gpu_facts and nvlink_status return them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.module_utils import _internal as module_utils_internal

# Importing controller code (the filter raises ansible.errors.AnsibleFilterError) flips ansible-core's process-wide
# is_controller switch, after which module.warn() goes to the controller's display instead of the module result:
# module tests collected after this file would lose their warnings. The filter does not need the switch.
_WAS_CONTROLLER = module_utils_internal.is_controller
from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.llmfleet.workstation.plugins.module_utils.planner import layout, memory  # noqa: E402
from ansible_collections.llmfleet.workstation.plugins.filter.vllm_plan import FilterModule, vllm_plan  # noqa: E402

module_utils_internal.is_controller = _WAS_CONTROLLER

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GB = 10**9
GIB = 1024**3
# Weights on disk: DESIGN.md's figure for the reference model; the others are left to the estimate.
LLAMA_70B_AWQ_BYTES = 40 * GB


def config(name):
    return json.loads((FIXTURES / ("%s.json" % name)).read_text())


def gpus(count, memory_mib=24576, name="NVIDIA GeForce RTX 3090"):
    return {"gpu_count": count, "gpus": [
        {"index": index, "name": name, "memory_total_mib": memory_mib, "pci_bus_id": "00000000:%02X:00.0" % index}
        for index in range(count)]}


NVLINK = {"gpu_count": 2, "nvlink_present": True, "all_pairs_p2p_nvlink": True}
PCIE = {"gpu_count": 2, "nvlink_present": False, "all_pairs_p2p_nvlink": False}
DUAL_3090 = gpus(2)
DUAL_4090 = gpus(2, 24564, "NVIDIA GeForce RTX 4090")
SINGLE_5090 = gpus(1, 32607, "NVIDIA GeForce RTX 5090")


def test_the_filter_is_registered():
    assert FilterModule().filters() == {"vllm_plan": vllm_plan}


def test_llama_70b_awq_on_two_3090s_needs_0_95_of_the_memory_for_8k():
    # Calibrated on the engine (docs/hardware/2026-12-02-H200-engine.md): per GPU the weights take 19.2 GiB as
    # loaded, the first start's activation peak about 1 GiB. At 0.92 the KV cache holds under 8192 tokens ...
    tight = vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_3090, NVLINK, weight_bytes=LLAMA_70B_AWQ_BYTES,
                      max_model_len=8192)
    assert tight["fits"] is False
    assert 7000 < tight["kv_cache_tokens"] < 8192
    assert "lower max_model_len to 7168 or less, or set kv_cache_dtype fp8" in tight["reason"]
    # ... and at 0.95 (1.2 GiB per card stays outside the budget for the CUDA context and graphs) it fits 8K.
    plan = vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_3090, NVLINK, weight_bytes=LLAMA_70B_AWQ_BYTES,
                     max_model_len=8192, gpu_memory_utilization=0.95)
    assert plan["fits"] is True, plan["reason"]
    assert (plan["tensor_parallel_size"], plan["pipeline_parallel_size"], plan["interconnect"]) == (2, 1, "nvlink")
    # 2 x 80 layers x 8 KV heads x 128 x 2 bytes; each GPU keeps half the KV heads.
    assert plan["kv_bytes_per_token"] == 327680
    assert plan["kv_bytes_per_token_per_gpu"] == 163840
    # Half of 40 GB per GPU, and 3.3% more for the layers repacked for Marlin.
    assert 20 * GB < plan["per_gpu"]["weights_bytes"] < 20.8 * GB
    assert 3.5 * GB < plan["kv_cache_bytes"] < 5 * GB
    assert plan["kv_cache_tokens"] >= 8192
    assert plan["max_model_len"] == 8192
    assert 1.0 <= plan["max_concurrency_at_max_model_len"] < 2
    assert plan["vllm_args"] == {
        "--tensor-parallel-size": 2, "--pipeline-parallel-size": 1, "--max-model-len": 8192,
        "--max-num-seqs": plan["max_num_seqs"], "--max-num-batched-tokens": 2048, "--gpu-memory-utilization": 0.95,
        "--quantization": "awq_marlin"}
    assert plan["vllm_argv"][:6] == ["--tensor-parallel-size", "2", "--pipeline-parallel-size", "1",
                                     "--max-model-len", "8192"]
    assert plan["notes"] == []


def test_the_budget_is_the_memory_cuda_sees_times_the_utilization():
    plan = vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_3090, NVLINK, weight_bytes=LLAMA_70B_AWQ_BYTES)
    cuda_visible = 24576 * 1024**2 - memory.DRIVER_RESERVED_BYTES
    assert plan["cuda_visible_memory_bytes"] == cuda_visible
    assert plan["budget_bytes_per_gpu"] == int(cuda_visible * 0.92)
    per_gpu = plan["per_gpu"]
    assert per_gpu["reserve_bytes"] == (per_gpu["activation_bytes"] + per_gpu["non_torch_bytes"]
                                        + memory.SAFETY_MARGIN_BYTES)
    assert per_gpu["kv_budget_bytes"] == plan["budget_bytes_per_gpu"] - per_gpu["weights_bytes"] - per_gpu[
        "reserve_bytes"]
    assert plan["kv_cache_bytes"] == plan["kv_cache_tokens"] * plan["kv_bytes_per_token"]
    assert 2 * per_gpu["kv_budget_bytes"] - 16 * 327680 < plan["kv_cache_bytes"] <= 2 * per_gpu["kv_budget_bytes"]
    assert plan["kv_cache_tokens"] == per_gpu["kv_budget_bytes"] // (163840 * 16) * 16


def test_llama_70b_auto_context_is_the_largest_that_fits():
    plan = vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_3090, NVLINK, weight_bytes=LLAMA_70B_AWQ_BYTES)
    assert plan["fits"] is True
    assert plan["model_max_model_len"] == 131072
    assert plan["max_model_len"] % 1024 == 0
    assert plan["max_model_len"] <= plan["kv_cache_tokens"] < plan["max_model_len"] + 1024
    assert plan["max_num_seqs"] == plan["kv_cache_tokens"] // 2048


def test_the_weight_estimate_matches_the_real_checkpoint():
    plan = vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_3090, NVLINK)
    assert plan["weight_bytes_estimated"] is True
    # casperhansen/llama-3.3-70b-instruct-awq is about 40 GB on disk.
    assert 39 * GB < plan["weight_bytes"] < 41 * GB
    assert any("weights estimated" in note for note in plan["notes"])


def test_deepseek_r1_distill_llama_70b_awq_on_two_3090s():
    plan = vllm_plan(config("deepseek-r1-distill-llama-70b-awq"), DUAL_3090, NVLINK, max_model_len=8192)
    assert plan["fits"] is True, plan["reason"]
    assert (plan["tensor_parallel_size"], plan["kv_bytes_per_token"]) == (2, 327680)
    assert plan["max_model_len"] == 8192


def test_qwen_coder_32b_awq_runs_8_to_16_sequences_at_8k_on_two_3090s():
    plan = vllm_plan(config("qwen2.5-coder-32b-instruct-awq"), DUAL_3090, NVLINK, max_model_len=8192)
    assert plan["fits"] is True, plan["reason"]
    assert plan["kv_bytes_per_token"] == 2 * 64 * 8 * 128 * 2
    assert 18 * GB < plan["weight_bytes"] < 20.5 * GB
    assert 8 <= plan["max_concurrency_at_max_model_len"] <= 16
    assert plan["max_num_seqs"] >= 8


def test_qwen_72b_awq_on_two_3090s_needs_an_fp8_kv_cache_for_8k():
    # Its larger vocabulary and MLP leave about 6400 tokens at 0.95; an fp8 KV cache holds twice as many.
    plan = vllm_plan(config("qwen2.5-72b-instruct-awq"), DUAL_3090, NVLINK, max_model_len=8192,
                     gpu_memory_utilization=0.95)
    assert plan["fits"] is False
    assert "set kv_cache_dtype fp8 to double it" in plan["reason"]
    fp8 = vllm_plan(config("qwen2.5-72b-instruct-awq"), DUAL_3090, NVLINK, max_model_len=8192,
                    gpu_memory_utilization=0.95, kv_cache_dtype="fp8")
    assert fp8["fits"] is True, fp8["reason"]
    assert fp8["tensor_parallel_size"] == 2
    assert fp8["kv_cache_tokens"] >= 8192


def test_qwen_72b_awq_unpadded_intermediate_size_cannot_split_awq_groups_in_two():
    # The original 29568 leaves 14784 inputs per GPU, not a whole number of 128-weight groups: Qwen padded
    # the AWQ release to 29696 for this reason. The planner falls back to pipeline parallelism and says so.
    model = dict(config("qwen2.5-72b-instruct-awq"), intermediate_size=29568)
    plan = vllm_plan(model, DUAL_3090, NVLINK)
    assert (plan["tensor_parallel_size"], plan["pipeline_parallel_size"]) == (1, 2)
    assert plan["notes"][0].startswith("TP 2 leaves 14784 of the intermediate_size's 29568 inputs per GPU")
    assert plan["notes"][0].endswith("using TP 1 x PP 2 instead")


def test_single_5090_runs_qwen_coder_32b_awq_at_tp1():
    plan = vllm_plan(config("qwen2.5-coder-32b-instruct-awq"), SINGLE_5090, None)
    assert plan["fits"] is True, plan["reason"]
    assert (plan["tensor_parallel_size"], plan["pipeline_parallel_size"], plan["interconnect"]) == (1, 1, "single")
    assert plan["kv_bytes_per_token_per_gpu"] == plan["kv_bytes_per_token"]
    assert plan["max_model_len"] == 32768  # the model's own limit fits
    assert "--quantization" in plan["vllm_args"]


def test_dual_4090_over_pcie_uses_pipeline_parallelism():
    # Pipeline stages keep the LM head's activation on the last GPU: 8K needs an fp8 KV cache there.
    plan = vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_4090, PCIE, weight_bytes=LLAMA_70B_AWQ_BYTES,
                     max_model_len=8192, gpu_memory_utilization=0.95, kv_cache_dtype="fp8")
    assert plan["fits"] is True, plan["reason"]
    assert (plan["tensor_parallel_size"], plan["pipeline_parallel_size"], plan["interconnect"]) == (1, 2, "pcie")
    assert [stage["layers"] for stage in plan["stages"]] == [40, 40]
    # Each stage holds half the layers, and so half of each token's KV cache, but all KV heads.
    assert plan["kv_bytes_per_token_per_gpu"] == 2 * 40 * 8 * 128 * 1
    assert plan["vllm_args"]["--pipeline-parallel-size"] == 2
    assert plan["vllm_args"]["--tensor-parallel-size"] == 1


def test_pcie_pair_without_nvlink_facts_is_assumed_pcie_and_says_so():
    plan = vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_4090, None, weight_bytes=LLAMA_70B_AWQ_BYTES)
    assert plan["pipeline_parallel_size"] == 2
    assert "no llmfleet_nvlink facts given" in plan["notes"][0]


def test_70b_on_one_24gb_card_does_not_fit_and_says_by_how_much():
    plan = vllm_plan(config("llama-3.3-70b-instruct-awq"), gpus(1), None, weight_bytes=LLAMA_70B_AWQ_BYTES)
    assert plan["fits"] is False
    assert plan["vllm_args"] == {} and plan["vllm_argv"] == [] and plan["max_model_len"] == 0
    reason = plan["reason"]
    assert reason.startswith("Does not fit: on one NVIDIA GeForce RTX 3090 (24.0 GiB) the weights take 38.4 GiB per "
                             "GPU (38.4 GiB in all, TP 1 x PP 1)")
    assert "vLLM's budget per GPU is 21.7 GiB (0.92 of the 23.6 GiB CUDA sees)" in reason
    assert "leaving -18.9 GiB for the KV cache" in reason
    assert reason.endswith("use at least 2 GPUs of this size")


def test_explicit_context_longer_than_the_kv_cache_does_not_fit():
    plan = vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_3090, NVLINK, weight_bytes=LLAMA_70B_AWQ_BYTES,
                     max_model_len=32768)
    assert plan["fits"] is False
    assert plan["reason"].startswith("Does not fit: max_model_len 32768 needs 10.0 GiB of KV cache (327680 bytes per "
                                     "token) but the KV cache holds %d tokens" % plan["kv_cache_tokens"])
    assert plan["reason"].endswith("or set kv_cache_dtype fp8 to double it")


def test_fp8_kv_cache_doubles_the_tokens():
    model = config("llama-3.3-70b-instruct-awq")
    plain = vllm_plan(model, DUAL_3090, NVLINK, weight_bytes=LLAMA_70B_AWQ_BYTES)
    fp8 = vllm_plan(model, DUAL_3090, NVLINK, weight_bytes=LLAMA_70B_AWQ_BYTES, kv_cache_dtype="fp8")
    assert fp8["kv_bytes_per_token"] * 2 == plain["kv_bytes_per_token"]
    assert fp8["kv_cache_tokens"] == pytest.approx(2 * plain["kv_cache_tokens"], abs=16)
    assert fp8["vllm_args"]["--kv-cache-dtype"] == "fp8"


def test_context_longer_than_the_model_allows_does_not_fit():
    plan = vllm_plan(config("qwen2.5-0.5b-instruct"), gpus(1), None, max_model_len=65536)
    assert plan["fits"] is False
    assert plan["reason"] == ("Does not fit: max_model_len 65536 is longer than the model's own limit of 32768 "
                              "tokens (max_position_embeddings): lower max_model_len to 32768 or less")


def test_yarn_scaling_raises_the_models_limit():
    model = dict(config("qwen2.5-coder-32b-instruct-awq"),
                 rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768})
    assert vllm_plan(model, SINGLE_5090, None)["model_max_model_len"] == 131072


def test_odd_head_count_on_four_nvlink_gpus_falls_back_and_says_so():
    # Qwen2.5-0.5B: 14 attention heads, 2 KV heads. TP 4 cannot split 14 heads; TP 2 can.
    plan = vllm_plan(config("qwen2.5-0.5b-instruct"), gpus(4), dict(NVLINK, gpu_count=4))
    assert plan["fits"] is True
    assert (plan["tensor_parallel_size"], plan["pipeline_parallel_size"], plan["gpus_used"]) == (2, 2, 4)
    assert plan["notes"][0] == "TP 4 does not divide the 14 attention heads; using TP 2 x PP 2 instead"
    assert [stage["layers"] for stage in plan["stages"]] == [12, 12]
    assert plan["kv_bytes_per_token_per_gpu"] == 2 * 12 * 1 * 64 * 2


def test_odd_head_count_on_four_pcie_gpus_uses_four_stages():
    plan = vllm_plan(config("qwen2.5-0.5b-instruct"), gpus(4), dict(PCIE, gpu_count=4))
    assert (plan["tensor_parallel_size"], plan["pipeline_parallel_size"]) == (1, 4)
    # Tied embeddings: the last stage holds its own copy of the LM head, so it is the heaviest.
    weights = [stage["weights_bytes"] for stage in plan["stages"]]
    assert weights[0] == weights[3] > weights[1] == weights[2]


def test_more_gpus_than_kv_heads_replicates_them():
    # 8 attention heads, 2 KV heads, TP 4: each GPU keeps a copy of one KV head (vLLM replicates them).
    model = dict(config("qwen2.5-0.5b-instruct"), num_attention_heads=8, num_key_value_heads=2, head_dim=64)
    plan = vllm_plan(model, gpus(4), dict(NVLINK, gpu_count=4))
    assert (plan["tensor_parallel_size"], plan["pipeline_parallel_size"]) == (4, 1)
    assert plan["kv_bytes_per_token_per_gpu"] == 2 * 24 * 1 * 64 * 2


def test_uneven_layers_go_to_the_stages_before_the_last():
    assert layout.pp_layers(61, 4) == [15, 15, 16, 15]
    assert layout.pp_layers(62, 4) == [15, 16, 16, 15]
    assert layout.pp_layers(80, 2) == [40, 40]


def test_explicit_parallel_sizes_are_kept_and_checked():
    plan = vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_3090, PCIE, weight_bytes=LLAMA_70B_AWQ_BYTES,
                     tensor_parallel_size=2)
    assert (plan["tensor_parallel_size"], plan["pipeline_parallel_size"]) == (2, 1)
    assert "tensor parallelism 2 over PCIe" in plan["notes"][0]
    bad = vllm_plan(config("qwen2.5-0.5b-instruct"), gpus(4), NVLINK, tensor_parallel_size=4)
    assert bad["fits"] is False
    assert bad["reason"].startswith("Does not fit: TP 4 does not divide the 14 attention heads on 4 x")


def test_nested_text_config_is_read_and_head_dim_is_not_derived_when_given():
    model = config("gemma-3-27b-it")
    with pytest.raises(AnsibleFilterError, match="lacks 'vocab_size' \\(nor has it in text_config\\)"):
        vllm_plan(model, SINGLE_5090, None)
    model["text_config"].update(vocab_size=262208, max_position_embeddings=131072)
    plan = vllm_plan(model, SINGLE_5090, None, weight_bytes=54 * GB // 2, max_model_len=4096)
    # 2 x 62 layers x 16 KV heads x head_dim 128 (not 5376 / 32 = 168) x 2 bytes.
    assert plan["kv_bytes_per_token"] == 2 * 62 * 16 * 128 * 2


def test_utilization_above_095_is_refused_with_the_reason():
    with pytest.raises(AnsibleFilterError, match="gpu_memory_utilization 0.97 is outside \\(0, 0.95\\]: above 0.95 "
                                                 "the CUDA context and CUDA graphs.*run out of memory under load"):
        vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_3090, NVLINK, gpu_memory_utilization=0.97)


def test_small_gpu_at_095_has_no_room_for_context_and_graphs():
    plan = vllm_plan(config("qwen2.5-0.5b-instruct"), gpus(1, 8192, "NVIDIA GeForce RTX 3070"), None,
                     gpu_memory_utilization=0.95)
    assert plan["fits"] is False
    assert "leaves 0.4 GiB of each 8.0 GiB GPU outside vLLM's budget" in plan["reason"]
    assert plan["reason"].endswith("lower gpu_memory_utilization to 0.86")


@pytest.mark.parametrize("key", ["num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size",
                                 "intermediate_size"])
def test_missing_config_key_names_the_key_and_the_fix(key):
    model = config("llama-3.3-70b-instruct-awq")
    del model[key]
    with pytest.raises(AnsibleFilterError) as error:
        vllm_plan(model, DUAL_3090, NVLINK)
    assert "lacks '%s'" % key in str(error.value)
    assert "from_json" in str(error.value)


@pytest.mark.parametrize("facts", [{}, {"gpu_count": 0, "gpus": []}])
def test_no_gpus_is_an_error_with_the_fix(facts):
    with pytest.raises(AnsibleFilterError, match="no GPUs in gpu_facts: run llmfleet.workstation.gpu_facts"):
        vllm_plan(config("llama-3.3-70b-instruct-awq"), facts, None)


def test_gpu_without_memory_total_is_an_error():
    facts = gpus(2)
    facts["gpus"][1]["memory_total_mib"] = None
    with pytest.raises(AnsibleFilterError, match="GPU 1 \\(NVIDIA GeForce RTX 3090\\) has no memory_total_mib"):
        vllm_plan(config("llama-3.3-70b-instruct-awq"), facts, NVLINK)


def test_config_that_is_not_a_dict_is_an_error():
    with pytest.raises(AnsibleFilterError, match="must be the model's config.json as a dict, got str"):
        vllm_plan("config.json", DUAL_3090, NVLINK)


def test_quantization_that_contradicts_the_config_is_an_error():
    with pytest.raises(AnsibleFilterError, match="declares quant_method awq.*set quantization to auto or awq"):
        vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_3090, NVLINK, quantization="none")
    with pytest.raises(AnsibleFilterError, match="gptq was asked for but the model's config declares quant_method awq"):
        vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_3090, NVLINK, quantization="gptq")


def test_mixture_of_experts_needs_the_weight_size():
    model = dict(config("qwen2.5-0.5b-instruct"), num_experts=64)
    with pytest.raises(AnsibleFilterError, match="mixture of experts.*pass weight_bytes"):
        vllm_plan(model, gpus(1), None)
    assert vllm_plan(model, gpus(1), None, weight_bytes=GB)["fits"] is True


def test_pre_ampere_gpus_get_the_plain_awq_kernel():
    plan = vllm_plan(config("qwen2.5-coder-32b-instruct-awq"), gpus(2, 24576, "NVIDIA TITAN RTX"), PCIE,
                     max_model_len=4096)
    assert plan["vllm_args"]["--quantization"] == "awq"
    assert "Marlin kernels need an Ampere" in plan["notes"][-1]


def test_values_from_jinja_strings_are_accepted():
    plan = vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_3090, NVLINK, weight_bytes=str(LLAMA_70B_AWQ_BYTES),
                     max_model_len="4096", max_num_seqs="4", gpu_memory_utilization="0.9",
                     max_num_batched_tokens="2048")
    assert (plan["max_model_len"], plan["max_num_seqs"], plan["gpu_memory_utilization"]) == (4096, 4, 0.9)
    assert plan["max_num_batched_tokens"] == 2048
    with pytest.raises(AnsibleFilterError, match="max_model_len must be a whole number, got 'long'"):
        vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_3090, NVLINK, max_model_len="long")


def collections_root():
    """The directory conftest put on sys.path, holding ansible_collections/llmfleet/workstation."""
    for entry in sys.path:
        if Path(entry, "ansible_collections", "llmfleet", "workstation").is_dir():
            return entry
    raise RuntimeError("conftest did not link the collection")


def test_the_filter_runs_in_ansible_with_the_documented_call(tmp_path):
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({"model_config": config("qwen2.5-coder-32b-instruct-awq"), "gpu": DUAL_3090,
                                     "nvlink": NVLINK}))
    ansible = Path(sys.executable).with_name("ansible")
    completed = subprocess.run(
        [str(ansible), "localhost", "-c", "local", "-m", "ansible.builtin.debug", "-e", "@%s" % variables,
         "-a", "msg={{ model_config | llmfleet.workstation.vllm_plan(gpu, nvlink, max_model_len=8192) "
               "| to_json }}"],
        check=False, capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
        env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root(), ANSIBLE_STDOUT_CALLBACK="json",
                 ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_LOCALHOST_WARNING="0",
                 ANSIBLE_INVENTORY_UNPARSED_WARNING="0"),
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    message = json.loads(completed.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]
    plan = json.loads(message)
    assert plan["fits"] is True
    assert plan["vllm_args"]["--max-model-len"] == 8192
    assert plan == json.loads(json.dumps(vllm_plan(config("qwen2.5-coder-32b-instruct-awq"), DUAL_3090, NVLINK,
                                                   max_model_len=8192)))


# The tiny Llama the serving scenario makes (tests/harness/make_tiny_model.py): float32, 512 positions.
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "head_dim": 64, "hidden_size": 256,
    "intermediate_size": 512, "max_position_embeddings": 512, "num_attention_heads": 4, "num_hidden_layers": 2,
    "num_key_value_heads": 2, "rope_scaling": None, "tie_word_embeddings": False, "torch_dtype": "float32",
    "vocab_size": 500,
}
TINY_LLAMA_BYTES = 5749928


def test_a_model_whose_own_limit_is_under_2048_fits_at_that_limit():
    plan = vllm_plan(TINY_LLAMA, SINGLE_5090, None, weight_bytes=TINY_LLAMA_BYTES, dtype="float32",
                     max_num_seqs_cap=8)
    assert plan["fits"] is True, plan["reason"]
    assert plan["max_model_len"] == 512
    assert plan["max_num_seqs"] == 8
    # float32 served as float32: 2 x 2 layers x 2 KV heads x 64 x 4 bytes.
    assert plan["kv_bytes_per_token"] == 2048
    assert plan["vllm_argv"] == ["--tensor-parallel-size", "1", "--pipeline-parallel-size", "1",
                                 "--max-model-len", "512", "--max-num-seqs", "8", "--max-num-batched-tokens", "2048",
                                 "--gpu-memory-utilization", "0.92"]
    assert plan["notes"] == []


def test_a_float32_checkpoint_is_served_in_16_bits_unless_dtype_says_float32():
    auto = vllm_plan(TINY_LLAMA, SINGLE_5090, None, weight_bytes=TINY_LLAMA_BYTES)
    fp32 = vllm_plan(TINY_LLAMA, SINGLE_5090, None, weight_bytes=TINY_LLAMA_BYTES, dtype="float32")
    assert (auto["kv_bytes_per_token"], fp32["kv_bytes_per_token"]) == (1024, 2048)
    assert auto["weight_bytes"] == TINY_LLAMA_BYTES // 2
    assert fp32["weight_bytes"] == TINY_LLAMA_BYTES
    assert auto["notes"] == ["the float32 checkpoint's 0.0 GiB on disk are served as 2-byte values: 0.0 GiB in GPU "
                             "memory"]
    # Without a cap, max_num_seqs auto stops at vLLM's default.
    assert auto["max_num_seqs"] == 256
    with pytest.raises(AnsibleFilterError, match="dtype must be one of auto, float16"):
        vllm_plan(TINY_LLAMA, SINGLE_5090, None, dtype="int8")


def test_the_seqs_cap_lowers_auto_but_never_an_explicit_value():
    model = config("qwen2.5-coder-32b-instruct-awq")
    capped = vllm_plan(model, DUAL_3090, NVLINK, max_model_len=8192, max_num_seqs_cap=16)
    assert capped["max_num_seqs"] == 16
    explicit = vllm_plan(model, DUAL_3090, NVLINK, max_model_len=8192, max_num_seqs=32, max_num_seqs_cap=16)
    assert explicit["max_num_seqs"] == 32


# Real GPU facts recorded by tests/hardware on 2026-11-22 (docs/hardware/): two H200 on NVSwitch, one H100.
DUAL_H200 = gpus(2, 143771, "NVIDIA H200")
SINGLE_H100 = gpus(1, 81559, "NVIDIA H100 80GB HBM3")


def test_llama_70b_awq_on_two_h200s_serves_its_full_context():
    plan = vllm_plan(config("llama-3.3-70b-instruct-awq"), DUAL_H200, NVLINK, weight_bytes=LLAMA_70B_AWQ_BYTES)
    assert plan["fits"] is True, plan["reason"]
    assert (plan["tensor_parallel_size"], plan["pipeline_parallel_size"], plan["interconnect"]) == (2, 1, "nvlink")
    # CUDA sees 616 MiB less than NVML reports on an H200 (measured, tests/hardware/check_engine.sh).
    budget = int((143771 - 616) * 1024**2 * 0.92)
    assert plan["budget_bytes_per_gpu"] == budget
    assert plan["max_num_batched_tokens"] == 8192  # vLLM's own default on cards of 70 GiB and more
    # About 138 GB of budget less 20.5 GB of weights and 1.8 GB of reserve: 115-117 GB of KV cache per GPU,
    # about 705000 tokens at 163840 bytes per token per GPU.
    assert 115 * GB < plan["per_gpu"]["kv_budget_bytes"] < 117 * GB
    assert 700000 < plan["kv_cache_tokens"] < 715000
    assert plan["max_model_len"] == 131072  # the model's own limit
    assert 5.3 < plan["max_concurrency_at_max_model_len"] < 5.5
    assert plan["max_num_seqs"] == 256


def test_llama_70b_awq_on_one_h100_fits_with_a_shorter_context():
    plan = vllm_plan(config("llama-3.3-70b-instruct-awq"), SINGLE_H100, None, weight_bytes=LLAMA_70B_AWQ_BYTES)
    assert plan["fits"] is True, plan["reason"]
    assert (plan["tensor_parallel_size"], plan["interconnect"]) == (1, "single")
    # 0.92 x 80943 MiB = 78.1 GB, less 41.2 GB of weights as loaded and 2.7 GB of reserve: about 34 GB,
    # 104000 tokens.
    assert 33 * GB < plan["kv_cache_bytes"] < 35 * GB
    assert 100000 < plan["kv_cache_tokens"] < 108000
    assert plan["max_model_len"] == plan["kv_cache_tokens"] // 1024 * 1024
    assert plan["max_model_len"] < 131072
