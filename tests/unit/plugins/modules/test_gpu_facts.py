"""gpu_facts: the facts roles rely on, PCIe lane starvation and the GPU-count check."""

import pynvml
import pytest
from conftest import Memory, dual_3090, gpu

from ansible_collections.llmfleet.workstation.plugins.module_utils import gate as gate_shell
from ansible_collections.llmfleet.workstation.plugins.module_utils import nvml
from ansible_collections.llmfleet.workstation.plugins.modules import gpu_facts


def facts_for(fake_nvml, gpus, **params):
    fake_nvml.install(gpus)
    with nvml.NvmlSession() as session:
        return gpu_facts.run(dict({"expected_gpu_count": None}, **params), session)


def test_facts_of_the_reference_build(fake_nvml):
    result = facts_for(fake_nvml, dual_3090())
    assert result["changed"] is False
    assert "failed" not in result
    facts = result["ansible_facts"]["llmfleet_gpu"]
    assert {key: facts[key] for key in ("driver_version", "cuda_driver_version", "nvml_version", "gpu_count",
                                        "lane_starved_gpus")} == {
        "driver_version": "560.35.03", "cuda_driver_version": "12.6", "nvml_version": "12.560.35.03",
        "gpu_count": 2, "lane_starved_gpus": []}
    assert facts["gpus"][1] == {
        "index": 1, "name": "NVIDIA GeForce RTX 3090", "uuid": "GPU-0000000021000",
        "pci_bus_id": "00000000:21:00.0", "memory_total_mib": 24576, "memory_used_mib": 1,
        "pcie_current_generation": 4, "pcie_max_generation": 4, "pcie_gpu_max_generation": 4,
        "pcie_current_width": 16, "pcie_max_width": 16, "pcie_lane_starved": False,
        "pcie_generation_downshifted": False, "persistence_mode": True, "power_limit_w": 350.0,
        "power_default_limit_w": 350.0, "power_min_limit_w": 100.0, "power_max_limit_w": 400.0,
        "power_draw_w": 30.0,
    }
    assert result["warnings"] == []


def test_x8_lane_starvation_flagged_and_generation_downshift_only_reported(fake_nvml):
    cards = dual_3090()
    cards[1]["pcie"] = (4, 4, 8, 16)
    cards[0]["pcie"] = (1, 4, 16, 16)  # idle power saving: generation drops, width stays
    result = facts_for(fake_nvml, cards)
    assert "failed" not in result
    facts = result["ansible_facts"]["llmfleet_gpu"]
    assert facts["lane_starved_gpus"] == [1]
    assert facts["gpus"][1]["pcie_lane_starved"] is True
    assert facts["gpus"][0]["pcie_lane_starved"] is False
    assert facts["gpus"][0]["pcie_generation_downshifted"] is True
    assert result["warnings"] == [
        "GPU 1 (NVIDIA GeForce RTX 3090, 00000000:21:00.0) runs PCIe x8 of x16: move it to a slot wired for x16, "
        "or expect slower tensor-parallel traffic over PCIe"
    ]


def test_gen4_card_in_a_gen3_slot(fake_nvml):
    cards = [gpu(pcie=(3, 3, 16, 16), gpu_max_gen=4)]
    card = facts_for(fake_nvml, cards)["ansible_facts"]["llmfleet_gpu"]["gpus"][0]
    assert (card["pcie_max_generation"], card["pcie_gpu_max_generation"]) == (3, 4)
    assert card["pcie_generation_downshifted"] is False


def test_unexposed_values_are_null(fake_nvml, monkeypatch):
    cards = [gpu(pcie=(None, None, None, None), gpu_max_gen=None, persistence=None,
                 power_mw={"usage": None, "enforced": None, "default": None, "constraints": None})]
    fake_nvml.install(cards)

    def not_supported(*_args):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(pynvml, "nvmlSystemGetCudaDriverVersion", not_supported)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", not_supported)
    with nvml.NvmlSession() as session:
        result = gpu_facts.run({"expected_gpu_count": None}, session)
    facts = result["ansible_facts"]["llmfleet_gpu"]
    card = facts["gpus"][0]
    assert facts["cuda_driver_version"] is None
    for key in ("memory_total_mib", "memory_used_mib", "pcie_current_generation", "pcie_max_generation",
                "pcie_gpu_max_generation", "pcie_current_width", "pcie_max_width", "persistence_mode",
                "power_limit_w", "power_default_limit_w", "power_min_limit_w", "power_max_limit_w"):
        assert card[key] is None, key
    assert card["pcie_lane_starved"] is False and card["pcie_generation_downshifted"] is False


