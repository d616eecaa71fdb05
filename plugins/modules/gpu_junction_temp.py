#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: gpu_junction_temp
short_description: Gate on GPU core and memory-junction temperatures and thermal throttling
version_added: 0.1.0
description:
  - Reads, per GPU, the core temperature, the memory (junction) temperature from NVML field
    C(NVML_FI_DEV_MEMORY_TEMP) where the GPU exposes it, the slowdown, shutdown and maximum thresholds,
    the active clock-event (throttle) reasons by name, fan speed, power draw and power limit.
  - Fails when a GPU is above I(max_core_temp_c) or I(max_memory_temp_c) (a reading equal to the limit passes),
    or is thermally throttling,
    naming the GPU, the value, the limit and the fix. With I(wait_for_cooldown=true) it polls, within one
    NVML session, until every GPU is within limits or I(cooldown_timeout) passes.
  - Returns the readings as C(ansible_facts.llmfleet_gpu_thermal). Never changes the host and never calls
    C(nvidia-smi).
options:
  max_core_temp_c:
    description:
      - Highest core temperature accepted, in degrees C.
      - 85 leaves headroom below the GPU-max and slowdown thresholds of GeForce cards (93 and 95 on an RTX 3090),
        so a model load does not start on a card that is about to throttle.
    type: int
    default: 85
  max_memory_temp_c:
    description:
      - Highest memory-junction temperature accepted, in degrees C.
      - GDDR6X throttles near 105; keeping the junction below 100 leaves margin for the load a model server adds.
    type: int
    default: 100
  memory_temp_unavailable:
    description:
      - What to do where NVML does not expose memory temperature (GeForce GDDR6X cards such as the RTX 3090).
      - C(warn) adds a warning, C(fail) fails the gate (at once, without waiting for a cooldown), C(ignore)
        stays silent. The reading is null, with C(memory_temp_source=unavailable), whatever the choice.
    type: str
    choices: [warn, fail, ignore]
    default: warn
  fail_on_thermal_throttle:
    description: Fail while a GPU reports software or hardware thermal slowdown.
    type: bool
    default: true
  wait_for_cooldown:
    description:
      - Poll, in the same NVML session, until every GPU is within limits and none is thermally throttling,
        instead of failing at once; C(waited_seconds) says how long it took.
      - On timeout the gate fails, saying how long it waited and the last readings.
    type: bool
    default: false
  cooldown_timeout:
    description: Longest wait for a cooldown, in seconds (0 or more).
    type: int
    default: 600
  poll_interval:
    description: Seconds between readings while waiting for a cooldown (1 or more).
    type: int
    default: 10
notes:
  - NVIDIA's public NVML does not expose the GDDR6X memory-junction sensor of GeForce cards (RTX 3090, 3080 Ti,
    4090); the module then reports C(memory_temp_c=null) and C(memory_temp_source=unavailable), never a guessed
    number. What operators can do instead - watch the core temperature and the thermal clock-event reasons this
    module does report (a hot junction shows as C(hw_thermal_slowdown) or C(sw_thermal_slowdown)); cap power
    (C(nvidia-smi -pl 280) costs an RTX 3090 little decode speed); improve case airflow and the fan curve;
    replace dried memory thermal pads on used cards; tools outside NVML read the junction sensor through
    undocumented registers, and can be used for a one-off check.
author:
  - llmfleet.workstation contributors (@llmfleet)
extends_documentation_fragment:
  - llmfleet.workstation.gate
"""

EXAMPLES = r"""
- name: Refuse to start serving on a hot card, waiting up to 10 minutes for it to cool
  llmfleet.workstation.gpu_junction_temp:
    max_memory_temp_c: 100
    wait_for_cooldown: true
    cooldown_timeout: 600

- name: Insist on a memory-junction reading (data-center GPUs expose it)
  llmfleet.workstation.gpu_junction_temp:
    memory_temp_unavailable: fail
