"""The fleet watched by its frontend (role monitoring): every target scraped, the alerts of the fleet's own faults.

ws1 serves the engine on a healthy fake 5090; ws2 stopped at the gates with a misseated bridge, so it has its
exporter (the exporter's play comes before the gates) and no engine. Prometheus' API on the frontend is the judge.
"""

import json
import os
import time
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
GATE_DEFAULTS = yaml.safe_load((REPO / "roles/gpu_gates/defaults/main.yml").read_text())

testinfra_hosts = [MONITOR]


def api(host, path):
    result = host.run("curl -sf --max-time 10 '%s%s'" % (PROMETHEUS, path))
    assert result.rc == 0, "%s: %s" % (path, result.stderr)
    return json.loads(result.stdout)["data"]


def wait_for(what, probe, timeout=120, step=5):
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail("%s did not happen within %d s" % (what, timeout))
        time.sleep(step)


def firing(monitor, alertname, **labels):
    return [alert for alert in api(monitor, "/api/v1/alerts")["alerts"]
            if alert["labels"]["alertname"] == alertname and alert["state"] == "firing"
            and all(alert["labels"].get(key) == value for key, value in labels.items())]


def target_health(host):
    """(job, host) -> health of every fleet target."""
    return {(target["labels"]["job"], target["labels"].get("host")): target["health"]
            for target in api(host, "/api/v1/targets")["activeTargets"]}


def test_every_target_is_scraped_and_the_stopped_engine_is_down(host):
    expected = {("llmfleet_gpu", SERVING): "up", ("llmfleet_gpu", STOPPED): "up",
                ("vllm", SERVING): "up", ("vllm", STOPPED): "down"}

    def as_expected():
        health = target_health(host)
        return all(health.get(key) == value for key, value in expected.items())
    wait_for("targets %s" % expected, as_expected, timeout=60)
    # The engine's own gauges arrive through its /metrics.
    assert api(host, "/api/v1/query?query=vllm:kv_cache_usage_perc")["result"]


def test_the_fleets_faults_fire_their_alerts(host):
    # ws2 has no engine (it failed its gates) and a misseated bridge on a profile that expects NVLink.
    wait_for("VLLMEngineDown for %s" % STOPPED, lambda: firing(host, "VLLMEngineDown", host=STOPPED))
    wait_for("NVLinkLinkDown for %s" % STOPPED, lambda: firing(host, "NVLinkLinkDown", host=STOPPED))
    assert not firing(host, "VLLMEngineDown", host=SERVING)
    assert not firing(host, "NVLinkLinkDown", host=SERVING)
    assert not firing(host, "GPUExporterDown")


def select_scenario(name):
    result = testinfra.get_host("ansible://%s?ansible_inventory=%s" % (STOPPED, INVENTORY)).run(
        "cp /usr/local/share/fake-nvml/scenarios/%s.json /etc/fake-nvml/scenario.json" % name)
    assert result.rc == 0, result.stderr


def test_a_hot_memory_junction_fires_through_prometheus(host):
    limit = GATE_DEFAULTS["gpu_gates_max_memory_temp_c"]
    select_scenario("dual_3090_hot_junction")
    try:
        alert = wait_for("GPUMemoryJunctionHot on %s GPU 1" % STOPPED,
                         lambda: firing(host, "GPUMemoryJunctionHot", host=STOPPED, gpu="1"))
        assert alert[0]["labels"]["limit_celsius"] == str(limit)
        assert float(alert[0]["value"]) > limit
    finally:
        select_scenario("dual_3090_bridge_misseated")
    wait_for("GPUMemoryJunctionHot to clear", lambda: not firing(host, "GPUMemoryJunctionHot"), timeout=90)
