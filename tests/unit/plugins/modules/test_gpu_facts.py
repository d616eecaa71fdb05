"""gpu_facts: the facts roles rely on, PCIe lane starvation and the GPU-count check."""

from conftest import dual_3090

from ansible_collections.llmfleet.workstation.plugins.module_utils import nvml
from ansible_collections.llmfleet.workstation.plugins.modules import gpu_facts


def facts_for(fake_nvml, gpus, **params):
    fake_nvml.install(gpus)
    with nvml.NvmlSession() as session:
        return gpu_facts.run(dict({"expected_gpu_count": None}, **params), session)


def test_facts_of_the_reference_build(fake_nvml):
    result = facts_for(fake_nvml, dual_3090())
    facts = result["ansible_facts"]["llmfleet_gpu"]
    assert facts["driver_version"] == "560.35.03"
    assert facts["cuda_driver_version"] == "12.6"
    assert facts["gpu_count"] == 2
    assert facts["gpus"][1]["pci_bus_id"] == "00000000:21:00.0"
    assert facts["gpus"][0]["memory_total_mib"] == 24576
    assert facts["gpus"][0]["persistence_mode"] is True
    assert facts["gpus"][0]["power_max_limit_w"] == 400.0
    assert facts["lane_starved_gpus"] == []
    assert result["warnings"] == []


def test_x8_lane_starvation_flagged_and_generation_downshift_only_reported(fake_nvml):
    cards = dual_3090()
    cards[1]["pcie"] = (4, 4, 8, 16)
    cards[0]["pcie"] = (1, 4, 16, 16)  # idle power saving: generation drops, width stays
    result = facts_for(fake_nvml, cards)
    facts = result["ansible_facts"]["llmfleet_gpu"]
    assert facts["lane_starved_gpus"] == [1]
    assert facts["gpus"][0]["pcie_lane_starved"] is False
    assert facts["gpus"][0]["pcie_generation_downshifted"] is True
    assert result["warnings"] == [
        "GPU 1 (NVIDIA GeForce RTX 3090, 00000000:21:00.0) runs PCIe x8 of x16: move it to a slot wired for x16, "
        "or expect slower tensor-parallel traffic over PCIe"
    ]


def test_expected_gpu_count(fake_nvml):
    result = facts_for(fake_nvml, dual_3090()[:1], expected_gpu_count=2)
    assert result["failed"] is True
    assert "Expected 2 GPUs, NVML reports 1 (0: NVIDIA GeForce RTX 3090)" in result["msg"]


def test_main(fake_nvml, run_module):
    fake_nvml.install(dual_3090())
    result = run_module(gpu_facts, {"expected_gpu_count": 2}, check_mode=True)
    assert result["changed"] is False
    assert result["ansible_facts"]["llmfleet_gpu"]["gpu_count"] == 2
