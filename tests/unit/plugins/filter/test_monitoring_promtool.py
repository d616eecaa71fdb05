"""The monitoring role's alert rules, run through Prometheus' own promtool.

The limits are the gpu_gates role's own defaults (read from that role, as the monitoring role reads them)
and a host that overrides one, so the rules promtool tests are the ones a fleet gets. promtool comes from Debian's
`prometheus` package, which tests/harness/setup.sh unpacks into .cache/prometheus-tools.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible.module_utils import _internal as module_utils_internal

_WAS_CONTROLLER = module_utils_internal.is_controller
from ansible_collections.llmfleet.workstation.plugins.filter.monitoring_gate_limits import (  # noqa: E402
    monitoring_gate_limits,
)
from ansible_collections.llmfleet.workstation.plugins.filter.monitoring_rule_tests import (  # noqa: E402
    monitoring_rule_tests,
)
from ansible_collections.llmfleet.workstation.plugins.filter.monitoring_rules import monitoring_rules  # noqa: E402
from ansible_collections.llmfleet.workstation.plugins.plugin_utils.monitoring import rule_names  # noqa: E402

module_utils_internal.is_controller = _WAS_CONTROLLER

REPO = Path(__file__).resolve().parents[4]
# make setup unpacks it from Debian's package into .cache; an installed one does as well.
UNPACKED_PROMTOOL = REPO / ".cache/prometheus-tools/usr/bin/promtool"
PROMTOOL = str(UNPACKED_PROMTOOL) if UNPACKED_PROMTOOL.exists() else shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is missing: run make setup (it unpacks Debian's prometheus package into .cache)")

# What the role passes by default (roles/monitoring/defaults/main.yml).
ROLE_DEFAULTS = yaml.safe_load((REPO / "roles/monitoring/defaults/main.yml").read_text())
DEFAULT_SETTINGS = {
    "temperature_for": ROLE_DEFAULTS["monitoring_temperature_alert_for"],
    "throttle_for": ROLE_DEFAULTS["monitoring_throttle_alert_for"],
    "power_cap_for": ROLE_DEFAULTS["monitoring_power_cap_alert_for"],
    "nvlink_for": ROLE_DEFAULTS["monitoring_nvlink_alert_for"],
    "down_for": ROLE_DEFAULTS["monitoring_down_alert_for"],
    "kv_cache_for": ROLE_DEFAULTS["monitoring_kv_cache_alert_for"],
    "kv_cache_threshold": ROLE_DEFAULTS["monitoring_kv_cache_threshold"],
    "waiting_for": ROLE_DEFAULTS["monitoring_requests_waiting_alert_for"],
    "waiting_threshold": ROLE_DEFAULTS["monitoring_requests_waiting_threshold"],
}
GATE_DEFAULTS = yaml.safe_load((REPO / "roles/gpu_gates/defaults/main.yml").read_text())
HOSTS = {"ws-3090-a": {}, "ws-3090-b.lan": {}, "ws-hot-room": {"gpu_gates_max_memory_temp_c": "95"}}


def render(tmp_path, settings, hosts=None, edit=None):
    """Write the rules and their tests as the role does (one file per group); edit(rules) may break a rule."""
    limits = monitoring_gate_limits(hosts or HOSTS)
    rules = monitoring_rules(limits, settings)
    if edit:
        edit(rules)
    tests = monitoring_rule_tests(limits, settings, str(tmp_path / "rules"))
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    for group, document in rules.items():
        (tmp_path / "rules" / ("%s.yml" % group)).write_text(yaml.safe_dump(document, width=1000))
        (tmp_path / "tests" / ("%s.yml" % group)).write_text(yaml.safe_dump(tests[group], width=1000))
    return limits, rules, tests


def promtool(*args):
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False)


def test_every_rule_passes_check_and_its_tests(tmp_path):
    unused_limits, rules, tests = render(tmp_path, DEFAULT_SETTINGS)
    check = promtool("check", "rules", *sorted(str(path) for path in (tmp_path / "rules").iterdir()))
    assert check.returncode == 0, check.stdout + check.stderr
    run = promtool("test", "rules", *sorted(str(path) for path in (tmp_path / "tests").iterdir()))
    assert run.returncode == 0, run.stdout + run.stderr
    # Every alert of every group is the subject of at least one test.
    tested = {case["alertname"] for document in tests.values() for test in document["tests"]
              for case in test["alert_rule_test"]}
    assert set(rule_names(rules)) == tested
    assert set(rules) == {"llmfleet_gpu", "llmfleet_exporter", "llmfleet_engine"}


def test_thresholds_are_the_gate_limits(tmp_path):
    limits, rules, unused_tests = render(tmp_path, DEFAULT_SETTINGS)
    assert limits["ws-3090-a"] == {"core": GATE_DEFAULTS["gpu_gates_max_core_temp_c"],
                                   "memory": GATE_DEFAULTS["gpu_gates_max_memory_temp_c"]}
    assert limits["ws-hot-room"]["memory"] == 95
    memory_rules = [rule for rule in rules["llmfleet_gpu"]["groups"][0]["rules"]
                    if rule["alert"] == "GPUMemoryJunctionHot"]
    by_limit = {rule["labels"]["limit_celsius"]: rule["expr"] for rule in memory_rules}
    assert set(by_limit) == {"95", str(GATE_DEFAULTS["gpu_gates_max_memory_temp_c"])}
    assert by_limit["95"].endswith("> 95") and 'host=~"ws-hot-room"' in by_limit["95"]
    # The dot of an inventory name is a literal in the regex, not "any character".
    assert "ws-3090-b\\\\.lan" in by_limit[str(GATE_DEFAULTS["gpu_gates_max_memory_temp_c"])]


def test_a_shortened_for_is_what_the_rules_and_tests_use(tmp_path):
    settings = dict(DEFAULT_SETTINGS, temperature_for="30s", down_for="20s")
    unused_limits, rules, unused_tests = render(tmp_path, settings)
    assert {rule["for"] for rule in rules["llmfleet_gpu"]["groups"][0]["rules"]
            if rule["alert"] == "GPUCoreHot"} == {"30s"}
    run = promtool("test", "rules", *sorted(str(path) for path in (tmp_path / "tests").iterdir()))
    assert run.returncode == 0, run.stdout + run.stderr


def _alert(rules, group, name):
    return next(rule for rule in rules[group]["groups"][0]["rules"] if rule["alert"] == name)


@pytest.mark.parametrize("breakage", [
    # An alert at the limit itself: the gates pass a GPU at its limit, so must the rule.
    ("llmfleet_gpu", "GPUMemoryJunctionHot", lambda rule: rule.update(expr=rule["expr"].replace(" > ", " >= "))),
    # An alert without its wait.
    ("llmfleet_gpu", "GPUCoreHot", lambda rule: rule.update({"for": "0s"})),
    # A down link alerted where the profile expects no NVLink.
    ("llmfleet_gpu", "NVLinkLinkDown",
     lambda rule: rule.update(expr='llmfleet_nvlink_link_up{job="llmfleet_gpu"} == 0')),
    # A power cap taken for thermal throttling.
    ("llmfleet_gpu", "GPUThermalThrottling",
     lambda rule: rule.update(expr='llmfleet_gpu_clock_event_active{job="llmfleet_gpu"} == 1')),
    ("llmfleet_engine", "VLLMKVCacheFull", lambda rule: rule.update(expr=rule["expr"].replace(" > ", " >= "))),
    ("llmfleet_exporter", "GPUExporterNVMLDown", lambda rule: rule["annotations"].update(summary="NVML down")),
], ids=lambda breakage: breakage[1])
def test_the_tests_catch_a_broken_rule(tmp_path, breakage):
    group, name, edit = breakage
    render(tmp_path, DEFAULT_SETTINGS, edit=lambda rules: edit(_alert(rules, group, name)))
    run = promtool("test", "rules", str(tmp_path / "tests" / ("%s.yml" % group)))
    assert run.returncode != 0
    assert name in run.stdout + run.stderr


def test_every_dashboard_query_parses(tmp_path):
    """The Grafana dashboard's queries, with its $host variable filled in, are valid PromQL."""
    dashboard = json.loads((REPO / "roles/monitoring/files/grafana-dashboard.json").read_text())
    queries = [target["expr"].replace("$host", ".*") for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(queries) >= 8
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": "dashboard:query_%d" % index, "expr": query} for index, query in enumerate(queries)]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules, width=1000))
    check = promtool("check", "rules", str(path))
    assert check.returncode == 0, check.stdout + check.stderr
