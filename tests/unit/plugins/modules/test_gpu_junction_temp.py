"""gpu_junction_temp: hot junctions, unavailable memory temperature, throttling and cooldown."""

import json

import pynvml
import pytest
from conftest import dual_3090, gpu

from ansible_collections.llmfleet.workstation.plugins.module_utils import gate as gate_shell
from ansible_collections.llmfleet.workstation.plugins.module_utils import nvml
from ansible_collections.llmfleet.workstation.plugins.modules import gpu_junction_temp

DEFAULTS = {"max_core_temp_c": 85, "max_memory_temp_c": 100, "memory_temp_unavailable": "warn",
            "fail_on_thermal_throttle": True, "wait_for_cooldown": False, "cooldown_timeout": 600, "poll_interval": 10}
GPU1 = "GPU 1 (NVIDIA GeForce RTX 3090, 00000000:21:00.0)"


class Clock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self):
        return self.now


def gate(fake_nvml, gpus, clock=None, **params):
    fake_nvml.install(gpus)
    clock = clock or Clock()
    with nvml.NvmlSession() as session:
        return gpu_junction_temp.run(dict(DEFAULTS, **params), session, clock.sleep, clock.monotonic)


def hot_pair():
    """GPU 1's memory junction at 106 C and thermally throttling, as a card with dried pads does under load."""
    cards = dual_3090(memory_c=88)
    cards[1].update(memory_c=106, core_c=83, reasons=0x1 | 0x20 | 0x40)
    return cards


def test_cool_geforce_pair_passes_and_warns_memory_unavailable(fake_nvml):
    result = gate(fake_nvml, dual_3090())
    assert "failed" not in result
    assert result["changed"] is False
    assert result["waited_seconds"] == 0.0
    facts = result["ansible_facts"]["llmfleet_gpu_thermal"]
    assert facts["hottest_core_temp_c"] == 40
    assert facts["hottest_memory_temp_c"] is None
    assert facts["thermal_throttling"] is False
    card = facts["gpus"][0]
    assert card == {
        "index": 0, "name": "NVIDIA GeForce RTX 3090", "uuid": card["uuid"], "pci_bus_id": "00000000:01:00.0",
        "core_temp_c": 40, "memory_temp_c": None, "memory_temp_source": "unavailable",
        "clock_event_reasons": ["gpu_idle"], "thermal_throttling": False, "fan_speed_pct": 30,
        "power_draw_w": 30.0, "power_limit_w": 350.0,
        "shutdown_c": 98, "slowdown_c": 95, "memory_max_c": None, "gpu_max_c": 93,
    }
    assert len(result["warnings"]) == 1
    assert result["warnings"][0].startswith(
        "memory temperature unavailable on GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0), %s: NVML does not "
        "expose" % GPU1)


def test_memory_unavailable_ignore(fake_nvml):
    result = gate(fake_nvml, dual_3090(), memory_temp_unavailable="ignore")
    assert result["warnings"] == []
    assert "failed" not in result
    assert result["ansible_facts"]["llmfleet_gpu_thermal"]["gpus"][1]["memory_temp_c"] is None


def test_memory_unavailable_fail(fake_nvml):
    failed = gate(fake_nvml, dual_3090(), memory_temp_unavailable="fail")
    assert failed["failed"] is True
    assert failed["changed"] is False
    assert "memory temperature unavailable on GPU 0" in failed["msg"]
    assert "(memory_temp_unavailable=fail)" in failed["msg"]
    assert failed["warnings"] == []


def test_memory_unavailable_fail_does_not_wait_for_a_cooldown(fake_nvml):
    clock = Clock()
    cards = hot_pair()
    cards[1]["memory_c"] = None  # hot core, throttling, and no memory sensor
    result = gate(fake_nvml, cards, clock, memory_temp_unavailable="fail", wait_for_cooldown=True)
    assert result["failed"] is True
    assert clock.sleeps == []
    assert result["waited_seconds"] == 0.0
    assert result["msg"].startswith("Thermal gate failed: ")
    assert "memory_temp_unavailable=fail" in result["msg"]
    assert "GPU 1 (NVIDIA GeForce RTX 3090, 00000000:21:00.0) core" not in result["msg"]  # 83 C is within 85 C


def test_hot_junction_names_gpu_value_limit_and_fix(fake_nvml):
    result = gate(fake_nvml, hot_pair())
    assert result["failed"] is True
    assert result["changed"] is False
    message = result["msg"]
    assert message.startswith("Thermal gate failed: %s memory junction at 106 C, limit 100 C; %s is thermally "
                              "throttling (sw_thermal_slowdown, hw_thermal_slowdown). Fix: improve airflow or the "
                              "fan curve, cap power (nvidia-smi -pl 280" % (GPU1, GPU1))
    assert "thermal pads" in message
    assert "GPU 0" not in message
    facts = result["ansible_facts"]["llmfleet_gpu_thermal"]
    assert facts["hottest_memory_temp_c"] == 106
    assert facts["thermal_throttling"] is True
    assert facts["gpus"][1]["memory_temp_source"] == "nvml_field_memory_temp"
    assert facts["gpus"][1]["clock_event_reasons"] == ["gpu_idle", "sw_thermal_slowdown", "hw_thermal_slowdown"]
    assert result["warnings"] == []  # both GPUs expose memory temperature here


