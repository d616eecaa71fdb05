"""The fleet watched by its frontend (role monitoring), judged through Prometheus' and Alertmanager's own APIs.

ws1 serves the engine on a healthy fake 5090; ws2 stopped at the gates with a misseated bridge, so it has its
exporter (the exporter's play comes before the gates) and no engine. The frontend web1 is the monitor: its
services, its installed configuration through promtool and amtool, the rules with the gates' limits, every target
scraped, the alerts of the fleet's own faults, and a hot junction on ws2 from Prometheus through Alertmanager to a
stand-in webhook receiver (monitoring_alert_webhook_url in molecule.yml) and back to quiet.
"""

import base64
import json
import os
import time
import urllib.parse
from pathlib import Path

import pytest
import testinfra
import yaml

REPO = Path(__file__).resolve().parents[3]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
MONITOR = "llmfleet-fleet-web1"
SERVING = "llmfleet-fleet-ws1"
STOPPED = "llmfleet-fleet-ws2"
PROMETHEUS = "http://127.0.0.1:9090"
ALERTMANAGER = "http://127.0.0.1:9093"
TESTS_DIR = "/etc/prometheus/llmfleet/tests"
WEBHOOK_LOG = "/var/tmp/llmfleet-webhook.jsonl"
GATE_DEFAULTS = yaml.safe_load((REPO / "roles/gpu_gates/defaults/main.yml").read_text())
FLEET_INVENTORY = yaml.safe_load((REPO / "molecule/fleet/molecule.yml").read_text())["provisioner"]["inventory"]
MONITOR_VARS = FLEET_INVENTORY["group_vars"]["monitors"]
# ws2's own fake NVML scenario, put back after the hot junction.
STOPPED_SCENARIO = FLEET_INVENTORY["host_vars"][STOPPED]["fake_nvml_scenario"]

testinfra_hosts = [MONITOR]


def api(host, url):
    """GET a JSON API from the monitor itself: Prometheus' answers carry it under "data", Alertmanager's do not."""
    result = host.run("curl -sf --max-time 10 '%s'" % url)
    assert result.rc == 0, "%s: %s" % (url, result.stderr)
    return json.loads(result.stdout)


def wait_for(what, probe, timeout=120, step=5):
    """probe() until it returns something truthy; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail("%s did not happen within %d s" % (what, timeout))
        time.sleep(step)


def firing(monitor, alertname, **labels):
    """Prometheus' firing alerts of that name whose labels include the given ones."""
    return [alert for alert in api(monitor, PROMETHEUS + "/api/v1/alerts")["data"]["alerts"]
            if alert["labels"]["alertname"] == alertname and alert["state"] == "firing"
            and all(alert["labels"].get(key) == value for key, value in labels.items())]


def query(host, promql):
    """The result vector of an instant PromQL query."""
    return api(host, PROMETHEUS + "/api/v1/query?query=" + urllib.parse.quote(promql))["data"]["result"]


def seconds(duration):
    """A Prometheus duration of molecule.yml ("20s", "2m") in seconds."""
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def target_health(host):
    """(job, host) -> health of every fleet target."""
    return {(target["labels"]["job"], target["labels"].get("host")): target["health"]
            for target in api(host, PROMETHEUS + "/api/v1/targets")["data"]["activeTargets"]}


def test_services_listen_on_their_ports_only(host):
    for service in ("prometheus", "prometheus-alertmanager"):
        assert host.service(service).is_running
        assert host.service(service).is_enabled
    assert host.socket("tcp://0.0.0.0:9090").is_listening
    assert host.socket("tcp://0.0.0.0:9093").is_listening
    # One Alertmanager: its cluster port stays closed.
    assert not host.socket("tcp://0.0.0.0:9094").is_listening


def test_installed_configuration_passes_promtool_and_amtool(host):
    checked = host.run("promtool check config /etc/prometheus/prometheus.yml")
    assert checked.rc == 0, checked.stdout + checked.stderr
    checked = host.run("amtool check-config /etc/prometheus/alertmanager.yml")
    assert checked.rc == 0, checked.stdout + checked.stderr
    # One promtool test file per rule group the role installs, each passing.
    test_files = host.run("ls %s/*.yml" % TESTS_DIR).stdout.split()
    groups = api(host, PROMETHEUS + "/api/v1/rules")["data"]["groups"]
    assert sorted(Path(path).stem for path in test_files) == sorted(group["name"] for group in groups)
    tests = host.run("promtool test rules %s" % " ".join(test_files))
    assert tests.rc == 0, tests.stdout + tests.stderr
    assert tests.stdout.count("SUCCESS") == len(test_files)


def test_rules_carry_the_gates_limits_and_the_fleets_waits(host):
    groups = api(host, PROMETHEUS + "/api/v1/rules")["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert {"GPUMemoryJunctionHot", "GPUCoreHot", "GPUThermalThrottling", "GPUPowerBrake", "GPUPowerCapped",
            "NVLinkLinkDown", "GPUExporterDown", "GPUExporterNVMLDown", "VLLMEngineDown", "VLLMKVCacheFull",
            "VLLMRequestsWaiting"} <= set(rules)
    assert rules["GPUMemoryJunctionHot"]["query"].endswith("> %d" % GATE_DEFAULTS["gpu_gates_max_memory_temp_c"])
    assert rules["GPUCoreHot"]["query"].endswith("> %d" % GATE_DEFAULTS["gpu_gates_max_core_temp_c"])
    # The shortened waits of the fleet's monitors group (molecule.yml), in seconds.
    assert rules["GPUMemoryJunctionHot"]["duration"] == seconds(MONITOR_VARS["monitoring_temperature_alert_for"])
    assert rules["NVLinkLinkDown"]["duration"] == seconds(MONITOR_VARS["monitoring_nvlink_alert_for"])
    assert rules["GPUExporterDown"]["duration"] == seconds(MONITOR_VARS["monitoring_down_alert_for"])


