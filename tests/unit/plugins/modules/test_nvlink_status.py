"""nvlink_status: verdicts and messages on healthy, misseated, switch-attached, PCIe-only and single-GPU hosts."""

import pynvml
import pytest
from conftest import bridge_links, dual_3090, gpu, nvml_error

from ansible_collections.llmfleet.workstation.plugins.module_utils import gate as gate_shell
from ansible_collections.llmfleet.workstation.plugins.module_utils import nvml
from ansible_collections.llmfleet.workstation.plugins.modules import nvlink_status

DEFAULTS = {"expected_gpu_count": None, "min_active_links": None, "require_nvlink": True, "require_p2p": True,
            "fail_on_errors": False}
GPU0 = "GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0)"
GPU1 = "GPU 1 (NVIDIA GeForce RTX 3090, 00000000:21:00.0)"


def gate(fake_nvml, gpus, **params):
    fake_nvml.install(gpus)
    with nvml.NvmlSession() as session:
        return nvlink_status.run(dict(DEFAULTS, **params), session)


def dual_h200():
    return [
        gpu(name="NVIDIA H200", bus_id=bus, links=bridge_links("FFFFFFFF:FF:FF.0", count=18, version=6,
                                                               remote_type=2, errors=None))
        for bus in ("00000000:18:00.0", "00000000:2A:00.0")
    ]


def dual_4090():
    return [gpu(name="NVIDIA GeForce RTX 4090"), gpu(name="NVIDIA GeForce RTX 4090", bus_id="00000000:21:00.0")]


def test_healthy_bridge(fake_nvml):
    result = gate(fake_nvml, dual_3090(), expected_gpu_count=2)
    assert "failed" not in result
    assert result["changed"] is False
    assert result["notes"] == []
    facts = result["ansible_facts"]["llmfleet_nvlink"]
    assert facts["gpu_count"] == 2
    assert facts["nvlink_present"] is True
    assert facts["active_links_per_gpu"] == [4, 4]
    # GA102: 112.5 GB/s bidirectional over the 4 links, per GPU and for the host (each link counted once).
    assert facts["estimated_bidirectional_bandwidth_gbps"] == pytest.approx(112.5)
    assert facts["estimated_total_bidirectional_bandwidth_gbps"] == pytest.approx(112.5)
    assert facts["all_pairs_p2p_nvlink"] is True
    assert facts["pairs"] == [{"gpus": [0, 1], "p2p_nvlink": "ok", "topology": "hostbridge"}]
    first = facts["gpus"][0]
    assert {key: first[key] for key in ("index", "name", "pci_bus_id", "nvlink_supported", "link_count",
                                        "active_links", "inactive_links")} == {
        "index": 0, "name": "NVIDIA GeForce RTX 3090", "pci_bus_id": "00000000:01:00.0", "nvlink_supported": True,
        "link_count": 4, "active_links": 4, "inactive_links": []}
    assert first["links"][0] == {
        "link": 0, "active": True, "version": "3.0", "remote_pci_bus_id": "00000000:21:00.0",
        "remote_device_type": "gpu", "p2p_supported": True,
        "errors": {"replay": 0, "recovery": 0, "crc_flit": 0, "crc_data": 0}}


def test_misseated_bridge_names_gpus_links_values_and_fix(fake_nvml):
    result = gate(fake_nvml, dual_3090(active=False), expected_gpu_count=2)
    assert result["failed"] is True
    assert result["changed"] is False
    message = result["msg"]
    assert message.startswith(
        "NVLink gate failed: %s has 0 of 4 NVLink links active, 4 required (links 0-3 inactive); "
        "%s has 0 of 4 NVLink links active, 4 required (links 0-3 inactive). Fix: power off the host, reseat the "
        "NVLink bridge firmly on both cards until it clicks, power on and re-run; check both cards sit in slots "
        "that match the bridge spacing (3-slot bridge" % (GPU0, GPU1))
    assert "P2P over NVLink between %s and %s is not_supported" % (GPU0, GPU1) in message
    facts = result["ansible_facts"]["llmfleet_nvlink"]
    assert facts["active_links_per_gpu"] == [0, 0]
    assert facts["estimated_bidirectional_bandwidth_gbps"] == 0.0
    assert facts["gpus"][0]["inactive_links"] == [0, 1, 2, 3]


