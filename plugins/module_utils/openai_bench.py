# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark an OpenAI-compatible completions endpoint (vLLM's): TTFT, decode rate, aggregate throughput.

Standard library plus ansible.module_utils.urls only; runs on Python 3.8+. Every request streams
/v1/completions (server-sent events, `data: {...}` lines ending with `data: [DONE]`) and asks for the usage
record, so token counts are the server's own where it sends them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import socket
import statistics
import threading
import time
import uuid

from urllib.error import HTTPError, URLError
from urllib.parse import urlparse

from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.urls import open_url

# Common English words that are one token each (with their leading space) in the Llama 3 and Qwen2 tokenizers,
# so a prompt of N words is about N tokens.
PROMPT_WORDS = (
    "time", "year", "people", "way", "day", "man", "thing", "woman", "life", "child", "world", "school", "state",
    "family", "student", "group", "country", "problem", "hand", "part", "place", "case", "week", "company",
    "system", "program", "question", "work", "number", "night", "point", "home", "water", "room", "mother", "area",
    "money", "story", "fact", "month", "lot", "right", "study", "book", "eye", "job", "word", "business", "issue",
    "side", "kind", "head", "house", "service", "friend", "father", "power", "hour", "game", "line", "end",
    "member", "law", "car", "city", "name", "team", "minute", "idea", "kid", "body", "back", "parent", "face",
    "level", "office", "door", "health", "person", "art", "war", "history", "party", "result", "change", "morning",
    "reason", "research", "girl", "guy", "moment", "air", "teacher", "force", "education",
)
# "Request <id>. Continue this list of words:" takes about this many tokens.
PROMPT_HEADER_TOKENS = 16
MAX_ERROR_BODY_CHARS = 300


class BenchError(Exception):
    """A benchmark that could not run: the message says what happened and what to do."""


def build_prompt(prompt_tokens, request_id, words=None):
    """A prompt of about prompt_tokens tokens (or of `words` list words) that starts with request_id.

    The id comes first so that no two requests share a prefix: vLLM's prefix cache would otherwise serve the
    repeated prompt from cache and report a TTFT that real traffic never sees.
    """
    words = max(1, int(words if words is not None else int(prompt_tokens) - PROMPT_HEADER_TOKENS))
    offset = sum(ord(char) for char in request_id) % len(PROMPT_WORDS)
    body = " ".join(PROMPT_WORDS[(offset + index) % len(PROMPT_WORDS)] for index in range(words))
    return "Request %s. Continue this list of words: %s" % (request_id, body)