def test_memory_in_mib(fake_nvml, monkeypatch):
    fake_nvml.install([gpu(name="NVIDIA H200")])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda handle: Memory(143771, 0))
    with nvml.NvmlSession() as session:
        card = gpu_facts.run({"expected_gpu_count": None}, session)["ansible_facts"]["llmfleet_gpu"]["gpus"][0]
    assert card["memory_total_mib"] == 143771


def test_expected_gpu_count(fake_nvml):
    result = facts_for(fake_nvml, dual_3090()[:1], expected_gpu_count=2)
    assert result["failed"] is True
    assert result["changed"] is False
    assert "Expected 2 GPUs, NVML reports 1 (0: NVIDIA GeForce RTX 3090)" in result["msg"]
    assert result["ansible_facts"]["llmfleet_gpu"]["gpu_count"] == 1
    assert "failed" not in facts_for(fake_nvml, dual_3090(), expected_gpu_count=2)


# ---- the module as Ansible runs it --------------------------------------------------------------


def test_main(fake_nvml, run_module):
    fake_nvml.install(dual_3090())
    result = run_module(gpu_facts, {"expected_gpu_count": 2}, check_mode=True)
    assert result["changed"] is False
    assert "failed" not in result
    assert result["ansible_facts"]["llmfleet_gpu"]["gpu_count"] == 2


def test_main_warns_on_lane_starvation(fake_nvml, run_module):
    cards = dual_3090()
    cards[1]["pcie"] = (4, 4, 8, 16)
    fake_nvml.install(cards)
    result = run_module(gpu_facts)
    assert result["changed"] is False
    assert "runs PCIe x8 of x16" in str(result["warnings"])


def test_main_reports_missing_pynvml(monkeypatch, run_module):
    monkeypatch.setattr(gate_shell, "HAS_PYNVML", False)
    result = run_module(gpu_facts)
    assert result["failed"] is True
    assert "nvidia-ml-py" in result["msg"]


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND])
def test_main_fails_on_missing_driver(fake_nvml, run_module, code):
    fake_nvml.install([], init_error=code)
    result = run_module(gpu_facts)
    assert result["failed"] is True and result["changed"] is False
    assert result["msg"].startswith("NVIDIA driver not loaded: run the nvidia_driver role first")


# ---- structured problems: what preflight and other callers judge from, beside the message ----------------------


def test_problems_empty_on_the_reference_build(fake_nvml):
    assert facts_for(fake_nvml, dual_3090(), expected_gpu_count=2)["problems"] == []


def test_problem_pcie_lane_starved(fake_nvml):
    cards = dual_3090()
    cards[1]["pcie"] = (4, 4, 8, 16)
    result = facts_for(fake_nvml, cards)
    [item] = result["problems"]
    assert (item["code"], item["gpu"], item["value"], item["limit"]) == ("pcie_lane_starved", 1, 8, 16)
    assert item["message"] == result["warnings"][0]
    assert "x16" in item["fix"]
    assert "failed" not in result


def test_problem_gpu_count(fake_nvml):
    result = facts_for(fake_nvml, dual_3090(), expected_gpu_count=3)
    [item] = result["problems"]
    assert (item["code"], item["gpu"], item["value"], item["limit"]) == ("gpu_count", None, 2, 3)
    assert item["message"] == result["msg"]
    assert "lspci" in item["fix"]


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND])
def test_main_reports_missing_driver_as_a_problem(fake_nvml, run_module, code):
    fake_nvml.install([], init_error=code)
    result = run_module(gpu_facts)
    [item] = result["problems"]
    assert (item["code"], item["gpu"]) == ("driver_not_loaded", None)
    assert item["message"] == result["msg"]


def test_main_reports_missing_pynvml_as_a_problem(monkeypatch, run_module):
    monkeypatch.setattr(gate_shell, "HAS_PYNVML", False)
    result = run_module(gpu_facts)
    assert result["failed"] is True and result["changed"] is False
    assert [item["code"] for item in result["problems"]] == ["nvml_missing"]


def test_main_returns_problems(fake_nvml, run_module):
    fake_nvml.install(dual_3090())
    assert run_module(gpu_facts, {"expected_gpu_count": 2})["problems"] == []