def test_one_dead_link_fails_by_default_and_passes_with_min_active_links(fake_nvml):
    cards = dual_3090()
    cards[1]["links"][2]["active"] = False
    strict = gate(fake_nvml, cards)
    assert strict["failed"] is True
    assert "%s has 3 of 4 NVLink links active, 4 required (links 2 inactive)" % GPU1 in strict["msg"]
    assert GPU0 not in strict["msg"].split("Fix:")[0]
    tolerant = gate(fake_nvml, cards, min_active_links=3)
    assert "failed" not in tolerant
    facts = tolerant["ansible_facts"]["llmfleet_nvlink"]
    assert facts["gpus"][1]["estimated_bidirectional_bandwidth_gbps"] == pytest.approx(112.5 * 3 / 4)
    # Three links seen from GPU 1 and four from GPU 0; each shared link counts half at each end.
    assert facts["estimated_total_bidirectional_bandwidth_gbps"] == pytest.approx(112.5 * 7 / 8, abs=0.001)


def test_min_active_links_above_what_the_gpu_has(fake_nvml):
    result = gate(fake_nvml, dual_3090(), min_active_links=6)
    assert result["failed"] is True
    assert "has 4 of 4 NVLink links active, 6 required" in result["msg"]


def test_switch_attached_h200s_enumerate_eighteen_links(fake_nvml):
    result = gate(fake_nvml, dual_h200(), expected_gpu_count=2)
    assert "failed" not in result, result.get("msg")
    facts = result["ansible_facts"]["llmfleet_nvlink"]
    assert facts["active_links_per_gpu"] == [18, 18]
    assert [card["link_count"] for card in facts["gpus"]] == [18, 18]
    assert facts["estimated_bidirectional_bandwidth_gbps"] == 900.0
    assert facts["estimated_total_bidirectional_bandwidth_gbps"] == 1800.0  # switch links are not shared
    assert {link["remote_device_type"] for link in facts["gpus"][0]["links"]} == {"switch"}
    assert {link["version"] for link in facts["gpus"][0]["links"]} == {"4.0"}
    # Counters NVML answers NotSupported for are null, and never fail the gate.
    assert facts["gpus"][0]["links"][0]["errors"] == {"replay": None, "recovery": None, "crc_flit": None,
                                                      "crc_data": None}
    # Enumeration asked for link 18 once per GPU, got InvalidArgument, and stopped.
    states = [call for call in fake_nvml.link_calls if call[0] == "nvmlDeviceGetNvLinkState" and call[2] >= 18]
    assert [call[2] for call in states] == [18, 18]
    assert "failed" not in gate(fake_nvml, dual_h200(), fail_on_errors=True)


def test_pcie_only_pair_fails_only_when_nvlink_is_required(fake_nvml):
    strict = gate(fake_nvml, dual_4090())
    assert strict["failed"] is True
    assert "no NVLink on GPU 0 (NVIDIA GeForce RTX 4090, 00000000:01:00.0)" in strict["msg"]
    assert "require_nvlink: false" in strict["msg"]
    relaxed = gate(fake_nvml, dual_4090(), require_nvlink=False)  # require_p2p stays at its default
    assert "failed" not in relaxed
    facts = relaxed["ansible_facts"]["llmfleet_nvlink"]
    assert facts["nvlink_present"] is False
    assert facts["estimated_bidirectional_bandwidth_gbps"] is None
    assert facts["estimated_total_bidirectional_bandwidth_gbps"] is None
    assert facts["gpus"][0]["link_count"] == 0 and facts["gpus"][0]["nvlink_supported"] is False
    assert relaxed["notes"] == [
        "No NVLink on GPU 0 (NVIDIA GeForce RTX 4090, 00000000:01:00.0), GPU 1 (NVIDIA GeForce RTX 4090, "
        "00000000:21:00.0): GPUs talk over PCIe"
    ]