"""

RETURN = r"""
problems:
  description:
    - What the gate found, as data beside C(msg) and its warnings, so that callers judge without reading text.
      Empty when every GPU is within its limits.
    - C(code) is one of C(core_temp) and C(memory_temp) (the reading in C(value), the limit in C(limit)),
      C(thermal_throttling) (with I(fail_on_thermal_throttle); the thermal clock-event reasons in C(value)),
      C(memory_temp_unavailable) (one per GPU whose memory sensor NVML does not expose, unless
      I(memory_temp_unavailable=ignore); it fails the gate only with I(memory_temp_unavailable=fail)), and where
      NVML cannot be read at all C(nvml_missing), C(driver_not_loaded), C(nvml_init_failed) or C(nvml_call_failed).
    - Readings of the last poll; C(gpu) is the NVML index, or null for the host; C(fix) what the operator does;
      C(message) the sentence.
  returned: always
  type: list
  elements: dict
  sample:
    - code: memory_temp
      gpu: 1
      value: 106
      limit: 100
      fix: "Fix: improve airflow or the fan curve, cap power (nvidia-smi -pl 280 on an RTX 3090), and on used cards
        replace the memory thermal pads"
      message: GPU 1 (NVIDIA GeForce RTX 3090, 00000000:21:00.0) memory junction at 106 C, limit 100 C
waited_seconds:
  description: Seconds spent waiting for a cooldown (0 without I(wait_for_cooldown)).
  returned: always
  type: float
  sample: 0.0
ansible_facts:
  description: Facts set on the host.
  returned: always, also when the gate fails on temperature
  type: dict
  contains:
    llmfleet_gpu_thermal:
      description: Thermal readings, last poll.
      type: dict
      contains:
        hottest_core_temp_c:
          description: Highest core temperature over all GPUs.
          type: int
          sample: 41
        hottest_memory_temp_c:
          description: Highest memory temperature over GPUs that expose it, or null.
          type: int
          sample: 88
        thermal_throttling:
          description: Whether any GPU reports thermal slowdown.
          type: bool
          sample: false
        gpus:
          description: One entry per GPU. Values a GPU does not expose are null.
          type: list
          elements: dict
          contains:
            index:
              description: NVML index.
              type: int
              sample: 0
            name:
              description: GPU name.
              type: str
              sample: NVIDIA GeForce RTX 3090
            uuid:
              description: GPU UUID.
              type: str
              sample: GPU-5f0c3d12-8a41-4c7e-9b2d-3090a0000001
            pci_bus_id:
              description: PCI bus id.
              type: str
              sample: "00000000:01:00.0"
            core_temp_c:
              description: Core temperature, degrees C.
              type: int
              sample: 41
            memory_temp_c:
              description:
                - Memory (junction) temperature, degrees C.
                - Null where NVML does not expose it (GeForce GDDR6X), never a guess.
              type: int
              sample: null
            memory_temp_source:
              description: Where C(memory_temp_c) came from - C(nvml_field_memory_temp), or C(unavailable).
              type: str
              sample: unavailable
            shutdown_c:
              description: Temperature at which the GPU shuts down, degrees C.
              type: int
              sample: 98
            slowdown_c:
              description: Temperature at which the GPU starts slowing down, degrees C.
              type: int
              sample: 95
            gpu_max_c:
              description: Highest core temperature for normal operation, degrees C.
              type: int
              sample: 93
            memory_max_c:
              description: Highest memory temperature for normal operation, degrees C (data-center GPUs).
              type: int
              sample: null
            clock_event_reasons:
              description:
                - Active clock-event (throttle) reasons by name, for example C(gpu_idle), C(sw_power_cap),
                  C(sw_thermal_slowdown), C(hw_thermal_slowdown); bits without a name show as C(unknown_0x...).
              type: list
              elements: str
              sample: [gpu_idle]
            thermal_throttling:
              description: Whether software or hardware thermal slowdown is active.
              type: bool
              sample: false
            fan_speed_pct:
              description: Fan speed, percent of maximum; null on passively cooled GPUs.
              type: int
              sample: 30
            power_draw_w:
              description: Power draw, W.
              type: float
              sample: 31.0
            power_limit_w:
              description: Enforced power limit, W.
              type: float
              sample: 350.0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmfleet.workstation.plugins.module_utils.gate import problem, run_gate
