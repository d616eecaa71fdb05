"""benchmark_row and benchmark_report: what benchmark.yml prints and writes, from llm_benchmark's results."""

import json
import re
from xml.etree import ElementTree

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.filter.benchmark_report import benchmark_report
from ansible_collections.llmfleet.workstation.plugins.filter.benchmark_row import benchmark_row

# The fleet scenario's check of a host's Markdown row (molecule/fleet/benchmark.yml).
FLEET_ROW = re.compile(r"^[|] ws1 [|] tiny-llama [|] [0-9]+ [|] [0-9]+ [|] [0-9.]+ [|] [0-9.]+ [|] c=1: [0-9.]+, "
                       r"c=2: [0-9.]+ [|] [0-9.]+ [|] [0-9]+% [|] - [|]$")


def level(concurrency, ttft, decode, aggregate, prompt_tokens=32):
    return {"concurrency": concurrency, "prompt_tokens": prompt_tokens, "ttft_ms": {"median": ttft},
            "decode_tokens_per_second": {"median": decode}, "aggregate_tokens_per_second": {"median": aggregate}}


# llm_benchmark returns the levels in the order asked; the report reads them by concurrency.
MEASURED = {"changed": False, "levels": [level(2, 95.0, 20.5, 38.2), level(1, 80.4, 23.1, 22.9)], "envelope": []}
ENGINE = {"engine": {"kv_cache_tokens": 4096}, "kv": {"planned_kv_tokens": 4000}}


def host_row(result=None, **settings):
    return benchmark_row(MEASURED if result is None else result, "ws1", "tiny-llama", "http://10.0.0.11:8000/v1",
                         engine=ENGINE, **settings)


def test_row_reads_the_lowest_concurrency_for_one_stream_and_the_highest_for_the_aggregate():
    one_row = host_row(bandwidth_gbps=936, weight_gb=40, tensor_parallel_size=2)
    assert (one_row["prompt_tokens"], one_row["ttft_ms"], one_row["single_tps"]) == (32, 80.4, 23.1)
    assert (one_row["aggregate_tps"], one_row["aggregate_concurrency"]) == (38.2, 2)
    assert one_row["aggregates"] == "c=2: 38.2, c=1: 22.9"
    assert one_row["kv_tokens"] == "4096 (plan 4000)"
    # 936 GB/s over 20 GB per GPU.
    assert one_row["ceiling_tps"] == 46.8
    assert one_row["ceiling_fraction"] == round(23.1 / 46.8, 2)
    assert (one_row["ok"], one_row["message"], one_row["envelope"]) == (True, "", "-")


@pytest.mark.parametrize("weight_gb, tensor_parallel_size", [(40, "auto"), (0, 2), (None, 1), (40, 0)])
def test_no_roofline_without_a_weight_size_and_a_known_tensor_parallel_size(weight_gb, tensor_parallel_size):
    one_row = host_row(bandwidth_gbps=936, weight_gb=weight_gb, tensor_parallel_size=tensor_parallel_size)
    assert one_row["ceiling_tps"] is None and one_row["ceiling_fraction"] is None


def test_envelope_verdicts():
    passed = dict(MEASURED, envelope=[{"passed": True}, {"passed": True}])
    missed = dict(MEASURED, envelope=[{"passed": True}, {"passed": False}], failed=True,
                  msg="Benchmark envelope failed")
    broken = {"failed": True, "msg": "HTTP 401 from http://10.0.0.11:8000/v1/completions"}
    assert host_row(passed)["envelope"] == "pass"
    assert (host_row(missed)["envelope"], host_row(missed)["ok"]) == ("fail", False)
    assert host_row(missed)["message"] == "Benchmark envelope failed"
    broken_row = host_row(broken)
    assert (broken_row["envelope"], broken_row["single_tps"], broken_row["aggregates"]) == ("error", None, "")


def test_kv_cell_without_an_engine_or_a_plan():
    assert benchmark_row(MEASURED, "ws1", "m", "u")["kv_tokens"] == "-"
    assert benchmark_row(MEASURED, "ws1", "m", "u", engine={"engine": {"kv_cache_tokens": 10}})["kv_tokens"] == "10"


