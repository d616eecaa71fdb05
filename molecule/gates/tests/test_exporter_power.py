"""The GPU exporter and the power limit on the target, through the real pynvml and the fake libnvidia-ml.so.1.

The exporter is read as Prometheus reads it (HTTP /metrics) and compared with the scenario file; the power limit is
read back through gpu_facts, refused outside the card's range, and set again by the boot-time unit after a reboot of
the target (podman restart boots its systemd again and empties /run, where the fake driver keeps the limit).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / ".cache" / "collections"))

from ansible_collections.llmfleet.workstation.plugins.module_utils.gpu_metrics import parse_metrics  # noqa: E402

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
HOST_NAME = "llmfleet-gates"
GATES_PYTHON = "/opt/llmfleet/gates/bin/python"
SCENARIOS = "/usr/local/share/fake-nvml/scenarios"
ACTIVE_SCENARIO = "/etc/fake-nvml/scenario.json"
EXPORTER_UNIT = "llmfleet-gpu-exporter"
POWER_UNIT = "llmfleet-gpu-power-limit"
METRICS_URL = "http://127.0.0.1:9477/metrics"
# What molecule.yml asks for (gpu_power_limit_w) and the gates' default limits (gpu_gates defaults).
CAPS_W = {0: 280, 1: 300}
GATE_DEFAULTS = {key: int(value) for key, value in (
    line.split(":", 1) for line in (REPO / "roles" / "gpu_gates" / "defaults" / "main.yml").read_text().splitlines()
    if line.startswith(("gpu_gates_max_core_temp_c:", "gpu_gates_max_memory_temp_c:")))}

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts(HOST_NAME)


def ansible_env():
    return dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json",
                ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"))


def run_module(module, args=None, check=False):
    command = ["ansible", "-i", INVENTORY, HOST_NAME, "-m", "llmfleet.workstation.%s" % module,
               "-e", "ansible_python_interpreter=%s" % GATES_PYTHON]
    if args:
        command += ["-a", json.dumps(args)]
    if check:
        command.append("--check")
    completed = subprocess.run(command, capture_output=True, text=True, env=ansible_env(), check=False)
    try:
        return json.loads(completed.stdout)["plays"][0]["tasks"][0]["hosts"][HOST_NAME]
    except (ValueError, KeyError, IndexError):
        pytest.fail("ansible printed no result (rc %s): %s %s" % (completed.returncode, completed.stdout,
                                                                  completed.stderr))


def scrape(host):
    """The exporter's samples as {(name, sorted labels): value}, fetched on the target as Prometheus would."""
    result = host.run("%s -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], "
                      "timeout=10).read().decode())' %s" % (GATES_PYTHON, METRICS_URL))
    assert result.rc == 0, result.stderr
    return {(name, tuple(sorted(labels.items()))): value for name, labels, value in parse_metrics(result.stdout)}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def scenario_file(name):
    return json.loads((REPO / "tests" / "fake_nvml" / "scenarios" / ("%s.json" % name)).read_text())


def power_limits():
    facts = run_module("gpu_facts")
    assert not facts.get("failed"), facts.get("msg")
    return {card["index"]: card["power_limit_w"] for card in facts["ansible_facts"]["llmfleet_gpu"]["gpus"]}


@pytest.fixture
def scenario(host):
    def select(name):
        result = host.run("cp %s/%s.json %s" % (SCENARIOS, name, ACTIVE_SCENARIO))
        assert result.rc == 0, result.stderr

    yield select
    select("dual_3090_nvlink_ok")


# ---- the exporter ---------------------------------------------------------------------------------------


def test_exporter_runs_hardened(host):
    shown = host.run("systemctl show %s -p ActiveState -p DynamicUser -p ProtectSystem -p NoNewPrivileges "
                     "-p MemoryMax -p Restart -p DevicePolicy" % EXPORTER_UNIT)
    properties = dict(line.split("=", 1) for line in shown.stdout.splitlines())
    assert properties == {"ActiveState": "active", "DynamicUser": "yes", "ProtectSystem": "strict",
                          "NoNewPrivileges": "yes", "MemoryMax": str(128 * 1024 * 1024), "Restart": "on-failure",
                          "DevicePolicy": "closed"}
    assert host.socket("tcp://0.0.0.0:9477").is_listening


