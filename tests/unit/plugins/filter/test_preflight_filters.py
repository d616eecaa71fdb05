"""The preflight filters: a host judged from its gates' structured problems, and the report rendered.

Gate results are made by the gate modules' own run() over the mocked NVML, shaped as Ansible registers them, so
the verdicts rest on the codes the modules really return. The wording of every reason is the one
molecule/preflight checks on the simulated fleet.
"""

import csv

import jinja2
import pytest
from ansible.module_utils import _internal as module_utils_internal
from conftest import dual_3090, gpu

# Importing controller code flips ansible-core's process-wide is_controller switch (see test_compat_filters.py).
_WAS_CONTROLLER = module_utils_internal.is_controller
from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.llmfleet.workstation.plugins.filter import (  # noqa: E402
    preflight_report,
    preflight_row,
    preflight_verdict,
    report_table,
)
from ansible_collections.llmfleet.workstation.plugins.module_utils import nvml  # noqa: E402
from ansible_collections.llmfleet.workstation.plugins.modules import (  # noqa: E402
    gpu_facts,
    gpu_junction_temp,
    nvlink_status,
)
from ansible_collections.llmfleet.workstation.plugins.plugin_utils import preflight  # noqa: E402

module_utils_internal.is_controller = _WAS_CONTROLLER

LIMITS = {"venv": "/opt/llmfleet/gates", "cache_dir": "/var/lib/llmfleet/models", "expected_gpu_count": None,
          "min_active_links": None, "max_core_temp_c": 85, "max_memory_temp_c": 100, "temp_warn_margin_c": 5,
          "min_free_gb": 50, "min_driver_version": "550"}
NVLINK = {"expected_gpu_count": None, "min_active_links": None, "require_nvlink": True, "require_p2p": True,
          "fail_on_errors": False}
THERMAL = {"max_core_temp_c": 85, "max_memory_temp_c": 100, "memory_temp_unavailable": "warn",
           "fail_on_thermal_throttle": True, "wait_for_cooldown": False, "cooldown_timeout": 0, "poll_interval": 10}
