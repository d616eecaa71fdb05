"""openai_bench's arithmetic on fixed timings: TTFT, decode rate, aggregate rate, spread and the envelope."""

import pytest

from ansible_collections.llmfleet.workstation.plugins.module_utils.openai_bench import (
    check_envelope,
    decode_rate,
    summarize_level,
)


def sample(start, first_token, last_token, end, tokens=257, prompt_tokens=1031):
    return {"start": start, "first_token": first_token, "last_token": last_token, "end": end,
            "completion_tokens": tokens, "prompt_tokens": prompt_tokens, "chunks": tokens}


def test_decode_rate_counts_the_tokens_after_the_first():
    # 257 tokens: the first at 0.3 s, the other 256 over the next 9.6 s.
    assert decode_rate(sample(0.0, 0.3, 9.9, 10.0)) == pytest.approx(256 / 9.6)
    assert decode_rate(sample(0.0, 0.3, 0.3, 0.4, tokens=1)) is None


def test_one_stream_level_reports_medians_spread_and_aggregate():
    rounds = [([sample(0.0, 0.30, 9.90, 10.0)], 10.0),
              ([sample(20.0, 20.25, 29.85, 30.0)], 10.0),
              ([sample(40.0, 40.40, 50.00, 50.5)], 10.5)]
    level = summarize_level(1, rounds)
    assert (level["requests"], level["rounds"], level["completion_tokens"], level["prompt_tokens"]) == (3, 3, 771, 1031)
    assert level["ttft_ms"] == {"median": 300.0, "min": 250.0, "max": 400.0, "spread_pct": 50.0}
    assert level["decode_tokens_per_second"]["median"] == pytest.approx(26.67, abs=0.01)
    # Aggregate = tokens of the round / its wall time: 25.7, 25.7 and 24.48 tok/s; (25.7 - 24.48) / 25.7 = 4.8 %.
    assert level["aggregate_tokens_per_second"] == {"median": 25.7, "min": 24.48, "max": 25.7, "spread_pct": 4.8}


def test_four_streams_aggregate_is_all_their_tokens_over_the_round():
    streams = [sample(0.0, 0.5 + index * 0.1, 12.0, 12.0 + index * 0.2) for index in range(4)]
    level = summarize_level(4, [(streams, 12.6)])
    assert level["aggregate_tokens_per_second"]["median"] == pytest.approx(4 * 257 / 12.6, abs=0.01)
    assert level["ttft_ms"]["median"] == pytest.approx(650.0)


def test_envelope_judges_decode_and_ttft_at_the_lowest_and_aggregate_at_the_highest_concurrency():
    single = {"concurrency": 1, "requests": 3, "rounds": 3, "prompt_tokens": 1031,
              "ttft_ms": {"median": 291.4}, "decode_tokens_per_second": {"median": 27.31},
              "aggregate_tokens_per_second": {"median": 25.9}}
    four = {"concurrency": 4, "requests": 12, "rounds": 3, "prompt_tokens": 1031,
            "ttft_ms": {"median": 620.0}, "decode_tokens_per_second": {"median": 20.1},
            "aggregate_tokens_per_second": {"median": 58.0}}
    checks = check_envelope([four, single], min_decode=25, max_ttft_ms=350, min_aggregate=60)
    assert [(check["check"], check["concurrency"], check["measured"], check["passed"]) for check in checks] == [
        ("min_decode_tokens_per_second", 1, 27.31, True),
        ("max_ttft_ms", 1, 291.4, True),
        ("min_aggregate_tokens_per_second", 4, 58.0, False),
    ]
    assert checks[2]["message"] == ("aggregate 58.0 tok/s at concurrency 4 (median of 3 rounds), required at least "
                                    "60 tok/s")
    assert check_envelope([single]) == []
