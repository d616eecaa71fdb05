"""The nvidia-smi parsers and the comparison of tests/hardware/compare_with_nvidia_smi.py, on captured text."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "tests" / "hardware" / "compare_with_nvidia_smi.py"
spec = importlib.util.spec_from_file_location("compare_with_nvidia_smi", SCRIPT)
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)

# Shapes as nvidia-smi 580 prints them (two H200s on NVSwitch; the second GPU's output trimmed to 2 links).
H200_QUERY = (
    "0, NVIDIA H200, GPU-77f8edcf-8957-8e06-a961-6b24cb2daec3, 00000000:00:06.0, 580.159.04, 143771, 39, 40, 5, 5, "
    "16, 16, Enabled, 700.00, [N/A]\n"
    "1, NVIDIA H200, GPU-633113c7-440f-6f20-f5b4-ec177917bb8e, 00000000:00:07.0, 580.159.04, 143771, 41, 42, 5, 5, "
    "16, 16, Enabled, 700.00, [N/A]\n"
)
GEFORCE_QUERY = (
    "0, NVIDIA GeForce RTX 3090, GPU-5f0c3d12, 00000000:01:00.0, 560.35.03, 24576, 41, [N/A], 1, 4, 16, 16, "
    "Disabled, 350.00, 30\n"
)
H200_NVLINK_STATUS = """GPU 0: NVIDIA H200 (UUID: GPU-77f8edcf-8957-8e06-a961-6b24cb2daec3)
\t Link 0: 26.562 GB/s
\t Link 1: 26.562 GB/s
GPU 1: NVIDIA H200 (UUID: GPU-633113c7-440f-6f20-f5b4-ec177917bb8e)
\t Link 0: 26.562 GB/s
\t Link 1: <inactive>
"""
RTX4090_NVLINK_STATUS = "GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-1)\nGPU 1: NVIDIA GeForce RTX 4090 (UUID: GPU-2)\n"
# Captured from nvidia-smi 580.159.04 on two H200s: the matrix headers carry terminal underline escapes.
TOPO = ("\t\x1b[4mGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n"
        "GPU0\t X \tNV18\t0-31\t0\t\tN/A\n"
        "GPU1\tNV18\t X \t0-31\t0\t\tN/A\n"
        "\nLegend:\n\n  X    = Self\n  NV#  = Connection traversing a bonded set of # NVLinks\n")
TOPO_P2P = (" \t\x1b[4mGPU0\tGPU1\t\x1b[0m\n"
            " GPU0\tX\tOK\t\n"
            " GPU1\tOK\tX\t\n"
            "\nLegend:\n\n  X    = Self\n  OK   = Status Ok\n  CNS  = Chipset not supported\n")
NVLINK_ERRORS = """GPU 0: NVIDIA H200 (UUID: GPU-1e181569-925e-0f33-d4b1-4464b650c8d1)
\t Link 0: Replay Errors: 0
\t Link 0: Recovery Errors: 0
\t Link 0: CRC Errors: 0

\t Link 1: Replay Errors: 2
\t Link 1: Recovery Errors: 0
\t Link 1: CRC Errors: 5

