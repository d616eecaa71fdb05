#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: llm_benchmark
short_description: Measure time to first token and decode throughput of an OpenAI-compatible LLM endpoint
version_added: 0.1.0
description:
  - Sends streaming C(/v1/completions) requests to an OpenAI-compatible endpoint (vLLM's) and times them from
    the server-sent events it streams back - time to first token (TTFT), the decode rate of each stream after
    its first token, and the aggregate rate of all streams together - at each level of O(concurrency).
  - Each level runs O(repeats) rounds; a round starts that many requests at the same moment. Token counts are
    the server's own (C(usage), requested with C(stream_options.include_usage)) where it sends them.
  - Every prompt starts with a unique request id, so vLLM's prefix cache cannot serve one request's prompt from
    another's and flatter the TTFT.
  - Optionally checks an envelope (O(min_decode_tokens_per_second), O(max_ttft_ms),
    O(min_aggregate_tokens_per_second)) and fails with the measured and required numbers.
  - Uses only the Python standard library and Ansible's URL helpers; run it where the endpoint is reachable,
    typically on the controller (C(delegate_to) C(localhost)).
options:
  base_url:
    description:
      - The endpoint's OpenAI base URL, ending in C(/v1), for example C(http://ws-3090-a:8000/v1).
    type: str
    required: true
  api_key:
    description:
      - Bearer token the server requires (vLLM's C(--api-key)). Unset sends no C(Authorization) header.
    type: str
  model:
    description:
      - Model name as the server serves it (vLLM's C(--served-model-name); C(GET /v1/models) lists it).
    type: str
    required: true
  prompt_tokens:
    description:
      - Length of each prompt, in tokens (about - the prompt is common one-token words). The server's count is
        returned as RV(levels[].prompt_tokens).
    type: int
    default: 1024
  max_tokens:
    description:
      - Tokens to generate per request. With O(ignore_eos=true) every request generates exactly this many.
    type: int
    default: 256
  ignore_eos:
    description:
      - Ask the server to generate O(max_tokens) tokens even past an end-of-sequence token (a vLLM extension to the
        OpenAI API), so that runs are comparable. Set false for servers that reject unknown fields.
    type: bool
    default: true
  concurrency:
    description:
      - Levels of concurrency to measure, each a number of requests started at once.
    type: list
    elements: int
    default: [1, 4]
  repeats:
    description:
      - Rounds per concurrency level.
    type: int
    default: 3
  warmup_requests:
    description:
      - Requests sent (one at a time) and discarded before measuring, so that first-request costs (CUDA graph
        warm-up, connection set-up) do not count.
    type: int
    default: 1
  timeout:
    description:
      - Seconds to wait for the server on each request (connect, and between two chunks of the stream).
    type: float
    default: 120
  validate_certs:
    description:
      - Verify the server's TLS certificate for C(https) URLs.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the certificate authority that signed the server's certificate, for an C(https) O(base_url)
        served with a private CA (a router or gateway of the fleet). Unset trusts the controller's system CAs.
    type: path
  min_decode_tokens_per_second:
    description:
      - Fail unless the median decode rate of one stream, at the lowest concurrency measured, is at least this.
      - Reference build (2x RTX 3090, Llama 3.3 70B AWQ) - 25 to 30 tok/s.
    type: float
  max_ttft_ms:
    description:
      - Fail unless the median time to first token, at the lowest concurrency measured, is at most this.
      - Reference build at a 1K-token prompt - 250 to 350 ms.
    type: float
  min_aggregate_tokens_per_second:
    description:
      - Fail unless the median aggregate rate (all streams of a round together), at the highest concurrency
        measured, is at least this.
      - Reference build at 4 concurrent requests - 60 to 90 tok/s.
    type: float
notes:
  - Requests generate real load on the server - O(repeats) x the sum of O(concurrency) requests, plus the warm-up,
    each of O(prompt_tokens) + O(max_tokens) tokens. Run it when the server may be busy for that long.
  - Decode rate is (tokens - 1) / (time of last token - time of first token) per stream; aggregate rate is all
    tokens of a round / (last stream's end - first stream's start).
  - A server that batches several tokens into one event (vLLM's C(--stream-interval)) still gives the right
    decode rate where it reports C(usage); without it, events are counted as tokens.
requirements:
  - Python 3.8+ on the host that runs the task; no extra Python packages
attributes:
  check_mode:
    support: full
    description:
      - Check mode runs the benchmark as well - it sends the same requests to the server (which does the same
        work) and changes nothing on any host; the measurements are returned as in a normal run.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
seealso:
  - name: vLLM OpenAI-compatible server
    description: The completions API, C(stream_options) and vLLM's extra sampling parameters such as C(ignore_eos).
    link: https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html
author:
  - llmfleet.workstation contributors (@llmfleet)
"""

EXAMPLES = r"""
- name: Benchmark the workstation's vLLM endpoint from the controller
  llmfleet.workstation.llm_benchmark:
    base_url: "http://{{ ansible_host }}:8000/v1"
    api_key: "{{ vllm_service_api_key }}"
    model: llama-3.3-70b
    prompt_tokens: 1024
    max_tokens: 256
    concurrency: [1, 4]
  delegate_to: localhost
  register: bench

- name: Hold the reference build to its envelope
  llmfleet.workstation.llm_benchmark:
    base_url: "http://{{ ansible_host }}:8000/v1"
    model: llama-3.3-70b
    min_decode_tokens_per_second: 25
    max_ttft_ms: 350
    min_aggregate_tokens_per_second: 60
  delegate_to: localhost

- name: Show single-stream decode
  ansible.builtin.debug:
    msg: "{{ bench.levels[0].decode_tokens_per_second.median }} tok/s"
"""

RETURN = r"""
url:
  description: The completions URL the requests went to.
  returned: always
  type: str
  sample: http://192.0.2.11:8000/v1/completions
model:
  description: The model asked for.
  returned: always
  type: str
  sample: llama-3.3-70b
prompt_tokens_requested:
  description: The prompt length asked for (about).
  returned: always
  type: int
  sample: 1024
max_tokens:
  description: Tokens asked for per request.
  returned: always
  type: int
  sample: 256
levels:
  description: One entry per concurrency level, in the order of O(concurrency).
  returned: always
  type: list
  elements: dict
  contains:
    concurrency:
      description: Requests started at once.
      type: int
      sample: 4
    requests:
      description: Requests measured at this level (concurrency x repeats).
      type: int
      sample: 12
    rounds:
      description: Rounds measured.
      type: int
      sample: 3
    completion_tokens:
      description: Tokens generated at this level, all requests together.
      type: int
      sample: 3072
    prompt_tokens:
      description: Median prompt length as the server counted it (C(usage.prompt_tokens)); null without usage.
      type: int
      sample: 1031
    ttft_ms:
      description: Time to first token, ms - C(median), C(min), C(max), C(spread_pct) ((max - min) / median).
      type: dict
      sample: {median: 291.4, min: 270.2, max: 336.0, spread_pct: 22.6}
    decode_tokens_per_second:
      description: Decode rate of one stream after its first token, tok/s - C(median), C(min), C(max), C(spread_pct).
      type: dict
      sample: {median: 27.31, min: 26.9, max: 27.62, spread_pct: 2.6}
    aggregate_tokens_per_second:
      description: Tokens of all streams of a round per second of the round, tok/s - C(median), C(min), C(max),
        C(spread_pct) over the rounds.
      type: dict
      sample: {median: 78.4, min: 76.0, max: 80.1, spread_pct: 5.2}
envelope:
  description:
    - One entry per envelope option set - C(check) (the option), C(concurrency) (the level it was judged at),
      C(measured), C(required), C(passed) and C(message).
  returned: always
  type: list
  elements: dict
  sample:
    - check: min_decode_tokens_per_second
      concurrency: 1
      measured: 27.31
      required: 25.0
      passed: true
      message: decode 27.31 tok/s per stream (median of 3 requests at concurrency 1), required at least 25.0 tok/s
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmfleet.workstation.plugins.module_utils.openai_bench import BenchError, run_benchmark

# Options named after tokens count tokens; they are not secrets (no_log False answers validate-modules).
ARGUMENT_SPEC = {
    "base_url": {"type": "str", "required": True},
    "api_key": {"type": "str", "no_log": True},
    "model": {"type": "str", "required": True},
    "prompt_tokens": {"type": "int", "no_log": False, "default": 1024},
    "max_tokens": {"type": "int", "no_log": False, "default": 256},
    "ignore_eos": {"type": "bool", "default": True},
    "concurrency": {"type": "list", "elements": "int", "default": [1, 4]},
    "repeats": {"type": "int", "default": 3},
    "warmup_requests": {"type": "int", "default": 1},
    "timeout": {"type": "float", "default": 120},
    "validate_certs": {"type": "bool", "default": True},
    "ca_path": {"type": "path"},
    "min_decode_tokens_per_second": {"type": "float", "no_log": False},
    "max_ttft_ms": {"type": "float"},
    "min_aggregate_tokens_per_second": {"type": "float", "no_log": False},
}


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = run_benchmark(module.params)
    except BenchError as error:
        module.fail_json(msg=str(error), changed=False)
    if result.get("failed"):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
