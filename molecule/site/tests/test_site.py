"""After site.yml: the gates' own venv holds the pinned NVML bindings and reads the workstation's GPUs."""

import json
import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("workstations")

GATES_PYTHON = "/opt/llmfleet/gates/bin/python"


def test_gates_venv_holds_the_pinned_bindings(host):
    version = host.run(GATES_PYTHON + " -m pip show nvidia-ml-py")
    assert version.rc == 0, version.stderr
    assert "Version: 13.615.71" in version.stdout


def test_system_python_left_alone(host):
    assert host.run("python3 -c 'import pynvml'").rc != 0


def test_gates_venv_reads_both_gpus(host):
    script = ("import json, pynvml; pynvml.nvmlInit(); "
              "print(json.dumps([pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) "
              "for i in range(pynvml.nvmlDeviceGetCount())]))")
    result = host.run("%s -c '%s'" % (GATES_PYTHON, script))
    assert result.rc == 0, result.stderr
    assert json.loads(result.stdout) == ["NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 3090"]