def test_every_target_is_scraped_and_the_stopped_engine_is_down(host):
    expected = {("llmfleet_gpu", SERVING): "up", ("llmfleet_gpu", STOPPED): "up",
                ("vllm", SERVING): "up", ("vllm", STOPPED): "down"}

    def as_expected():
        health = target_health(host)
        return all(health.get(key) == value for key, value in expected.items())
    wait_for("targets %s" % expected, as_expected, timeout=60)
    # Every GPU of each exporter: the 5090 of ws1, the pair of ws2.
    counts = {series["metric"]["host"]: series["value"][1]
              for series in query(host, 'count by (host) (llmfleet_gpu_temperature_celsius{sensor="core"})')}
    assert counts == {SERVING: "1", STOPPED: "2"}
    # The engine's own gauges arrive through its /metrics.
    assert query(host, "vllm:kv_cache_usage_perc")


def test_the_fleets_faults_fire_their_alerts(host):
    # ws2 has no engine (it failed its gates) and a misseated bridge on a profile that expects NVLink.
    engine_down = wait_for("VLLMEngineDown for %s" % STOPPED, lambda: firing(host, "VLLMEngineDown", host=STOPPED))
    assert "systemctl status vllm" in engine_down[0]["annotations"]["description"]
    wait_for("NVLinkLinkDown for %s" % STOPPED, lambda: firing(host, "NVLinkLinkDown", host=STOPPED))
    assert not firing(host, "VLLMEngineDown", host=SERVING)
    assert not firing(host, "NVLinkLinkDown", host=SERVING)
    assert not firing(host, "GPUExporterDown")


def select_scenario(name):
    result = testinfra.get_host("ansible://%s?ansible_inventory=%s" % (STOPPED, INVENTORY)).run(
        "cp /usr/local/share/fake-nvml/scenarios/%s.json /etc/fake-nvml/scenario.json" % name)
    assert result.rc == 0, result.stderr


WEBHOOK_SERVER = """
import http.server


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open("%s", "ab") as log:
            log.write(body + b"\\n")
        self.send_response(200)
        self.end_headers()


http.server.HTTPServer(("127.0.0.1", 9999), Hook).serve_forever()
""" % WEBHOOK_LOG


@pytest.fixture
def webhook(host):
    """A stand-in webhook receiver on the monitor, logging every POST body (monitoring_alert_webhook_url)."""
    script = "/var/tmp/llmfleet-webhook.py"
    encoded = base64.b64encode(WEBHOOK_SERVER.encode()).decode()
    host.run("systemctl stop llmfleet-test-webhook; systemctl reset-failed llmfleet-test-webhook; rm -f %s"
             % WEBHOOK_LOG)
    written = host.run("echo %s | base64 -d > %s" % (encoded, script))
    assert written.rc == 0, written.stderr
    started = host.run("systemd-run --unit llmfleet-test-webhook python3 %s" % script)
    assert started.rc == 0, started.stderr
    # The receiver answers before the alert can fire.
    wait_for("the stand-in receiver", lambda: host.run(
        "curl -s -o /dev/null -X POST -d '{}' http://127.0.0.1:9999/alerts").rc == 0, timeout=30, step=1)
    host.run("rm -f %s" % WEBHOOK_LOG)
    yield WEBHOOK_LOG
    host.run("systemctl stop llmfleet-test-webhook")


def test_a_hot_memory_junction_fires_reaches_the_receiver_and_clears(host, webhook):
    limit = GATE_DEFAULTS["gpu_gates_max_memory_temp_c"]
    assert not firing(host, "GPUMemoryJunctionHot")
    select_scenario("dual_3090_hot_junction")
    try:
        alert = wait_for("GPUMemoryJunctionHot on %s GPU 1" % STOPPED,
                         lambda: firing(host, "GPUMemoryJunctionHot", host=STOPPED, gpu="1"))
        assert alert[0]["labels"]["limit_celsius"] == str(limit)
        assert float(alert[0]["value"]) > limit
        assert "gpu_gates_max_memory_temp_c = %d C" % limit in alert[0]["annotations"]["description"]
        # GPU 0 of that scenario is below the limit, and the serving workstation is not touched.
        assert not firing(host, "GPUMemoryJunctionHot", host=STOPPED, gpu="0")
        assert not firing(host, "GPUMemoryJunctionHot", host=SERVING)

        def in_alertmanager():
            return [item for item in api(host, ALERTMANAGER + "/api/v2/alerts")
                    if item["labels"]["alertname"] == "GPUMemoryJunctionHot" and item["labels"]["host"] == STOPPED]
        wait_for("the alert in Alertmanager", in_alertmanager, timeout=60)

        def delivered():
            log = host.run("cat %s" % webhook).stdout
            return [json.loads(line) for line in log.splitlines() if "GPUMemoryJunctionHot" in line]
        notice = wait_for("the webhook notification", delivered, timeout=120)
        assert notice[0]["status"] == "firing"
        assert notice[0]["alerts"][0]["labels"]["host"] == STOPPED
    finally:
        select_scenario(STOPPED_SCENARIO)
    wait_for("GPUMemoryJunctionHot to clear", lambda: not firing(host, "GPUMemoryJunctionHot"), timeout=90)
