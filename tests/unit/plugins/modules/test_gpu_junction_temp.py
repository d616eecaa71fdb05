"""gpu_junction_temp: hot junctions, unavailable memory temperature, throttling and cooldown."""

import json

from conftest import dual_3090, gpu

from ansible_collections.llmfleet.workstation.plugins.module_utils import nvml
from ansible_collections.llmfleet.workstation.plugins.modules import gpu_junction_temp

DEFAULTS = {"max_core_temp_c": 85, "max_memory_temp_c": 100, "memory_temp_unavailable": "warn",
            "fail_on_thermal_throttle": True, "wait_for_cooldown": False, "cooldown_timeout": 600, "poll_interval": 10}


class Clock:
    def __init__(self):
        self.now = 0.0

    def sleep(self, seconds):
        self.now += seconds

    def monotonic(self):
        return self.now


def gate(fake_nvml, gpus, clock=None, **params):
    fake_nvml.install(gpus)
    clock = clock or Clock()
    with nvml.NvmlSession() as session:
        return gpu_junction_temp.run(dict(DEFAULTS, **params), session, clock.sleep, clock.monotonic)


def hot_pair():
    cards = dual_3090(memory_c=88)
    cards[1].update(memory_c=106, core_c=83, reasons=0x1 | 0x20 | 0x40)
    return cards


def test_cool_geforce_pair_passes_and_warns_memory_unavailable(fake_nvml):
    result = gate(fake_nvml, dual_3090())
    assert "failed" not in result
    assert result["changed"] is False
    facts = result["ansible_facts"]["llmfleet_gpu_thermal"]
    assert [card["memory_temp_c"] for card in facts["gpus"]] == [None, None]
    assert [card["memory_temp_source"] for card in facts["gpus"]] == ["unavailable", "unavailable"]
    assert facts["gpus"][0]["shutdown_c"] == 98 and facts["gpus"][0]["memory_max_c"] is None
    assert facts["gpus"][0]["power_limit_w"] == 350.0
    assert len(result["warnings"]) == 1 and "memory temperature unavailable" in result["warnings"][0]


def test_memory_unavailable_ignore_and_fail(fake_nvml):
    assert gate(fake_nvml, dual_3090(), memory_temp_unavailable="ignore")["warnings"] == []
    failed = gate(fake_nvml, dual_3090(), memory_temp_unavailable="fail")
    assert failed["failed"] is True
    assert "memory_temp_unavailable=fail" in failed["msg"]


def test_hot_junction_names_gpu_value_limit_and_fix(fake_nvml):
    result = gate(fake_nvml, hot_pair())
    assert result["failed"] is True
    message = result["msg"]
    assert "GPU 1 (NVIDIA GeForce RTX 3090, 00000000:21:00.0) memory junction at 106 C, limit 100 C" in message
    assert "thermally throttling (sw_thermal_slowdown, hw_thermal_slowdown)" in message
    assert "GPU 0" not in message
    assert "nvidia-smi -pl" in message
    facts = result["ansible_facts"]["llmfleet_gpu_thermal"]
    assert facts["hottest_memory_temp_c"] == 106
    assert facts["thermal_throttling"] is True


def test_core_limit_and_throttle_switch(fake_nvml):
    cards = dual_3090()
    cards[0].update(core_c=90)
    assert "core at 90 C, limit 85 C" in gate(fake_nvml, cards)["msg"]
    throttling = dual_3090()
    throttling[0]["reasons"] = 0x20
    assert gate(fake_nvml, throttling)["failed"] is True
    assert "failed" not in gate(fake_nvml, throttling, fail_on_thermal_throttle=False)


def test_cooldown_that_succeeds(fake_nvml):
    clock = Clock()
    cards = hot_pair()
    # The junction cools 2 C per second of waiting; the throttle clears with it.
    cards[1]["memory_c"] = lambda: int(106 - 2 * clock.now)
    cards[1]["reasons"] = 0x1
    result = gate(fake_nvml, cards, clock, wait_for_cooldown=True, poll_interval=1, cooldown_timeout=60)
    assert "failed" not in result, result.get("msg")
    assert result["waited_seconds"] == 3.0  # 106 -> 100 at t=3
    assert result["ansible_facts"]["llmfleet_gpu_thermal"]["gpus"][1]["memory_temp_c"] == 100


def test_cooldown_that_times_out(fake_nvml):
    clock = Clock()
    result = gate(fake_nvml, hot_pair(), clock, wait_for_cooldown=True, poll_interval=10, cooldown_timeout=30)
    assert result["failed"] is True
    assert result["waited_seconds"] == 30.0
    assert result["msg"].startswith("Thermal gate failed after waiting 30s for a cooldown")
    assert "106 C" in result["msg"]


def test_h200_exposes_memory_temperature(fake_nvml):
    cards = [gpu(name="NVIDIA H200", memory_c=38, fan=None, thresholds={0: 95, 1: 92, 2: 95, 3: 87})]
    result = gate(fake_nvml, cards, memory_temp_unavailable="fail")
    assert "failed" not in result
    card = result["ansible_facts"]["llmfleet_gpu_thermal"]["gpus"][0]
    assert card["memory_temp_c"] == 38 and card["memory_temp_source"] == "nvml_field_memory_temp"
    assert card["fan_speed_pct"] is None
    assert card["memory_max_c"] == 95


def test_main_rejects_bad_poll_interval(run_module):
    result = run_module(gpu_junction_temp, {"poll_interval": 0})
    assert result["failed"] is True
    assert "poll_interval" in result["msg"]


def test_main_warns_and_never_changes(fake_nvml, run_module):
    fake_nvml.install(dual_3090())
    result = run_module(gpu_junction_temp, check_mode=True)
    assert result["changed"] is False
    # ansible-core 2.19 returns warnings as structured summaries; the text is inside.
    assert "memory temperature unavailable" in json.dumps(result["warnings"])
