# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the monitoring role renders for Prometheus: scrape targets, alert rules and their promtool tests.

Pure functions but for reading the owners' defaults (role_default). The thresholds come from the workstations' own
gate variables (gpu_gates_max_core_temp_c, gpu_gates_max_memory_temp_c), read per host from the inventory, else from
the gpu_gates role's defaults: one owner.
Hosts with the same limits share one rule; a host with its own limit gets its own.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Sequence, Tuple
from urllib.parse import urlsplit

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.endpoint import base_url
from ansible_collections.llmfleet.workstation.plugins.plugin_utils.role_defaults import role_default

# Scrape jobs; the rules and the dashboard select on these names.
GPU_JOB = "llmfleet_gpu"
ENGINE_JOB = "vllm"
# Target label naming the inventory host, so alerts name the machine the operator knows.
HOST_LABEL = "host"
# Sensor label values of llmfleet_gpu_temperature_celsius and the gate variable that limits each.
TEMPERATURE_LIMIT_VARS = {"core": "gpu_gates_max_core_temp_c", "memory": "gpu_gates_max_memory_temp_c"}
THERMAL_REASONS = ("sw_thermal_slowdown", "hw_thermal_slowdown")
POWER_BRAKE_REASON = "hw_power_brake_slowdown"
POWER_CAP_REASON = "sw_power_cap"
# Durations as Prometheus writes them: one or more number-unit pairs, largest unit first (1h30m).
DURATION_UNITS = {"y": 31536000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
# What each setting is called in the role, for error messages.
SETTING_VARS = {
    "temperature_for": "monitoring_temperature_alert_for",
    "throttle_for": "monitoring_throttle_alert_for",
    "power_cap_for": "monitoring_power_cap_alert_for",
    "nvlink_for": "monitoring_nvlink_alert_for",
    "down_for": "monitoring_down_alert_for",
    "kv_cache_for": "monitoring_kv_cache_alert_for",
    "kv_cache_threshold": "monitoring_kv_cache_threshold",
    "waiting_for": "monitoring_requests_waiting_alert_for",
    "waiting_threshold": "monitoring_requests_waiting_threshold",
}
# Spacing of the promtool test samples, in seconds.
TEST_STEP_S = 15


def duration_seconds(value: Any, variable: str) -> float:
    """Seconds in a Prometheus duration ("5m", "1h30m"); a clear error naming the variable otherwise."""
    match = DURATION_RE.match(str(value)) if value not in (None, "") else None
    if match is None or not any(match.groups()):
        raise AnsibleFilterError(
            "%s is %r: give a Prometheus duration such as 30s, 5m or 1h30m" % (variable, value))
    units = ("y", "w", "d", "h", "m", "s", "ms")
    return sum(int(count) * DURATION_UNITS[unit] for count, unit in zip(match.groups(), units) if count)


def check_settings(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """The role's alert settings, checked: durations parse, thresholds are numbers in range."""
    missing = [SETTING_VARS[key] for key in SETTING_VARS if key not in settings]
    if missing:
        raise AnsibleFilterError("monitoring alert settings lack %s" % ", ".join(missing))
    checked = dict(settings)
    for key, variable in SETTING_VARS.items():
        if key.endswith("_for"):
            duration_seconds(settings[key], variable)
    kv_threshold = settings["kv_cache_threshold"]
    if isinstance(kv_threshold, bool) or not isinstance(kv_threshold, (int, float)) or not 0 < kv_threshold <= 1:
        raise AnsibleFilterError(
            "monitoring_kv_cache_threshold is %r: give the share of the KV cache in use, above 0 and at most 1 "
            "(0.9 for 90%%)" % (kv_threshold,))
    waiting = settings["waiting_threshold"]
    if isinstance(waiting, bool) or not isinstance(waiting, int) or waiting < 1:
        raise AnsibleFilterError(
            "monitoring_requests_waiting_threshold is %r: give the number of waiting requests (1 or more) that "
            "raises the alert" % (waiting,))
    return checked


def _whole_degrees(value: Any, variable: str, host: str) -> int:
    try:
        degrees = int(str(value))
    except ValueError:
        degrees = None
    if degrees is None or isinstance(value, bool) or not 0 < degrees < 200:
        raise AnsibleFilterError(
            "%s is %r for %s: give the limit in whole degrees C (the gates' own variable, e.g. in "
            "group_vars/workstations.yml)" % (variable, value, host))
    return degrees


def gate_limits(hosts: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, int]]:
    """Each host's temperature limits by sensor: its own gate variables, else the gpu_gates role's defaults."""
    limits = {}
    for host, host_vars in hosts.items():
        limits[host] = {}
        for sensor, variable in TEMPERATURE_LIMIT_VARS.items():
            value = host_vars.get(variable)
            if value in (None, ""):
                value = role_default(variable)
            limits[host][sensor] = _whole_degrees(value, variable, host)
    return limits


def _split_url(url: Any, host: str) -> Tuple[str, str, str]:
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise AnsibleFilterError(
            "gpu_exporter_url of %s is %r: the gpu_exporter role's endpoint entry point sets it to "
            "http://ADDRESS:PORT/metrics; run it on that host first" % (host, url))
    return parts.scheme, parts.netloc, parts.path or "/metrics"


def scrape_targets(hosts: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """file_sd target groups for the GPU exporters and the engines, one per host, labelled with the host's name.

    The exporter's address is the URL its own role advertises (gpu_exporter_url); the engine's is the one the
    vllm_service role advertises (plugin_utils/endpoint.py, the rule Open WebUI and the router use). Hosts without
    an advertised exporter are listed apart.
    """
    gpu, engines, without_exporter = [], [], []
    for host in sorted(hosts):
        host_vars = hosts[host]
        url = host_vars.get("gpu_exporter_url")
        if url in (None, ""):
            without_exporter.append(host)
        else:
            scheme, netloc, path = _split_url(url, host)
            gpu.append({"targets": [netloc],
                        "labels": {HOST_LABEL: host, "__scheme__": scheme, "__metrics_path__": path}})
        try:
            engine = urlsplit(base_url(host_vars, host))
        except ValueError as error:
            raise AnsibleFilterError("%s: give the engine's port (role vllm_service)" % error) from error
        engines.append({"targets": [engine.netloc], "labels": {HOST_LABEL: host}})
    return {"gpu": gpu, "engine": engines, "without_exporter": without_exporter}


REGEX_SPECIALS = set(".^$*+?()[]{}|\\")


def _host_pattern(host: str) -> str:
    """A host name as a literal inside a PromQL regex string (RE2 escape, then the string's own backslash)."""
    return "".join("\\\\" + char if char in REGEX_SPECIALS else char for char in host)


def _hosts_matcher(hosts: Sequence[str]) -> str:
    return "|".join(_host_pattern(host) for host in sorted(hosts))


def _limit_groups(limits: Mapping[str, Mapping[str, int]], sensor: str) -> List[Tuple[int, List[str]]]:
    """Hosts grouped by their limit for one sensor, lowest limit first."""
    groups: Dict[int, List[str]] = {}
    for host, host_limits in limits.items():
        groups.setdefault(host_limits[sensor], []).append(host)
    return sorted((limit, sorted(hosts)) for limit, hosts in groups.items())


SENSOR_TEXT = {
    "core": ("core", "gpu_gates_max_core_temp_c",
             "Check the fans and airflow; a card that runs hot at idle needs new thermal paste."),
    "memory": ("memory junction", "gpu_gates_max_memory_temp_c",
               "Give the cards room or an inter-card fan, lower the power limit (gpu_gates_power_limit_w), or "
               "re-pad the memory; GDDR6X throttles near 105 C."),
}


def temperature_rules(limits: Mapping[str, Mapping[str, int]], settings: Mapping[str, Any]) -> List[Dict[str, Any]]:
    rules = []
    for sensor, alert in (("memory", "GPUMemoryJunctionHot"), ("core", "GPUCoreHot")):
        what, variable, fix = SENSOR_TEXT[sensor]
        for limit, hosts in _limit_groups(limits, sensor):
            summary = "GPU {{ $labels.gpu }} on {{ $labels.host }}: %s at {{ $value }} C, over %d C" % (what, limit)
            description = (
                "The %s of GPU {{ $labels.gpu }} on {{ $labels.host }} has been above the gates' limit "
                "(%s = %d C) for %s. The gates will refuse to restart the engine on this host until it "
                "cools. %s" % (what, variable, limit, settings["temperature_for"], fix))
            rules.append({
                "alert": alert,
                "expr": 'llmfleet_gpu_temperature_celsius{job="%s",sensor="%s",%s=~"%s"} > %d'
                        % (GPU_JOB, sensor, HOST_LABEL, _hosts_matcher(hosts), limit),
                "for": settings["temperature_for"],
                # The limit tells the rules of one alert apart (promtool refuses duplicates) and shows in the alert.
                "labels": {"severity": "critical", "limit_celsius": str(limit)},
                "annotations": {"summary": summary, "description": description},
            })
    return rules


def throttle_rules(settings: Mapping[str, Any]) -> List[Dict[str, Any]]:
    clock_events = 'llmfleet_gpu_clock_event_active{job="%s",reason=~"%s"} == 1'
    return [
        {
            "alert": "GPUThermalThrottling",
            "expr": clock_events % (GPU_JOB, "|".join(THERMAL_REASONS)),
            "for": settings["throttle_for"],
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "GPU {{ $labels.gpu }} on {{ $labels.host }} is slowing its clocks for heat "
                           "({{ $labels.reason }})",
                "description": (
                    "GPU {{ $labels.gpu }} on {{ $labels.host }} has reported {{ $labels.reason }} for %s: it runs "
                    "slower to cool down, often with no other sign. Look at its core and memory temperatures; "
                    "improve airflow or lower the power limit (gpu_gates_power_limit_w)." % settings["throttle_for"]),
            },
        },
        {
            "alert": "GPUPowerBrake",
            "expr": clock_events % (GPU_JOB, POWER_BRAKE_REASON),
            "for": settings["throttle_for"],
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "GPU {{ $labels.gpu }} on {{ $labels.host }}: power brake slowdown",
                "description": (
                    "GPU {{ $labels.gpu }} on {{ $labels.host }} has been held back by its power brake (an external "
                    "signal: the power supply or its cabling cannot keep up) for %s. Check the PSU rating against "
                    "the cards' spikes and the PCIe power cables; a lower power limit (gpu_gates_power_limit_w) "
                    "eases it." % settings["throttle_for"]),
            },
        },
        {
            "alert": "GPUPowerCapped",
            "expr": clock_events % (GPU_JOB, POWER_CAP_REASON),
            "for": settings["power_cap_for"],
            "labels": {"severity": "info"},
            "annotations": {
                "summary": "GPU {{ $labels.gpu }} on {{ $labels.host }} runs at its power limit",
                "description": (
                    "GPU {{ $labels.gpu }} on {{ $labels.host }} has been held at its power limit for %s. Expected "
                    "under load where a cap is set on purpose (gpu_gates_power_limit_w); otherwise compare "
                    "llmfleet_gpu_power_draw_watts with llmfleet_gpu_power_limit_watts and raise the limit if the "
                    "power supply allows." % settings["power_cap_for"]),
            },
        },
    ]


