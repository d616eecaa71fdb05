"""gpu_p2p_bandwidth: floors from what NVML reports, verdicts on measured figures, and honest 'not measured'.

NVML is the conftest's fake; the measurement is p2p_measure itself, run in-process against tests/fake_torch by a
stand-in for subprocess.run (one test runs the real child process).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKE_TORCH_DIR, bridge_links, dual_3090, gpu, load_fake_torch

from ansible_collections.llmfleet.workstation.plugins.module_utils import nvml, p2p_bandwidth, p2p_measure
from ansible_collections.llmfleet.workstation.plugins.modules import gpu_p2p_bandwidth

REPO = Path(__file__).resolve().parents[4]
PYTHON = sys.executable  # any interpreter that exists: the runner below stands in for the child process
DEFAULTS = {"python": PYTHON, "min_pair_gbps": None, "floor_fraction": 0.7, "min_gpu_copy_gbps": None,
            "require_measurement": False, "buffer_size_mib": 16, "repetitions": 3, "timeout": 120}
GPU0 = "GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0)"
GPU1 = "GPU 1 (NVIDIA GeForce RTX 3090, 00000000:21:00.0)"


torch = load_fake_torch()


def cuda_gpus(nvml_gpus, **overrides):
    """The fake torch's view of the same GPUs (same PCI addresses)."""
    return [dict({"name": card["name"], "bus_id": card["bus_id"], "uuid": card["uuid"][4:]}, **overrides)
            for card in nvml_gpus]


class Runner:
    """Stands in for subprocess.run: runs p2p_measure in this process against the fake torch."""

    def __init__(self, config=None, raises=None, stdout=None, returncode=0, stderr=""):
        self.config, self.raises, self.stdout, self.returncode, self.stderr = config, raises, stdout, returncode, stderr
        self.calls = []

    def __call__(self, command, **kwargs):
        self.calls.append((command, kwargs))
        if self.raises is not None:
            raise self.raises
        stdout = self.stdout
        if stdout is None:
            backend = torch.configure(self.config)
            result = p2p_measure.run(command[2:], importer=lambda: torch, clock=backend.now)
            stdout = "a line torch printed\n%s %s\n" % (p2p_measure.RESULT_MARKER, json.dumps(result))
        return subprocess.CompletedProcess(command, self.returncode, stdout=stdout, stderr=self.stderr)


def gate(fake_nvml, nvml_gpus, runner, **params):
    fake_nvml.install(nvml_gpus)
    with nvml.NvmlSession() as session:
        return p2p_bandwidth.run(dict(DEFAULTS, **params), session, runner=runner, environ={})


def h200_pair():
    return [gpu(name="NVIDIA H200", bus_id=bus, pcie=(1, 5, 16, 16), gpu_max_gen=5,
                links=bridge_links("FFFFFFFF:FF:FF.0", count=18, version=6, remote_type=2))
            for bus in ("00000000:18:00.0", "00000000:2A:00.0")]


def pcie_pair(generation=4, width=16, name="NVIDIA GeForce RTX 4090"):
    return [gpu(name=name, bus_id=bus, pcie=(1, generation, width, 16))
            for bus in ("00000000:01:00.0", "00000000:21:00.0")]


def topology(fake_nvml, nvml_gpus):
    fake_nvml.install(nvml_gpus)
    with nvml.NvmlSession() as session:
        return p2p_bandwidth.read_topology(session)


# ---- floors from NVML ----------------------------------------------------------------------------------


def test_rtx_3090_bridge_floor_is_seventy_percent_of_four_links(fake_nvml):
    found = topology(fake_nvml, dual_3090())
    expected = p2p_bandwidth.expected_pair(*found["gpus"])
    assert expected["path"] == "nvlink"
    assert expected["nvlink_links"] == 4
    assert expected["expected_gbps"] == pytest.approx(4 * 14.0625)
    assert "NVLink 3.0, 4 links between the GPUs, 14.06 GB/s per link per direction" in expected["expected_source"]
    floor, source = p2p_bandwidth.floor_for(expected, 0.7, None)
    assert floor == pytest.approx(39.38)
    assert source.startswith("70% of NVLink 3.0")
    # Above what PCIe 4.0 x16 carries: a pair whose traffic falls back to PCIe fails.
    assert floor > p2p_bandwidth.PCIE_X16_PRACTICAL_GBPS[4]