def test_exporter_publishes_the_scenario_and_hides_what_the_card_hides(host, scenario):
    scenario("dual_3090_nvlink_ok")
    samples = scrape(host)
    data = scenario_file("dual_3090_nvlink_ok")
    assert value(samples, "llmfleet_exporter_nvml_up") == 1
    for index, card in enumerate(data["gpus"]):
        gpu = str(index)
        info = [labels for (name, labels) in samples if name == "llmfleet_gpu_info" and ("gpu", gpu) in labels]
        assert dict(info[0]) == {"gpu": gpu, "uuid": card["uuid"], "name": card["name"],
                                 "pci_bus_id": card["pci_bus_id"], "driver_version": data["driver_version"]}
        core_c = value(samples, "llmfleet_gpu_temperature_celsius", gpu=gpu, sensor="core")
        assert core_c == card["temperature"]["gpu_c"]
        # GeForce hides its memory junction: no series at all, never a 0.
        assert card["temperature"]["memory_c"] is None
        assert value(samples, "llmfleet_gpu_temperature_celsius", gpu=gpu, sensor="memory") is None
        assert value(samples, "llmfleet_gpu_temperature_limit_celsius", gpu=gpu, sensor="core") == GATE_DEFAULTS[
            "gpu_gates_max_core_temp_c"]
        assert value(samples, "llmfleet_gpu_temperature_limit_celsius", gpu=gpu, sensor="memory") == GATE_DEFAULTS[
            "gpu_gates_max_memory_temp_c"]
        assert value(samples, "llmfleet_gpu_power_draw_watts", gpu=gpu) == card["power"]["usage_mw"] / 1000
        assert value(samples, "llmfleet_gpu_power_limit_watts", gpu=gpu) == CAPS_W[index]  # the converge's cap
        assert value(samples, "llmfleet_gpu_power_limit_min_watts", gpu=gpu) == card["power"]["min_limit_mw"] / 1000
        assert value(samples, "llmfleet_gpu_power_limit_max_watts", gpu=gpu) == card["power"]["max_limit_mw"] / 1000
        assert value(samples, "llmfleet_gpu_power_limit_default_watts", gpu=gpu) == card["power"][
            "default_limit_mw"] / 1000
        assert value(samples, "llmfleet_gpu_memory_total_bytes", gpu=gpu) == card["memory_total_mib"] * 1024 * 1024
        assert value(samples, "llmfleet_gpu_pcie_link_width", gpu=gpu, kind="current") == card["pcie"]["current_width"]
        assert value(samples, "llmfleet_gpu_pcie_link_generation", gpu=gpu, kind="max") == card["pcie"]["max_gen"]
        links = card["nvlink"]["links"]
        assert [value(samples, "llmfleet_nvlink_link_up", gpu=gpu, link=str(link)) for link in range(len(links))] == [
            1] * len(links)
        assert value(samples, "llmfleet_nvlink_link_up", gpu=gpu, link=str(len(links))) is None
        assert value(samples, "llmfleet_nvlink_link_expected", gpu=gpu) == 1
        assert value(samples, "llmfleet_nvlink_errors_total", gpu=gpu, link="0", counter="replay") == 0


def test_exporter_follows_the_card_within_one_session(host, scenario):
    main_pid = host.run("systemctl show -p MainPID --value %s" % EXPORTER_UNIT).stdout.strip()
    scenario("dual_3090_hot_junction")
    samples = scrape(host)
    hot = scenario_file("dual_3090_hot_junction")["gpus"][1]
    memory_c = value(samples, "llmfleet_gpu_temperature_celsius", gpu="1", sensor="memory")
    assert memory_c == hot["temperature"]["memory_c"]
    assert memory_c > value(
        samples, "llmfleet_gpu_temperature_limit_celsius", gpu="1", sensor="memory")
    assert value(samples, "llmfleet_gpu_clock_event_active", gpu="1", reason="hw_thermal_slowdown") == 1
    assert value(samples, "llmfleet_gpu_clock_event_active", gpu="0", reason="hw_thermal_slowdown") == 0
    assert host.run("systemctl show -p MainPID --value %s" % EXPORTER_UNIT).stdout.strip() == main_pid


