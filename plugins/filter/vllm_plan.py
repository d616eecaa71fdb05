# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plan a vLLM service for one host: parallelism, KV cache, context length and concurrency.

Pure functions of a model's config.json and the host's llmfleet_gpu / llmfleet_nvlink facts; no I/O.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.module_utils.planner import PlanError
from ansible_collections.llmfleet.workstation.plugins.module_utils.planner.plan import plan

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


def vllm_plan(config: Dict[str, Any], gpu_facts: Dict[str, Any], nvlink_facts: Optional[Dict[str, Any]] = None,
              **settings: Any) -> Dict[str, Any]:
    """The plan (see RETURN); the planner is plugins/module_utils/planner."""
    try:
        return plan(config, gpu_facts, nvlink_facts, **settings)
    except PlanError as error:
        raise AnsibleFilterError(str(error)) from error
    except TypeError as error:  # an argument the planner does not take
        raise AnsibleFilterError("vllm_plan: %s" % error) from error


class FilterModule:
    """llmfleet.workstation's planning filters."""

    def filters(self):
        return {"vllm_plan": vllm_plan}