def test_nvswitch_pair_counts_each_gpus_switch_links_at_25_gbps(fake_nvml):
    expected = p2p_bandwidth.expected_pair(*topology(fake_nvml, h200_pair())["gpus"])
    assert expected["path"] == "nvlink"
    assert expected["nvlink_links"] == 18
    assert expected["expected_gbps"] == pytest.approx(450.0)
    assert "to NVSwitch on each GPU" in expected["expected_source"]
    assert p2p_bandwidth.floor_for(expected, 0.7, None)[0] == pytest.approx(315.0)


def test_one_dead_link_lowers_the_expected_figure(fake_nvml):
    cards = dual_3090()
    cards[0]["links"][3]["active"] = False
    expected = p2p_bandwidth.expected_pair(*topology(fake_nvml, cards)["gpus"])
    assert expected["nvlink_links"] == 3
    assert expected["expected_gbps"] == pytest.approx(3 * 14.0625, abs=0.001)


@pytest.mark.parametrize("generation, width, expected_gbps, floor", [
    (3, 16, 12.0, 8.4),
    (4, 16, 25.0, 17.5),
    (5, 16, 50.0, 35.0),
    (4, 8, 12.5, 8.75),
])
def test_pcie_pair_floor_from_generation_and_width(fake_nvml, generation, width, expected_gbps, floor):
    expected = p2p_bandwidth.expected_pair(*topology(fake_nvml, pcie_pair(generation, width))["gpus"])
    assert expected["path"] == "pcie"
    assert expected["expected_gbps"] == pytest.approx(expected_gbps)
    assert p2p_bandwidth.floor_for(expected, 0.7, None)[0] == pytest.approx(floor)


def test_bridge_without_active_links_is_a_pcie_path(fake_nvml):
    expected = p2p_bandwidth.expected_pair(*topology(fake_nvml, dual_3090(active=False))["gpus"])
    assert expected["path"] == "pcie"
    assert expected["expected_gbps"] == pytest.approx(25.0)


def test_the_slower_gpu_link_decides_a_pcie_pair(fake_nvml):
    cards = pcie_pair()
    cards[1]["pcie"] = (1, 3, 16, 16)
    expected = p2p_bandwidth.expected_pair(*topology(fake_nvml, cards)["gpus"])
    assert expected["expected_gbps"] == pytest.approx(12.0)
    assert "PCIe 3 x16" in expected["expected_source"]


def test_unknown_pcie_generation_gives_no_floor(fake_nvml):
    cards = pcie_pair()
    cards[0]["pcie"] = (None, None, 16, 16)
    expected = p2p_bandwidth.expected_pair(*topology(fake_nvml, cards)["gpus"])
    assert expected["expected_gbps"] is None
    assert p2p_bandwidth.floor_for(expected, 0.7, None) == (None, "none: PCIe generation or width unknown")


def test_min_pair_gbps_overrides_the_floor():
    expected = {"expected_gbps": 56.25, "expected_source": "NVLink 3.0"}
    assert p2p_bandwidth.floor_for(expected, 0.7, 45) == (45.0, "min_pair_gbps")


# ---- verdicts on measured figures ----------------------------------------------------------------------


