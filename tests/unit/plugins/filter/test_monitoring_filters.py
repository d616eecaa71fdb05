"""The monitoring filters' inputs: targets from what the roles advertise, limits from the gates, clear errors."""

from pathlib import Path

import pytest
import yaml
from ansible.module_utils import _internal as module_utils_internal

_WAS_CONTROLLER = module_utils_internal.is_controller
from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.llmfleet.workstation.plugins.filter.monitoring_gate_limits import (  # noqa: E402
    monitoring_gate_limits,
)
from ansible_collections.llmfleet.workstation.plugins.filter.monitoring_rules import monitoring_rules  # noqa: E402
from ansible_collections.llmfleet.workstation.plugins.filter.monitoring_targets import (  # noqa: E402
    monitoring_targets,
)
from ansible_collections.llmfleet.workstation.plugins.plugin_utils.monitoring import duration_seconds  # noqa: E402

module_utils_internal.is_controller = _WAS_CONTROLLER

REPO = Path(__file__).resolve().parents[4]

# The owners' defaults, read as the filters read them.
ENGINE_PORT = yaml.safe_load((REPO / "roles/vllm_service/defaults/main.yml").read_text())["vllm_service_port"]
GATES = yaml.safe_load((REPO / "roles/gpu_gates/defaults/main.yml").read_text())
SETTINGS = {"temperature_for": "5m", "throttle_for": "5m", "power_cap_for": "30m", "nvlink_for": "1m",
            "down_for": "2m", "kv_cache_for": "10m", "kv_cache_threshold": 0.9, "waiting_for": "5m",
            "waiting_threshold": 1}


def test_targets_follow_what_each_role_advertises():
    targets = monitoring_targets({
        "ws-a": {"gpu_exporter_url": "http://10.0.0.5:9477/metrics", "ansible_host": "10.0.0.5",
                 "vllm_service_port": 8001},
        "ws-b": {"gpu_exporter_url": "https://ws-b.lan:9500/gpu", "vllm_service_advertise_address": "10.1.0.6"},
        "ws-c": {},
    })
    assert targets["gpu"] == [
        {"targets": ["10.0.0.5:9477"],
         "labels": {"host": "ws-a", "__scheme__": "http", "__metrics_path__": "/metrics"}},
        {"targets": ["ws-b.lan:9500"], "labels": {"host": "ws-b", "__scheme__": "https", "__metrics_path__": "/gpu"}},
    ]
    assert targets["engine"] == [
        {"targets": ["10.0.0.5:8001"], "labels": {"host": "ws-a"}},
        {"targets": ["10.1.0.6:%d" % ENGINE_PORT], "labels": {"host": "ws-b"}},
        {"targets": ["ws-c:%d" % ENGINE_PORT], "labels": {"host": "ws-c"}},
    ]
    assert targets["without_exporter"] == ["ws-c"]


def test_an_ipv6_engine_address_is_bracketed():
    targets = monitoring_targets({"ws": {"ansible_host": "fd00::5"}})
    assert targets["engine"][0]["targets"] == ["[fd00::5]:%d" % ENGINE_PORT]


def test_a_bad_exporter_url_names_the_host_and_the_fix():
    with pytest.raises(AnsibleFilterError, match="gpu_exporter_url of ws-a is 'ws-a:9477'.*endpoint entry point"):
        monitoring_targets({"ws-a": {"gpu_exporter_url": "ws-a:9477"}})


def test_limits_come_from_the_host_else_the_gates_defaults():
    limits = monitoring_gate_limits({"ws-a": {}, "ws-b": {"gpu_gates_max_core_temp_c": 80}})
    core, memory = GATES["gpu_gates_max_core_temp_c"], GATES["gpu_gates_max_memory_temp_c"]
    assert limits == {"ws-a": {"core": core, "memory": memory}, "ws-b": {"core": 80, "memory": memory}}


def test_a_bad_limit_names_the_variable_and_host():
    with pytest.raises(AnsibleFilterError, match="gpu_gates_max_memory_temp_c is 'hot' for ws-a"):
        monitoring_gate_limits({"ws-a": {"gpu_gates_max_memory_temp_c": "hot"}})


@pytest.mark.parametrize(("key", "value", "message"), [
    ("temperature_for", "5 minutes", "monitoring_temperature_alert_for is '5 minutes'"),
    ("kv_cache_threshold", 90, "monitoring_kv_cache_threshold is 90"),
    ("waiting_threshold", 0, "monitoring_requests_waiting_threshold is 0"),
])
def test_bad_settings_name_the_role_variable(key, value, message):
    with pytest.raises(AnsibleFilterError, match=message):
        monitoring_rules({"ws": {"core": 85, "memory": 100}}, dict(SETTINGS, **{key: value}))


def test_durations():
    assert duration_seconds("1h30m", "x") == 5400
    assert duration_seconds("30s", "x") == 30
    with pytest.raises(AnsibleFilterError):
        duration_seconds("", "x")