def completions_url(base_url):
    parsed = urlparse(base_url or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise BenchError("base_url %r is not an http(s) URL: give the endpoint's OpenAI base, e.g. "
                         "http://ws-3090-a:8000/v1" % (base_url,))
    return base_url.rstrip("/") + "/completions"


def _error_body(error):
    try:
        body = to_text(error.read(), errors="surrogate_or_replace")
    except Exception:  # noqa: BLE001 - a body we cannot read is only missing detail
        return ""
    try:
        parsed = json.loads(body)
        detail = parsed.get("error", parsed.get("message", body)) if isinstance(parsed, dict) else body
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        body = to_text(detail)
    except ValueError:
        pass
    return body.strip()[:MAX_ERROR_BODY_CHARS]


def describe_http_error(url, error, model):
    detail = _error_body(error)
    suffix = (": %s" % detail) if detail else ""
    if error.code in (401, 403):
        return ("HTTP %d from %s%s: the server refused the API key; set api_key to the key vLLM was started with "
                "(--api-key, vllm_service_api_key)" % (error.code, url, suffix))
    if error.code == 404:
        return ("HTTP 404 from %s%s: check that base_url ends in /v1 and that model %r is the name the server "
                "serves (GET /v1/models lists it; vllm_service_served_model_name)" % (url, suffix, model))
    if error.code == 400:
        return ("HTTP 400 from %s%s: the server rejected the request; a prompt of prompt_tokens plus max_tokens "
                "must fit the server's --max-model-len" % (url, suffix))
    return "HTTP %d from %s%s" % (error.code, url, suffix)


def timeout_message(url, timeout):
    return ("no answer from %s within timeout %s s: the server is overloaded or the prompt is too long; raise "
            "timeout or lower prompt_tokens/max_tokens" % (url, timeout))


def stream_completion(url, payload, *, api_key=None, timeout=120.0, validate_certs=True, ca_path=None,
                      clock=time.monotonic):
    """Send one streaming completion request and time it.

    Returns dict(start, end, first_token, last_token, completion_tokens, prompt_tokens, chunks); times come from
    clock (seconds). prompt_tokens is None where the server sends no usage record.
    """
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = "Bearer %s" % api_key
    data = json.dumps(payload).encode("utf-8")
    start = clock()
    first_token = last_token = None
    chunks = 0
    usage = None
    done = False
    events, last_event = 0, None  # quoted when no token came, so that the reason is in the message
    try:
        response = open_url(url, data=data, headers=headers, method="POST", timeout=timeout,
                            validate_certs=validate_certs, ca_path=ca_path, follow_redirects="none")
        try:
            for raw_line in response:
                line = to_text(raw_line, errors="surrogate_or_replace").strip()
                if not line.startswith("data:"):
                    continue  # blank separators, ": keep-alive" comments, "event:" lines
                data_text = line[len("data:"):].strip()
                if data_text == "[DONE]":
                    done = True
                    break
                events, last_event = events + 1, data_text
                try:
                    chunk = json.loads(data_text)
                except ValueError:
                    raise BenchError("the server at %s sent an event that is not JSON: %r; is this an "
                                     "OpenAI-compatible endpoint?" % (url, data_text[:100])) from None
                if not isinstance(chunk, dict):
                    continue
                if chunk.get("error"):
                    error = chunk["error"]
                    raise BenchError("the server at %s failed mid-stream: %s"
                                     % (url, error.get("message", error) if isinstance(error, dict) else error))
                if chunk.get("usage"):
                    usage = chunk["usage"]
                # One chunk per generated token, also when its text is empty: a token that decodes to nothing
                # (a special token, half of a UTF-8 character) still took its decode step.
                for choice in chunk.get("choices") or []:
                    if isinstance(choice.get("text"), str):
                        now = clock()
                        if first_token is None:
                            first_token = now
                        last_token = now
                        chunks += 1
        finally:
            response.close()
    except HTTPError as error:
        raise BenchError(describe_http_error(url, error, payload.get("model"))) from None
    except URLError as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise BenchError(timeout_message(url, timeout)) from None
        raise BenchError("cannot reach %s: %s; check that vLLM is running there (systemctl status vllm) and that "
                         "base_url is right" % (url, to_text(reason))) from None
    except (socket.timeout, TimeoutError):
        raise BenchError(timeout_message(url, timeout)) from None
    except OSError as error:  # connection reset, TLS failures (ansible's SSLValidationError), refused
        raise BenchError("connection to %s failed: %s: %s" % (url, type(error).__name__, error)) from None
    end = clock()
    if not done:
        raise BenchError("the stream from %s ended before 'data: [DONE]' (%d chunks received): the server closed "
                         "the connection early" % (url, chunks))
    if first_token is None:
        raise BenchError("the server at %s streamed no tokens for model %r (%d events, the last before [DONE]: %s): "
                         "check max_tokens and the server log"
                         % (url, payload.get("model"), events, repr(last_event[:300]) if last_event else "none"))
    completion_tokens = int((usage or {}).get("completion_tokens") or chunks)
    prompt_tokens = (usage or {}).get("prompt_tokens")
    return {
        "start": start, "end": end, "first_token": first_token, "last_token": last_token,
        "completion_tokens": completion_tokens,
        "prompt_tokens": int(prompt_tokens) if prompt_tokens is not None else None,
        "chunks": chunks,
    }


def decode_rate(sample):
    """Tokens per second after the first token, or None with fewer than two tokens."""
    elapsed = sample["last_token"] - sample["first_token"]
    if sample["completion_tokens"] < 2 or elapsed <= 0:
        return None
    return (sample["completion_tokens"] - 1) / elapsed


def run_round(concurrency, make_request):
    """Start `concurrency` requests at once (each in its own thread); return their samples and the wall time."""
    barrier = threading.Barrier(concurrency)
    samples = [None] * concurrency
    errors = []

    def worker(slot):
        try:
            barrier.wait()
            samples[slot] = make_request(slot)
        except BenchError as error:
            errors.append(error)
        except Exception as error:  # noqa: BLE001 - reported as the benchmark's failure, not a thread traceback
            errors.append(BenchError("request failed: %s: %s" % (type(error).__name__, error)))

    threads = [threading.Thread(target=worker, args=(slot,), name="llm-bench-%d" % slot)
               for slot in range(concurrency)]
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    wall = max(sample["end"] for sample in samples) - min(sample["start"] for sample in samples)
    return samples, wall


def _spread(values, digits=1):
    values = [value for value in values if value is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "spread_pct": None}
    median = statistics.median(values)
    return {
        "median": round(median, digits), "min": round(min(values), digits), "max": round(max(values), digits),
        "spread_pct": round((max(values) - min(values)) / median * 100, 1) if median else None,
    }


def summarize_level(concurrency, rounds):
    """Statistics of one concurrency level from its rounds [(samples, wall_s), ...]."""
    samples = [sample for round_samples, _wall in rounds for sample in round_samples]
    aggregates = [sum(sample["completion_tokens"] for sample in round_samples) / wall
                  for round_samples, wall in rounds if wall > 0]
    prompt_counts = [sample["prompt_tokens"] for sample in samples if sample["prompt_tokens"] is not None]
    return {
        "concurrency": concurrency,
        "requests": len(samples),
        "rounds": len(rounds),
        "completion_tokens": sum(sample["completion_tokens"] for sample in samples),
        "prompt_tokens": int(statistics.median(prompt_counts)) if prompt_counts else None,
        "ttft_ms": _spread([(sample["first_token"] - sample["start"]) * 1000 for sample in samples]),
        "decode_tokens_per_second": _spread([decode_rate(sample) for sample in samples], 2),
        "aggregate_tokens_per_second": _spread(aggregates, 2),
    }


def check_envelope(levels, min_decode=None, max_ttft_ms=None, min_aggregate=None):
    """The envelope's checks: decode and TTFT at the lowest concurrency, aggregate at the highest."""
    checks = []
    lowest = min(levels, key=lambda level: level["concurrency"])
    highest = max(levels, key=lambda level: level["concurrency"])
    if min_decode is not None:
        measured = lowest["decode_tokens_per_second"]["median"]
        checks.append({
            "check": "min_decode_tokens_per_second", "concurrency": lowest["concurrency"], "measured": measured,
            "required": min_decode, "passed": measured is not None and measured >= min_decode,
            "message": "decode %s tok/s per stream (median of %d requests at concurrency %d), required at least "
                       "%s tok/s" % (measured, lowest["requests"], lowest["concurrency"], min_decode)})
    if max_ttft_ms is not None:
        measured = lowest["ttft_ms"]["median"]
        checks.append({
            "check": "max_ttft_ms", "concurrency": lowest["concurrency"], "measured": measured,
            "required": max_ttft_ms, "passed": measured is not None and measured <= max_ttft_ms,
            "message": "time to first token %s ms (median of %d requests at concurrency %d, prompt %s tokens), "
                       "required at most %s ms" % (measured, lowest["requests"], lowest["concurrency"],
                                                   lowest["prompt_tokens"], max_ttft_ms)})
    if min_aggregate is not None:
        measured = highest["aggregate_tokens_per_second"]["median"]
        checks.append({
            "check": "min_aggregate_tokens_per_second", "concurrency": highest["concurrency"], "measured": measured,
            "required": min_aggregate, "passed": measured is not None and measured >= min_aggregate,
            "message": "aggregate %s tok/s at concurrency %d (median of %d rounds), required at least %s tok/s"
                       % (measured, highest["concurrency"], highest["rounds"], min_aggregate)})
    return checks


def tokenize_url(base_url):
    """vLLM serves /tokenize beside /v1, not under it."""
    base = base_url.rstrip("/")
    return (base[:-3] if base.endswith("/v1") else base) + "/tokenize"


def count_tokens(base_url, model, text, *, api_key=None, timeout=60.0, validate_certs=True, ca_path=None):
    """Tokens of text in the served model's tokenizer (vLLM's POST /tokenize); None where the server has none."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = "Bearer %s" % api_key
    try:
        response = open_url(tokenize_url(base_url), method="POST", headers=headers, timeout=timeout,
                            data=json.dumps({"model": model, "prompt": text}),
                            validate_certs=validate_certs, ca_path=ca_path)
        count = json.loads(to_text(response.read())).get("count")
    except (HTTPError, URLError, ValueError, OSError):
        return None
    return int(count) if count is not None else None


def fit_prompt_words(prompt_tokens, counter, attempts=4):
    """(words, tokens): the list length whose prompt counter() measures closest to prompt_tokens, or (None, None)
    when counter cannot count. Words are not one token each in every tokenizer (a Qwen or a test model's tokenizer
    splits them differently), so the length is corrected from the server's own count."""
    target = int(prompt_tokens)
    words = max(1, target - PROMPT_HEADER_TOKENS)
    best = None
    for _attempt in range(attempts):
        tokens = counter(build_prompt(target, "sizing-00000000", words))
        if tokens is None:
            return (best or (None, None))
        if best is None or abs(tokens - target) < abs(best[1] - target):
            best = (words, tokens)
        if tokens == target:
            break
        header = counter(build_prompt(target, "sizing-00000000", 1)) or 0
        per_word = max(1e-6, float(tokens - header) / max(1, words - 1))
        words = max(1, int(round(words + (target - tokens) / per_word)))
    return best


def run_benchmark(params, clock=time.monotonic):
    """The whole benchmark as a plain dict (Ansible result keys); raises BenchError when it cannot run."""
    url = completions_url(params["base_url"])
    levels_wanted = list(params.get("concurrency") or [1])
    for name in ("prompt_tokens", "max_tokens", "repeats"):
        if int(params[name]) < 1:
            raise BenchError("%s must be at least 1, got %s" % (name, params[name]))
    if any(int(level) < 1 for level in levels_wanted):
        raise BenchError("every concurrency must be at least 1, got %s" % levels_wanted)
    words, sized_tokens = fit_prompt_words(
        params["prompt_tokens"],
        lambda text: count_tokens(params["base_url"], params["model"], text, api_key=params.get("api_key"),
                                  timeout=float(params["timeout"]),
                                  validate_certs=params.get("validate_certs", True), ca_path=params.get("ca_path")))
    run_id = uuid.uuid4().hex[:8]
    counter = {"next": 0}
    lock = threading.Lock()

    def make_request(_slot):
        with lock:
            counter["next"] += 1
            request_id = "%s-%d" % (run_id, counter["next"])
        payload = {
            "model": params["model"],
            "prompt": build_prompt(params["prompt_tokens"], request_id, words),
            "max_tokens": int(params["max_tokens"]),
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.get("ignore_eos", True):
            payload["ignore_eos"] = True  # vLLM extension: always generate max_tokens, so runs compare
        return stream_completion(url, payload, api_key=params.get("api_key"), timeout=float(params["timeout"]),
                                 validate_certs=params.get("validate_certs", True), ca_path=params.get("ca_path"),
                                 clock=clock)

    for _warmup in range(int(params.get("warmup_requests") or 0)):
        make_request(0)
    levels = []
    for concurrency in levels_wanted:
        rounds = [run_round(int(concurrency), make_request) for _repeat in range(int(params["repeats"]))]
        levels.append(summarize_level(int(concurrency), rounds))
    checks = check_envelope(levels, params.get("min_decode_tokens_per_second"), params.get("max_ttft_ms"),
                            params.get("min_aggregate_tokens_per_second"))
    result = {
        "changed": False,
        "url": url,
        "model": params["model"],
        "prompt_tokens_requested": int(params["prompt_tokens"]),
        # "tokenize": sized with the server's own tokenizer; "estimate": one token per word assumed.
        "prompt_sizing": "tokenize" if words is not None else "estimate",
        "prompt_tokens_sized": sized_tokens,
        "max_tokens": int(params["max_tokens"]),
        "levels": levels,
        "envelope": checks,
    }
    failures = [check["message"] for check in checks if not check["passed"]]
    if failures:
        result["failed"] = True
        result["msg"] = "Benchmark envelope failed for %s at %s: %s" % (params["model"], url, "; ".join(failures))
    return result