def test_unbridged_nvlink_cards_pass_when_nvlink_is_not_required(fake_nvml):
    """Two RTX 3090s without a bridge report 4 inactive links each: a PCIe pair, if the operator says so."""
    relaxed = gate(fake_nvml, dual_3090(active=False), require_nvlink=False)
    assert "failed" not in relaxed, relaxed.get("msg")
    assert relaxed["notes"] == [
        "NVLink links present but none active on %s, %s (no bridge fitted, or it is unseated): GPUs talk over PCIe"
        % (GPU0, GPU1)
    ]
    assert relaxed["ansible_facts"]["llmfleet_nvlink"]["all_pairs_p2p_nvlink"] is False
    # An explicit minimum is still a gate.
    assert gate(fake_nvml, dual_3090(active=False), require_nvlink=False, min_active_links=4)["failed"] is True


def test_partial_links_are_a_note_when_nvlink_is_not_required(fake_nvml):
    cards = dual_3090()
    cards[0]["links"][3]["active"] = False
    result = gate(fake_nvml, cards, require_nvlink=False)
    assert "failed" not in result
    assert result["notes"] == [
        "%s has 3 of 4 NVLink links active (links 3 inactive); not gated (require_nvlink: false)" % GPU0]


def test_p2p_over_live_links_is_checked_even_when_nvlink_is_optional(fake_nvml):
    fake_nvml.p2p = {(0, 1): pynvml.NVML_P2P_STATUS_DISABLED_BY_REGKEY}
    result = gate(fake_nvml, dual_3090(), require_nvlink=False)
    assert result["failed"] is True
    assert "P2P over NVLink between %s and %s is disabled_by_regkey (topology hostbridge)" % (GPU0, GPU1) \
        in result["msg"]


def test_p2p_not_supported_with_links_up(fake_nvml):
    fake_nvml.p2p = {(0, 1): pynvml.NVML_P2P_STATUS_DISABLED_BY_REGKEY}
    result = gate(fake_nvml, dual_3090())
    assert result["failed"] is True
    assert "is disabled_by_regkey" in result["msg"]
    assert "driver is 550+" in result["msg"]
    assert result["ansible_facts"]["llmfleet_nvlink"]["all_pairs_p2p_nvlink"] is False
    assert "failed" not in gate(fake_nvml, dual_3090(), require_p2p=False)


def test_p2p_status_unavailable_counts_as_not_ok(fake_nvml, monkeypatch):
    fake_nvml.install(dual_3090())

    def not_supported(*_args):
        raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetP2PStatus", not_supported)
    with nvml.NvmlSession() as session:
        result = nvlink_status.run(DEFAULTS, session)
    assert result["failed"] is True
    assert "is unavailable" in result["msg"]
    assert result["ansible_facts"]["llmfleet_nvlink"]["pairs"][0]["p2p_nvlink"] is None


def test_error_counters_fail_only_when_asked(fake_nvml):
    cards = dual_3090()
    cards[0]["links"][1]["errors"] = [0, 0, 7, 0]
    cards[1]["links"][0]["errors"] = [3, 1, 0, 0]
    passed = gate(fake_nvml, cards)
    assert "failed" not in passed
    assert passed["ansible_facts"]["llmfleet_nvlink"]["gpus"][0]["links"][1]["errors"]["crc_flit"] == 7
    result = gate(fake_nvml, cards, fail_on_errors=True)
    assert result["failed"] is True
    assert "%s link 1 has NVLink errors crc_flit=7" % GPU0 in result["msg"]
    assert "%s link 0 has NVLink errors recovery=1, replay=3" % GPU1 in result["msg"]