def test_limit_is_inclusive(fake_nvml):
    cards = dual_3090(memory_c=100)
    cards[0]["core_c"] = 85
    assert "failed" not in gate(fake_nvml, cards)


def test_core_limit_and_throttle_switch(fake_nvml):
    cards = dual_3090()
    cards[0].update(core_c=90)
    result = gate(fake_nvml, cards)
    assert "GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0) core at 90 C, limit 85 C" in result["msg"]
    assert "failed" not in gate(fake_nvml, cards, max_core_temp_c=92)
    throttling = dual_3090()
    throttling[0]["reasons"] = 0x20
    assert gate(fake_nvml, throttling)["failed"] is True
    relaxed = gate(fake_nvml, throttling, fail_on_thermal_throttle=False)
    assert "failed" not in relaxed
    assert relaxed["ansible_facts"]["llmfleet_gpu_thermal"]["thermal_throttling"] is True


def test_power_cap_is_not_thermal(fake_nvml):
    cards = dual_3090()
    cards[0]["reasons"] = 0x4 | 0x8  # sw_power_cap, hw_slowdown
    result = gate(fake_nvml, cards)
    assert "failed" not in result
    assert result["ansible_facts"]["llmfleet_gpu_thermal"]["gpus"][0]["clock_event_reasons"] == [
        "sw_power_cap", "hw_slowdown"]


def test_unavailable_readings_are_null_not_numbers(fake_nvml):
    cards = [gpu(name="NVIDIA H100 80GB HBM3", memory_c=36, fan=None, reasons=None, thresholds={},
                 power_mw={"usage": None, "enforced": None, "default": None, "constraints": None})]
    fake_nvml.install(cards)

    def not_supported(*_args):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    fake_nvml.monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", not_supported)
    with nvml.NvmlSession() as session:
        result = gpu_junction_temp.run(DEFAULTS, session)
    card = result["ansible_facts"]["llmfleet_gpu_thermal"]["gpus"][0]
    assert [card[key] for key in ("fan_speed_pct", "power_draw_w", "power_limit_w", "shutdown_c",
                                  "clock_event_reasons")] == [None] * 5
    assert card["thermal_throttling"] is False
    assert "failed" not in result


def test_cooldown_that_succeeds(fake_nvml):
    clock = Clock()
    cards = hot_pair()
    # The junction cools 2 C per second of waiting; the throttle clears once it is below 104 C.
    cards[1]["memory_c"] = lambda: int(106 - 2 * clock.now)
    cards[1]["reasons"] = lambda: 0x1 | 0x40 if clock.now < 1 else 0x1
    result = gate(fake_nvml, cards, clock, wait_for_cooldown=True, poll_interval=1, cooldown_timeout=60)
    assert "failed" not in result, result.get("msg")
    assert result["changed"] is False
    assert result["waited_seconds"] == 3.0  # 106 -> 100 at t=3
    assert clock.sleeps == [1, 1, 1]
    facts = result["ansible_facts"]["llmfleet_gpu_thermal"]
    assert facts["gpus"][1]["memory_temp_c"] == 100
    assert facts["thermal_throttling"] is False
    assert fake_nvml.calls == ["init"]  # one NVML session for the whole wait


def test_cooldown_that_times_out(fake_nvml):
    clock = Clock()
    result = gate(fake_nvml, hot_pair(), clock, wait_for_cooldown=True, poll_interval=10, cooldown_timeout=30)
    assert result["failed"] is True
    assert result["changed"] is False
    assert result["waited_seconds"] == 30.0
    assert clock.sleeps == [10, 10, 10]
    assert result["msg"].startswith(
        "Thermal gate failed after waiting 30s for a cooldown (last readings: GPU 0 core 40 C, memory 88 C; GPU 1 "
        "core 83 C, memory 106 C): %s memory junction at 106 C, limit 100 C" % GPU1)


def test_no_wait_when_already_cool(fake_nvml):
    clock = Clock()
    result = gate(fake_nvml, dual_3090(), clock, wait_for_cooldown=True)
    assert "failed" not in result
    assert clock.sleeps == []
    assert result["waited_seconds"] == 0.0


