"""llm_benchmark against a real local HTTP server that streams server-sent events with controlled delays (the
shared stand-in, tests/unit/openai_standin.py)."""

import json
import socket

import pytest
from openai_standin import API_KEY, MODEL, FakeVllm, self_signed_certificate

from ansible_collections.llmfleet.workstation.plugins.module_utils import openai_bench
from ansible_collections.llmfleet.workstation.plugins.module_utils.openai_bench import BenchError, run_benchmark
from ansible_collections.llmfleet.workstation.plugins.modules import llm_benchmark


def params(base_url, **overrides):
    values = {
        "base_url": base_url, "api_key": None, "model": MODEL, "prompt_tokens": 64, "max_tokens": 20,
        "ignore_eos": True, "concurrency": [1, 4], "repeats": 2, "warmup_requests": 1, "timeout": 10.0,
        "validate_certs": True, "min_decode_tokens_per_second": None, "max_ttft_ms": None,
        "min_aggregate_tokens_per_second": None,
    }
    values.update(overrides)
    return values


def unused_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ttft_and_decode_rate_match_the_servers_delays():
    # 80 ms to the first token, then one token every 10 ms: 100 tok/s per stream.
    with FakeVllm(ttft_s=0.08, token_interval_s=0.01) as server:
        result = run_benchmark(params(server.base_url, concurrency=[1], repeats=3))
    assert result["changed"] is False and "failed" not in result
    [level] = result["levels"]
    assert (level["concurrency"], level["requests"], level["rounds"]) == (1, 3, 3)
    assert level["completion_tokens"] == 3 * 20
    # Never faster than the server; the upper margins absorb a machine busy with other test runs.
    assert 75 <= level["ttft_ms"]["min"] <= level["ttft_ms"]["median"] <= level["ttft_ms"]["max"]
    assert level["ttft_ms"]["median"] <= 1000
    assert 20 <= level["decode_tokens_per_second"]["median"] <= 101
    # One stream at a time: the aggregate is the single stream's rate over the whole request, TTFT included.
    assert level["aggregate_tokens_per_second"]["median"] < level["decode_tokens_per_second"]["median"]


def test_concurrency_raises_aggregate_throughput():
    with FakeVllm(ttft_s=0.05, token_interval_s=0.01) as server:
        result = run_benchmark(params(server.base_url, concurrency=[1, 4], repeats=2))
    single, four = result["levels"]
    assert (single["concurrency"], four["concurrency"], four["requests"]) == (1, 4, 8)
    # Four streams at once would give 4x; one at a time could give at most 1x. The margin absorbs a busy machine.
    assert four["aggregate_tokens_per_second"]["median"] > 1.5 * single["aggregate_tokens_per_second"]["median"]
    # Each stream still decodes at about the server's per-stream rate.
    assert four["decode_tokens_per_second"]["median"] > 0.5 * single["decode_tokens_per_second"]["median"]


def test_requests_stream_ask_for_usage_and_never_share_a_prompt():
    with FakeVllm() as server:
        result = run_benchmark(params(server.base_url, concurrency=[2], repeats=1, prompt_tokens=200))
    bodies = [request["body"] for request in server.requests if request["path"] == "/v1/completions"]
    assert len(bodies) == 1 + 2  # warm-up, then one round of two
    for body in bodies:
        assert body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}
        assert body["ignore_eos"] is True
        assert body["max_tokens"] == 20
    assert server.requests[0]["path"] == "/tokenize"  # sizing first (this server has none: 404)
    assert server.requests[-1]["path"] == "/v1/completions"
    assert len({body["prompt"] for body in bodies}) == 3
    assert len({body["prompt"][:24] for body in bodies}) == 3  # they differ from the first words on
    # The server's own count is reported (the fake counts words).
    assert 190 <= result["levels"][0]["prompt_tokens"] <= 210


def test_without_usage_events_are_counted_and_prompt_tokens_is_null():
    with FakeVllm(usage=False) as server:
        result = run_benchmark(params(server.base_url, concurrency=[1], repeats=1, warmup_requests=0))
    level = result["levels"][0]
    assert level["completion_tokens"] == 20
    assert level["prompt_tokens"] is None


def test_tokens_that_decode_to_no_text_still_count():
    # vLLM streams one event per token; a special token or half a UTF-8 character arrives with text "".
    with FakeVllm(text="", ttft_s=0.05, token_interval_s=0.02) as server:
        result = run_benchmark(params(server.base_url, concurrency=[1], repeats=1, warmup_requests=0))
    level = result["levels"][0]
    assert level["completion_tokens"] == 20
    assert 40 <= level["ttft_ms"]["median"] < 40 + 200
    # 19 tokens after the first, 20 ms apart: about 50 tok/s, never more than the server's pace allows.
    assert 20 < level["decode_tokens_per_second"]["median"] <= 52


