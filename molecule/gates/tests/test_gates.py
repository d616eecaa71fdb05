"""The gate modules against every fake NVML scenario, run as an operator runs them: through Ansible.

Each test selects a scenario on the target (the fake library reloads it on the next NVML call), runs a
module with the gates venv's Python, and checks the verdict, the message and the facts.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner

REPO = Path(__file__).resolve().parents[3]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
HOST_NAME = "llmfleet-gates"
GATES_PYTHON = "/opt/llmfleet/gates/bin/python"
SCENARIOS = "/usr/local/share/fake-nvml/scenarios"
ACTIVE_SCENARIO = "/etc/fake-nvml/scenario.json"
FAKE_LIBRARY = "/usr/local/lib/fake-nvml/libnvidia-ml.so.1"

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts(HOST_NAME)


def ansible_env():
    env = dict(os.environ)
    env.update(
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"),
    )
    return env


def run_module(module, args=None, check=False):
    """Run llmfleet.workstation.<module> on the target and return its result dict."""
    command = [
        "ansible", "-i", INVENTORY, HOST_NAME,
        "-m", "llmfleet.workstation.%s" % module,
        "-e", "ansible_python_interpreter=%s" % GATES_PYTHON,
    ]
    if args:  # an empty "{}" would be taken as raw parameters, which modules refuse
        command += ["-a", json.dumps(args)]
    if check:
        command.append("--check")
    completed = subprocess.run(command, capture_output=True, text=True, env=ansible_env(), check=False)
    try:
        report = json.loads(completed.stdout)
    except ValueError:
        pytest.fail("ansible printed no JSON (rc %s): %s %s"
                    % (completed.returncode, completed.stdout, completed.stderr))
    return report["plays"][0]["tasks"][0]["hosts"][HOST_NAME]


@pytest.fixture
def scenario(host):
    """Select a fake NVML scenario for one test; the healthy one is restored afterwards."""

    def select(name):
        result = host.run("cp %s/%s.json %s" % (SCENARIOS, name, ACTIVE_SCENARIO))
        assert result.rc == 0, result.stderr

    yield select
    select("dual_3090_nvlink_ok")


# ---- healthy reference build -------------------------------------------------------------------


def test_healthy_pair_passes_every_gate_without_changes(scenario):
    scenario("dual_3090_nvlink_ok")
    facts = run_module("gpu_facts")
    nvlink = run_module("nvlink_status", {"expected_gpu_count": 2})
    thermal = run_module("gpu_junction_temp")
    for result in (facts, nvlink, thermal):
        assert not result.get("failed"), result.get("msg")
        assert result["changed"] is False

    gpu = facts["ansible_facts"]["llmfleet_gpu"]
    assert gpu["gpu_count"] == 2
    assert [card["name"] for card in gpu["gpus"]] == ["NVIDIA GeForce RTX 3090"] * 2
    assert gpu["driver_version"] == "560.35.03"
    assert gpu["cuda_driver_version"] == "12.6"

    links = nvlink["ansible_facts"]["llmfleet_nvlink"]
    assert links["nvlink_present"] is True
    assert [card["active_links"] for card in links["gpus"]] == [4, 4]
    # GA102's NVLink 3: 4 links, 112.5 GB/s bidirectional in all.
    assert links["gpus"][0]["estimated_bidirectional_bandwidth_gbps"] == pytest.approx(112.5)
    assert all(pair["p2p_nvlink"] == "ok" for pair in links["pairs"])

    # GeForce GDDR6X: NVML does not expose memory temperature; the gate says so instead of a number.
    cards = thermal["ansible_facts"]["llmfleet_gpu_thermal"]["gpus"]
    assert all(card["memory_temp_c"] is None for card in cards)
    assert any("unavailable" in warning for warning in thermal.get("warnings", []))


def test_gates_run_in_check_mode(scenario):
    scenario("dual_3090_nvlink_ok")
    for module in ("gpu_facts", "nvlink_status", "gpu_junction_temp"):
        result = run_module(module, check=True)
        assert not result.get("failed"), result.get("msg")
        assert result["changed"] is False


# ---- failures an operator must be able to act on -------------------------------------------


def test_misseated_bridge_fails_with_the_reseat_fix(scenario):
    scenario("dual_3090_bridge_misseated")
    result = run_module("nvlink_status", {"expected_gpu_count": 2})
    assert result["failed"] is True
    message = result["msg"]
    assert "RTX 3090" in message
    assert "00000000:01:00.0" in message
    assert "reseat" in message.lower()
    assert result["changed"] is False


def test_misseated_bridge_stops_site_yml(scenario):
    scenario("dual_3090_bridge_misseated")
    completed = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, str(REPO / "playbooks" / "site.yml"), "--limit", HOST_NAME],
        capture_output=True, text=True, env=ansible_env(), check=False,
    )
    assert completed.returncode != 0
    report = json.loads(completed.stdout)
    assert report["stats"][HOST_NAME]["failures"] == 1
    failed = [
        task["hosts"][HOST_NAME]
        for play in report["plays"] for task in play["tasks"]
        if task["hosts"].get(HOST_NAME, {}).get("failed")
    ]
    assert "reseat" in failed[0]["msg"].lower()


def test_hot_memory_junction_fails_with_value_limit_and_fix(scenario):
    scenario("dual_3090_hot_junction")
    result = run_module("gpu_junction_temp", {"max_memory_temp_c": 100})
    assert result["failed"] is True
    message = result["msg"]
    assert "106" in message and "100" in message
    assert "GPU 1" in message
    cards = result["ansible_facts"]["llmfleet_gpu_thermal"]["gpus"] if "ansible_facts" in result else None
    if cards is not None:
        assert cards[1]["memory_temp_c"] == 106


def test_hot_junction_cooldown_succeeds_when_the_gpu_cools(host, scenario):
    scenario("dual_3090_hot_junction")
    # The fake reloads its scenario when the file changes: cool the card 8 s from now. The module's own start
    # takes part of that (over 2 s on two busy cores), so it must have waited at least 2 s of it.
    cooler = host.run(
        "nohup sh -c 'sleep 8; cp %s/dual_3090_nvlink_ok.json %s' >/dev/null 2>&1 &" % (SCENARIOS, ACTIVE_SCENARIO)
    )
    assert cooler.rc == 0
    started = time.monotonic()
    result = run_module(
        "gpu_junction_temp",
        {"wait_for_cooldown": True, "cooldown_timeout": 60, "poll_interval": 1, "memory_temp_unavailable": "ignore"},
    )
    assert not result.get("failed"), result.get("msg")
    assert result["waited_seconds"] >= 2
    assert time.monotonic() - started < 60


def test_hot_junction_cooldown_times_out(scenario):
    scenario("dual_3090_hot_junction")
    result = run_module("gpu_junction_temp", {"wait_for_cooldown": True, "cooldown_timeout": 3, "poll_interval": 1})
    assert result["failed"] is True
    assert "106" in result["msg"]


def test_x8_lane_starvation_is_flagged(scenario):
    scenario("dual_3090_pcie_x8")
    gpus = run_module("gpu_facts")["ansible_facts"]["llmfleet_gpu"]["gpus"]
    assert [card["pcie_lane_starved"] for card in gpus] == [False, True]


# ---- hosts without NVLink ------------------------------------------------------------------


def test_pcie_pair_is_reported_and_fails_only_when_nvlink_is_required(scenario):
    scenario("dual_4090_pcie")
    relaxed = run_module("nvlink_status", {"require_nvlink": False, "require_p2p": False})
    assert not relaxed.get("failed"), relaxed.get("msg")
    assert relaxed["ansible_facts"]["llmfleet_nvlink"]["nvlink_present"] is False

    strict = run_module("nvlink_status")
    assert strict["failed"] is True
    assert "RTX 4090" in strict["msg"]


def test_single_gpu_host(scenario):
    scenario("single_5090")
    facts = run_module("gpu_facts")["ansible_facts"]["llmfleet_gpu"]
    assert facts["gpu_count"] == 1
    assert facts["gpus"][0]["name"] == "NVIDIA GeForce RTX 5090"
    assert run_module("nvlink_status", {"expected_gpu_count": 2})["failed"] is True


def test_nvswitch_system_counts_eighteen_switch_links(scenario):
    scenario("dual_h200_nvswitch")
    result = run_module("nvlink_status", {"expected_gpu_count": 2})
    assert not result.get("failed"), result.get("msg")
    gpus = result["ansible_facts"]["llmfleet_nvlink"]["gpus"]
    assert [card["active_links"] for card in gpus] == [18, 18]
    assert {link["remote_device_type"] for card in gpus for link in card["links"]} == {"switch"}


# ---- no driver -----------------------------------------------------------------------------


def test_driver_not_loaded(scenario):
    scenario("no_gpu")
    for module in ("gpu_facts", "nvlink_status", "gpu_junction_temp"):
        result = run_module(module)
        assert result["failed"] is True
        assert "NVIDIA driver not loaded" in result["msg"]
        assert "nvidia_driver" in result["msg"]


def test_library_missing(host):
    # Out of the linker's directories: ldconfig would relink a renamed copy by its soname.
    moved = host.run("mv %s /root/ && ldconfig" % FAKE_LIBRARY)
    assert moved.rc == 0, moved.stderr
    try:
        result = run_module("gpu_facts")
        assert result["failed"] is True
        assert "NVIDIA driver not loaded" in result["msg"]
    finally:
        restored = host.run("mv /root/libnvidia-ml.so.1 %s && ldconfig" % FAKE_LIBRARY)
        assert restored.rc == 0, restored.stderr


# ---- P2P bandwidth: the targets have no torch, so this is the "not measured" path ----------------------


def test_p2p_bandwidth_without_the_engine_is_not_measured_but_knows_its_floor(scenario):
    scenario("dual_3090_nvlink_ok")
    result = run_module("gpu_p2p_bandwidth", {"python": "/opt/vllm/current/bin/python"}, check=True)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False
    facts = result["ansible_facts"]["llmfleet_p2p_bandwidth"]
    assert (facts["measured"], facts["reason"]) == (False, "python_missing")
    # The floor comes from the real pynvml's reading of the links: 70 % of 4 NVLink 3.0 links of 14.06 GB/s.
    (pair,) = facts["pairs"]
    assert (pair["path"], pair["nvlink_links"], pair["floor_gbps"]) == ("nvlink", 4, 39.38)


def test_p2p_bandwidth_with_a_python_without_torch(scenario):
    scenario("dual_h200_nvswitch")
    relaxed = run_module("gpu_p2p_bandwidth", {"python": "/usr/bin/python3"})
    assert not relaxed.get("failed"), relaxed.get("msg")
    facts = relaxed["ansible_facts"]["llmfleet_p2p_bandwidth"]
    assert facts["reason"] == "torch_missing"
    assert facts["pairs"][0]["floor_gbps"] == 315.0  # 70 % of 18 NVLink 4.0 links of 25 GB/s, through NVSwitch

    strict = run_module("gpu_p2p_bandwidth", {"python": "/usr/bin/python3", "require_measurement": True})
    assert strict["failed"] is True
    assert [problem["code"] for problem in strict["problems"]] == ["not_measured"]
    assert "torch is not installed" in strict["msg"]


def test_gates_role_with_the_bandwidth_gate_on_and_no_engine_yet():
    completed = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, str(REPO / "molecule" / "gates" / "converge.yml"),
         "-e", "gpu_gates_p2p_bandwidth=true"],
        capture_output=True, text=True, env=ansible_env(), check=False,
    )
    report = json.loads(completed.stdout)
    assert completed.returncode == 0, completed.stdout[-2000:]
    assert report["stats"][HOST_NAME]["changed"] == 0
    # The json callback names a role's task "<role> : <task>".
    (bandwidth,) = [task["hosts"][HOST_NAME] for play in report["plays"] for task in play["tasks"]
                    if task["task"]["name"].endswith("Require the copy bandwidth the GPU links should carry")]
    assert not bandwidth.get("skipped")
    facts = bandwidth["ansible_facts"]["llmfleet_p2p_bandwidth"]
    # The vllm role's venv, by its default path: not installed in this scenario.
    assert (facts["python"], facts["reason"]) == ("/opt/vllm/current/bin/python", "python_missing")