def nvlink_rules(settings: Mapping[str, Any]) -> List[Dict[str, Any]]:
    summary = "NVLink link {{ $labels.link }} of GPU {{ $labels.gpu }} on {{ $labels.host }} is down"
    description = (
        "Link {{ $labels.link }} of GPU {{ $labels.gpu }} on {{ $labels.host }} has been down for %s while "
        "the host's profile expects NVLink (gpu_gates_nvlink_required). Tensor parallelism falls back to "
        "PCIe or fails. Drain the host, power it off and reseat the bridge; then run preflight.yml."
        % settings["nvlink_for"])
    return [{
        "alert": "NVLinkLinkDown",
        "expr": 'llmfleet_nvlink_link_up{job="%s"} == 0 and on (instance, gpu) '
                'llmfleet_nvlink_link_expected{job="%s"} == 1' % (GPU_JOB, GPU_JOB),
        "for": settings["nvlink_for"],
        "labels": {"severity": "critical"},
        "annotations": {"summary": summary, "description": description},
    }]


def exporter_rules(settings: Mapping[str, Any]) -> List[Dict[str, Any]]:
    return [
        {
            "alert": "GPUExporterDown",
            "expr": 'up{job="%s"} == 0' % GPU_JOB,
            "for": settings["down_for"],
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "No GPU readings from {{ $labels.host }}",
                "description": (
                    "Prometheus has not reached the GPU exporter of {{ $labels.host }} ({{ $labels.instance }}) for "
                    "%s, so none of its GPU alerts can fire. Is the host up? Look at `systemctl status "
                    "llmfleet-gpu-exporter` there and at the firewall between it and the monitor."
                    % settings["down_for"]),
            },
        },
        {
            "alert": "GPUExporterNVMLDown",
            "expr": 'llmfleet_exporter_nvml_up{job="%s"} == 0' % GPU_JOB,
            "for": settings["down_for"],
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "The GPU exporter on {{ $labels.host }} cannot read NVML",
                "description": (
                    "The exporter on {{ $labels.host }} answers but has not read the GPUs through NVML for %s: the "
                    "driver is gone or mismatched (after a kernel or driver update without a reboot, nvidia-smi "
                    "fails too). Run nvidia-smi there; reboot or reinstall the driver (site.yml --tags driver)."
                    % settings["down_for"]),
            },
        },
    ]