from ansible_collections.llmfleet.workstation.plugins.module_utils.nvml import (
    describe_gpu,
    TEMPERATURE_GPU,
    TEMPERATURE_THRESHOLDS,
    THERMAL_CLOCK_EVENT_REASONS,
    milliwatts_to_watts,
    wait_until,
)

COOLING_FIX = (
    "Fix: improve airflow or the fan curve, cap power (nvidia-smi -pl 280 on an RTX 3090), and on used cards "
    "replace the memory thermal pads"
)


def read_gpu(session, gpu):
    memory_temp = session.memory_temperature(gpu)
    reasons = session.clock_event_reasons(gpu)
    facts = gpu.identity()
    facts.update(
        core_temp_c=session.optional(gpu.label, "nvmlDeviceGetTemperature", gpu.handle, TEMPERATURE_GPU),
        memory_temp_c=memory_temp,
        memory_temp_source="nvml_field_memory_temp" if memory_temp is not None else "unavailable",
        clock_event_reasons=reasons,
        thermal_throttling=bool(reasons and THERMAL_CLOCK_EVENT_REASONS.intersection(reasons)),
        fan_speed_pct=session.optional(gpu.label, "nvmlDeviceGetFanSpeed", gpu.handle),
        power_draw_w=milliwatts_to_watts(session.optional(gpu.label, "nvmlDeviceGetPowerUsage", gpu.handle)),
        power_limit_w=milliwatts_to_watts(session.optional(gpu.label, "nvmlDeviceGetEnforcedPowerLimit", gpu.handle)),
    )
    for key, threshold in TEMPERATURE_THRESHOLDS:
        facts[key] = session.optional(gpu.label, "nvmlDeviceGetTemperatureThreshold", gpu.handle, threshold)
    return facts


def collect_thermal(session, gpus):
    readings = [read_gpu(session, gpu) for gpu in gpus]
    cores = [gpu["core_temp_c"] for gpu in readings if gpu["core_temp_c"] is not None]
    memories = [gpu["memory_temp_c"] for gpu in readings if gpu["memory_temp_c"] is not None]
    return {
        "hottest_core_temp_c": max(cores) if cores else None,
        "hottest_memory_temp_c": max(memories) if memories else None,
        "thermal_throttling": any(gpu["thermal_throttling"] for gpu in readings),
        "gpus": readings,
    }


def heat_problems(facts, params, found=None):
    """What is too hot right now; an empty list means every GPU is within limits.

    `found`, a list, receives the same problems as data (gate.problem).
    """
    problems = []
    found = [] if found is None else found
    for gpu in facts["gpus"]:
        if gpu["core_temp_c"] is not None and gpu["core_temp_c"] > params["max_core_temp_c"]:
            problems.append("%s core at %d C, limit %d C"
                            % (describe_gpu(gpu), gpu["core_temp_c"], params["max_core_temp_c"]))
            found.append(problem("core_temp", problems[-1], gpu=gpu["index"], value=gpu["core_temp_c"],
                                 limit=params["max_core_temp_c"], fix=COOLING_FIX))
        if gpu["memory_temp_c"] is not None and gpu["memory_temp_c"] > params["max_memory_temp_c"]:
            problems.append("%s memory junction at %d C, limit %d C"
                            % (describe_gpu(gpu), gpu["memory_temp_c"], params["max_memory_temp_c"]))
            found.append(problem("memory_temp", problems[-1], gpu=gpu["index"], value=gpu["memory_temp_c"],
                                 limit=params["max_memory_temp_c"], fix=COOLING_FIX))
        if params["fail_on_thermal_throttle"] and gpu["thermal_throttling"]:
            active = [reason for reason in gpu["clock_event_reasons"] if reason in THERMAL_CLOCK_EVENT_REASONS]
            problems.append("%s is thermally throttling (%s)" % (describe_gpu(gpu), ", ".join(active)))
            found.append(problem("thermal_throttling", problems[-1], gpu=gpu["index"], value=active,
                                 fix=COOLING_FIX))
    return problems


