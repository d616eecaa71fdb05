"""The fake libnvidia-ml.so.1 read by the REAL pynvml, checked against each scenario file it ships.

Each check runs pynvml in a subprocess (it loads the library once per process) with the freshly built
library first on LD_LIBRARY_PATH, so a scenario's declared values must come back through NVML's ABI.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FAKE_DIR = Path(__file__).resolve().parents[3] / "tests" / "fake_nvml"
SCENARIOS = sorted((FAKE_DIR / "scenarios").glob("*.json"))

# Dumps, for every GPU, what our modules read; NVML errors are recorded by class name.
DUMP = textwrap.dedent("""
    import json, sys, pynvml

    def attempt(function, *args):
        try:
            value = function(*args)
        except pynvml.NVMLError as error:
            return {"error": type(error).__name__}
        return value.decode() if isinstance(value, bytes) else value

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        print(json.dumps({"init_error": type(error).__name__}))
        sys.exit(0)
    out = {"driver": attempt(pynvml.nvmlSystemGetDriverVersion),
           "cuda": attempt(pynvml.nvmlSystemGetCudaDriverVersion), "gpus": [], "pairs": {}}
    count = pynvml.nvmlDeviceGetCount()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(index) for index in range(count)]
    for handle in handles:
        links = []
        for link in range(pynvml.NVML_NVLINK_MAX_LINKS + 1):
            state = attempt(pynvml.nvmlDeviceGetNvLinkState, handle, link)
            if isinstance(state, dict):
                links.append(state)
                break
            remote = attempt(pynvml.nvmlDeviceGetNvLinkRemotePciInfo, handle, link)
            links.append({
                "state": state,
                "version": attempt(pynvml.nvmlDeviceGetNvLinkVersion, handle, link),
                "remote": remote if isinstance(remote, dict) else remote.busId,
                "type": attempt(pynvml.nvmlDeviceGetNvLinkRemoteDeviceType, handle, link),
                "p2p": attempt(pynvml.nvmlDeviceGetNvLinkCapability, handle, link, 0),
                "replay": attempt(pynvml.nvmlDeviceGetNvLinkErrorCounter, handle, link, 0),
            })
        field = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_MEMORY_TEMP])[0]
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        out["gpus"].append({
            "name": attempt(pynvml.nvmlDeviceGetName, handle),
            "uuid": attempt(pynvml.nvmlDeviceGetUUID, handle),
            "bus_id": pynvml.nvmlDeviceGetPciInfo(handle).busId,
            "memory_total_mib": memory.total // 2**20,
            "core_c": attempt(pynvml.nvmlDeviceGetTemperature, handle, 0),
            "memory_c": field.value.uiVal if field.nvmlReturn == 0 else {"field_error": field.nvmlReturn},
            "thresholds": [attempt(pynvml.nvmlDeviceGetTemperatureThreshold, handle, kind) for kind in range(4)],
            "reasons": attempt(pynvml.nvmlDeviceGetCurrentClocksEventReasons, handle),
            "fan": attempt(pynvml.nvmlDeviceGetFanSpeed, handle),
            "pcie": [attempt(getattr(pynvml, name), handle) for name in (
                "nvmlDeviceGetCurrPcieLinkGeneration", "nvmlDeviceGetMaxPcieLinkGeneration",
                "nvmlDeviceGetCurrPcieLinkWidth", "nvmlDeviceGetMaxPcieLinkWidth")],
            "power_limit": attempt(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle),
            "links": links,
        })
    for first in range(count):
        for second in range(first + 1, count):
            out["pairs"]["%d-%d" % (first, second)] = {
                "nvlink": pynvml.nvmlDeviceGetP2PStatus(handles[first], handles[second], 2),
                "topology": attempt(pynvml.nvmlDeviceGetTopologyCommonAncestor, handles[first], handles[second]),
            }
    pynvml.nvmlShutdown()
    print(json.dumps(out))