def engine_rules(settings: Mapping[str, Any]) -> List[Dict[str, Any]]:
    kv_percent = "%g%%" % (settings["kv_cache_threshold"] * 100)
    return [
        {
            "alert": "VLLMEngineDown",
            "expr": 'up{job="%s"} == 0' % ENGINE_JOB,
            "for": settings["down_for"],
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "The vLLM engine on {{ $labels.host }} is down or not answering",
                "description": (
                    "Prometheus has not read /metrics from the engine on {{ $labels.host }} ({{ $labels.instance }}) "
                    "for %s: the engine is stopped, crashed, still loading, or too busy to answer. Look at "
                    "`systemctl status vllm` and `journalctl -u vllm` there; site.yml --limit {{ $labels.host }} "
                    "brings it back once the gates pass." % settings["down_for"]),
            },
        },
        {
            "alert": "VLLMKVCacheFull",
            "expr": 'vllm:kv_cache_usage_perc{job="%s"} > %s' % (ENGINE_JOB, settings["kv_cache_threshold"]),
            "for": settings["kv_cache_for"],
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "KV cache of {{ $labels.host }} over %s" % kv_percent,
                "description": (
                    "The engine on {{ $labels.host }} has used more than %s of its KV cache for %s: new requests "
                    "wait and running ones get preempted. Lower vllm_service_max_num_seqs or the context "
                    "(vllm_service_max_model_len), use fp8 KV (vllm_service_kv_cache_dtype), or add a workstation "
                    "serving this model." % (kv_percent, settings["kv_cache_for"])),
            },
        },
        {
            "alert": "VLLMRequestsWaiting",
            "expr": 'vllm:num_requests_waiting{job="%s"} >= %d' % (ENGINE_JOB, settings["waiting_threshold"]),
            "for": settings["waiting_for"],
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $value }} requests waiting on {{ $labels.host }}",
                "description": (
                    "Requests have been queueing on {{ $labels.host }} (at least %d waiting) for %s: the engine is "
                    "at its concurrency (vllm_service_max_num_seqs) or out of KV cache. Spread the load over more "
                    "workstations, or raise the concurrency if the KV cache has room."
                    % (settings["waiting_threshold"], settings["waiting_for"])),
            },
        },
    ]