GPU 1: NVIDIA H200 (UUID: GPU-c942b841-9b4d-f74c-34f3-e6874c67d98e)
\t Link 0: Replay Errors: 0
\t Link 0: Recovery Errors: 0
\t Link 0: CRC Errors: 0
"""
REASONS = "0, 0x0000000000000001\n1, 0x0000000000000060\n2, [N/A]\n"


def test_smi_value():
    assert compare.smi_value(" 143771") == 143771
    assert compare.smi_value("700.00") == 700.0
    assert compare.smi_value("[N/A]") is None
    assert compare.smi_value("[Not Supported]") is None
    assert compare.smi_value("Enabled") is True and compare.smi_value("Disabled") is False
    assert compare.smi_value(" NVIDIA H200") == "NVIDIA H200"


def test_parse_query_csv():
    rows = compare.parse_query_csv(H200_QUERY)
    assert len(rows) == 2
    assert rows[1] == {
        "index": 1, "name": "NVIDIA H200", "uuid": "GPU-633113c7-440f-6f20-f5b4-ec177917bb8e",
        "pci_bus_id": "00000000:00:07.0", "driver_version": "580.159.04", "memory_total_mib": 143771,
        "core_temp_c": 41, "memory_temp_c": 42, "pcie_current_generation": 5, "pcie_max_generation": 5,
        "pcie_current_width": 16, "pcie_max_width": 16, "persistence_mode": True, "power_limit_w": 700.0,
        "fan_speed_pct": None,
    }
    geforce = compare.parse_query_csv(GEFORCE_QUERY)[0]
    assert geforce["memory_temp_c"] is None and geforce["persistence_mode"] is False
    assert compare.parse_query_csv("") == []


def test_parse_nvlink_status_and_speeds():
    assert compare.parse_nvlink_status(H200_NVLINK_STATUS) == {0: {0: True, 1: True}, 1: {0: True, 1: False}}
    assert compare.parse_nvlink_speeds(H200_NVLINK_STATUS) == {0: {0: 26.562, 1: 26.562}, 1: {0: 26.562, 1: None}}
    assert compare.parse_nvlink_status(RTX4090_NVLINK_STATUS) == {0: {}, 1: {}}
    assert compare.parse_nvlink_status("") == {}


def test_parse_topology_matrices():
    assert compare.parse_topology(TOPO) == {(0, 1): "NV18", (1, 0): "NV18"}
    assert compare.parse_topology(TOPO_P2P) == {(0, 1): "OK", (1, 0): "OK"}
    assert compare.parse_topology("") == {}


def test_parse_nvlink_errors():
    assert compare.parse_nvlink_errors(NVLINK_ERRORS) == {
        0: {0: {"replay": 0, "recovery": 0, "crc": 0}, 1: {"replay": 2, "recovery": 0, "crc": 5}},
        1: {0: {"replay": 0, "recovery": 0, "crc": 0}},
    }
    assert compare.error_totals([{"crc": 1, "replay": None}, {"crc": 2, "replay": None}], ("crc", "replay")) == {
        "crc": 3, "replay": None}


def test_parse_clock_event_reasons():
    assert compare.parse_clock_event_reasons(REASONS) == {0: 0x1, 1: 0x60, 2: None}


def module_facts(active=True, memory_temp=(40, 42), core_temp=(39, 41)):
    """What the three modules return on the H200 pair (2 links each, to keep it short)."""
    rows = compare.parse_query_csv(H200_QUERY)
    gpus, links, heat = [], [], []
    for row in rows:
        identity = {key: row[key] for key in ("index", "name", "uuid", "pci_bus_id")}
        gpus.append(dict(identity, memory_total_mib=143771, pcie_current_generation=5, pcie_max_generation=5,
                         pcie_current_width=16, pcie_max_width=16, persistence_mode=True, power_limit_w=700.0))
        states = [True, True] if row["index"] == 0 else [True, active]
        links.append(dict(identity, link_count=2, active_links=sum(states),
                          estimated_bidirectional_bandwidth_gbps=50.0 * sum(states),
                          links=[{"link": number, "active": state, "version": "4.0", "remote_device_type": "switch",
                                  "errors": {"replay": 0, "recovery": 0, "crc_flit": None, "crc_data": 3}}
                                 for number, state in enumerate(states)]))
        heat.append(dict(identity, core_temp_c=core_temp[row["index"]], memory_temp_c=memory_temp[row["index"]],
                         fan_speed_pct=None, power_draw_w=120.5, clock_event_reasons=["gpu_idle"]))
    facts = {"gpu_count": 2, "driver_version": "580.159.04", "gpus": gpus}
    nvlink = {"gpus": links, "pairs": [{"gpus": [0, 1], "p2p_nvlink": "ok", "topology": "hostbridge"}],
              "active_links_per_gpu": [card["active_links"] for card in links],
              "estimated_bidirectional_bandwidth_gbps": 100.0, "estimated_total_bidirectional_bandwidth_gbps": 200.0}
    return facts, nvlink, {"gpus": heat}


def run_compare(facts, nvlink, thermal, topo=TOPO):
    return compare.compare_results(
        facts, nvlink, thermal,
        smi_rows=compare.parse_query_csv(H200_QUERY),
        smi_links=compare.parse_nvlink_status(H200_NVLINK_STATUS),
        smi_speeds=compare.parse_nvlink_speeds(H200_NVLINK_STATUS),
        topology=compare.parse_topology(topo),
        p2p=compare.parse_topology(TOPO_P2P),
        reasons=compare.parse_clock_event_reasons(REASONS),
        power_draw={0: 121.0, 1: 119.0},
        decode_reasons=lambda mask: ["gpu_idle"] if mask == 1 else ["other"],
        smi_errors=compare.parse_nvlink_errors(NVLINK_ERRORS),
    )


def test_matching_results_have_no_mismatch():
    facts, nvlink, thermal = module_facts(active=False, core_temp=(41, 39))  # temperatures moved by 2 C
    table = run_compare(facts, nvlink, thermal, topo=TOPO.replace("NV18", "NV2"))
    assert table.mismatches == []
    fields = [row[0] for row in table.rows]
    assert "GPU 1 link 1 active" in fields
    assert "P2P over NVLink GPU0-GPU1 ok" in fields
    info = [row for row in table.rows if row[3] == "info"]
    assert ("GPU 0 clock_event_reasons", ["gpu_idle"], ["gpu_idle"], "info") in info
    assert ("GPU 0 power_draw_w", 120.5, 121.0, "info") in info
    # Hopper's legacy data-CRC counter counts on healthy links; nvidia-smi's CRC total does not: info only.
    assert ("GPU 0 NVLink error counters, sum over links", {"replay": 0, "recovery": 0, "crc_flit": None,
                                                            "crc_data": 6},
            {"replay": 2, "recovery": 0, "crc": 5}, "info") in info
    assert len(table.compared) + len(info) == len(table.rows)
    assert "| GPU 0 name | NVIDIA H200 | NVIDIA H200 | yes |" in table.markdown()


def test_a_link_that_disagrees_is_a_mismatch():
    facts, nvlink, thermal = module_facts(active=True)  # module says up, nvidia-smi says inactive
    table = run_compare(facts, nvlink, thermal, topo=TOPO.replace("NV18", "NV2"))
    assert [row[0] for row in table.mismatches] == ["GPU 1 NVLink active links", "GPU 1 link 1 active"]
    assert "| GPU 1 link 1 active | True | False | **NO** |" in table.markdown()


def test_temperature_tolerance_is_five_degrees():
    # nvidia-smi reads 40 and 42 C: 46 is 6 C off (a mismatch), 47 on GPU 1 is exactly 5 C off (within).
    facts, nvlink, thermal = module_facts(active=False, memory_temp=(46, 47))
    table = run_compare(facts, nvlink, thermal, topo=TOPO.replace("NV18", "NV2"))
    assert [row[0] for row in table.mismatches] == ["GPU 0 memory_temp_c"]


def test_main_writes_report(tmp_path):
    facts, nvlink, thermal = module_facts(active=False)
    for name, result in (("gpu_facts", {"ansible_facts": {"llmfleet_gpu": facts}}),
                         ("nvlink_status", {"ansible_facts": {"llmfleet_nvlink": nvlink}}),
                         ("gpu_junction_temp", {"ansible_facts": {"llmfleet_gpu_thermal": thermal}})):
        (tmp_path / ("%s.json" % name)).write_text(json.dumps(result))
    (tmp_path / "smi_query.csv").write_text(H200_QUERY)
    (tmp_path / "smi_nvlink_status.txt").write_text(H200_NVLINK_STATUS)
    (tmp_path / "smi_topo.txt").write_text(TOPO.replace("NV18", "NV2"))
    (tmp_path / "smi_topo_p2p_nvlink.txt").write_text(TOPO_P2P)
    (tmp_path / "smi_reasons.csv").write_text(REASONS)
    (tmp_path / "smi_power.csv").write_text("0, 121.00\n1, 119.00\n")
    (tmp_path / "smi_nvlink_errors.txt").write_text(NVLINK_ERRORS)
    assert compare.main(str(tmp_path)) == 0
    report = (tmp_path / "report.md").read_text()
    assert "0 mismatches" in report
    # The real decoder from plugins/module_utils/nvml.py names nvidia-smi's mask 0x60.
    assert "| GPU 1 clock_event_reasons | ['gpu_idle'] | ['sw_thermal_slowdown', 'hw_thermal_slowdown'] | info |" \
        in report

    (tmp_path / "smi_query.csv").write_text(H200_QUERY.replace("143771, 41", "143770, 41"))
    assert compare.main(str(tmp_path)) == 1


@pytest.mark.parametrize("text", ["", "No devices were found\n"])
def test_empty_or_odd_output_parses_to_nothing(text):
    assert compare.parse_nvlink_status(text) == {}
    assert compare.parse_topology(text) == {}