def test_single_gpu(fake_nvml):
    single = [gpu(name="NVIDIA GeForce RTX 5090")]
    result = gate(fake_nvml, single)
    assert "failed" not in result
    assert result["notes"] == ["Single GPU: no NVLink pair to check"]
    assert result["ansible_facts"]["llmfleet_nvlink"]["all_pairs_p2p_nvlink"] is False
    result = gate(fake_nvml, single, expected_gpu_count=2)
    assert result["failed"] is True
    assert "expected 2 GPUs, NVML reports 1 (GPU 0 (NVIDIA GeForce RTX 5090, 00000000:01:00.0))" in result["msg"]


def test_no_gpu_fails_while_nvlink_is_required(fake_nvml):
    result = gate(fake_nvml, [])
    assert result["failed"] is True
    assert "NVML reports no GPU" in result["msg"]
    assert "failed" not in gate(fake_nvml, [], require_nvlink=False)
    counted = gate(fake_nvml, [], expected_gpu_count=2)
    assert counted["msg"] == ("NVLink gate failed: expected 2 GPUs, NVML reports 0 (none). Check that every card is "
                              "seated and powered and that nvidia-smi lists it")


def test_nvlink_version_without_a_figure_gives_no_number(fake_nvml):
    cards = dual_3090()
    for card in cards:
        for link in card["links"]:
            link["version"] = 8  # NVLink 6.0: no published per-link figure in this module yet
    facts = gate(fake_nvml, cards)["ansible_facts"]["llmfleet_nvlink"]
    assert facts["gpus"][0]["links"][0]["version"] == "6.0"
    assert facts["estimated_bidirectional_bandwidth_gbps"] is None
    assert facts["estimated_total_bidirectional_bandwidth_gbps"] is None


# ---- the module as Ansible runs it --------------------------------------------------------------


def test_main_in_check_mode_changes_nothing(fake_nvml, run_module):
    fake_nvml.install(dual_3090())
    result = run_module(nvlink_status, {"expected_gpu_count": 2}, check_mode=True)
    assert result["changed"] is False
    assert "failed" not in result
    assert result["ansible_facts"]["llmfleet_nvlink"]["active_links_per_gpu"] == [4, 4]
    assert fake_nvml.shutdowns == 1


def test_main_failure_keeps_the_facts(fake_nvml, run_module):
    fake_nvml.install(dual_3090(active=False))
    result = run_module(nvlink_status, {"expected_gpu_count": 2})
    assert result["failed"] is True
    assert result["changed"] is False
    assert "links 0-3 inactive" in result["msg"]
    assert result["ansible_facts"]["llmfleet_nvlink"]["active_links_per_gpu"] == [0, 0]


def test_main_reports_missing_pynvml(monkeypatch, run_module):
    monkeypatch.setattr(gate_shell, "HAS_PYNVML", False)
    result = run_module(nvlink_status)
    assert result["failed"] is True
    assert result["msg"].startswith("Failed to import the required Python library (nvidia-ml-py)")


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND])
def test_main_fails_on_missing_driver(fake_nvml, run_module, code):
    fake_nvml.install([], init_error=code)
    result = run_module(nvlink_status)
    assert result["failed"] is True
    assert result["changed"] is False
    assert result["msg"].startswith("NVIDIA driver not loaded: run the nvidia_driver role first "
                                    "(llmfleet.workstation.nvidia_driver)")


def test_main_names_the_gpu_when_a_read_fails(fake_nvml, run_module, monkeypatch):
    fake_nvml.install(dual_3090())

    def lost(*_args):
        raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetNvLinkRemotePciInfo", lost)
    result = run_module(nvlink_status)
    assert result["failed"] is True
    assert result["changed"] is False
    assert result["msg"] == ("NVML nvmlDeviceGetNvLinkRemotePciInfo failed on %s link 0: GPU is lost" % GPU0)
    assert fake_nvml.shutdowns == 1


def test_main_rejects_unknown_options(run_module):
    result = run_module(nvlink_status, {"require_nvlinks": True})
    assert result["failed"] is True
    assert "require_nvlinks" in result["msg"]