def alert_rules(limits: Mapping[str, Mapping[str, int]], settings: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Rule files by group name, each a Prometheus rule document."""
    settings = check_settings(settings)
    groups = {
        "llmfleet_gpu": temperature_rules(limits, settings) + throttle_rules(settings) + nvlink_rules(settings),
        "llmfleet_exporter": exporter_rules(settings),
        "llmfleet_engine": engine_rules(settings),
    }
    return {name: {"groups": [{"name": name, "rules": rules}]} for name, rules in groups.items() if rules}


# promtool tests -------------------------------------------------------------------------------------------------


def _series(metric: str, labels: Mapping[str, str], values: str) -> Dict[str, str]:
    label_text = ",".join('%s="%s"' % (key, labels[key]) for key in sorted(labels))
    return {"series": "%s{%s}" % (metric, label_text), "values": values}


def _expand(text: str, labels: Mapping[str, str], value: str) -> str:
    """Prometheus' expansion of the annotation templates used above, for the expected alerts."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda match: labels[match.group(1)], text)
    return text.replace("{{ $value }}", value)


def _timeline(duration: Any, variable: str) -> Tuple[str, str, str]:
    """(samples to cover the test, a time before the alert may fire, a time after it must have)."""
    seconds = duration_seconds(duration, variable)
    steps_before = max(int(seconds // TEST_STEP_S) - 1, 0)
    steps_after = int(-(-seconds // TEST_STEP_S)) + 1
    return str(steps_after + 4), "%ds" % (steps_before * TEST_STEP_S), "%ds" % (steps_after * TEST_STEP_S)


def _alert_case(rule: Mapping[str, Any], variable: str, firing: Sequence[Tuple[Mapping[str, str], str]],
                quiet: Sequence[Mapping[str, str]], *, metric: str, fire_value: str, quiet_value: str,
                extra_series: Sequence[Dict[str, str]] = ()) -> Dict[str, Any]:
    """One promtool test: the firing series hold fire_value, the quiet ones quiet_value; the alert fires for the
    firing series only, and only after its `for:`."""
    samples, before, after = _timeline(rule["for"], variable)
    series = [_series(metric, labels, "%sx%s" % (fire_value, samples)) for labels, unused_value in firing]
    series += [_series(metric, labels, "%sx%s" % (quiet_value, samples)) for labels in quiet]
    expected = []
    for labels, shown_value in firing:
        alert_labels = dict(labels, **rule["labels"])
        expected.append({
            "exp_labels": alert_labels,
            "exp_annotations": {key: _expand(text, alert_labels, shown_value)
                                for key, text in rule["annotations"].items()},
        })
    return {
        "interval": "%ds" % TEST_STEP_S,
        "input_series": series + list(extra_series),
        "alert_rule_test": [
            {"eval_time": before, "alertname": rule["alert"], "exp_alerts": []},
            {"eval_time": after, "alertname": rule["alert"], "exp_alerts": expected},
        ],
    }


def _gpu_labels(host: str, gpu: str, **extra: str) -> Dict[str, str]:
    return dict({"job": GPU_JOB, "instance": "%s:9100" % host, HOST_LABEL: host, "gpu": gpu}, **extra)


def _engine_labels(host: str) -> Dict[str, str]:
    return {"job": ENGINE_JOB, "instance": "%s:8000" % host, HOST_LABEL: host}


def rule_tests(limits: Mapping[str, Mapping[str, int]], settings: Mapping[str, Any],
               rules_dir: str) -> Dict[str, Dict[str, Any]]:
    """promtool test documents by group name: every rule fires where it must, after its `for:`, and not at the
    limit itself nor for series it must ignore. Each group's rules are read from rules_dir/<group>.yml."""
    rules = alert_rules(limits, settings)
    by_name: Dict[str, List[Dict[str, Any]]] = {}
    for document in rules.values():
        for rule in document["groups"][0]["rules"]:
            by_name.setdefault(rule["alert"], []).append(rule)
    tests: Dict[str, List[Dict[str, Any]]] = {name: [] for name in rules}

    # Temperatures: each limit group's first host, one GPU just over the limit, one exactly at it (the gates pass
    # a GPU at its limit). A temperature rule is found by the host it covers.
    for sensor, alert in (("memory", "GPUMemoryJunctionHot"), ("core", "GPUCoreHot")):
        variable = SETTING_VARS["temperature_for"]
        for limit, hosts in _limit_groups(limits, sensor):
            rule = next(rule for rule in by_name[alert] if "> %d" % limit in rule["expr"]
                        and _host_pattern(hosts[0]) in rule["expr"])
            hot = _gpu_labels(hosts[0], "1", sensor=sensor)
            at_limit = _gpu_labels(hosts[0], "0", sensor=sensor)
            tests["llmfleet_gpu"].append(_alert_case(
                rule, variable, [(hot, str(limit + 1))], [at_limit], metric="llmfleet_gpu_temperature_celsius",
                fire_value=str(limit + 1), quiet_value=str(limit)))

    # Clock events: the quiet series is active too, with a reason the alert must ignore.
    host = sorted(limits)[0] if limits else "ws-example"
    thermal = by_name["GPUThermalThrottling"][0]
    tests["llmfleet_gpu"].append(_alert_case(
        thermal, SETTING_VARS["throttle_for"],
        [(_gpu_labels(host, "0", reason=reason), "1") for reason in THERMAL_REASONS],
        [_gpu_labels(host, "0", reason=POWER_CAP_REASON)],
        metric="llmfleet_gpu_clock_event_active", fire_value="1", quiet_value="1"))
    tests["llmfleet_gpu"].append(_alert_case(
        by_name["GPUPowerBrake"][0], SETTING_VARS["throttle_for"],
        [(_gpu_labels(host, "1", reason=POWER_BRAKE_REASON), "1")],
        [_gpu_labels(host, "1", reason=THERMAL_REASONS[0])],
        metric="llmfleet_gpu_clock_event_active", fire_value="1", quiet_value="1"))
    tests["llmfleet_gpu"].append(_alert_case(
        by_name["GPUPowerCapped"][0], SETTING_VARS["power_cap_for"],
        [(_gpu_labels(host, "0", reason=POWER_CAP_REASON), "1")],
        [_gpu_labels(host, "0", reason=POWER_BRAKE_REASON)],
        metric="llmfleet_gpu_clock_event_active", fire_value="1", quiet_value="1"))

    # NVLink: link 2 of GPU 0 down where links are expected fires; a down link on a GPU whose profile expects no
    # NVLink (a PCIe pair) stays quiet.
    samples, unused_fire, unused_clear = _timeline(settings["nvlink_for"], SETTING_VARS["nvlink_for"])
    pcie_host = "%s-pcie" % host
    expected_series = [
        _series("llmfleet_nvlink_link_expected", _gpu_labels(host, "0"), "1x%s" % samples),
        _series("llmfleet_nvlink_link_expected", _gpu_labels(pcie_host, "0"), "0x%s" % samples),
        _series("llmfleet_nvlink_link_up", _gpu_labels(host, "0", link="1"), "1x%s" % samples),
    ]
    tests["llmfleet_gpu"].append(_alert_case(
        by_name["NVLinkLinkDown"][0], SETTING_VARS["nvlink_for"],
        [(_gpu_labels(host, "0", link="2"), "0")], [_gpu_labels(pcie_host, "0", link="0")],
        metric="llmfleet_nvlink_link_up", fire_value="0", quiet_value="0",
        extra_series=expected_series))

    # Exporter and NVML: down fires, up stays quiet.
    other = "%s-ok" % host
    for alert, metric in (("GPUExporterDown", "up"), ("GPUExporterNVMLDown", "llmfleet_exporter_nvml_up")):
        down = {"job": GPU_JOB, "instance": "%s:9100" % host, HOST_LABEL: host}
        up = {"job": GPU_JOB, "instance": "%s:9100" % other, HOST_LABEL: other}
        tests["llmfleet_exporter"].append(_alert_case(
            by_name[alert][0], SETTING_VARS["down_for"], [(down, "0")], [up],
            metric=metric, fire_value="0", quiet_value="1"))

    # Engine: down fires; KV cache above the threshold fires, at it stays quiet; waiting at the threshold fires,
    # below it stays quiet.
    tests["llmfleet_engine"].append(_alert_case(
        by_name["VLLMEngineDown"][0], SETTING_VARS["down_for"],
        [(_engine_labels(host), "0")], [_engine_labels(other)],
        metric="up", fire_value="0", quiet_value="1"))
    threshold = settings["kv_cache_threshold"]
    over = min(round(threshold + 0.05, 4), 1.0) if threshold < 1 else None
    if over is not None and over > threshold:
        tests["llmfleet_engine"].append(_alert_case(
            by_name["VLLMKVCacheFull"][0], SETTING_VARS["kv_cache_for"],
            [(dict(_engine_labels(host), model_name="m", engine="0"), "%g" % over)],
            [dict(_engine_labels(other), model_name="m", engine="0")], metric="vllm:kv_cache_usage_perc",
            fire_value="%g" % over, quiet_value="%g" % threshold))
    waiting = settings["waiting_threshold"]
    tests["llmfleet_engine"].append(_alert_case(
        by_name["VLLMRequestsWaiting"][0], SETTING_VARS["waiting_for"],
        [(dict(_engine_labels(host), model_name="m", engine="0"), str(waiting))],
        [dict(_engine_labels(other), model_name="m", engine="0")], metric="vllm:num_requests_waiting",
        fire_value=str(waiting), quiet_value=str(waiting - 1)))

    return {name: {"rule_files": ["%s/%s.yml" % (str(rules_dir).rstrip("/"), name)],
                   "evaluation_interval": "%ds" % TEST_STEP_S, "tests": cases} for name, cases in tests.items()}


def rule_names(rules: Mapping[str, Mapping[str, Any]]) -> List[str]:
    """Every alert name of the rendered rule documents, once each."""
    names: List[str] = []
    for document in rules.values():
        for group in document["groups"]:
            for rule in group["rules"]:
                if rule["alert"] not in names:
                    names.append(rule["alert"])
    return names


def require_mapping(value: Any, what: str, filter_name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AnsibleFilterError("%s: %s must be a dictionary, got %s" % (filter_name, what, type(value).__name__))
    return value