DF_HEADER = "Filesystem     1024-blocks      Used Available Capacity Mounted on"
STAT_OK = {"changed": False, "stat": {"exists": True}}
SKIPPED = {"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}


def df(free_kib=100_000_000, mount="/"):
    line = "overlay 200000000 1 %d 50%% %s" % (free_kib, mount)
    return {"changed": False, "rc": 1, "stdout_lines": [DF_HEADER, line]}


def registered(result):
    """A module result as Ansible registers it: a failed gate (ignore_errors) keeps failed: true."""
    result = {key: value for key, value in result.items() if key != "warnings"}
    result.setdefault("problems", [])
    return result


def gates(fake_nvml, cards, nvlink=None, thermal=None):
    """gpu_facts, nvlink_status and gpu_junction_temp over `cards`, as the preflight registers them."""
    fake_nvml.install(cards)
    with nvml.NvmlSession() as session:
        return {
            "gpu": registered(gpu_facts.run({"expected_gpu_count": None}, session)),
            "nvlink": registered(nvlink_status.run(dict(NVLINK, **(nvlink or {})), session)),
            "thermal": registered(gpu_junction_temp.run(dict(THERMAL, **(thermal or {})), session)),
        }


def host(fake_nvml, cards, **results):
    base = {"host": "ws", "venv_python": STAT_OK, "df": df(), "p2p": SKIPPED, "engine": {"ready": False},
            "compat": None}
    base.update(gates(fake_nvml, cards))
    base.update(results)
    return base


def nvml_failure(code, message):
    """What run_gate returns when NVML cannot be read at all: no facts, one problem."""
    found = {"code": code, "gpu": None, "value": None, "limit": None, "fix": "fix it", "message": message}
    return {"failed": True, "changed": False, "msg": message, "problems": [found]}


def hot_pair():
    cards = dual_3090(memory_c=88)
    cards[1].update(memory_c=106, core_c=83, reasons=0x1 | 0x20 | 0x40)
    return cards


# ---- verdicts ------------------------------------------------------------------------------------------------


def test_healthy_pair_is_ok_with_its_cells(fake_nvml):
    row = preflight_row.preflight_row(host(fake_nvml, dual_3090()), LIMITS)
    assert row == {"host": "ws", "gpus": "2x NVIDIA GeForce RTX 3090", "nvlink": "4/4, 4/4 (P2P ok)",
                   "temps": "40/-, 40/-", "power": "30/350, 30/350", "pcie": "gen4 x16, gen4 x16",
                   "driver": "560.35.03", "disk_free_gb": "102.4",
                   "verdict": "ok", "reasons": "", "messages": [], "engine": "-; engine not serving"}


def test_misseated_bridge_fails_from_the_link_and_p2p_codes(fake_nvml):
    results = host(fake_nvml, dual_3090(active=False))
    judged = preflight_verdict.preflight_verdict(results, LIMITS)
    assert judged["verdict"] == "fail"
    assert judged["reasons"] == ["NVLink bridge misseated: GPU 0 0/4, GPU 1 0/4 links active",
                                 "no P2P over NVLink (not_supported)"]
    assert judged["messages"] == [results["nvlink"]["msg"]]
    assert preflight_row.preflight_row(results, LIMITS)["nvlink"] == "0/4, 0/4 (P2P not_supported)"


def test_min_active_links_is_the_denominator(fake_nvml):
    cards = dual_3090()
    cards[1]["links"][2]["active"] = False
    results = host(fake_nvml, cards)
    results.update(gates(fake_nvml, cards, nvlink={"min_active_links": 4}))
    row = preflight_row.preflight_row(results, dict(LIMITS, min_active_links=4))
    assert row["nvlink"] == "4/4, 3/4 (P2P ok)"
    assert row["reasons"] == "NVLink bridge misseated: GPU 1 3/4 links active"


def test_hot_junction_fails_and_a_core_near_its_limit_warns(fake_nvml):
    row = preflight_row.preflight_row(host(fake_nvml, hot_pair()), LIMITS)
    assert row["verdict"] == "fail"
    assert row["temps"] == "40/88, 83/106"
    assert row["reasons"] == ("hot junction: GPU 1 memory 106 C above 100 C; GPU 1 thermally throttling "
                              "(sw_thermal_slowdown, hw_thermal_slowdown); GPU 1 core 83 C near its 85 C limit")
    assert "GPU 0" not in row["reasons"]


def test_core_above_its_limit(fake_nvml):
    cards = dual_3090(memory_c=60)
    cards[0]["core_c"] = 90
    assert preflight_verdict.preflight_verdict(host(fake_nvml, cards), LIMITS)["reasons"] == [
        "GPU 0 core 90 C above 85 C"]


def test_warnings_alone_make_warn(fake_nvml):
    cards = dual_3090(memory_c=97)
    cards[1]["pcie"] = (4, 4, 8, 16)
    results = host(fake_nvml, cards)
    results["gpu"]["ansible_facts"]["llmfleet_gpu"]["driver_version"] = "535.183.01"
    judged = preflight_verdict.preflight_verdict(results, dict(LIMITS, expected_gpu_count=1))
    assert judged["verdict"] == "warn"
    assert judged["fail_reasons"] == []
    assert judged["reasons"] == [
        "GPU count 2, 1 expected", "driver 535.183.01 below 550 (NVLink on Ampere needs 550+)", "GPU 1 PCIe x8 of x16",
        "GPU 0 memory 97 C near its 100 C limit", "GPU 1 memory 97 C near its 100 C limit"]
    assert preflight_row.preflight_row(results, LIMITS)["pcie"] == "gen4 x16, gen4 x8/16"


def test_fewer_gpus_than_expected_fails(fake_nvml):
    assert preflight_verdict.preflight_verdict(host(fake_nvml, dual_3090()), dict(LIMITS, expected_gpu_count="4"))[
        "reasons"] == ["GPU count 2, 4 expected"]


def test_no_nvlink_falls_back_to_the_gates_message(fake_nvml):
    cards = [gpu(name="NVIDIA GeForce RTX 4090"), gpu(name="NVIDIA GeForce RTX 4090", bus_id="00000000:21:00.0")]
    results = host(fake_nvml, cards)
    [reason] = preflight_verdict.preflight_verdict(results, LIMITS)["reasons"]
    assert reason == preflight.truncate(results["nvlink"]["msg"], 120) and reason.endswith("...")
    assert preflight_row.preflight_row(results, LIMITS)["nvlink"] == "none"


def test_thermal_failure_without_a_heat_code_shows_the_message(fake_nvml):
    results = host(fake_nvml, dual_3090())
    results.update(thermal=registered(gates(fake_nvml, dual_3090(), thermal={"memory_temp_unavailable": "fail"})[
        "thermal"]))
    assert preflight_verdict.preflight_verdict(results, LIMITS)["reasons"] == [
        preflight.truncate(results["thermal"]["msg"], 120)]


def test_gpu_copies_below_the_floor(fake_nvml):
    results = host(fake_nvml, dual_3090(), p2p={"failed": True, "msg": "GPU 0 -> GPU 1: 9.1 GB/s, floor 40 GB/s"})
    judged = preflight_verdict.preflight_verdict(results, LIMITS)
    assert judged["reasons"] == ["GPU copies below the floor: GPU 0 -> GPU 1: 9.1 GB/s, floor 40 GB/s"]
    assert judged["messages"] == ["GPU 0 -> GPU 1: 9.1 GB/s, floor 40 GB/s"]
    assert preflight_row.preflight_row(results, LIMITS)["engine"] == (
        "-; engine not serving; GPU copies: GPU 0 -> GPU 1: 9.1 GB/s, floor 40 GB/s")


# ---- hosts whose GPUs could not be read ------------------------------------------------------------------------


@pytest.mark.parametrize("code, reason", [
    ("driver_not_loaded", "driver missing: NVIDIA driver not loaded"),
    ("nvml_missing", "not prepared: the gates venv lacks nvidia-ml-py, run site.yml --tags gates"),
])
def test_unreadable_gpus_judged_by_code(code, reason):
    results = {"host": "ws", "venv_python": STAT_OK, "df": df(), "gpu": nvml_failure(code, "whatever it says"),
               "nvlink": SKIPPED, "thermal": SKIPPED}
    judged = preflight_verdict.preflight_verdict(results, LIMITS)
    assert (judged["verdict"], judged["reasons"]) == ("fail", [reason])
    assert judged["messages"] == ["whatever it says"]
    row = preflight_row.preflight_row(results, LIMITS)
    assert row["gpus"] == row["driver"] == row["nvlink"] == row["temps"] == row["pcie"] == "-"


def test_message_text_is_never_searched():
    # A message that reads like a missing driver, without the code, is not taken for one.
    results = {"venv_python": STAT_OK, "df": df(),
               "gpu": nvml_failure("nvml_call_failed", "NVML nvmlDeviceGetCount failed: driver not loaded " * 4)}
    [reason] = preflight_verdict.preflight_verdict(results, LIMITS)["reasons"]
    assert reason.startswith("GPUs unreadable: NVML nvmlDeviceGetCount failed") and reason.endswith("...")
    assert len(reason) <= len("GPUs unreadable: ") + 120


def test_gpu_facts_that_never_ran():
    judged = preflight_verdict.preflight_verdict({"venv_python": STAT_OK, "df": df()}, LIMITS)
    assert judged["reasons"] == ["GPUs unreadable: no result"]


def test_not_prepared_and_low_disk():
    results = {"host": "ws", "venv_python": {"changed": False, "stat": {"exists": False}},
               "df": df(free_kib=1_000_000, mount="/var"), "gpu": SKIPPED, "nvlink": SKIPPED, "thermal": SKIPPED}
    judged = preflight_verdict.preflight_verdict(results, dict(LIMITS, min_free_gb=100000))
    assert judged["reasons"] == [
        "not prepared: run site.yml --tags gates (no /opt/llmfleet/gates/bin/python)",
        "low disk: 1.0 GB free on /var for /var/lib/llmfleet/models, below 100000 GB"]
    assert judged["messages"] == []


def test_unknown_free_disk_warns(fake_nvml):
    results = host(fake_nvml, dual_3090(), df={"changed": False, "rc": 1, "stdout_lines": []})
    judged = preflight_verdict.preflight_verdict(results, LIMITS)
    assert (judged["verdict"], judged["reasons"]) == (
        "warn", ["free disk unknown (df printed nothing for /var/lib/llmfleet/models)"])
    assert preflight_row.preflight_row(results, LIMITS)["disk_free_gb"] == "-"


def test_unreachable_host():
    message = "Task failed: Failed to connect to the host via ssh:\n  ssh: connect to host 10.0.0.9 port 22: " + "x" * 9
    results = {"host": "gone", "venv_python": {"unreachable": True, "msg": message, "changed": False},
               "df": {"unreachable": True, "msg": message}, "compat": {"summary": "ok", "problems": []}}
    judged = preflight_verdict.preflight_verdict(results, dict(LIMITS, min_free_gb=10 ** 9))
    assert judged["verdict"] == "unreachable"
    [reason] = judged["reasons"]
    assert reason.startswith("cannot connect: Failed to connect to the host via ssh: ssh: connect")
    assert judged["messages"] == [message.strip()]
    row = preflight_row.preflight_row(results, LIMITS)
    assert (row["disk_free_gb"], row["engine"]) == ("-", "-; engine not serving")


# ---- the engine line ---------------------------------------------------------------------------------------------


def test_engine_line_with_compat_fixes_and_a_serving_engine(fake_nvml):
    compat = {"summary": "fail: vLLM 0.26.0 needs 580+, driver branch 560",
              "problems": [{"fix": "update the driver"}, {"fix": "or pin vllm_version"}]}
    results = host(fake_nvml, dual_3090(), compat=compat, engine={"ready": True, "engine": {"kv_cache_tokens": 4096}})
    assert preflight_row.preflight_row(results, LIMITS)["engine"] == (
        "fail: vLLM 0.26.0 needs 580+, driver branch 560 (update the driver; or pin vllm_version); "
        "serving, KV cache 4096 tokens")
    results["engine"] = {"ready": True}
    results["compat"] = {"summary": "ok", "problems": []}
    assert preflight_row.preflight_row(results, LIMITS)["engine"] == "ok; serving, KV cache ? tokens"


# ---- helpers and the filters' shells ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["short", "word " * 30, "x" * 104, "x" * 106, "a b " * 60])
def test_truncate_is_jinjas(text):
    expected = jinja2.Environment().from_string("{{ text | truncate(100) }}").render(text=text)
    assert preflight.truncate(text, 100) == expected


def test_gpu_names_grouped_as_jinja_groupby():
    cards = [{"name": "NVIDIA RTX A6000"}, {"name": "NVIDIA GeForce RTX 3090"}, {"name": "nvidia geforce rtx 3090"}]
    assert preflight.gpus_cell({"gpus": cards}) == "2x NVIDIA GeForce RTX 3090, 1x NVIDIA RTX A6000"
    assert preflight.gpus_cell({"gpus": []}) == "none"
    assert preflight.gpus_cell(None) == "-"


def test_parse_df_takes_the_first_data_line():
    assert preflight.parse_df([DF_HEADER, "/dev/sda1 1000 1 976563 1% /mnt/my disk", "/dev/sda2 9 9 9 9% /"]) == (
        pytest.approx(1.0000005), "/mnt/my disk")
    assert preflight.parse_df([DF_HEADER]) == (None, "")


def test_filters_are_registered_and_refuse_what_is_not_a_dictionary():
    assert preflight_verdict.FilterModule().filters() == {"preflight_verdict": preflight_verdict.preflight_verdict}
    assert preflight_row.FilterModule().filters() == {"preflight_row": preflight_row.preflight_row}
    assert preflight_report.FilterModule().filters() == {"preflight_report": preflight_report.preflight_report}
    assert report_table.FilterModule().filters() == {"report_table": report_table.report_table}
    with pytest.raises(AnsibleFilterError, match="dictionaries"):
        preflight_verdict.preflight_verdict(["not", "a", "dict"], LIMITS)
    with pytest.raises(AnsibleFilterError, match="dictionaries"):
        preflight_row.preflight_row({}, "limits")
    with pytest.raises(AnsibleFilterError, match="preflight_verdict"):
        preflight_verdict.preflight_verdict({"venv_python": STAT_OK, "df": df()}, {"max_core_temp_c": "hot"})


# ---- rendering -------------------------------------------------------------------------------------------------

ROWS = [{"name": "ws-01", "state": "ok", "note": ""}, {"name": "ws-002", "state": "fail", "note": 'a | b "c"'}]


def test_text_table_aligns_columns_and_trims():
    assert report_table.report_table(ROWS, ["host", "state", "note"], ["name", "state", "note"]) == [
        "host    state  note",
        "------  -----  ---------",
        "ws-01   ok",
        'ws-002  fail   a | b "c"',
    ]


def test_markdown_escapes_pipes():
    assert report_table.report_table(ROWS, ["host", "state", "note"], ["name", "state", "note"], "markdown") == [
        "| host | state | note |",
        "| --- | --- | --- |",
        "| ws-01 | ok |  |",
        '| ws-002 | fail | a \\| b "c" |',
    ]


def test_csv_quotes_every_cell_and_reads_back():
    lines = report_table.report_table(ROWS, ["host", "state", "note"], ["name", "state", "note"], "csv")
    assert lines[0] == '"name","state","note"'
    assert list(csv.reader(lines)) == [["name", "state", "note"], ["ws-01", "ok", ""], ["ws-002", "fail", 'a | b "c"']]


def test_report_table_refuses_bad_input():
    with pytest.raises(AnsibleFilterError, match="style"):
        report_table.report_table(ROWS, ["host"], ["name"], "html")
    with pytest.raises(AnsibleFilterError, match="differ in length"):
        report_table.report_table(ROWS, ["host", "state"], ["name"])
    with pytest.raises(AnsibleFilterError, match="list of dictionaries"):
        report_table.report_table(["ws-01"], ["host"], ["name"])
    with pytest.raises(AnsibleFilterError, match="missing"):
        report_table.report_table(ROWS, ["host"], ["missing"])


def test_report_keeps_every_host_and_its_sections():
    columns, keys = ["host", "verdict", "reasons"], ["host", "verdict", "reasons"]
    hostvars = {
        "ws-01": {"preflight_row": {"host": "ws-01", "verdict": "fail", "reasons": "hot",
                                    "messages": ["Thermal gate failed:\n   GPU 1 hot"],
                                    "engine": "ok; engine not serving"}},
        "ws-02": {"inventory_hostname": "ws-02"},
    }
    report = preflight_report.preflight_report(["ws-01", "ws-02"], hostvars, columns, keys, "Preflight 20261202T0000Z")
    assert report["rows"][1] == {"host": "ws-02", "gpus": "-", "nvlink": "-", "temps": "-", "power": "-", "pcie": "-",
                                 "driver": "-",
                                 "disk_free_gb": "-", "verdict": "fail",
                                 "reasons": "no result: the audit of this host stopped early", "messages": [],
                                 "engine": "-"}
    assert report["printed"] == [
        "host   verdict  reasons",
        "-----  -------  -----------------------------------------------",
        "ws-01  fail     hot",
        "ws-02  fail     no result: the audit of this host stopped early",
        "",
        "ws-01: Thermal gate failed: GPU 1 hot",
        "",
        "Engine release against the driver:",
        "ws-01: ok; engine not serving",
        "ws-02: -",
    ]
    assert report["markdown"] == [
        "# Preflight 20261202T0000Z", "",
        "| host | verdict | reasons |", "| --- | --- | --- |",
        "| ws-01 | fail | hot |", "| ws-02 | fail | no result: the audit of this host stopped early |",
        "", "## Messages from the gates", "", "- ws-01: Thermal gate failed: GPU 1 hot",
        "", "## Engine release against the driver", "", "- ws-01: ok; engine not serving", "- ws-02: -",
    ]
    assert report["csv"] == ['"host","verdict","reasons"', '"ws-01","fail","hot"',
                             '"ws-02","fail","no result: the audit of this host stopped early"']


def test_report_without_messages_has_no_messages_section():
    hostvars = {"ws-01": {"preflight_row": {"host": "ws-01", "verdict": "ok", "messages": [], "engine": "-"}}}
    report = preflight_report.preflight_report(["ws-01"], hostvars, ["host", "verdict"], ["host", "verdict"])
    assert report["printed"] == ["host   verdict", "-----  -------", "ws-01  ok", "",
                                 "Engine release against the driver:", "ws-01: -"]
    assert report["markdown"][0] == "# Preflight"
    assert "## Messages from the gates" not in report["markdown"]
    with pytest.raises(AnsibleFilterError, match="list"):
        preflight_report.preflight_report("ws-01", hostvars, ["host"], ["host"])