def test_healthy_bridge_passes_with_figures_per_pair_and_gpu(fake_nvml):
    cards = dual_3090()
    runner = Runner({"gpus": cuda_gpus(cards), "pair_gbps": 52.5, "within_gbps": 420})
    result = gate(fake_nvml, cards, runner)
    assert "failed" not in result, result["msg"]
    assert result["changed"] is False
    assert result["problems"] == []
    facts = result["ansible_facts"]["llmfleet_p2p_bandwidth"]
    assert facts["measured"] is True
    pair = facts["pairs"][0]
    assert pair["gpus"] == [0, 1]
    assert pair["path"] == "nvlink"
    assert pair["p2p_nvlink"] == "ok"
    assert pair["peer_access"] is True
    assert pair["floor_gbps"] == pytest.approx(39.38)
    assert [(direction["direction"], direction["unidirectional_gbps"], direction["bidirectional_gbps"])
            for direction in pair["directions"]] == [("0->1", 52.5, 52.5), ("1->0", 52.5, 52.5)]
    assert pair["bidirectional_total_gbps"] == pytest.approx(105.0)
    assert pair["min_gbps"] == pytest.approx(52.5)
    assert [card["copy_gbps"] for card in facts["gpus"]] == [420.0, 420.0]
    assert [card["memory_traffic_gbps"] for card in facts["gpus"]] == [840.0, 840.0]
    assert "GPU 0<->1 52.5/52.5 GB/s one way, 105 GB/s both ways at once (nvlink, floor 39.38)" in result["msg"]
    # The child gets the script on stdin, GPU numbers in NVML's order, and the options.
    command, kwargs = runner.calls[0]
    assert command == [PYTHON, "-", "--size-mib", "16", "--repetitions", "3"]
    assert p2p_measure.RESULT_MARKER in kwargs["input"]
    assert kwargs["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert kwargs["timeout"] == 120


def test_nvlink_up_but_traffic_over_pcie_fails_with_pair_figure_expected_and_fix(fake_nvml):
    cards = dual_3090()
    result = gate(fake_nvml, cards, Runner({"gpus": cuda_gpus(cards), "pair_gbps": 24.3}))
    assert result["failed"] is True
    assert result["changed"] is False
    assert result["msg"].startswith(
        "P2P bandwidth gate failed: %s and %s copy at 24.3 GB/s per direction (0->1 bidirectional 24.3, "
        % (GPU0, GPU1))
    assert "floor 39.38 GB/s, expected about 56.25 GB/s (NVLink 3.0, 4 links" in result["msg"]
    assert "Fix: NVLink is up but traffic crosses PCIe" in result["msg"]
    assert "nvidia-smi topo -p2p n" in result["msg"]
    assert "NCCL_P2P_DISABLE" in result["msg"]
    (problem,) = result["problems"]
    assert {key: problem[key] for key in ("code", "gpu", "pair", "value", "limit", "expected", "path")} == {
        "code": "pair_below_floor", "gpu": None, "pair": [0, 1], "value": 24.3, "limit": 39.38, "expected": 56.25,
        "path": "nvlink"}
    assert problem["fix"].startswith("NVLink is up but traffic crosses PCIe")
    # The facts come back on failure too.
    assert result["ansible_facts"]["llmfleet_p2p_bandwidth"]["pairs"][0]["min_gbps"] == 24.3


def test_no_peer_access_is_named_in_the_fix(fake_nvml):
    cards = dual_3090()
    result = gate(fake_nvml, cards, Runner({"gpus": cuda_gpus(cards), "pair_gbps": 20, "peer": False}))
    (problem,) = result["problems"]
    assert problem["fix"].startswith("CUDA cannot enable peer access between them")
    assert result["ansible_facts"]["llmfleet_p2p_bandwidth"]["pairs"][0]["peer_access"] is False


def test_pcie_pair_without_p2p_passes_above_its_floor(fake_nvml):
    cards = pcie_pair()
    result = gate(fake_nvml, cards, Runner({"gpus": cuda_gpus(cards), "pair_gbps": 21.0, "peer": False}))
    assert "failed" not in result, result["msg"]
    pair = result["ansible_facts"]["llmfleet_p2p_bandwidth"]["pairs"][0]
    assert (pair["path"], pair["floor_gbps"], pair["peer_access"]) == ("pcie", 17.5, False)


def test_pcie_pair_below_floor_gets_the_pcie_fix(fake_nvml):
    cards = pcie_pair()
    result = gate(fake_nvml, cards, Runner({"gpus": cuda_gpus(cards), "pair_gbps": 6.0}))
    (problem,) = result["problems"]
    assert problem["path"] == "pcie"
    assert "nvidia-smi -q -d PCIE" in problem["fix"]


def test_min_pair_gbps_gates_every_direction(fake_nvml):
    cards = h200_pair()
    result = gate(fake_nvml, cards, Runner({"gpus": cuda_gpus(cards), "pair_gbps": 380}), min_pair_gbps=400)
    (problem,) = result["problems"]
    assert (problem["value"], problem["limit"]) == (380.0, 400.0)
    assert result["ansible_facts"]["llmfleet_p2p_bandwidth"]["pairs"][0]["floor_source"] == "min_pair_gbps"


def test_altered_copies_fail_whatever_the_speed(fake_nvml):
    cards = dual_3090()
    result = gate(fake_nvml, cards, Runner({"gpus": cuda_gpus(cards), "corrupt_pairs": [[0, 1]]}))
    assert [problem["code"] for problem in result["problems"]] == ["pair_data_mismatch"]
    assert "iommu=pt" in result["problems"][0]["fix"]


def test_a_copy_error_fails_the_pair(fake_nvml):
    cards = dual_3090()
    result = gate(fake_nvml, cards, Runner({"gpus": cuda_gpus(cards), "error_pairs": [[0, 1]]}))
    (problem,) = result["problems"]
    assert problem["code"] == "pair_copy_error"
    assert "illegal memory access" in problem["message"]


def test_within_gpu_floor_is_optional(fake_nvml):
    cards = [gpu(name="NVIDIA H200", bus_id="00000000:18:00.0")]
    runner = Runner({"gpus": cuda_gpus(cards), "within_gbps": 900})
    assert "failed" not in gate(fake_nvml, cards, runner)
    result = gate(fake_nvml, cards, runner, min_gpu_copy_gbps=1500)
    (problem,) = result["problems"]
    assert (problem["code"], problem["gpu"], problem["value"], problem["limit"]) == (
        "gpu_copy_below_floor", 0, 900.0, 1500.0)


def test_cuda_numbering_is_mapped_to_nvmls_by_pci_address(fake_nvml):
    cards = dual_3090()
    cards[1]["pcie"] = (4, 4, 8, 16)
    # torch lists the GPUs the other way round (CUDA_DEVICE_ORDER overridden by the operator).
    runner = Runner({"gpus": list(reversed(cuda_gpus(cards))), "pair_gbps": 52})
    facts = gate(fake_nvml, cards, runner)["ansible_facts"]["llmfleet_p2p_bandwidth"]
    assert [card["pci_bus_id"] for card in facts["gpus"]] == ["00000000:01:00.0", "00000000:21:00.0"]
    assert [direction["direction"] for direction in facts["pairs"][0]["directions"]] == ["1->0", "0->1"]


# ---- not measured --------------------------------------------------------------------------------------


def test_missing_interpreter_is_reported_not_failed(fake_nvml):
    runner = Runner({})
    result = gate(fake_nvml, dual_3090(), runner, python="/opt/vllm/current/bin/python")
    assert "failed" not in result
    assert runner.calls == []
    facts = result["ansible_facts"]["llmfleet_p2p_bandwidth"]
    assert (facts["measured"], facts["reason"]) == (False, "python_missing")
    assert result["msg"] == ("P2P bandwidth not measured: /opt/vllm/current/bin/python does not exist or is not "
                             "executable")
    assert result["notes"] == ["Not measured: /opt/vllm/current/bin/python does not exist or is not executable"]
    assert [pair["status"] for pair in facts["pairs"]] == ["not_measured"]
    assert facts["pairs"][0]["floor_gbps"] == pytest.approx(39.38)  # the floor is known all the same


def test_missing_interpreter_fails_when_a_measurement_is_required(fake_nvml):
    result = gate(fake_nvml, dual_3090(), Runner({}), python="/nonexistent/python", require_measurement=True)
    assert result["failed"] is True
    (problem,) = result["problems"]
    assert problem["code"] == "not_measured"
    assert "/nonexistent/python does not exist" in result["msg"]


@pytest.mark.parametrize("config, reason", [
    ({"cuda": False}, "cuda_unavailable"),
    ({"gpus": []}, "no_gpu"),
])
def test_torch_without_cuda_is_not_measured(fake_nvml, config, reason):
    result = gate(fake_nvml, dual_3090(), Runner(config))
    assert "failed" not in result
    assert result["ansible_facts"]["llmfleet_p2p_bandwidth"]["reason"] == reason


def test_torch_missing_is_not_measured(fake_nvml):
    missing = p2p_measure.not_measured("torch_missing", "torch is not installed for /usr/bin/python3")
    stdout = "%s %s\n" % (p2p_measure.RESULT_MARKER, json.dumps(missing))
    result = gate(fake_nvml, dual_3090(), Runner(stdout=stdout))
    assert "failed" not in result
    assert result["msg"] == "P2P bandwidth not measured: torch is not installed for /usr/bin/python3"


def test_single_gpu_measures_within_the_gpu_only(fake_nvml):
    cards = [gpu(name="NVIDIA GeForce RTX 5090", pcie=(5, 5, 16, 16))]
    runner = Runner({"gpus": cuda_gpus(cards), "within_gbps": 1500})
    result = gate(fake_nvml, cards, runner, require_measurement=True)
    assert "failed" not in result, result["msg"]
    facts = result["ansible_facts"]["llmfleet_p2p_bandwidth"]
    assert facts["pairs"] == []
    assert facts["gpus"][0]["copy_gbps"] == 1500.0
    assert result["notes"] == ["Single GPU: no pair to measure; the copy within the GPU was measured"]
    assert "--no-pairs" in runner.calls[0][0]


def test_gpu_hidden_from_cuda_leaves_its_pairs_not_measured(fake_nvml):
    cards = dual_3090()
    runner = Runner({"gpus": cuda_gpus(cards)[:1]})
    relaxed = gate(fake_nvml, cards, runner)
    assert "failed" not in relaxed
    facts = relaxed["ansible_facts"]["llmfleet_p2p_bandwidth"]
    assert facts["gpus"][1]["reason"] == "not_visible_to_cuda"
    assert facts["pairs"][0]["reason"] == "not_visible_to_cuda"
    strict = gate(fake_nvml, cards, runner, require_measurement=True)
    assert [problem["code"] for problem in strict["problems"]] == ["not_measured", "not_measured"]


def test_busy_gpu_is_not_measured(fake_nvml):
    cards = dual_3090()
    runner = Runner({"gpus": cuda_gpus(cards, free_mib=10)})
    result = gate(fake_nvml, cards, runner)
    assert "failed" not in result
    facts = result["ansible_facts"]["llmfleet_p2p_bandwidth"]
    assert [card["reason"] for card in facts["gpus"]] == ["insufficient_memory"] * 2
    assert "is the engine running on it?" in facts["gpus"][0]["detail"]
    assert facts["pairs"][0]["reason"] == "gpu_not_measured"


def test_a_hung_measurement_fails_with_where_it_was(fake_nvml):
    progress = b"p2p_measure: GPU 0 within-GPU copy\np2p_measure: GPU 0 <-> GPU 1\n"
    hung = subprocess.TimeoutExpired(["python"], 120, stderr=progress)
    result = gate(fake_nvml, dual_3090(), Runner(raises=hung))
    assert result["failed"] is True
    (problem,) = result["problems"]
    assert problem["code"] == "measurement_timeout"
    assert "no result after 120 s; it was at: p2p_measure: GPU 0 <-> GPU 1" in problem["message"]
    assert "iommu=pt" in problem["fix"]


def test_a_crashed_measurement_fails_with_its_last_words(fake_nvml):
    runner = Runner(stdout="", returncode=-11, stderr="Fatal Python error: Segmentation fault\n")
    result = gate(fake_nvml, dual_3090(), runner)
    (problem,) = result["problems"]
    assert problem["code"] == "measurement_error"
    assert "exited with status -11 without a result: Fatal Python error: Segmentation fault" in problem["message"]


# ---- the module shell ----------------------------------------------------------------------------------


def test_module_in_check_mode_reports_not_measured_without_changes(fake_nvml, run_module):
    fake_nvml.install(dual_3090())
    result = run_module(gpu_p2p_bandwidth, {"python": "/nonexistent/python"}, check_mode=True)
    assert result["changed"] is False
    assert "failed" not in result
    assert result["ansible_facts"]["llmfleet_p2p_bandwidth"]["reason"] == "python_missing"


def test_module_measures_through_a_real_child_process(fake_nvml, run_module, monkeypatch):
    """The source travels on stdin to a real interpreter; here its torch is the fake one."""
    cards = dual_3090()
    fake_nvml.install(cards)
    config = {"gpus": cuda_gpus(cards), "pair_gbps": 50, "real_time": True}
    monkeypatch.setenv("PYTHONPATH", str(FAKE_TORCH_DIR))
    monkeypatch.setenv("FAKE_TORCH_CONFIG", json.dumps(config))
    result = run_module(gpu_p2p_bandwidth, {"python": sys.executable, "buffer_size_mib": 8})
    assert "failed" not in result, result.get("msg")
    pair = result["ansible_facts"]["llmfleet_p2p_bandwidth"]["pairs"][0]
    # The fake copies take real time (sleeps); on a loaded machine a sleep overruns, never ends early, so the figure
    # may come out a little low (49.44 seen at load 8) but never high.
    assert 45.0 <= pair["directions"][0]["unidirectional_gbps"] <= 50.5
    assert result["ansible_facts"]["llmfleet_p2p_bandwidth"]["torch_version"] == "0.0.0+fake"


@pytest.mark.parametrize("args, message", [
    ({"floor_fraction": 1.5}, "floor_fraction must be above 0 and at most 1"),
    ({"repetitions": 0}, "repetitions must be at least 1"),
    ({"min_pair_gbps": -1}, "min_pair_gbps must not be negative"),
])
def test_module_refuses_unusable_options(fake_nvml, run_module, args, message):
    fake_nvml.install(dual_3090())
    result = run_module(gpu_p2p_bandwidth, dict({"python": "/usr/bin/python3"}, **args))
    assert result["failed"] is True
    assert message in result["msg"]


def test_the_script_source_comes_from_the_module_utils_file():
    source = p2p_bandwidth.measurement_source()
    assert source == (REPO / "plugins" / "module_utils" / "p2p_measure.py").read_text()


def test_environment_of_the_operator_wins(fake_nvml):
    runner = Runner({"gpus": cuda_gpus(dual_3090())})
    fake_nvml.install(dual_3090())
    with nvml.NvmlSession() as session:
        p2p_bandwidth.run(DEFAULTS, session, runner=runner, environ={"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})
    assert runner.calls[0][1]["env"]["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"
