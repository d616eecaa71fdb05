"""The fake library's power-limit call through the REAL pynvml: NVML's error codes, and a limit that persists in
its state file from one process to the next (and is gone with the file, as with a reboot of a real card)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FAKE_DIR = Path(__file__).resolve().parents[3] / "tests" / "fake_nvml"
HOT_JUNCTION = FAKE_DIR / "scenarios" / "dual_3090_hot_junction.json"
NOBODY = 65534

# Sets GPU argv[1]'s limit to argv[2] mW (unless argv[2] is "-"), as user argv[3] if given, and prints what NVML
# answered and reads back.
SET_AND_READ = textwrap.dedent("""
    import json, os, sys
    import pynvml as N
    N.nvmlInit()
    if len(sys.argv) > 3:  # loaded as root, then called as another user, as a service user would
        os.setuid(int(sys.argv[3]))
    handle = N.nvmlDeviceGetHandleByIndex(int(sys.argv[1]))
    answer = "SUCCESS"
    if sys.argv[2] != "-":
        try:
            N.nvmlDeviceSetPowerManagementLimit(handle, int(sys.argv[2]))
        except N.NVMLError as error:
            answer = type(error).__name__
    print(json.dumps({"answer": answer, "limit": N.nvmlDeviceGetPowerManagementLimit(handle),
                      "enforced": N.nvmlDeviceGetEnforcedPowerLimit(handle),
                      "other_gpu": N.nvmlDeviceGetPowerManagementLimit(N.nvmlDeviceGetHandleByIndex(
                          1 - int(sys.argv[1])))}))
    N.nvmlShutdown()
""")


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.fail("make and cc are needed to build the fake NVML library")
    out = tmp_path_factory.mktemp("fake_nvml_power_build")
    built = subprocess.run(["make", "-s", "-C", str(FAKE_DIR), "PYTHON=%s" % sys.executable, "OUT=%s" % out],
                           capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def set_and_read(library, state, scenario, gpu, milliwatts, user=None):
    env = dict(os.environ, LD_LIBRARY_PATH=str(library), FAKE_NVML_SCENARIO=str(scenario), FAKE_NVML_STATE=str(state))
    args = [str(gpu), str(milliwatts)] + ([] if user is None else [str(user)])
    completed = subprocess.run([sys.executable, "-c", SET_AND_READ, *args], env=env, capture_output=True, text=True,
                               check=False, timeout=60)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_a_limit_inside_the_range_is_set_and_read_back_by_the_next_process(library, tmp_path):
    state = tmp_path / "run" / "power_limits"
    assert set_and_read(library, state, HOT_JUNCTION, 1, 280000) == {
        "answer": "SUCCESS", "limit": 280000, "enforced": 280000, "other_gpu": 350000}
    # A second process, no set: the driver still holds the limit.
    assert set_and_read(library, state, HOT_JUNCTION, 1, "-")["limit"] == 280000
    assert set_and_read(library, state, HOT_JUNCTION, 0, 300000)["other_gpu"] == 280000
    lines = sorted(state.read_text().splitlines())
    assert lines == ["GPU-5f0c3d12-8a41-4c7e-9b2d-3090a0000001 300000",
                     "GPU-5f0c3d12-8a41-4c7e-9b2d-3090a0000002 280000"]


def test_the_limit_is_gone_with_the_state_file_as_after_a_reboot(library, tmp_path):
    state = tmp_path / "power_limits"
    set_and_read(library, state, HOT_JUNCTION, 0, 250000)
    state.unlink()  # /run is a tmpfs: a reboot empties it
    assert set_and_read(library, state, HOT_JUNCTION, 0, "-")["limit"] == 350000


@pytest.mark.parametrize("milliwatts", [99999, 400001, 0])
def test_outside_the_constraints_is_invalid_argument_and_changes_nothing(library, tmp_path, milliwatts):
    state = tmp_path / "power_limits"
    result = set_and_read(library, state, HOT_JUNCTION, 0, milliwatts)
    assert (result["answer"], result["limit"]) == ("NVMLError_InvalidArgument", 350000)
    assert not state.exists()


def test_the_range_ends_are_accepted(library, tmp_path):
    state = tmp_path / "power_limits"
    assert set_and_read(library, state, HOT_JUNCTION, 0, 100000)["limit"] == 100000
    assert set_and_read(library, state, HOT_JUNCTION, 0, 400000)["limit"] == 400000


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the call as another user")
def test_a_caller_other_than_root_gets_no_permission(library, tmp_path):
    state = tmp_path / "power_limits"
    result = set_and_read(library, state, HOT_JUNCTION, 0, 280000, user=NOBODY)
    assert (result["answer"], result["limit"]) == ("NVMLError_NoPermission", 350000)


def test_a_card_whose_limit_cannot_be_set_answers_not_supported(library, tmp_path):
    scenario = json.loads(HOT_JUNCTION.read_text())
    scenario["gpus"][0]["power"]["settable"] = False
    del scenario["gpus"][1]["power"]["min_limit_mw"]  # no constraints: not settable either
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    state = tmp_path / "power_limits"
    assert set_and_read(library, state, path, 0, 280000)["answer"] == "NVMLError_NotSupported"
    assert set_and_read(library, state, path, 1, 280000)["answer"] == "NVMLError_NotSupported"


def test_hot_junction_scenario_exposes_a_memory_temperature_over_the_gate_limit():
    # The gates' default limit (gpu_gates_max_memory_temp_c), read from its owner.
    defaults = (Path(__file__).resolve().parents[3] / "roles" / "gpu_gates" / "defaults" / "main.yml").read_text()
    limit = int(next(line.split(":")[1] for line in defaults.splitlines()
                     if line.startswith("gpu_gates_max_memory_temp_c:")))
    temperatures = [gpu["temperature"]["memory_c"] for gpu in json.loads(HOT_JUNCTION.read_text())["gpus"]]
    assert max(temperatures) > limit