# ---- structured problems: what preflight and other callers judge from, beside the message ----------------------


def codes(result):
    return [(item["code"], item["gpu"], item["value"], item["limit"]) for item in result["problems"]]


def test_problems_empty_on_a_healthy_bridge(fake_nvml):
    assert gate(fake_nvml, dual_3090(), expected_gpu_count=2)["problems"] == []


def test_problems_of_a_misseated_bridge(fake_nvml):
    result = gate(fake_nvml, dual_3090(active=False))
    assert codes(result) == [("nvlink_links_down", 0, 0, 4), ("nvlink_links_down", 1, 0, 4),
                             ("no_p2p_nvlink", 0, "not_supported", "ok")]
    assert result["problems"][2]["gpus"] == [0, 1]
    for item in result["problems"]:
        assert set(item) >= {"code", "gpu", "value", "limit", "fix", "message"}
        assert item["message"].split(". Fix:")[0] in result["msg"]
    assert "reseat the NVLink bridge" in result["problems"][0]["fix"]


def test_problems_honour_min_active_links(fake_nvml):
    cards = dual_3090()
    cards[1]["links"][2]["active"] = False
    assert codes(gate(fake_nvml, cards, min_active_links=4))[0] == ("nvlink_links_down", 1, 3, 4)
    assert gate(fake_nvml, cards, min_active_links=3)["problems"] == []


def test_problem_no_p2p_over_live_links(fake_nvml):
    fake_nvml.p2p = {(0, 1): pynvml.NVML_P2P_STATUS_DISABLED_BY_REGKEY}
    result = gate(fake_nvml, dual_3090())
    assert codes(result) == [("no_p2p_nvlink", 0, "disabled_by_regkey", "ok")]
    assert "driver is 550+" in result["problems"][0]["fix"]


def test_problems_gpu_count_no_gpu_and_no_nvlink(fake_nvml):
    assert codes(gate(fake_nvml, dual_3090(), expected_gpu_count=3))[0] == ("gpu_count", None, 2, 3)
    assert codes(gate(fake_nvml, []))[0][0] == "no_gpu"
    assert codes(gate(fake_nvml, dual_4090())) == [("no_nvlink", None, None, None)]
    assert gate(fake_nvml, dual_4090(), require_nvlink=False)["problems"] == []


def test_problem_nvlink_unsupported_on_one_gpu(fake_nvml):
    cards = dual_3090()
    cards[1]["links"] = None
    assert ("nvlink_unsupported", 1, 0, None) in codes(gate(fake_nvml, cards, require_p2p=False))


def test_problem_nvlink_errors(fake_nvml):
    cards = dual_3090()
    cards[0]["links"][1]["errors"] = 5
    result = gate(fake_nvml, cards, fail_on_errors=True)
    found = [item for item in result["problems"] if item["code"] == "nvlink_errors"]
    assert found and found[0]["gpu"] == 0 and all(count for count in found[0]["value"].values())


@pytest.mark.parametrize("code, problem_code", [(pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver_not_loaded"),
                                                (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "driver_not_loaded"),
                                                (pynvml.NVML_ERROR_NO_PERMISSION, "nvml_init_failed")])
def test_main_reports_an_unreadable_nvml_as_a_problem(fake_nvml, run_module, code, problem_code):
    fake_nvml.install([], init_error=code)
    result = run_module(nvlink_status)
    assert result["failed"] is True
    [item] = result["problems"]
    assert item["code"] == problem_code and item["message"] == result["msg"] and item["fix"]


def test_main_reports_missing_pynvml_as_a_problem(monkeypatch, run_module):
    monkeypatch.setattr(gate_shell, "HAS_PYNVML", False)
    result = run_module(nvlink_status)
    assert [item["code"] for item in result["problems"]] == ["nvml_missing"]
    assert "site.yml --tags gates" in result["problems"][0]["fix"]


def test_main_returns_problems_on_success(fake_nvml, run_module):
    fake_nvml.install(dual_3090())
    assert run_module(nvlink_status)["problems"] == []