def test_h200_exposes_memory_temperature(fake_nvml):
    cards = [gpu(name="NVIDIA H200", memory_c=38, fan=None, thresholds={0: 95, 1: 92, 2: 95, 3: 87})]
    result = gate(fake_nvml, cards, memory_temp_unavailable="fail")
    assert "failed" not in result
    card = result["ansible_facts"]["llmfleet_gpu_thermal"]["gpus"][0]
    assert card["memory_temp_c"] == 38 and card["memory_temp_source"] == "nvml_field_memory_temp"
    assert card["fan_speed_pct"] is None
    assert card["memory_max_c"] == 95
    assert result["warnings"] == []


# ---- the module as Ansible runs it --------------------------------------------------------------


@pytest.mark.parametrize("args", [{"poll_interval": 0}, {"cooldown_timeout": -1}])
def test_main_rejects_bad_timing(run_module, args):
    result = run_module(gpu_junction_temp, args)
    assert result["failed"] is True
    assert "poll_interval must be at least 1" in result["msg"]


def test_main_rejects_unknown_choice(run_module):
    result = run_module(gpu_junction_temp, {"memory_temp_unavailable": "shrug"})
    assert result["failed"] is True
    assert "memory_temp_unavailable" in result["msg"]


def test_main_warns_and_never_changes(fake_nvml, run_module):
    fake_nvml.install(dual_3090())
    result = run_module(gpu_junction_temp, check_mode=True)
    assert result["changed"] is False
    assert "failed" not in result
    # ansible-core 2.19 returns warnings as structured summaries; the text is inside.
    assert "memory temperature unavailable" in json.dumps(result["warnings"])


def test_main_fails_hot_with_facts(fake_nvml, run_module):
    fake_nvml.install(hot_pair())
    result = run_module(gpu_junction_temp, {"max_memory_temp_c": 100})
    assert result["failed"] is True
    assert result["changed"] is False
    assert "106 C, limit 100 C" in result["msg"]
    assert result["ansible_facts"]["llmfleet_gpu_thermal"]["gpus"][1]["memory_temp_c"] == 106


def test_main_reports_missing_pynvml(monkeypatch, run_module):
    monkeypatch.setattr(gate_shell, "HAS_PYNVML", False)
    result = run_module(gpu_junction_temp)
    assert result["failed"] is True
    assert "nvidia-ml-py" in result["msg"]


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND])
def test_main_fails_on_missing_driver(fake_nvml, run_module, code):
    fake_nvml.install([], init_error=code)
    result = run_module(gpu_junction_temp)
    assert result["failed"] is True and result["changed"] is False
    assert result["msg"].startswith("NVIDIA driver not loaded: run the nvidia_driver role first")


# ---- structured problems: what preflight and other callers judge from, beside the message ----------------------


def codes(result):
    return [(item["code"], item["gpu"], item["value"], item["limit"]) for item in result["problems"]]


def test_problems_of_a_hot_junction(fake_nvml):
    result = gate(fake_nvml, hot_pair())
    assert codes(result) == [("memory_temp", 1, 106, 100),
                             ("thermal_throttling", 1, ["sw_thermal_slowdown", "hw_thermal_slowdown"], None)]
    for item in result["problems"]:
        assert item["message"] in result["msg"]
        assert item["fix"].startswith("Fix: improve airflow")


def test_problem_core_temp_and_no_throttle_without_the_switch(fake_nvml):
    cards = hot_pair()
    cards[0]["core_c"] = 90
    result = gate(fake_nvml, cards, fail_on_thermal_throttle=False)
    assert codes(result) == [("core_temp", 0, 90, 85), ("memory_temp", 1, 106, 100)]


def test_problem_memory_temp_unavailable(fake_nvml):
    warned = gate(fake_nvml, dual_3090())
    assert "failed" not in warned
    assert codes(warned) == [("memory_temp_unavailable", 0, None, 100), ("memory_temp_unavailable", 1, None, 100)]
    assert codes(gate(fake_nvml, dual_3090(), memory_temp_unavailable="fail"))[0][0] == "memory_temp_unavailable"
    assert gate(fake_nvml, dual_3090(), memory_temp_unavailable="ignore")["problems"] == []


def test_problems_empty_when_cool(fake_nvml):
    assert gate(fake_nvml, dual_3090(memory_c=80))["problems"] == []


def test_main_returns_problems_with_the_failure(fake_nvml, run_module):
    fake_nvml.install(hot_pair())
    result = run_module(gpu_junction_temp)
    assert result["failed"] is True
    assert [item["code"] for item in result["problems"]] == ["memory_temp", "thermal_throttling"]


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND])
def test_main_reports_missing_driver_as_a_problem(fake_nvml, run_module, code):
    fake_nvml.install([], init_error=code)
    [item] = run_module(gpu_junction_temp)["problems"]
    assert item["code"] == "driver_not_loaded" and "nvidia_driver role" in item["fix"]


def test_main_reports_missing_pynvml_as_a_problem(monkeypatch, run_module):
    monkeypatch.setattr(gate_shell, "HAS_PYNVML", False)
    assert [item["code"] for item in run_module(gpu_junction_temp)["problems"]] == ["nvml_missing"]
