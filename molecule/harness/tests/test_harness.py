"""Verify the harness from outside the role: the unit serves, and pynvml sees each fake scenario."""

import json
import os
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner

REPO = Path(__file__).resolve().parents[3]
SCENARIO_DIR = REPO / "tests" / "fake_nvml" / "scenarios"
TARGET_SCENARIO_DIR = "/usr/local/share/fake-nvml/scenarios"

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")

# Reads what the modules read, through the real pynvml and the target's libnvidia-ml.so.1.
READ_GPUS = """
import json, pynvml
try:
    pynvml.nvmlInit()
except pynvml.NVMLError as error:
    print(json.dumps({"init_error": type(error).__name__}))
    raise SystemExit(0)
gpus = []
for index in range(pynvml.nvmlDeviceGetCount()):
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    gpus.append({"name": pynvml.nvmlDeviceGetName(handle), "uuid": pynvml.nvmlDeviceGetUUID(handle)})
pynvml.nvmlShutdown()
print(json.dumps({"gpus": gpus}))
"""


def test_systemd_booted(host):
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), state
    assert host.process.get(pid=1).comm == "systemd"


def test_probe_unit_active_and_hardened(host):
    unit = host.service("harness-echo")
    assert unit.is_running
    assert unit.is_enabled
    properties = host.run("systemctl show harness-echo -p DynamicUser -p ProtectSystem").stdout
    assert "DynamicUser=yes" in properties
    assert "ProtectSystem=strict" in properties


def test_probe_port_answers(host):
    assert host.socket("tcp://0.0.0.0:8080").is_listening
    page = host.run("curl -fsS http://127.0.0.1:8080/")
    assert page.rc == 0, page.stderr
    assert page.stdout.strip() == "llmfleet harness ok"


@pytest.fixture(scope="module")
def pynvml_path(host):
    """Unpack nvidia-ml-py from the target's wheelhouse; the harness itself installs nothing for Python."""
    unpacked = host.run(
        "rm -rf /tmp/pynvml-probe && "
        "python3 -m zipfile -e /var/cache/llmfleet-wheels/nvidia_ml_py-*.whl /tmp/pynvml-probe"
    )
    assert unpacked.rc == 0, unpacked.stderr
    return "/tmp/pynvml-probe"


@pytest.mark.parametrize("scenario_file", sorted(SCENARIO_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_pynvml_sees_each_fake_scenario(host, pynvml_path, scenario_file):
    expected = json.loads(scenario_file.read_text())
    result = host.run(
        "PYTHONPATH=%s FAKE_NVML_SCENARIO=%s/%s python3 -c '%s'"
        % (pynvml_path, TARGET_SCENARIO_DIR, scenario_file.name, READ_GPUS)
    )
    assert result.rc == 0, result.stderr
    seen = json.loads(result.stdout)
    if expected.get("init_error"):
        assert seen == {"init_error": "NVMLError_DriverNotLoaded"}
    else:
        assert [gpu["name"] for gpu in seen["gpus"]] == [gpu["name"] for gpu in expected["gpus"]]
        assert [gpu["uuid"] for gpu in seen["gpus"]] == [gpu["uuid"] for gpu in expected["gpus"]]
