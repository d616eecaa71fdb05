# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a running (or failed) vLLM engine says about itself: its memory accounting and KV-cache capacity from its
start-up log or /metrics, and why it exited when it did not start. Pure functions, shared by the
vllm_engine_status module and the hardware check (tests/hardware), which read the same lines.

The patterns follow vLLM 0.26 (CUDA) and 0.32 (CPU) log lines, e.g.
  Model loading took 37.88 GiB memory and 21.4 seconds
  Available KV cache memory: 88.31 GiB
  GPU KV cache size: 289,360 tokens
  Maximum concurrency for 131,072 tokens per request: 2.21x
  ... Actual usage is 37.88 GiB for weight, 1.69 GiB for peak activation, 0.22 GiB for non-torch memory, and
      0.61 GiB for CUDAGraph memory ...
and /metrics' vllm:cache_config_info{block_size="16",...,num_gpu_blocks="18085",...} 1.0
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from typing import Any, Dict, Iterable, List, Optional

_NUMBER = r"([0-9][0-9,]*(?:\.[0-9]+)?)"

# Accounting lines of a successful start: key -> (pattern, unit of the captured number).
ACCOUNTING_PATTERNS = (
    ("weights_gib", re.compile(r"Model loading took " + _NUMBER + r" ?GiB")),
    ("available_kv_gib", re.compile(r"Available KV cache memory: " + _NUMBER + r" ?GiB")),
    ("kv_cache_tokens", re.compile(r"KV cache size: " + _NUMBER + r" tokens")),
    ("weights_gib", re.compile(r"Actual usage is " + _NUMBER + r" ?GiB for weight")),
    ("activation_peak_gib", re.compile(_NUMBER + r" ?GiB for peak activation")),
    ("non_torch_gib", re.compile(_NUMBER + r" ?GiB for non-torch memory")),
    ("cudagraph_gib", re.compile(_NUMBER + r" ?GiB for CUDAGraph memory")),
    ("cudagraph_gib", re.compile(r"Graph capturing finished in [0-9.]+ secs?, took " + _NUMBER + r" ?GiB")),
)
CONCURRENCY = re.compile(r"Maximum concurrency for " + _NUMBER + r" tokens per request: " + _NUMBER + r"x")
CACHE_CONFIG_INFO = re.compile(r"^vllm:cache_config_info\{(?P<labels>[^}]*)\}", re.MULTILINE)
LABEL = re.compile(r'(\w+)="([^"]*)"')

# Why an engine exits at start, most specific first: (code, pattern). The group "limit", where there is one, is the
# engine's own limit (the longest context that fits in the KV cache, or the model's own limit).
_LIMIT = r"(?P<limit>[0-9][0-9,]*)"
EXIT_REASONS = (
    ("context_exceeds_kv_cache", re.compile(r"estimated maximum model length is " + _LIMIT)),
    ("context_exceeds_model", re.compile(
        r"max_model_len \(?[0-9,]+\)? is greater than the derived max_model_len[^0-9]*" + _LIMIT)),
    ("no_kv_cache_memory", re.compile(r"No available memory for the cache blocks")),
    ("out_of_memory", re.compile(r"(CUDA out of memory|OutOfMemoryError)")),
    ("free_memory_below_budget", re.compile(r"Free memory on device .* less than desired GPU memory utilization")),
    ("no_gpu", re.compile(
        r"(Failed to infer device type|No CUDA GPUs are available|CUDA driver version is insufficient)")),
)
# Lines that carry an error, in the order an operator would read them; the traceback's last such line is the cause.
ERROR_LINE = re.compile(r"\b(\w+Error|\w+Exception|RuntimeError|AssertionError)\b[:(]")
NOISE = re.compile(r"^\s*(Traceback|File \"|\^|~)")


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def strip_prefix(line: str) -> str:
    """A log line without the journal's and vLLM's prefixes ("(EngineCore pid=12) INFO 12-01 10:00:00 [x.py:1] ")."""
    line = re.sub(r"^\(\w+ pid=\d+\)\s*", "", line.rstrip("\n"))
    return re.sub(r"^.*?\[[\w./-]+:\d+\]\s*", "", line, count=1)


def parse_accounting(lines: Iterable[str]) -> Dict[str, Any]:
    """The engine's own memory accounting and KV capacity from its log; the last value of each figure wins (a
    restarted engine logs again). Keys absent where the engine did not say."""
    found: Dict[str, Any] = {}
    for line in lines:
        for key, pattern in ACCOUNTING_PATTERNS:
            match = pattern.search(line)
            if match:
                value = _number(match.group(1))
                found[key] = int(value) if key == "kv_cache_tokens" else value
        match = CONCURRENCY.search(line)
        if match:
            found["max_model_len"] = int(_number(match.group(1)))
            found["max_concurrency"] = _number(match.group(2))
    return found


def parse_metrics(text: str) -> Dict[str, Any]:
    """KV capacity from /metrics (vllm:cache_config_info's num_gpu_blocks x block_size); empty when absent."""
    match = CACHE_CONFIG_INFO.search(text or "")
    if not match:
        return {}
    labels = dict(LABEL.findall(match.group("labels")))
    try:
        blocks = int(labels["num_gpu_blocks"])
        block_size = int(labels["block_size"])
    except (KeyError, ValueError):
        return {}
    return {"kv_cache_blocks": blocks, "block_size": block_size, "kv_cache_tokens": blocks * block_size}


def exit_reason(lines: List[str]) -> Dict[str, Any]:
    """Why the engine stopped: a code, the engine's own line, and the limit it named (or None)."""
    cleaned = [strip_prefix(line) for line in lines if line.strip()]
    for code, pattern in EXIT_REASONS:
        for line in reversed(cleaned):
            match = pattern.search(line)
            if match:
                limit = match.groupdict().get("limit")
                return {"code": code, "engine_message": line.strip(),
                        "engine_limit": int(_number(limit)) if limit else None}
    errors = [line for line in cleaned if ERROR_LINE.search(line) and not NOISE.match(line)]
    if errors:
        return {"code": "engine_error", "engine_message": errors[-1].strip(), "engine_limit": None}
    tail = [line.strip() for line in cleaned[-3:]]
    return {"code": "engine_exited", "engine_message": " | ".join(tail) or "the engine printed nothing",
            "engine_limit": None}


def compare_kv(planned_tokens: Optional[int], engine_tokens: Optional[int], tolerance: float = 0.10) -> Dict[str, Any]:
    """Plan against engine: the ratio planned / engine and whether it is within the tolerance."""
    result: Dict[str, Any] = {"planned_kv_tokens": planned_tokens, "engine_kv_tokens": engine_tokens, "ratio": None,
                              "within_tolerance": None, "tolerance": tolerance}
    if planned_tokens and engine_tokens:
        ratio = float(planned_tokens) / float(engine_tokens)
        result["ratio"] = round(ratio, 4)
        result["within_tolerance"] = abs(ratio - 1.0) <= tolerance
    return result
