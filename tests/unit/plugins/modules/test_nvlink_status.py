"""nvlink_status: verdicts and messages on healthy, misseated, switch-attached, PCIe-only and single-GPU hosts."""

import pynvml
import pytest
from conftest import bridge_links, dual_3090, gpu

from ansible_collections.llmfleet.workstation.plugins.module_utils import gate as gate_shell
from ansible_collections.llmfleet.workstation.plugins.module_utils import nvml
from ansible_collections.llmfleet.workstation.plugins.modules import nvlink_status

DEFAULTS = {"expected_gpu_count": None, "min_active_links": None, "require_nvlink": True, "require_p2p": True,
            "fail_on_errors": False}


def gate(fake_nvml, gpus, **params):
    fake_nvml.install(gpus)
    with nvml.NvmlSession() as session:
        return nvlink_status.run(dict(DEFAULTS, **params), session)


def test_healthy_bridge(fake_nvml):
    result = gate(fake_nvml, dual_3090(), expected_gpu_count=2)
    assert "failed" not in result
    assert result["changed"] is False
    facts = result["ansible_facts"]["llmfleet_nvlink"]
    assert facts["active_links_per_gpu"] == [4, 4]
    assert facts["estimated_bidirectional_bandwidth_gbps"] == pytest.approx(112.5)
    assert facts["all_pairs_p2p_nvlink"] is True
    assert facts["pairs"] == [{"gpus": [0, 1], "p2p_nvlink": "ok", "topology": "hostbridge"}]
    assert facts["gpus"][0]["links"][0]["remote_pci_bus_id"] == "00000000:21:00.0"


def test_misseated_bridge_names_gpus_links_and_fix(fake_nvml):
    result = gate(fake_nvml, dual_3090(active=False))
    assert result["failed"] is True
    message = result["msg"]
    assert "GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0) has 0 of 4 NVLink links active" in message
    assert "links 0-3 inactive" in message
    assert "reseat the NVLink bridge" in message
    assert "P2P over NVLink" in message
    assert result["ansible_facts"]["llmfleet_nvlink"]["active_links_per_gpu"] == [0, 0]


def test_one_dead_link_fails_by_default_and_passes_with_min_active_links(fake_nvml):
    cards = dual_3090()
    cards[1]["links"][2]["active"] = False
    strict = gate(fake_nvml, cards)
    assert strict["failed"] is True
    assert "GPU 1" in strict["msg"] and "3 of 4" in strict["msg"] and "links 2 inactive" in strict["msg"]
    assert "GPU 0 (" not in strict["msg"].split("Fix:")[0]
    tolerant = gate(fake_nvml, cards, min_active_links=3)
    assert "failed" not in tolerant


def test_switch_attached_h200s(fake_nvml):
    cards = [
        gpu(name="NVIDIA H200", bus_id=bus, links=bridge_links("00000000:80:00.0", count=18, version=6,
                                                               remote_type=2, errors=None))
        for bus in ("00000000:18:00.0", "00000000:2A:00.0")
    ]
    result = gate(fake_nvml, cards, expected_gpu_count=2)
    assert "failed" not in result
    facts = result["ansible_facts"]["llmfleet_nvlink"]
    assert facts["active_links_per_gpu"] == [18, 18]
    assert facts["estimated_bidirectional_bandwidth_gbps"] == 900.0
    assert {link["remote_device_type"] for link in facts["gpus"][0]["links"]} == {"switch"}


def test_pcie_only_pair_fails_only_when_nvlink_is_required(fake_nvml):
    cards = [gpu(name="NVIDIA GeForce RTX 4090"), gpu(name="NVIDIA GeForce RTX 4090", bus_id="00000000:21:00.0")]
    strict = gate(fake_nvml, cards)
    assert strict["failed"] is True
    assert "no NVLink on GPU 0 (NVIDIA GeForce RTX 4090" in strict["msg"]
    assert "require_nvlink: false" in strict["msg"]
    relaxed = gate(fake_nvml, cards, require_nvlink=False)
    assert "failed" not in relaxed
    assert relaxed["ansible_facts"]["llmfleet_nvlink"]["nvlink_present"] is False
    assert relaxed["notes"] == [
        "No NVLink on GPU 0 (NVIDIA GeForce RTX 4090, 00000000:01:00.0), GPU 1 (NVIDIA GeForce RTX 4090, "
        "00000000:21:00.0): GPUs talk over PCIe"
    ]


def test_error_counters_fail_only_when_asked(fake_nvml):
    cards = dual_3090()
    cards[0]["links"][1]["errors"] = [0, 0, 7, 0]
    assert "failed" not in gate(fake_nvml, cards)
    result = gate(fake_nvml, cards, fail_on_errors=True)
    assert result["failed"] is True
    assert "GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0) link 1 has NVLink errors crc_flit=7" in result["msg"]


def test_p2p_not_supported_with_links_up(fake_nvml):
    fake_nvml.p2p = {(0, 1): pynvml.NVML_P2P_STATUS_DISABLED_BY_REGKEY}
    result = gate(fake_nvml, dual_3090())
    assert result["failed"] is True
    assert "is disabled_by_regkey" in result["msg"]
    assert "driver is 550+" in result["msg"]
    assert "failed" not in gate(fake_nvml, dual_3090(), require_p2p=False)


def test_single_gpu(fake_nvml):
    single = [gpu(name="NVIDIA GeForce RTX 5090")]
    result = gate(fake_nvml, single)
    assert "failed" not in result
    assert result["notes"] == ["Single GPU: no NVLink pair to check"]
    result = gate(fake_nvml, single, expected_gpu_count=2)
    assert result["failed"] is True
    assert "expected 2 GPUs, NVML reports 1" in result["msg"]


def test_main_reports_missing_pynvml(monkeypatch, run_module):
    monkeypatch.setattr(gate_shell, "HAS_PYNVML", False)
    result = run_module(nvlink_status)
    assert result["failed"] is True
    assert "nvidia-ml-py" in result["msg"]


def test_main_in_check_mode_changes_nothing(fake_nvml, run_module):
    fake_nvml.install(dual_3090())
    result = run_module(nvlink_status, {"expected_gpu_count": 2}, check_mode=True)
    assert result["changed"] is False
    assert "failed" not in result
    assert fake_nvml.shutdowns == 1


def test_main_fails_on_driver_not_loaded(fake_nvml, run_module):
    fake_nvml.install([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    result = run_module(nvlink_status)
    assert result["failed"] is True
    assert result["changed"] is False
    assert result["msg"].startswith("NVIDIA driver not loaded")
