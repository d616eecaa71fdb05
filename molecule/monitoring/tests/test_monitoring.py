"""The monitoring role on a simulated workstation, judged through Prometheus' and Alertmanager's own APIs."""

import base64
import json
import os
import time
from pathlib import Path

import pytest
import testinfra
import yaml

REPO = Path(__file__).resolve().parents[3]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
WORKSTATION = "llmfleet-monitoring-ws"
MONITOR = "llmfleet-monitoring-mon"
PROMETHEUS = "http://127.0.0.1:9090"
ALERTMANAGER = "http://127.0.0.1:9093"
WEBHOOK_LOG = "/var/tmp/llmfleet-webhook.jsonl"
GATE_DEFAULTS = yaml.safe_load((REPO / "roles/gpu_gates/defaults/main.yml").read_text())

testinfra_hosts = [MONITOR]


def workstation():
    return testinfra.get_host("ansible://%s?ansible_inventory=%s" % (WORKSTATION, INVENTORY))


def api(host, url):
    """GET a JSON API from the monitor itself."""
    result = host.run("curl -sf --max-time 10 %s" % url)
    assert result.rc == 0, "%s: %s" % (url, result.stderr)
    return json.loads(result.stdout)


def wait_for(what, probe, timeout=150, step=5):
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
    alerts = api(monitor, PROMETHEUS + "/api/v1/alerts")["data"]["alerts"]
    return [alert for alert in alerts if alert["labels"]["alertname"] == alertname and alert["state"] == "firing"
            and all(alert["labels"].get(key) == value for key, value in labels.items())]


def select_scenario(name):
    result = workstation().run(
        "cp /usr/local/share/fake-nvml/scenarios/%s.json /etc/fake-nvml/scenario.json" % name)
    assert result.rc == 0, result.stderr


def test_services_listen_on_their_ports_only(host):
    for service in ("prometheus", "prometheus-alertmanager"):
        assert host.service(service).is_running
        assert host.service(service).is_enabled
    assert host.socket("tcp://0.0.0.0:9090").is_listening
    assert host.socket("tcp://0.0.0.0:9093").is_listening
    # One Alertmanager: its cluster port stays closed.
    assert not host.socket("tcp://0.0.0.0:9094").is_listening


def test_installed_configuration_passes_promtool_and_amtool(host):
    assert host.run("promtool check config /etc/prometheus/prometheus.yml").rc == 0
    assert host.run("amtool check-config /etc/prometheus/alertmanager.yml").rc == 0
    tests = host.run("promtool test rules /etc/prometheus/llmfleet/tests/*.yml")
    assert tests.rc == 0, tests.stdout + tests.stderr
    assert tests.stdout.count("SUCCESS") == 3


def test_rules_carry_the_gates_limits(host):
    groups = api(host, PROMETHEUS + "/api/v1/rules")["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert {"GPUMemoryJunctionHot", "GPUCoreHot", "GPUThermalThrottling", "GPUPowerBrake", "GPUPowerCapped",
            "NVLinkLinkDown", "GPUExporterDown", "GPUExporterNVMLDown", "VLLMEngineDown", "VLLMKVCacheFull",
            "VLLMRequestsWaiting"} <= set(rules)
    assert rules["GPUMemoryJunctionHot"]["query"].endswith("> %d" % GATE_DEFAULTS["gpu_gates_max_memory_temp_c"])
    assert rules["GPUCoreHot"]["query"].endswith("> %d" % GATE_DEFAULTS["gpu_gates_max_core_temp_c"])
    # The shortened wait of this scenario (molecule.yml), in seconds.
    assert rules["GPUMemoryJunctionHot"]["duration"] == 20


def test_the_workstations_exporter_is_scraped(host):
    def exporter_up():
        targets = api(host, PROMETHEUS + "/api/v1/targets")["data"]["activeTargets"]
        return [target for target in targets if target["labels"]["job"] == "llmfleet_gpu"
                and target["labels"]["host"] == WORKSTATION and target["health"] == "up"]
    wait_for("the exporter of %s scraped" % WORKSTATION, exporter_up, timeout=60)
    result = api(host, PROMETHEUS + "/api/v1/query?query=llmfleet_gpu_temperature_celsius%7Bsensor%3D%22core%22%7D")
    assert len(result["data"]["result"]) == 2  # both GPUs of the pair


def test_engine_down_fires_for_a_workstation_without_an_engine(host):
    alert = wait_for("VLLMEngineDown for %s" % WORKSTATION,
                     lambda: firing(host, "VLLMEngineDown", host=WORKSTATION), timeout=90)
    assert "systemctl status vllm" in alert[0]["annotations"]["description"]


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
    host.run("systemctl stop llmfleet-test-webhook; rm -f %s" % WEBHOOK_LOG)
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
        alert = wait_for("GPUMemoryJunctionHot for GPU 1",
                         lambda: firing(host, "GPUMemoryJunctionHot", host=WORKSTATION, gpu="1"), timeout=120)
        assert alert[0]["labels"]["limit_celsius"] == str(limit)
        assert float(alert[0]["value"]) > limit
        assert "gpu_gates_max_memory_temp_c = %d C" % limit in alert[0]["annotations"]["description"]
        # GPU 0 of that scenario is below the limit.
        assert not firing(host, "GPUMemoryJunctionHot", host=WORKSTATION, gpu="0")

        def in_alertmanager():
            alerts = api(host, ALERTMANAGER + "/api/v2/alerts")
            return [item for item in alerts if item["labels"]["alertname"] == "GPUMemoryJunctionHot"]
        wait_for("the alert in Alertmanager", in_alertmanager, timeout=60)

        def delivered():
            log = host.run("cat %s" % webhook).stdout
            return [json.loads(line) for line in log.splitlines() if "GPUMemoryJunctionHot" in line]
        notice = wait_for("the webhook notification", delivered, timeout=120)
        assert notice[0]["status"] == "firing"
        assert notice[0]["alerts"][0]["labels"]["host"] == WORKSTATION
    finally:
        select_scenario("dual_3090_nvlink_ok")
    wait_for("GPUMemoryJunctionHot to clear", lambda: not firing(host, "GPUMemoryJunctionHot"), timeout=90)