def test_envelope_failure_names_measured_and_required_numbers():
    with FakeVllm(ttft_s=0.05, token_interval_s=0.02) as server:  # 50 tok/s per stream
        result = run_benchmark(params(server.base_url, concurrency=[1, 2], repeats=1,
                                      min_decode_tokens_per_second=500, max_ttft_ms=5000,
                                      min_aggregate_tokens_per_second=1000))
    assert result["failed"] is True
    decode, ttft, aggregate = result["envelope"]
    assert (decode["check"], decode["passed"], decode["required"], decode["concurrency"]) == (
        "min_decode_tokens_per_second", False, 500, 1)
    assert ttft["passed"] is True and ttft["measured"] < 5000
    assert (aggregate["passed"], aggregate["concurrency"]) == (False, 2)
    message = result["msg"]
    assert message.startswith("Benchmark envelope failed for tiny-llama at %s/completions: " % server.base_url)
    assert ("decode %s tok/s per stream (median of 1 requests at concurrency 1), required at least 500 tok/s"
            % decode["measured"]) in message
    assert ("aggregate %s tok/s at concurrency 2 (median of 1 rounds), required at least 1000 tok/s"
            % aggregate["measured"]) in message
    assert "time to first token" not in message  # only failed checks are in the message


def test_envelope_that_holds_passes():
    with FakeVllm(ttft_s=0.02, token_interval_s=0.01) as server:
        result = run_benchmark(params(server.base_url, concurrency=[1], repeats=1, min_decode_tokens_per_second=10,
                                      max_ttft_ms=2000, min_aggregate_tokens_per_second=5))
    assert "failed" not in result
    assert [check["passed"] for check in result["envelope"]] == [True, True, True]


def test_wrong_api_key_is_a_clear_401():
    with FakeVllm(api_key=API_KEY) as server, pytest.raises(BenchError) as error:
        run_benchmark(params(server.base_url, api_key="wrong"))
    assert str(error.value) == (
        "HTTP 401 from %s/completions: Unauthorized: the server refused the API key; set api_key to the key vLLM "
        "was started with (--api-key, vllm_service_api_key)" % server.base_url)


def test_right_api_key_is_sent_as_a_bearer_token():
    with FakeVllm(api_key=API_KEY) as server:
        run_benchmark(params(server.base_url, api_key=API_KEY, concurrency=[1], repeats=1, warmup_requests=0))
    assert server.requests[0]["authorization"] == "Bearer %s" % API_KEY


def test_unknown_model_names_the_servers_message():
    with FakeVllm() as server, pytest.raises(BenchError) as error:
        run_benchmark(params(server.base_url, model="llama-9000"))
    assert "HTTP 404 from %s/completions: The model `llama-9000` does not exist." % server.base_url in str(error.value)
    assert "model 'llama-9000' is the name the server serves" in str(error.value)


def test_nothing_listening_is_a_clear_error():
    url = "http://127.0.0.1:%d/v1" % unused_port()
    with pytest.raises(BenchError, match="cannot reach http://127.0.0.1:[0-9]+/v1/completions: .*refused.*check that "
                                         "vLLM is running there"):
        run_benchmark(params(url, timeout=5.0))


@pytest.mark.parametrize("base_url", ["127.0.0.1:8000/v1", "ftp://host/v1", "", "http:///v1"])
def test_bad_base_url_is_refused_before_any_request(base_url):
    with pytest.raises(BenchError, match="is not an http\\(s\\) URL: give the endpoint's OpenAI base, e.g. "
                                         "http://ws-3090-a:8000/v1"):
        run_benchmark(params(base_url))


def test_stream_cut_before_done_is_an_error():
    with FakeVllm(drop_after=5) as server, pytest.raises(BenchError, match="ended before 'data: \\[DONE\\]' \\(5 "
                                                                           "chunks received\\)"):
        run_benchmark(params(server.base_url, warmup_requests=0, concurrency=[1], repeats=1))


def test_a_stream_without_tokens_quotes_what_the_server_sent():
    # A proxy can end a stream properly yet carry no token (text null): the message shows the events it did send.
    with FakeVllm(text=None) as server, pytest.raises(BenchError) as raised:
        run_benchmark(params(server.base_url, warmup_requests=0, concurrency=[1], repeats=1, max_tokens=3))
    message = str(raised.value)
    assert "streamed no tokens for model 'tiny-llama' (4 events, the last before [DONE]: " in message
    assert '"completion_tokens": 3' in message