def describe_reading(gpu):
    """'GPU 1 core 83 C, memory 106 C' for the last readings of a failed cooldown."""
    def degrees(value):
        return "n/a" if value is None else "%d C" % value

    return "GPU %d core %s, memory %s" % (gpu["index"], degrees(gpu["core_temp_c"]), degrees(gpu["memory_temp_c"]))


def memory_unavailable(facts):
    """GPUs whose memory temperature NVML does not expose."""
    return [gpu for gpu in facts["gpus"] if gpu["memory_temp_c"] is None]


def run(params, session, sleep=None, monotonic=None):
    """Read (and with wait_for_cooldown, keep reading) in `session`; returns the module result.

    `sleep` and `monotonic` replace time.sleep/time.monotonic in tests.
    """
    gpus = session.gpus()
    fail_unavailable = params["memory_temp_unavailable"] == "fail"

    def check():
        facts = collect_thermal(session, gpus)
        if fail_unavailable and memory_unavailable(facts):
            return True, facts  # waiting cannot make a sensor appear: stop and fail now
        return not heat_problems(facts, params), facts

    if params["wait_for_cooldown"]:
        timing = {key: value for key, value in (("sleep", sleep), ("monotonic", monotonic)) if value is not None}
        _cool, facts, waited = wait_until(check, params["cooldown_timeout"], params["poll_interval"], **timing)
    else:
        _cool, facts = check()
        waited = 0.0
    result = {"changed": False, "waited_seconds": round(waited, 1),
              "ansible_facts": {"llmfleet_gpu_thermal": facts}, "warnings": []}

    found = []
    problems = heat_problems(facts, params, found)
    result["problems"] = found
    unavailable = memory_unavailable(facts)
    if unavailable and params["memory_temp_unavailable"] != "ignore":
        text = (
            "memory temperature unavailable on %s: NVML does not expose the memory junction sensor of GeForce "
            "cards (GDDR6X, GDDR7); watch core temperature and thermal clock-event reasons instead"
            % ", ".join(describe_gpu(gpu) for gpu in unavailable)
        )
        if params["memory_temp_unavailable"] == "fail":
            problems.append(text + " (memory_temp_unavailable=fail)")
        else:
            result["warnings"].append(text)
        for gpu in unavailable:
            found.append(problem("memory_temp_unavailable", text, gpu=gpu["index"], limit=params["max_memory_temp_c"],
                                 fix="watch core temperature and thermal clock-event reasons instead, or set "
                                     "memory_temp_unavailable: ignore"))
    if problems:
        waited_text = ""
        if params["wait_for_cooldown"] and not (fail_unavailable and unavailable):
            waited_text = " after waiting %ds for a cooldown (last readings: %s)" % (
                round(waited), "; ".join(describe_reading(gpu) for gpu in facts["gpus"]))
        result["failed"] = True
        result["msg"] = "Thermal gate failed%s: %s. %s" % (waited_text, "; ".join(problems), COOLING_FIX)
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            "max_core_temp_c": {"type": "int", "default": 85},
            "max_memory_temp_c": {"type": "int", "default": 100},
            "memory_temp_unavailable": {"type": "str", "default": "warn", "choices": ["warn", "fail", "ignore"]},
            "fail_on_thermal_throttle": {"type": "bool", "default": True},
            "wait_for_cooldown": {"type": "bool", "default": False},
            "cooldown_timeout": {"type": "int", "default": 600},
            "poll_interval": {"type": "int", "default": 10},
        },
        supports_check_mode=True,
    )
    if module.params["poll_interval"] < 1 or module.params["cooldown_timeout"] < 0:
        module.fail_json(msg="poll_interval must be at least 1 and cooldown_timeout at least 0 (seconds)")
    run_gate(module, run)


if __name__ == "__main__":
    main()