""")

REASON_BITS = {"gpu_idle": 0x1, "applications_clocks_setting": 0x2, "sw_power_cap": 0x4, "hw_slowdown": 0x8,
               "sync_boost": 0x10, "sw_thermal_slowdown": 0x20, "hw_thermal_slowdown": 0x40,
               "hw_power_brake_slowdown": 0x80, "display_clock_setting": 0x100}
DEVICE_TYPES = {"gpu": 0, "ibmnpu": 1, "switch": 2}
P2P = {"ok": 0, "not_supported": 5}
TOPOLOGY = {"internal": 0, "single": 10, "multiple": 20, "hostbridge": 30, "node": 40, "system": 50}
NOT_SUPPORTED = {"error": "NVMLError_NotSupported"}
NVML_ERROR_NOT_SUPPORTED = 3


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.fail("make and a C compiler are needed to build the fake NVML library")
    out = tmp_path_factory.mktemp("fake_nvml")
    subprocess.run(["make", "-s", "-C", str(FAKE_DIR), "PYTHON=%s" % sys.executable, "OUT=%s" % out], check=True)
    return out


def read_through_pynvml(library, scenario_path, script=DUMP):
    env = dict(os.environ, LD_LIBRARY_PATH=str(library), FAKE_NVML_SCENARIO=str(scenario_path))
    completed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout), completed.stderr


def expect(value):
    return NOT_SUPPORTED if value is None else value


@pytest.mark.parametrize("scenario_path", SCENARIOS, ids=lambda path: path.stem)
def test_pynvml_reads_back_what_the_scenario_declares(library, scenario_path):
    scenario = json.loads(scenario_path.read_text())
    seen, _stderr = read_through_pynvml(library, scenario_path)
    if scenario.get("init_error"):
        assert seen == {"init_error": "NVMLError_DriverNotLoaded"}
        return
    assert seen["driver"] == scenario["driver_version"]
    assert seen["cuda"] == scenario["cuda_driver_version"]
    assert len(seen["gpus"]) == len(scenario["gpus"])
    for declared, read in zip(scenario["gpus"], seen["gpus"]):
        assert read["name"] == declared["name"]
        assert read["uuid"] == declared["uuid"]
        assert read["bus_id"] == declared["pci_bus_id"]
        assert read["memory_total_mib"] == declared["memory_total_mib"]
        temperature = declared["temperature"]
        assert read["core_c"] == temperature["gpu_c"]
        if temperature["memory_c"] is None:
            assert read["memory_c"] == {"field_error": NVML_ERROR_NOT_SUPPORTED}
        else:
            assert read["memory_c"] == temperature["memory_c"]
        assert read["thresholds"] == [expect(temperature[key]) for key in
                                      ("shutdown_c", "slowdown_c", "memory_max_c", "gpu_max_c")]
        assert read["reasons"] == sum(REASON_BITS[name] for name in declared["clocks_event_reasons"])
        assert read["fan"] == expect(declared["fan_speed_pct"])
        pcie = declared["pcie"]
        assert read["pcie"] == [pcie["current_gen"], pcie["max_gen"], pcie["current_width"], pcie["max_width"]]
        assert read["power_limit"] == declared["power"]["enforced_limit_mw"]
        if declared["nvlink"] is None:
            # No NVLink: the first link query is NotSupported, as on an RTX 4090.
            assert read["links"] == [NOT_SUPPORTED]
            continue
        links = declared["nvlink"]["links"]
        # Enumeration ends with InvalidArgument right after the last link, as real NVML does.
        assert read["links"][-1] == {"error": "NVMLError_InvalidArgument"}
        assert len(read["links"]) == len(links) + 1
        for link, got in zip(links, read["links"]):
            assert got["state"] == (1 if link["state"] == "active" else 0)
            assert got["version"] == link["version"]
            assert got["remote"] == expect(link["remote_pci_bus_id"])
            assert got["type"] == DEVICE_TYPES[link["remote_device_type"]]
            assert got["p2p"] == int(link["p2p_supported"])
            assert got["replay"] == (NOT_SUPPORTED if link["errors"] is None else link["errors"]["replay"])
    for key, pair in scenario["pairs"].items():
        assert seen["pairs"][key] == {"nvlink": P2P[pair["p2p"]["nvlink"]], "topology": TOPOLOGY[pair["topology"]]}


def test_calls_before_init_are_uninitialized(library):
    script = textwrap.dedent("""
        import ctypes, json
        lib = ctypes.CDLL("libnvidia-ml.so.1")
        count = ctypes.c_uint()
        before = lib.nvmlDeviceGetCount_v2(ctypes.byref(count))
        lib.nvmlInit_v2(); lib.nvmlInit_v2(); lib.nvmlShutdown()
        still_open = lib.nvmlDeviceGetCount_v2(ctypes.byref(count))
        lib.nvmlShutdown()
        after = lib.nvmlDeviceGetCount_v2(ctypes.byref(count))
        print(json.dumps([before, still_open, after, lib.nvmlShutdown()]))
    """)
    seen, _stderr = read_through_pynvml(library, FAKE_DIR / "scenarios" / "dual_3090_nvlink_ok.json", script)
    assert seen == [1, 0, 1, 1]  # UNINITIALIZED, SUCCESS (refcounted), UNINITIALIZED, UNINITIALIZED


def test_garbled_scenario_fails_init_with_a_clear_message(library, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"gpus": [ {"name": "x" ')
    seen, stderr = read_through_pynvml(library, broken, "import json, pynvml\n"
                                       "try:\n    pynvml.nvmlInit()\nexcept pynvml.NVMLError as e:\n"
                                       "    print(json.dumps(type(e).__name__))\n")
    assert seen == "NVMLError_Unknown"
    assert "fake-nvml: invalid scenario %s" % broken in stderr


def test_missing_scenario_file_fails_init(library, tmp_path):
    seen, stderr = read_through_pynvml(library, tmp_path / "absent.json", "import json, pynvml\n"
                                       "try:\n    pynvml.nvmlInit()\nexcept pynvml.NVMLError as e:\n"
                                       "    print(json.dumps(type(e).__name__))\n")
    assert seen == "NVMLError_Unknown"
    assert "cannot open scenario" in stderr


def test_scenario_changes_are_seen_within_one_session(library, tmp_path):
    active = tmp_path / "scenario.json"
    shutil.copy(FAKE_DIR / "scenarios" / "dual_3090_hot_junction.json", active)
    script = textwrap.dedent("""
        import json, shutil, sys, pynvml
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(1)
        read = lambda: pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_MEMORY_TEMP])[0]
        hot = read().value.uiVal
        shutil.copy(sys.argv[1], sys.argv[2])
        cooled = read().nvmlReturn
        print(json.dumps([hot, cooled]))
    """)
    env = dict(os.environ, LD_LIBRARY_PATH=str(library), FAKE_NVML_SCENARIO=str(active))
    completed = subprocess.run(
        [sys.executable, "-c", script, str(FAKE_DIR / "scenarios" / "dual_3090_nvlink_ok.json"), str(active)],
        env=env, capture_output=True, text=True, check=True,
    )
    # Hot junction at 106 C, then the healthy scenario, where GeForce memory temperature is NotSupported.
    assert json.loads(completed.stdout) == [106, NVML_ERROR_NOT_SUPPORTED]