def test_exporter_reports_a_lost_driver_and_heals(host, scenario):
    scenario("no_gpu")  # GPUs gone: the session fails, and reopening meets a driver that is not loaded
    lost = scrape(host)
    assert value(lost, "llmfleet_exporter_nvml_up") == 0
    assert not any(name == "llmfleet_gpu_info" for name, _labels in lost)
    scenario("dual_3090_nvlink_ok")
    healed = scrape(host)
    assert value(healed, "llmfleet_exporter_nvml_up") == 1
    assert value(healed, "llmfleet_gpu_power_limit_watts", gpu="1") == CAPS_W[1]
    journal = host.run("journalctl -u %s --no-pager -o cat" % EXPORTER_UNIT).stdout
    assert "NVML read failed, reopening on the next scrape:" in journal
    assert "NVML read again after:" in journal


# ---- the power limit ------------------------------------------------------------------------------------


def test_each_gpu_has_its_cap():
    assert power_limits() == {index: float(watts) for index, watts in CAPS_W.items()}


def test_a_limit_outside_the_cards_range_is_refused_with_the_range():
    result = run_module("gpu_power_limit", {"limit_w": 500})
    assert result.get("failed") is True
    assert result["msg"] == ("GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0): power limit 500 W is outside the "
                             "card's range 100-400 W: choose a value from 100 to 400 W")
    assert [problem["code"] for problem in result["problems"]] == ["power_limit_out_of_range"]
    assert power_limits() == {index: float(watts) for index, watts in CAPS_W.items()}


def test_check_mode_says_what_would_change_and_changes_nothing():
    result = run_module("gpu_power_limit", {"limit_w": 250}, check=True)
    assert result["changed"] is True
    assert [(card["before_w"], card["after_w"]) for card in result["gpus"]] == [(280.0, 250.0), (300.0, 250.0)]
    assert power_limits() == {index: float(watts) for index, watts in CAPS_W.items()}


def test_the_cap_survives_a_reboot_of_the_target(host):
    restarted = subprocess.run(["podman", "restart", HOST_NAME], capture_output=True, text=True, check=False)
    assert restarted.returncode == 0, restarted.stderr
    # Right after the restart systemd's bus may not be up yet ("Failed to connect to bus"): ask again until it is.
    for _attempt in range(60):
        booted = subprocess.run(["podman", "exec", HOST_NAME, "systemctl", "is-system-running", "--wait"],
                                capture_output=True, text=True, check=False, timeout=180)
        if booted.stdout.strip() in ("running", "degraded"):
            break
        time.sleep(2)
    assert booted.stdout.strip() in ("running", "degraded"), booted.stdout + booted.stderr
    rebooted = testinfra.get_host("ansible://%s?ansible_inventory=%s" % (HOST_NAME, INVENTORY))
    unit = dict(line.split("=", 1) for line in rebooted.run(
        "systemctl show %s -p ActiveState -p Result" % POWER_UNIT).stdout.splitlines())
    assert unit == {"ActiveState": "active", "Result": "success"}
    # The card came back at its default (the fake driver's state was in /run) and the unit set the caps again.
    journal = rebooted.run("journalctl -b -u %s --no-pager -o cat" % POWER_UNIT).stdout
    assert "GPU 0 350 -> 280 W; GPU 1 350 -> 300 W" in journal, journal
    assert power_limits() == {index: float(watts) for index, watts in CAPS_W.items()}
    # The exporter started with the target and reports the caps.
    for _attempt in range(30):
        if rebooted.socket("tcp://0.0.0.0:9477").is_listening:
            break
        time.sleep(1)
    samples = scrape(rebooted)
    assert [value(samples, "llmfleet_gpu_power_limit_watts", gpu=str(index)) for index in CAPS_W] == [280, 300]