def test_a_stalled_server_hits_the_timeout():
    with FakeVllm(ttft_s=1.5) as server, pytest.raises(BenchError, match="no answer from .* within timeout 0.3 s"):
        run_benchmark(params(server.base_url, timeout=0.3, warmup_requests=0, concurrency=[1], repeats=1))


def test_prompt_is_about_the_requested_length_and_unique():
    prompt = openai_bench.build_prompt(1024, "abc-1")
    assert prompt.startswith("Request abc-1. Continue this list of words: ")
    assert 1000 <= len(prompt.split()) <= 1024
    assert openai_bench.build_prompt(1024, "abc-2") != prompt


def test_module_runs_in_check_mode_and_keeps_the_key_out_of_the_result(run_module):
    with FakeVllm(api_key=API_KEY) as server:
        result = run_module(llm_benchmark, {
            "base_url": server.base_url, "api_key": API_KEY, "model": MODEL, "prompt_tokens": 32, "max_tokens": 8,
            "concurrency": [1, 2], "repeats": 1, "min_decode_tokens_per_second": 1}, check_mode=True)
    assert result["changed"] is False
    assert "failed" not in result
    assert [level["concurrency"] for level in result["levels"]] == [1, 2]
    assert result["envelope"][0]["passed"] is True
    assert API_KEY not in json.dumps(result)
    completions = [request for request in server.requests if request["path"] == "/v1/completions"]
    assert len(completions) == 1 + 1 + 2  # check mode sends the requests too


def test_module_fails_with_the_envelope_message(run_module):
    with FakeVllm(token_interval_s=0.02) as server:
        result = run_module(llm_benchmark, {
            "base_url": server.base_url, "model": MODEL, "prompt_tokens": 32, "max_tokens": 10,
            "concurrency": [1], "repeats": 1, "warmup_requests": 0, "min_decode_tokens_per_second": 1000})
    assert result["failed"] is True
    assert "required at least 1000.0 tok/s" in result["msg"]
    assert result["levels"][0]["requests"] == 1


def test_module_fails_cleanly_on_401(run_module):
    with FakeVllm(api_key=API_KEY) as server:
        result = run_module(llm_benchmark, {"base_url": server.base_url, "model": MODEL, "api_key": "nope"})
    assert result["failed"] is True
    assert result["changed"] is False
    assert result["msg"].startswith("HTTP 401 from %s/completions" % server.base_url)


def test_prompt_is_sized_with_the_servers_tokenizer():
    # A tokenizer that splits every word in three: the prompt must still come out at the requested length.
    with FakeVllm(tokens_per_word=3) as server:
        result = run_benchmark(params(server.base_url, prompt_tokens=300, max_tokens=2, concurrency=[1], repeats=1))
    assert result["prompt_sizing"] == "tokenize"
    assert abs(result["prompt_tokens_sized"] - 300) <= 3
    assert abs(result["levels"][0]["prompt_tokens"] - 300) <= 3
    assert any(request["path"] == "/tokenize" for request in server.requests)


def test_without_tokenize_the_prompt_is_an_estimate():
    with FakeVllm() as server:
        result = run_benchmark(params(server.base_url, prompt_tokens=64, max_tokens=2, concurrency=[1], repeats=1))
    assert (result["prompt_sizing"], result["prompt_tokens_sized"]) == ("estimate", None)


@pytest.fixture
def server_certificate(tmp_path):
    files = self_signed_certificate(tmp_path)
    if files is None:
        pytest.skip("needs openssl")
    return files


def test_https_endpoint_is_measured_with_its_ca_file(server_certificate):
    with FakeVllm(tls=server_certificate, tokens_per_word=1) as server:
        result = run_benchmark(params(server.base_url, ca_path=server_certificate[0], max_tokens=4,
                                      concurrency=[1], repeats=1))
    assert server.base_url.startswith("https://")
    assert result["prompt_sizing"] == "tokenize"
    assert result["levels"][0]["requests"] == 1
    assert result["levels"][0]["completion_tokens"] == 4
    assert result["levels"][0]["decode_tokens_per_second"]["median"] > 0


def test_https_endpoint_without_its_ca_file_is_refused(server_certificate):
    with FakeVllm(tls=server_certificate) as server, pytest.raises(BenchError) as error:
        run_benchmark(params(server.base_url, max_tokens=4, concurrency=[1], repeats=1, warmup_requests=0))
    assert "certificate" in str(error.value).lower()
    assert not [request for request in server.requests if request["path"] == "/v1/completions"]