def test_report_rows_in_host_order_a_missing_host_and_an_extra_endpoint():
    hostvars = {"ws1": {"benchmark_row": host_row(bandwidth_gbps=936, weight_gb=0.006, tensor_parallel_size=1)},
                "ws2": {}}
    router = {"item": {"name": "router", "base_url": "https://router:4000/v1", "model": "tiny-llama",
                       "api_key": "s3cret-router-key"}, **MEASURED}
    report = benchmark_report(["ws1", "ws2"], hostvars, "20261202T050000Z", "prompt 32 tokens", extra_results=[router])
    assert [one_row["host"] for one_row in report["rows"]] == ["ws1", "ws2", "router"]
    assert report["rows"][1]["envelope"] == "error" and not report["rows"][1]["ok"]
    assert report["rows"][2]["url"] == "https://router:4000/v1"
    assert report["rows"][2]["kv_tokens"] == "-" and report["rows"][2]["ceiling_tps"] is None
    assert report["messages"] == ["ws2: no result: the benchmark of this host stopped early"]
    assert "s3cret-router-key" not in json.dumps(report)


def test_markdown_row_is_the_one_the_fleet_scenario_reads():
    measured = dict(MEASURED, levels=[level(1, 80.4, 23.1, 22.9), level(2, 95.0, 20.5, 38.2)])
    hostvars = {"ws1": {"benchmark_row": host_row(measured, bandwidth_gbps=936, weight_gb=0.006,
                                                  tensor_parallel_size=1)}}
    hostvars["ws1"]["benchmark_row"]["kv_tokens"] = "4096"
    markdown = benchmark_report(["ws1"], hostvars, "20261202T050000Z", "prompt  32\n tokens")["markdown"]
    assert markdown[:4] == ["# Benchmark 20261202T050000Z", "", "prompt 32 tokens", ""]
    [row_line] = [line for line in markdown if line.startswith("| ws1 ")]
    assert FLEET_ROW.match(row_line), row_line
    assert "![single-stream and aggregate tok/s per host](benchmark-20261202T050000Z.svg)" in markdown
    assert "## Failures" not in markdown


def test_printed_table_aligns_and_lists_failures_after_it():
    broken = {"failed": True, "msg": "no answer from\n   http://ws1:8000"}
    hostvars = {"ws1": {"benchmark_row": host_row(broken)}}
    printed = benchmark_report(["ws1"], hostvars, "t")["printed"]
    header, dashes, line = printed[:3]
    assert header.startswith("host  model       KV tokens engine (plan)")
    assert dashes.split() == ["-" * len(word) for word in dashes.split()]
    assert line.split("  ")[0] == "ws1"
    assert printed[3:] == ["", "ws1: no answer from http://ws1:8000"]


def test_share_of_the_roofline_is_rounded_not_cut():
    hostvars = {"ws1": {"benchmark_row": dict(host_row(), ceiling_tps=46.8, ceiling_fraction=0.58)}}
    [_header, line] = benchmark_report(["ws1"], hostvars, "t")["csv"]
    assert '"46.8","58%"' in line


def test_csv_quotes_every_cell_with_the_keys_as_header():
    hostvars = {'a"b': {"benchmark_row": dict(host_row(), host='a"b')}}
    header, line = benchmark_report(['a"b'], hostvars, "t")["csv"]
    assert header.startswith('"host","model","kv_tokens",')
    assert line.startswith('"a""b","tiny-llama","4096 (plan 4000)",')


def test_svg_scales_the_bars_to_the_largest_value_and_escapes_names():
    hostvars = {"<ws1>": {"benchmark_row": dict(host_row(bandwidth_gbps=936, weight_gb=40, tensor_parallel_size=2),
                                                host="<ws1>")},
                "ws2": {}}
    svg = benchmark_report(["<ws1>", "ws2"], hostvars, "t")["svg"]
    document = ElementTree.fromstring(svg)  # well-formed, the host name escaped
    namespace = "{http://www.w3.org/2000/svg}"
    texts = [element.text for element in document.iter(namespace + "text")]
    assert "<ws1>" in texts and "ws2" in texts and "no result" in texts
    # The roofline (46.8) is the largest value: it spans the whole plot, the single stream its share.
    bars = [element for element in document.iter(namespace + "rect") if element.get("height") == "16"]
    assert float(bars[0].get("width")) == round(480 * 23.1 / 46.8, 1)
    ticks = [element for element in document.iter(namespace + "line") if element.get("stroke") == "#c0392b"]
    assert float(ticks[-1].get("x1")) == 200 + 480.0
    assert texts[-1] == "46.8 tok/s"


@pytest.mark.parametrize("call, message", [
    (lambda: benchmark_row("x", "h", "m", "u"), "must be dictionaries"),
    (lambda: benchmark_report("ws1", {}, "t"), "list and hostvars"),
    (lambda: benchmark_report(["ws1"], {}, "t", extra_results=[1]), "extra_results"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(AnsibleFilterError, match=message):
        call()
