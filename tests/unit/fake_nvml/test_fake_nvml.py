"""The fake libnvidia-ml.so.1 read back through the REAL pynvml, against every scenario it ships.

The library is built with its Makefile (-Werror) into a temporary directory. Each check runs pynvml in a
subprocess (pynvml loads the library once per process) with that directory on LD_LIBRARY_PATH and
FAKE_NVML_SCENARIO naming the scenario, so what a scenario declares has to come back through NVML's ABI,
pynvml's structs and pynvml's error classes, as our modules see it.
"""

import ctypes
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FAKE_DIR = Path(__file__).resolve().parents[3] / "tests" / "fake_nvml"
SCENARIO_DIR = FAKE_DIR / "scenarios"
SCENARIOS = sorted(SCENARIO_DIR.glob("*.json"))
REQUIRED_SCENARIOS = {
    "dual_3090_nvlink_ok", "dual_3090_bridge_misseated", "dual_3090_hot_junction", "dual_4090_pcie",
    "single_5090", "no_gpu", "dual_3090_pcie_x8", "dual_h200_nvswitch",
}

NOT_SUPPORTED = {"error": "NVMLError_NotSupported"}
INVALID_ARGUMENT = {"error": "NVMLError_InvalidArgument"}
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_INSUFFICIENT_SIZE = 7
MIB = 1024 * 1024

# nvml.h values, written out here so that the expectations do not come from the code under test.
REASON_BITS = {"gpu_idle": 0x1, "applications_clocks_setting": 0x2, "sw_power_cap": 0x4, "hw_slowdown": 0x8,
               "sync_boost": 0x10, "sw_thermal_slowdown": 0x20, "hw_thermal_slowdown": 0x40,
               "hw_power_brake_slowdown": 0x80, "display_clock_setting": 0x100, "board_limit": 0x200,
               "reliability": 0x400}
BRANDS = {"geforce": 5, "nvidia": 14, "tesla": 2, "quadro": 1, "nvidia_rtx": 13}
REMOTE_TYPES = {"gpu": 0, "ibmnpu": 1, "switch": 2, "unknown": 0xFF}
P2P_STATUSES = {"ok": 0, "chipset_not_supported": 1, "gpu_not_supported": 2, "ioh_topology_not_supported": 3,
                "disabled_by_regkey": 4, "not_supported": 5, "unknown": 6}
P2P_CAPS = {"read": 0, "write": 1, "nvlink": 2, "atomics": 3, "prop": 4}
TOPOLOGY = {"internal": 0, "single": 10, "multiple": 20, "hostbridge": 30, "node": 40, "system": 50}
THRESHOLD_KEYS = ("shutdown_c", "slowdown_c", "memory_max_c", "gpu_max_c", "acoustic_min_c", "acoustic_curr_c",
                  "acoustic_max_c", "gps_curr_c")
CAPABILITY_KEYS = (("p2p_supported", 0), ("sysmem_access", 0), ("p2p_atomics", 0), ("sysmem_atomics", 0),
                   ("sli_bridge", 0), ("valid", 1))
ERROR_COUNTER_KEYS = ("replay", "recovery", "crc_flit", "crc_data", "ecc_data")
FI_DEV_MEMORY_TEMP, FI_DEV_NVLINK_LINK_COUNT, FI_DEV_GPU_TEMP, FI_UNKNOWN = 82, 91, 308, 12345
# Other field ids the dump asks for: 0 is not a field; 150, 200, 251 are nvml.h fields scenarios may give.
FI_OTHERS = (0, 150, 200, 251)
NVLINK_MAX_LINKS = 36

# Reads, for every GPU and pair, everything our modules read (and the neighbouring calls); NVML errors are
# recorded by pynvml's class name. Also reports which libnvidia-ml.so.1 the process really mapped.
DUMP = textwrap.dedent("""
    import json, sys, pynvml as N

    def attempt(function, *args):
        try:
            value = function(*args)
        except N.NVMLError as error:
            return {"error": type(error).__name__}
        return value.decode() if isinstance(value, bytes) else value

    def text(value):
        return value.decode() if isinstance(value, bytes) else value

    def loaded_library():
        with open("/proc/self/maps") as maps:
            return sorted({line.split()[-1] for line in maps if "libnvidia-ml.so" in line})

    try:
        N.nvmlInit()
    except N.NVMLError as error:
        print(json.dumps({"init_error": type(error).__name__, "library": loaded_library()}))
        sys.exit(0)

    def pci(info):
        if isinstance(info, dict):
            return info
        return {"busId": text(info.busId), "busIdLegacy": text(info.busIdLegacy), "domain": info.domain,
                "bus": info.bus, "device": info.device, "pciDeviceId": info.pciDeviceId,
                "pciSubSystemId": info.pciSubSystemId}

    def memory(info):
        if isinstance(info, dict):
            return info
        out = {"total": info.total, "free": info.free, "used": info.used}
        if hasattr(info, "reserved"):
            out["reserved"] = info.reserved
        return out

    def link(handle, number):
        return {
            "state": attempt(N.nvmlDeviceGetNvLinkState, handle, number),
            "version": attempt(N.nvmlDeviceGetNvLinkVersion, handle, number),
            "remote": pci(attempt(N.nvmlDeviceGetNvLinkRemotePciInfo, handle, number)),
            "remote_type": attempt(N.nvmlDeviceGetNvLinkRemoteDeviceType, handle, number),
            "capabilities": [attempt(N.nvmlDeviceGetNvLinkCapability, handle, number, cap) for cap in range(6)],
            "errors": [attempt(N.nvmlDeviceGetNvLinkErrorCounter, handle, number, counter) for counter in range(5)],
        }

    def fields(handle, ids):
        values = N.nvmlDeviceGetFieldValues(handle, ids)
        out = {}
        for field in values:
            member = {0: "dVal", 1: "uiVal", 3: "ullVal", 4: "sllVal"}[field.valueType]
            out[str(field.fieldId)] = (getattr(field.value, member) if field.nvmlReturn == 0
                                       else {"field_error": field.nvmlReturn})
        return out

    out = {"library": loaded_library(),
           "driver": attempt(N.nvmlSystemGetDriverVersion), "nvml": attempt(N.nvmlSystemGetNVMLVersion),
           "cuda": attempt(N.nvmlSystemGetCudaDriverVersion), "cuda_v2": attempt(N.nvmlSystemGetCudaDriverVersion_v2),
           "count": N.nvmlDeviceGetCount(), "gpus": [], "pairs": {}}
    handles = [N.nvmlDeviceGetHandleByIndex(index) for index in range(out["count"])]
    out["handle_past_count"] = attempt(N.nvmlDeviceGetHandleByIndex, out["count"])
    for handle in handles:
        links = []
        for number in range(N.NVML_NVLINK_MAX_LINKS + 1):
            probe = link(handle, number)
            links.append(probe)
            if isinstance(probe["state"], dict):
                break
        out["gpus"].append({
            "name": attempt(N.nvmlDeviceGetName, handle),
            "uuid": attempt(N.nvmlDeviceGetUUID, handle),
            "index": attempt(N.nvmlDeviceGetIndex, handle),
            "minor_number": attempt(N.nvmlDeviceGetMinorNumber, handle),
            "brand": attempt(N.nvmlDeviceGetBrand, handle),
            "pci": pci(attempt(N.nvmlDeviceGetPciInfo, handle)),
            "memory": memory(attempt(N.nvmlDeviceGetMemoryInfo, handle)),
            "memory_v2": memory(attempt(N.nvmlDeviceGetMemoryInfo, handle, N.nvmlMemory_v2)),
            "persistence_mode": attempt(N.nvmlDeviceGetPersistenceMode, handle),
            "pcie": [attempt(getattr(N, name), handle) for name in (
                "nvmlDeviceGetCurrPcieLinkGeneration", "nvmlDeviceGetMaxPcieLinkGeneration",
                "nvmlDeviceGetGpuMaxPcieLinkGeneration", "nvmlDeviceGetCurrPcieLinkWidth",
                "nvmlDeviceGetMaxPcieLinkWidth")],
            "power": [attempt(getattr(N, name), handle) for name in (
                "nvmlDeviceGetPowerUsage", "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetPowerManagementLimit",
                "nvmlDeviceGetPowerManagementDefaultLimit", "nvmlDeviceGetPowerManagementLimitConstraints")],
            "fan": attempt(N.nvmlDeviceGetFanSpeed, handle),
            "fan_v2_0": attempt(N.nvmlDeviceGetFanSpeed_v2, handle, 0),
            "num_fans": attempt(N.nvmlDeviceGetNumFans, handle),
            "gpu_c": attempt(N.nvmlDeviceGetTemperature, handle, N.NVML_TEMPERATURE_GPU),
            "gpu_c_v": attempt(N.nvmlDeviceGetTemperatureV, handle, N.NVML_TEMPERATURE_GPU),
            "hotspot_c": attempt(N.nvmlDeviceGetTemperature, handle, 1),  # NVML_TEMPERATURE_GPU_MAX
            "thresholds": [attempt(N.nvmlDeviceGetTemperatureThreshold, handle, kind) for kind in range(9)],
            "fields": fields(handle, [82, 308, 91, 12345, 0, 150, 200, 251]),
            "reasons": attempt(N.nvmlDeviceGetCurrentClocksEventReasons, handle),
            "throttle_reasons": attempt(N.nvmlDeviceGetCurrentClocksThrottleReasons, handle),
            "links": links,
            "link_5": link(handle, 5),
        })
    for first in range(out["count"]):
        for second in range(out["count"]):
            out["pairs"]["%d-%d" % (first, second)] = {
                "p2p": [attempt(N.nvmlDeviceGetP2PStatus, handles[first], handles[second], cap) for cap in range(5)],
                "topology": attempt(N.nvmlDeviceGetTopologyCommonAncestor, handles[first], handles[second]),
            }
    N.nvmlShutdown()
    print(json.dumps(out))
""")


@pytest.fixture(scope="session")
def library(tmp_path_factory):
    """The fake library, built by its Makefile (with -Werror) from the working tree."""
    for tool in ("make", "cc"):
        if shutil.which(tool) is None:
            pytest.fail("%s is needed to build the fake NVML library" % tool)
    out = tmp_path_factory.mktemp("fake_nvml_build")
    built = subprocess.run(["make", "-s", "-C", str(FAKE_DIR), "PYTHON=%s" % sys.executable, "OUT=%s" % out],
                           capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "warning" not in built.stderr.lower(), built.stderr
    assert (out / "libnvidia-ml.so.1").is_file()
    return out


def run_python(library, scenario_path, script, *args):
    env = dict(os.environ, LD_LIBRARY_PATH=str(library))
    env.pop("FAKE_NVML_SCENARIO", None)
    if scenario_path is not None:
        env["FAKE_NVML_SCENARIO"] = str(scenario_path)
    completed = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, capture_output=True,
                               text=True, check=False, timeout=60)
    assert completed.returncode == 0, completed.stderr  # never a crash, whatever the scenario
    return completed


def read_json(library, scenario_path, script, *args):
    completed = run_python(library, scenario_path, script, *args)
    return json.loads(completed.stdout), completed.stderr


def dump(library, scenario_path):
    seen, stderr = read_json(library, scenario_path, DUMP)
    # The process really used the library built here, not one installed on the machine.
    assert seen["library"] == [str(library / "libnvidia-ml.so.1")]
    return seen, stderr


# ---- the expectation model: the README's schema, written independently of the C code -------------------


def declared(section, key):
    """A declared number, or NotSupported where the scenario has null or leaves the key out."""
    value = (section or {}).get(key)
    return NOT_SUPPORTED if value is None else value


def declared_flag(section, key, default):
    if key not in section:
        return default
    value = section[key]
    return NOT_SUPPORTED if value is None else int(value)


def pci_of(bus_id, device_id=0, subsystem_id=0):
    domain, bus, rest = bus_id.split(":")
    device = rest.split(".")[0]
    domain, bus, device = int(domain, 16), int(bus, 16), int(device, 16)
    legacy = "%04X:%02X:%02X.0" % (domain, bus, device)
    return {"busId": "%08X:%02X:%02X.0" % (domain, bus, device),
            "busIdLegacy": legacy[-15:],  # 16-byte field: a longer id keeps its tail (FFFFFFF:FF:FF.0)
            "domain": domain, "bus": bus, "device": device, "pciDeviceId": device_id, "pciSubSystemId": subsystem_id}


def expected_link(gpus, link):
    remote = link.get("remote_pci_bus_id")
    if remote is None:
        remote_pci = NOT_SUPPORTED
    else:
        peer = next((gpu for gpu in gpus if pci_of(gpu["pci_bus_id"])["busId"] == pci_of(remote)["busId"]), {})
        remote_pci = pci_of(remote, link.get("remote_pci_device_id", peer.get("pci_device_id", 0)),
                            peer.get("pci_subsystem_id", 0) if "remote_pci_device_id" not in link else 0)
    remote_type = link.get("remote_device_type")
    errors = link.get("errors")
    return {
        "state": 1 if link["state"] == "active" else 0,
        "version": declared(link, "version"),
        "remote": remote_pci,
        "remote_type": NOT_SUPPORTED if remote_type is None else REMOTE_TYPES[remote_type],
        "capabilities": [declared_flag(link, key, default) for key, default in CAPABILITY_KEYS],
        "errors": [declared(errors, key) for key in ERROR_COUNTER_KEYS],
    }


def expected_reasons(reasons):
    if reasons is None:
        return NOT_SUPPORTED
    if isinstance(reasons, int):
        return reasons
    return sum(REASON_BITS[name] for name in set(reasons))


def expected_gpu(gpus, index):
    gpu = gpus[index]
    temperature = gpu.get("temperature") or {}
    pcie = gpu.get("pcie") or {}
    power = gpu.get("power") or {}
    total = gpu["memory_total_mib"] * MIB
    used = gpu.get("memory_used_mib", 0) * MIB
    reserved = gpu.get("memory_reserved_mib", 0) * MIB
    brand = gpu.get("brand")
    fan = declared(gpu, "fan_speed_pct")
    if "num_fans" in gpu:
        fans = declared(gpu, "num_fans")
    else:
        fans = NOT_SUPPORTED if gpu.get("fan_speed_pct") is None else 1
    constraints = [power.get("min_limit_mw"), power.get("max_limit_mw")]
    nvlink = gpu.get("nvlink")
    fields = {
        str(FI_DEV_MEMORY_TEMP): (temperature["memory_c"] if temperature.get("memory_c") is not None
                                  else {"field_error": NVML_ERROR_NOT_SUPPORTED}),
        str(FI_DEV_GPU_TEMP): (float(temperature["gpu_c"]) if temperature.get("gpu_c") is not None
                               else {"field_error": NVML_ERROR_NOT_SUPPORTED}),
        str(FI_DEV_NVLINK_LINK_COUNT): (len(nvlink["links"]) if nvlink
                                        else {"field_error": NVML_ERROR_NOT_SUPPORTED}),
        str(FI_UNKNOWN): {"field_error": NVML_ERROR_INVALID_ARGUMENT},  # not an nvml.h field id
        "0": {"field_error": NVML_ERROR_INVALID_ARGUMENT},
    }
    for field_id in FI_OTHERS[1:]:
        fields[str(field_id)] = {"field_error": NVML_ERROR_NOT_SUPPORTED}
    for field_id, value in (gpu.get("field_values") or {}).items():
        fields[field_id] = {"field_error": NVML_ERROR_NOT_SUPPORTED} if value is None else value
    return {
        "name": gpu["name"],
        "uuid": gpu["uuid"],
        "index": index,
        "minor_number": gpu.get("minor_number", index),
        "brand": NOT_SUPPORTED if brand is None else BRANDS.get(brand, brand),
        "pci": pci_of(gpu["pci_bus_id"], gpu.get("pci_device_id", 0), gpu.get("pci_subsystem_id", 0)),
        "memory": {"total": total, "used": used + reserved, "free": total - used - reserved},
        "memory_v2": {"total": total, "used": used, "reserved": reserved, "free": total - used - reserved},
        "persistence_mode": NOT_SUPPORTED if gpu.get("persistence_mode") is None else int(gpu["persistence_mode"]),
        "pcie": [declared(pcie, "current_gen"), declared(pcie, "max_gen"),
                 declared(pcie, "gpu_max_gen" if "gpu_max_gen" in pcie else "max_gen"),
                 declared(pcie, "current_width"), declared(pcie, "max_width")],
        "power": [declared(power, "usage_mw"), declared(power, "enforced_limit_mw"),
                  declared(power, "limit_mw" if "limit_mw" in power else "enforced_limit_mw"),
                  declared(power, "default_limit_mw"),
                  NOT_SUPPORTED if None in constraints else constraints],
        "fan": fan,
        "fan_v2_0": INVALID_ARGUMENT if fans == 0 else fan,  # no fan 0 on a GPU without fans
        "num_fans": fans,
        "gpu_c": declared(temperature, "gpu_c"),
        "gpu_c_v": declared(temperature, "gpu_c"),
        "hotspot_c": declared(temperature, "hotspot_c"),
        "thresholds": [declared(temperature, key) for key in THRESHOLD_KEYS] + [INVALID_ARGUMENT],
        "fields": fields,
        "reasons": expected_reasons(gpu.get("clocks_event_reasons")),
        "throttle_reasons": expected_reasons(gpu.get("clocks_event_reasons")),
    }


def expected_pair(pairs, first, second):
    pair = pairs.get("%d-%d" % (first, second)) or pairs.get("%d-%d" % (second, first)) or {}
    p2p = dict(pair.get("p2p") or {})
    if "pci" in p2p:
        p2p.setdefault("prop", p2p["pci"])
    by_index = {index: P2P_STATUSES[p2p[name]] if p2p.get(name) else P2P_STATUSES["not_supported"]
                for name, index in P2P_CAPS.items()}
    topology = pair.get("topology")
    return {"p2p": [by_index[index] for index in range(5)],
            # A GPU with itself has no common ancestor: NotSupported, as libnvidia-ml answers.
            "topology": NOT_SUPPORTED if topology is None or first == second else TOPOLOGY[topology]}


# ---- every shipped scenario, read back through pynvml ----------------------------------------------------


def test_every_required_scenario_is_shipped():
    assert REQUIRED_SCENARIOS - {path.stem for path in SCENARIOS} == set()


def check_reads_back(library, scenario_path):
    """Everything pynvml reads equals what the scenario declares, by the README's rules."""
    scenario = json.loads(scenario_path.read_text())
    seen, stderr = dump(library, scenario_path)
    assert stderr == ""
    if scenario.get("init_error"):
        assert set(seen) == {"init_error", "library"}
        return
    assert seen["driver"] == declared(scenario, "driver_version")
    assert seen["nvml"] == declared(scenario, "nvml_version")
    assert seen["cuda"] == seen["cuda_v2"] == declared(scenario, "cuda_driver_version")
    gpus = scenario.get("gpus", [])
    assert seen["count"] == len(gpus)
    assert seen["handle_past_count"] == INVALID_ARGUMENT
    for index, (gpu, read) in enumerate(zip(gpus, seen["gpus"])):
        links = read.pop("links")
        link_5 = read.pop("link_5")
        assert read == expected_gpu(gpus, index), "GPU %d" % index
        nvlink = gpu.get("nvlink")
        if nvlink is None:
            # No NVLink (Ada, Blackwell GeForce): every NVLink call is NotSupported, whatever the link.
            assert len(links) == 1
            for probe in (links[0], link_5):
                assert probe == {"state": NOT_SUPPORTED, "version": NOT_SUPPORTED, "remote": NOT_SUPPORTED,
                                 "remote_type": NOT_SUPPORTED, "capabilities": [NOT_SUPPORTED] * 6,
                                 "errors": [NOT_SUPPORTED] * 5}
            continue
        declared_links = nvlink["links"]
        # Enumeration ends right after the last link, where every link call is InvalidArgument.
        assert len(links) == len(declared_links) + 1
        assert links[-1] == {"state": INVALID_ARGUMENT, "version": INVALID_ARGUMENT, "remote": INVALID_ARGUMENT,
                             "remote_type": INVALID_ARGUMENT, "capabilities": [INVALID_ARGUMENT] * 6,
                             "errors": [INVALID_ARGUMENT] * 5}
        for number, (link, got) in enumerate(zip(declared_links, links)):
            assert got == expected_link(gpus, link), "GPU %d link %d" % (index, number)
    pairs = scenario.get("pairs", {})
    assert len(seen["pairs"]) == len(gpus) ** 2
    for first in range(len(gpus)):
        for second in range(len(gpus)):
            key = "%d-%d" % (first, second)
            assert seen["pairs"][key] == expected_pair(pairs, first, second), key


@pytest.mark.parametrize("scenario_path", SCENARIOS, ids=lambda path: path.stem)
def test_pynvml_reads_back_what_the_scenario_declares(library, scenario_path):
    check_reads_back(library, scenario_path)


SPARSE = {
    "description": "Only what a GPU must have: everything else absent, so NotSupported (or its documented default).",
    "gpus": [{"name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-00000000-1111-2222-3333-444444444444",
              "pci_bus_id": "0000:07:00.0", "memory_total_mib": 81920,
              "nvlink": {"links": [{"state": "inactive"}, {"state": "active", "version": None}]}}],
}

RICH = {
    "driver_version": "570.86.15", "cuda_driver_version": 12080, "nvml_version": "12.570.86.15",
    "gpus": [
        {"name": "NVIDIA RTX A6000", "uuid": "GPU-a6000000-0000-0000-0000-000000000001",
         "pci_bus_id": "00000000:41:00.0", "pci_device_id": 0x223010DE, "minor_number": 7, "brand": 13,
         "memory_total_mib": 49140, "memory_used_mib": 1024.5, "memory_reserved_mib": 400,
         "persistence_mode": False,
         "pcie": {"current_gen": 3, "max_gen": 4, "gpu_max_gen": 5, "current_width": 16, "max_width": 16},
         "power": {"usage_mw": 70000, "enforced_limit_mw": 280000, "limit_mw": 300000, "default_limit_mw": 300000,
                   "min_limit_mw": 100000, "max_limit_mw": None},
         "fan_speed_pct": 41, "temperature": {"gpu_c": 50, "hotspot_c": 61, "memory_c": 58, "acoustic_curr_c": 83},
         "clocks_event_reasons": 0x61,
         "field_values": {"82": None, "91": 7, "150": 1.5, "200": -3, "251": 5000000000},
         "nvlink": {"links": [{"state": "active", "version": 4, "remote_pci_bus_id": "00000000:42:00.0",
                               "remote_device_type": "gpu", "p2p_supported": 1, "sli_bridge": True, "valid": None,
                               "errors": None}] * 4}},
        {"name": "NVIDIA RTX A6000", "uuid": "GPU-a6000000-0000-0000-0000-000000000002",
         "pci_bus_id": "00000000:42:00.0", "pci_device_id": 0x223010DE, "brand": "nvidia_rtx",
         "memory_total_mib": 49140, "clocks_event_reasons": None, "temperature": None, "power": None,
         "nvlink": {"links": [{"state": "active", "version": 4, "remote_pci_bus_id": "00000000:41:00.0",
                               "remote_device_type": "unknown",
                               "errors": {"replay": 3, "crc_flit": 9007199254740992}}] * 4}},
    ],
    "pairs": {"1-0": {"p2p": {"nvlink": "ok", "read": "disabled_by_regkey", "pci": "ioh_topology_not_supported"},
                      "topology": "node"},
              "1-1": {"p2p": {"nvlink": "gpu_not_supported"}}},
}


@pytest.mark.parametrize("scenario", [SPARSE, RICH], ids=["sparse", "rich"])
def test_every_schema_key_reaches_pynvml(library, tmp_path, scenario):
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    check_reads_back(library, path)


def test_rich_scenario_values_in_nvml_terms(library, tmp_path):
    # The same rules as check_reads_back, spelled out where the mapping is not one-to-one.
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(RICH))
    seen, _stderr = dump(library, path)
    first, second = seen["gpus"]
    assert first["memory"] == {"total": 49140 * MIB, "used": 1424.5 * MIB, "free": (49140 - 1424.5) * MIB}
    assert first["memory_v2"]["reserved"] == 400 * MIB and first["memory_v2"]["used"] == 1024.5 * MIB
    assert first["pcie"][:3] == [3, 4, 5]
    assert first["power"][1:3] == [280000, 300000]  # enforced and management limits differ
    assert first["power"][4] == NOT_SUPPORTED  # constraints need both ends
    assert first["num_fans"] == 1 and first["fan_v2_0"] == 41  # one fan, by default, where a speed is given
    assert first["thresholds"][5] == 83 and first["thresholds"][4] == NOT_SUPPORTED
    assert first["fields"] == {"82": {"field_error": NVML_ERROR_NOT_SUPPORTED}, "308": 50.0, "91": 7,
                               "12345": {"field_error": NVML_ERROR_INVALID_ARGUMENT},
                               "0": {"field_error": NVML_ERROR_INVALID_ARGUMENT}, "150": 1.5, "200": -3,
                               "251": 5000000000}
    assert second["fields"]["82"] == {"field_error": NVML_ERROR_NOT_SUPPORTED}  # temperature: null
    assert first["reasons"] == 0x61
    assert first["brand"] == second["brand"] == 13
    assert first["links"][0]["capabilities"] == [1, 0, 0, 0, 1, NOT_SUPPORTED]
    assert first["links"][0]["errors"] == [NOT_SUPPORTED] * 5
    assert second["links"][0]["errors"] == [3, NOT_SUPPORTED, 9007199254740992, NOT_SUPPORTED, NOT_SUPPORTED]
    assert second["links"][0]["remote_type"] == 0xFF
    assert second["reasons"] == second["gpu_c"] == second["power"][0] == NOT_SUPPORTED
    assert seen["pairs"]["0-1"] == seen["pairs"]["1-0"] == {"p2p": [4, 5, 0, 5, 3], "topology": 40}
    assert seen["pairs"]["1-1"] == {"p2p": [5, 5, 2, 5, 5], "topology": NOT_SUPPORTED}


def test_sparse_scenario_defaults(library, tmp_path):
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(SPARSE))
    seen, _stderr = dump(library, path)
    gpu = seen["gpus"][0]
    assert seen["driver"] == seen["cuda"] == seen["nvml"] == NOT_SUPPORTED
    assert gpu["pci"]["busId"] == "00000000:07:00.0" and gpu["pci"]["busIdLegacy"] == "0000:07:00.0"
    assert gpu["minor_number"] == 0 and gpu["brand"] == NOT_SUPPORTED
    assert gpu["memory"] == {"total": 81920 * MIB, "used": 0, "free": 81920 * MIB}
    assert gpu["fan"] == gpu["num_fans"] == gpu["reasons"] == gpu["persistence_mode"] == NOT_SUPPORTED
    inactive, active, past = gpu["links"]
    assert inactive["state"] == 0 and active["state"] == 1 and past["state"] == INVALID_ARGUMENT
    assert inactive["version"] == inactive["remote"] == inactive["remote_type"] == NOT_SUPPORTED
    assert inactive["capabilities"] == [0, 0, 0, 0, 0, 1]
    assert active["version"] == NOT_SUPPORTED


def scenario_named(name):
    return json.loads((SCENARIO_DIR / (name + ".json")).read_text())


# What each scenario is for, asserted on the values pynvml returns (so a scenario cannot drift from its purpose).


def test_nvlink_ok_pair_is_two_bridged_3090s(library):
    seen, _stderr = dump(library, SCENARIO_DIR / "dual_3090_nvlink_ok.json")
    assert [gpu["name"] for gpu in seen["gpus"]] == ["NVIDIA GeForce RTX 3090"] * 2
    assert [gpu["memory"]["total"] for gpu in seen["gpus"]] == [24576 * MIB] * 2
    assert [gpu["pci"]["busId"] for gpu in seen["gpus"]] == ["00000000:01:00.0", "00000000:21:00.0"]
    assert seen["gpus"][0]["pci"]["busIdLegacy"] == "0000:01:00.0"
    assert seen["gpus"][0]["pci"]["pciDeviceId"] == 0x220410DE
    for index, gpu in enumerate(seen["gpus"]):
        assert gpu["uuid"].startswith("GPU-")
        assert gpu["brand"] == 5  # NVML_BRAND_GEFORCE
        assert gpu["fields"][str(FI_DEV_MEMORY_TEMP)] == {"field_error": NVML_ERROR_NOT_SUPPORTED}
        assert gpu["thresholds"][:4] == [98, 95, NOT_SUPPORTED, 93]
        links = gpu["links"][:-1]
        assert len(links) == 4
        other = seen["gpus"][1 - index]["pci"]["busId"]
        for link in links:
            assert link["state"] == 1
            assert link["version"] == 4  # NVML_NVLINK_VERSION_3_0
            assert link["remote"]["busId"] == other
            assert link["remote_type"] == 0  # NVML_NVLINK_DEVICE_TYPE_GPU
            assert link["capabilities"][0] == 1  # P2P supported
    assert seen["pairs"]["0-1"]["p2p"][2] == 0  # NVML_P2P_STATUS_OK on NVML_P2P_CAPS_INDEX_NVLINK


def test_misseated_bridge_has_every_link_down_and_no_nvlink_p2p(library):
    seen, _stderr = dump(library, SCENARIO_DIR / "dual_3090_bridge_misseated.json")
    for gpu in seen["gpus"]:
        links = gpu["links"][:-1]
        assert [link["state"] for link in links] == [0, 0, 0, 0]  # NVML_FEATURE_DISABLED, call succeeds
        assert [link["capabilities"][0] for link in links] == [0, 0, 0, 0]
    assert seen["pairs"]["0-1"]["p2p"][2] == seen["pairs"]["1-0"]["p2p"][2] == 5  # NVML_P2P_STATUS_NOT_SUPPORTED


def test_hot_junction_exposes_106_c_and_thermal_slowdown_on_gpu_1(library):
    seen, _stderr = dump(library, SCENARIO_DIR / "dual_3090_hot_junction.json")
    hot = seen["gpus"][1]
    assert hot["fields"][str(FI_DEV_MEMORY_TEMP)] == 106
    assert hot["reasons"] & 0x20 and hot["reasons"] & 0x40  # sw_thermal_slowdown, hw_thermal_slowdown
    assert hot["reasons"] == hot["throttle_reasons"]
    assert hot["thresholds"][:4] == [98, 95, NOT_SUPPORTED, 93]  # memory max: NotSupported on GeForce
    assert not seen["gpus"][0]["reasons"] & 0x60


def test_pcie_x8_scenario_starves_gpu_1_of_lanes(library):
    seen, _stderr = dump(library, SCENARIO_DIR / "dual_3090_pcie_x8.json")
    assert seen["gpus"][0]["pcie"][3:] == [16, 16]
    assert seen["gpus"][1]["pcie"][3:] == [8, 16]
    assert all(link["state"] == 1 for gpu in seen["gpus"] for link in gpu["links"][:-1])


def test_4090_pair_has_no_nvlink_and_talks_over_the_host_bridge(library):
    seen, _stderr = dump(library, SCENARIO_DIR / "dual_4090_pcie.json")
    assert [gpu["name"] for gpu in seen["gpus"]] == ["NVIDIA GeForce RTX 4090"] * 2
    assert [gpu["memory"]["total"] for gpu in seen["gpus"]] == [24564 * MIB] * 2
    assert all(gpu["links"] == [gpu["links"][0]] and gpu["links"][0]["state"] == NOT_SUPPORTED
               for gpu in seen["gpus"])
    assert seen["pairs"]["0-1"] == {"p2p": [5, 5, 5, 5, 5], "topology": 30}  # NVML_TOPOLOGY_HOSTBRIDGE


def test_single_5090(library):
    seen, _stderr = dump(library, SCENARIO_DIR / "single_5090.json")
    assert seen["count"] == 1
    assert seen["gpus"][0]["name"] == "NVIDIA GeForce RTX 5090"
    assert seen["gpus"][0]["memory"]["total"] == 32607 * MIB
    assert seen["gpus"][0]["links"][0]["state"] == NOT_SUPPORTED
    assert list(seen["pairs"]) == ["0-0"]


def test_h200_nvswitch_has_eighteen_nvlink4_switch_links(library):
    seen, _stderr = dump(library, SCENARIO_DIR / "dual_h200_nvswitch.json")
    for gpu in seen["gpus"]:
        assert gpu["name"] == "NVIDIA H200"
        assert gpu["memory"]["total"] == 143771 * MIB
        assert isinstance(gpu["fields"][str(FI_DEV_MEMORY_TEMP)], int)
        assert gpu["thresholds"][:4] == [95, 89, 95, 87]  # as a real H200 reports them
        assert (gpu["fan"], gpu["num_fans"], gpu["fan_v2_0"]) == (NOT_SUPPORTED, 0, INVALID_ARGUMENT)
        assert gpu["memory"]["used"] == gpu["memory_v2"]["reserved"] == 644939776  # 615 MiB held by the driver
        assert gpu["memory_v2"]["used"] == 0
        links = gpu["links"][:-1]
        assert len(links) == 18
        assert {(link["state"], link["version"], link["remote_type"]) for link in links} == {(1, 6, 2)}
        # NVSwitch ports have no PCI location of their own; NVML says so with all-ones.
        assert {(link["remote"]["busId"], link["remote"]["busIdLegacy"], link["remote"]["pciDeviceId"])
                for link in links} == {("FFFFFFFF:FF:FF.0", "FFFFFFF:FF:FF.0", 0xFFFFFFFF)}
    assert seen["pairs"]["0-1"]["p2p"][2] == 0


def test_no_gpu_fails_init_with_driver_not_loaded(library):
    seen, stderr = dump(library, SCENARIO_DIR / "no_gpu.json")
    assert seen["init_error"] == "NVMLError_DriverNotLoaded"
    assert stderr == ""


# ---- NVML's edge behaviour -------------------------------------------------------------------------------

RAW_PRELUDE = textwrap.dedent("""
    import ctypes, json, sys
    lib = ctypes.CDLL("libnvidia-ml.so.1")
    c_uint = ctypes.c_uint
    count = c_uint()
    def get_count():
        return lib.nvmlDeviceGetCount_v2(ctypes.byref(count))
""")


def test_init_is_reference_counted_and_calls_outside_it_are_uninitialized(library):
    script = RAW_PRELUDE + textwrap.dedent("""
        steps = [get_count(), lib.nvmlShutdown(), lib.nvmlInitWithFlags(0), lib.nvmlInit_v2(), lib.nvmlInit(),
                 get_count(), lib.nvmlShutdown(), get_count(), lib.nvmlShutdown(), get_count(), lib.nvmlShutdown(),
                 get_count(), lib.nvmlShutdown(), lib.nvmlInit_v2(), get_count(), lib.nvmlShutdown()]
        print(json.dumps(steps))
    """)
    seen, _stderr = read_json(library, SCENARIO_DIR / "dual_3090_nvlink_ok.json", script)
    uninit, ok = NVML_ERROR_UNINITIALIZED, NVML_SUCCESS
    assert seen == [uninit, uninit, ok, ok, ok,  # before init; then three inits
                    ok, ok, ok, ok, ok, ok,  # usable until the third shutdown
                    uninit, uninit,  # closed: calls and a fourth shutdown are refused
                    ok, ok, ok]  # and it opens again


def test_bad_arguments_are_invalid_argument_and_short_buffers_insufficient_size(library):
    script = RAW_PRELUDE + textwrap.dedent("""
        lib.nvmlInit_v2()
        handle = ctypes.c_void_p()
        assert lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle)) == 0
        bogus = ctypes.c_void_p(handle.value + 1)  # inside our table but not a handle
        stranger = ctypes.c_void_p(0x1000)
        buffer = ctypes.create_string_buffer(96)
        state = c_uint()
        value = c_uint()
        results = {
            "count_null": lib.nvmlDeviceGetCount_v2(None),
            "handle_null": lib.nvmlDeviceGetHandleByIndex_v2(0, None),
            "handle_past_count": lib.nvmlDeviceGetHandleByIndex_v2(2, ctypes.byref(handle)),
            "name_null": lib.nvmlDeviceGetName(handle, None, 96),
            "name_bogus_handle": lib.nvmlDeviceGetName(bogus, buffer, 96),
            "name_stranger_handle": lib.nvmlDeviceGetName(stranger, buffer, 96),
            "name_null_handle": lib.nvmlDeviceGetName(None, buffer, 96),
            "name_exact_length": lib.nvmlDeviceGetName(handle, buffer, len(b"NVIDIA GeForce RTX 3090")),
            "name_length_plus_nul": lib.nvmlDeviceGetName(handle, buffer, len(b"NVIDIA GeForce RTX 3090") + 1),
            "uuid_short": lib.nvmlDeviceGetUUID(handle, buffer, 8),
            "driver_short": lib.nvmlSystemGetDriverVersion(buffer, 4),
            "temperature_null": lib.nvmlDeviceGetTemperature(handle, 0, None),
            "temperature_bad_sensor": lib.nvmlDeviceGetTemperature(handle, 7, ctypes.byref(value)),
            "nvlink_state_null": lib.nvmlDeviceGetNvLinkState(handle, 0, None),
            "nvlink_state_last_link": lib.nvmlDeviceGetNvLinkState(handle, 3, ctypes.byref(state)),
            "nvlink_state_past_last_link": lib.nvmlDeviceGetNvLinkState(handle, 4, ctypes.byref(state)),
            "nvlink_state_past_max_links": lib.nvmlDeviceGetNvLinkState(handle, 36, ctypes.byref(state)),
            "nvlink_capability_unknown": lib.nvmlDeviceGetNvLinkCapability(handle, 0, 6, ctypes.byref(value)),
            "fields_null": lib.nvmlDeviceGetFieldValues(handle, 1, None),
            "p2p_null": lib.nvmlDeviceGetP2PStatus(handle, handle, 2, None),
            "topology_null": lib.nvmlDeviceGetTopologyCommonAncestor(handle, handle, None),
            "fields_count_0": lib.nvmlDeviceGetFieldValues(handle, 0, ctypes.byref(buffer)),
            "power_constraints_null": lib.nvmlDeviceGetPowerManagementLimitConstraints(handle, ctypes.byref(value),
                                                                                       None),
        }
        lib.nvmlShutdown()
        print(json.dumps(results))
    """)
    seen, _stderr = read_json(library, SCENARIO_DIR / "dual_3090_nvlink_ok.json", script)
    invalid, short = NVML_ERROR_INVALID_ARGUMENT, NVML_ERROR_INSUFFICIENT_SIZE
    assert seen == {
        "count_null": invalid, "handle_null": invalid, "handle_past_count": invalid, "name_null": invalid,
        "name_bogus_handle": invalid, "name_stranger_handle": invalid, "name_null_handle": invalid,
        "name_exact_length": short, "name_length_plus_nul": NVML_SUCCESS, "uuid_short": short,
        "driver_short": short, "temperature_null": invalid, "temperature_bad_sensor": invalid,
        "nvlink_state_null": invalid, "nvlink_state_last_link": NVML_SUCCESS,
        "nvlink_state_past_last_link": invalid, "nvlink_state_past_max_links": invalid,
        "nvlink_capability_unknown": invalid, "fields_null": invalid, "p2p_null": invalid, "topology_null": invalid,
        "fields_count_0": invalid, "power_constraints_null": invalid,
    }


def test_versioned_structs_and_lookups(library):
    script = textwrap.dedent("""
        import json, pynvml as N
        def attempt(function, *args):
            try:
                return function(*args)
            except N.NVMLError as error:
                return type(error).__name__
        N.nvmlInit()
        second = N.nvmlDeviceGetHandleByIndex(1)
        print(json.dumps({
            "memory_bad_version": attempt(N.nvmlDeviceGetMemoryInfo, second, 0x01000028),
            "error_counter_past_last": attempt(N.nvmlDeviceGetNvLinkErrorCounter, second, 0, 5),
            "p2p_past_last_index": attempt(N.nvmlDeviceGetP2PStatus, second, second, 5),
            "by_uuid": attempt(lambda: N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByUUID(N.nvmlDeviceGetUUID(second)))),
            "by_uuid_unknown": attempt(N.nvmlDeviceGetHandleByUUID, b"GPU-00000000-0000-0000-0000-000000000000"),
            "by_bus_id": attempt(lambda: N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByPciBusId(b"00000000:21:00.0"))),
            "by_legacy_bus_id": attempt(lambda: N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByPciBusId(b"0000:21:00.0"))),
            "by_bus_id_unknown": attempt(N.nvmlDeviceGetHandleByPciBusId, b"00000000:7f:00.0"),
            "not_implemented": attempt(N.nvmlDeviceGetClockInfo, second, 0),
            "error_string": str(N.NVMLError(N.NVML_ERROR_DRIVER_NOT_LOADED)),
            "threshold_past_count": attempt(N.nvmlDeviceGetTemperatureThreshold, second, 8),
        }))
        N.nvmlShutdown()
    """)
    seen, _stderr = read_json(library, SCENARIO_DIR / "dual_3090_nvlink_ok.json", script)
    assert seen == {
        # As libnvidia-ml 580 answers (recorded on H200s), though nvml.h documents other codes for these.
        "memory_bad_version": "NVMLError_FunctionNotFound",
        "error_counter_past_last": "NVMLError_NotSupported",
        "p2p_past_last_index": 0,  # SUCCESS, the output left as pynvml set it
        "by_uuid": 1, "by_uuid_unknown": "NVMLError_NotFound",
        "by_bus_id": 1, "by_legacy_bus_id": 1, "by_bus_id_unknown": "NVMLError_NotFound",
        "not_implemented": "NVMLError_FunctionNotFound",  # a symbol the fake does not define does not exist
        "error_string": "Driver Not Loaded",
        "threshold_past_count": "NVMLError_InvalidArgument",
    }


def test_legacy_pci_entry_points_write_only_the_old_struct(library):
    # nvmlDeviceGetPciInfo/_v2 and nvmlDeviceGetNvLinkRemotePciInfo fill the 52-byte struct of old callers.
    script = RAW_PRELUDE + textwrap.dedent("""
        lib.nvmlInit_v2()
        handle = ctypes.c_void_p()
        lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle))
        out = {}
        for name, call in (("v1", lambda b: lib.nvmlDeviceGetPciInfo(handle, b)),
                           ("v2", lambda b: lib.nvmlDeviceGetPciInfo_v2(handle, b)),
                           ("remote", lambda b: lib.nvmlDeviceGetNvLinkRemotePciInfo(handle, 0, b))):
            buffer = ctypes.create_string_buffer(b"\\xAA" * 68, 68)
            status = call(buffer)
            raw = buffer.raw
            out[name] = [status, raw[:16].split(b"\\0")[0].decode(), list(raw[16:24]), raw[52:].hex()]
        lib.nvmlShutdown()
        print(json.dumps(out))
    """)
    seen, _stderr = read_json(library, SCENARIO_DIR / "dual_3090_nvlink_ok.json", script)
    untouched = "aa" * 16
    assert seen["v1"] == [0, "0000:01:00.0", [0, 0, 0, 0, 1, 0, 0, 0], untouched]
    assert seen["v2"] == seen["v1"]
    assert seen["remote"] == [0, "0000:21:00.0", [0, 0, 0, 0, 0x21, 0, 0, 0], untouched]


def test_every_symbol_our_modules_need_is_exported(library):
    symbols = [
        "nvmlInit", "nvmlInit_v2", "nvmlInitWithFlags", "nvmlShutdown", "nvmlErrorString",
        "nvmlSystemGetDriverVersion", "nvmlSystemGetCudaDriverVersion", "nvmlSystemGetCudaDriverVersion_v2",
        "nvmlSystemGetNVMLVersion", "nvmlDeviceGetCount", "nvmlDeviceGetCount_v2", "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetIndex", "nvmlDeviceGetName", "nvmlDeviceGetUUID",
        "nvmlDeviceGetPciInfo", "nvmlDeviceGetPciInfo_v2", "nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetPersistenceMode", "nvmlDeviceGetCurrPcieLinkGeneration",
        "nvmlDeviceGetMaxPcieLinkGeneration", "nvmlDeviceGetGpuMaxPcieLinkGeneration",
        "nvmlDeviceGetCurrPcieLinkWidth", "nvmlDeviceGetMaxPcieLinkWidth", "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetPowerManagementLimit",
        "nvmlDeviceGetPowerManagementDefaultLimit", "nvmlDeviceGetPowerManagementLimitConstraints",
        "nvmlDeviceGetTemperature", "nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperatureThreshold",
        "nvmlDeviceGetFieldValues", "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlDeviceGetCurrentClocksThrottleReasons", "nvmlDeviceGetFanSpeed", "nvmlDeviceGetNumFans",
        "nvmlDeviceGetNvLinkState", "nvmlDeviceGetNvLinkVersion", "nvmlDeviceGetNvLinkRemotePciInfo",
        "nvmlDeviceGetNvLinkRemotePciInfo_v2", "nvmlDeviceGetNvLinkRemoteDeviceType",
        "nvmlDeviceGetNvLinkCapability", "nvmlDeviceGetNvLinkErrorCounter", "nvmlDeviceGetP2PStatus",
        "nvmlDeviceGetTopologyCommonAncestor", "nvmlDeviceGetBrand", "nvmlDeviceGetMinorNumber",
    ]
    fake = ctypes.CDLL(str(library / "libnvidia-ml.so.1"))
    assert [name for name in symbols if not hasattr(fake, name)] == []
    assert not hasattr(fake, "json_get")  # helpers stay private


# ---- scenario files that cannot be used -------------------------------------------------------------------

INIT_ONLY = textwrap.dedent("""
    import json, pynvml
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        print(json.dumps(type(error).__name__))
    else:
        print(json.dumps("initialized"))
""")


@pytest.mark.parametrize(("text", "where"), [
    ('{"gpus": [ {"name": "x" ', "line 1, column 25 (byte 24): unexpected end of file"),
    ('{\n  "gpus": [],\n  "pairs": {},\n}\n', "line 4, column 1 (byte 31): trailing comma"),
    ('{"driver_version": "560.35.03" "gpus": []}', "line 1, column 32 (byte 31): expected ',' or '}'"),
    ("", "line 1, column 1 (byte 0): the file is empty"),
    ('{"gpus": [], "gpus": []}', "line 1, column 14 (byte 13): duplicate key \"gpus\""),
    ('{"cuda_driver_version": 012060}', "line 1, column 26 (byte 25): leading zeros are not allowed"),
])
def test_garbled_scenario_fails_init_with_file_and_position(library, tmp_path, text, where):
    broken = tmp_path / "broken.json"
    broken.write_text(text)
    seen, stderr = read_json(library, broken, INIT_ONLY)
    assert seen == "NVMLError_Unknown"
    assert stderr.count("\n") == 1  # one line
    assert stderr.startswith("fake-nvml: cannot use scenario %s: JSON syntax error at %s" % (broken, where))


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s["gpus"][0]["temperature"].update(memroy_c=80),
     "scenario error at gpus[0].temperature.memroy_c: unknown key"),
    (lambda s: s["gpus"][1]["nvlink"]["links"][2].update(state="up"),
     'scenario error at gpus[1].nvlink.links[2].state: expected one of "active", "inactive"'),
    (lambda s: s["gpus"][0].update(clocks_event_reasons=["thermal"]),
     "scenario error at gpus[0].clocks_event_reasons[0]: unknown clock event reason"),
    (lambda s: s["gpus"][0].update(memory_total_mib="24 GB"),
     "scenario error at gpus[0].memory_total_mib: expected a number of MiB >= 0"),
    (lambda s: s["pairs"].update({"0-2": {}}),
     'scenario error at pairs.0-2: pair keys are "i-j"'),
    (lambda s: s["pairs"]["0-1"]["p2p"].update(nvlink="fine"),
     'scenario error at pairs.0-1.p2p.nvlink: expected one of "ok", "chipset_not_supported"'),
    (lambda s: s.update(init_error="DRIVER_MISSING"),
     "scenario error at init_error: expected an NVML error name"),
])
def test_scenario_with_a_schema_error_fails_init_naming_the_key(library, tmp_path, change, message):
    scenario = scenario_named("dual_3090_nvlink_ok")
    change(scenario)
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    seen, stderr = read_json(library, path, INIT_ONLY)
    assert seen == "NVMLError_Unknown"
    assert stderr.startswith("fake-nvml: cannot use scenario %s: %s" % (path, message)), stderr


def test_missing_scenario_file_fails_init_with_a_clear_message(library, tmp_path):
    absent = tmp_path / "absent.json"
    seen, stderr = read_json(library, absent, INIT_ONLY)
    assert seen == "NVMLError_Unknown"
    assert stderr == "fake-nvml: cannot use scenario %s: cannot open: No such file or directory\n" % absent


def test_without_the_variable_the_scenario_is_etc_fake_nvml(library):
    default = Path("/etc/fake-nvml/scenario.json")
    if default.exists():
        pytest.skip("this machine has a real %s" % default)
    seen, stderr = read_json(library, None, INIT_ONLY)
    assert seen == "NVMLError_Unknown"
    assert "fake-nvml: cannot use scenario /etc/fake-nvml/scenario.json: cannot open" in stderr


@pytest.mark.parametrize(("init_error", "raised"), [
    ("DRIVER_NOT_LOADED", "NVMLError_DriverNotLoaded"),
    ("NVML_ERROR_NO_PERMISSION", "NVMLError_NoPermission"),
    ("lib_rm_version_mismatch", "NVMLError_LibRmVersionMismatch"),
    (12, "NVMLError_LibraryNotFound"),
    (None, "initialized"),
])
def test_init_error_makes_init_fail_that_way(library, tmp_path, init_error, raised):
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"init_error": init_error, "gpus": []}))
    seen, _stderr = read_json(library, path, INIT_ONLY)
    assert seen == raised


# ---- live reload ------------------------------------------------------------------------------------------

RELOAD = textwrap.dedent("""
    import json, os, sys, pynvml as N
    path = sys.argv[1]
    N.nvmlInit()
    handle = N.nvmlDeviceGetHandleByIndex(1)

    def read():
        field = N.nvmlDeviceGetFieldValues(handle, [N.NVML_FI_DEV_MEMORY_TEMP])[0]
        return [field.value.uiVal if field.nvmlReturn == 0 else {"field_error": field.nvmlReturn},
                N.nvmlDeviceGetCurrentClocksEventReasons(handle)]

    def rewrite(text, mtime_ns):
        with open(path, "w") as f:
            f.write(text)
        os.utime(path, ns=(mtime_ns, mtime_ns))

    original = open(path).read()
    stamp = os.stat(path).st_mtime_ns
    steps = [read()]
    # Same size, new mtime (nanoseconds apart): 106 C becomes 101 C and the software thermal slowdown clears.
    cooler = original.replace('"memory_c": 106', '"memory_c": 101').replace('"sw_thermal_slowdown"',
                                                                            '"hw_thermal_slowdown"')
    assert len(cooler) == len(original)
    rewrite(cooler, stamp + 1)
    steps.append(read())
    # Unchanged mtime and size: not read again even though the text differs.
    rewrite(original, stamp + 1)
    steps.append(read())
    # A garbled version (a half-written file): the previous scenario stays; stderr says so once.
    rewrite(original[: len(original) // 2], stamp + 2)
    steps.append(read())
    steps.append(read())
    # Fixed again: the new values apply.
    rewrite(original.replace('"memory_c": 106', '"memory_c": 70'), stamp + 3)
    steps.append(read())
    N.nvmlShutdown()
    print(json.dumps(steps))
""")


def test_rewriting_the_scenario_changes_values_on_the_next_call(library, tmp_path):
    active = tmp_path / "scenario.json"
    shutil.copy(SCENARIO_DIR / "dual_3090_hot_junction.json", active)
    hot_reasons = expected_reasons(scenario_named("dual_3090_hot_junction")["gpus"][1]["clocks_event_reasons"])
    assert hot_reasons & 0x20
    cool_reasons = hot_reasons & ~0x20
    seen, stderr = read_json(library, active, RELOAD, active)
    assert seen == [
        [106, hot_reasons],
        [101, cool_reasons],
        [101, cool_reasons],  # same mtime and size: still the cooler version
        [101, cool_reasons],  # garbled: kept
        [101, cool_reasons],
        [70, hot_reasons],
    ]
    lines = stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("fake-nvml: scenario %s changed but cannot be used, keeping the previous one: "
                               "JSON syntax error at line " % active)


def test_live_reload_drops_handles_of_gpus_that_went_away(library, tmp_path):
    active = tmp_path / "scenario.json"
    shutil.copy(SCENARIO_DIR / "dual_3090_nvlink_ok.json", active)
    script = textwrap.dedent("""
        import json, sys, pynvml as N
        N.nvmlInit()
        second = N.nvmlDeviceGetHandleByIndex(1)
        before = N.nvmlDeviceGetName(second)
        with open(sys.argv[2]) as source, open(sys.argv[1], "w") as target:
            target.write(source.read())
        try:
            after = N.nvmlDeviceGetName(second)
        except N.NVMLError as error:
            after = type(error).__name__
        print(json.dumps([before, N.nvmlDeviceGetCount(), after]))
    """)
    seen, _stderr = read_json(library, active, script, active, SCENARIO_DIR / "single_5090.json")
    assert seen == ["NVIDIA GeForce RTX 3090", 1, "NVMLError_InvalidArgument"]


# The NVLink error counters as fields (NVML_FI_DEV_NVLINK_*_ERROR_COUNT_L0..L11), next to the per-link call.
ERROR_FIELDS_SCRIPT = textwrap.dedent("""
    import json
    import pynvml as N
    COUNTERS = (("REPLAY", 0), ("RECOVERY", 1), ("CRC_FLIT", 2), ("CRC_DATA", 3))
    N.nvmlInit()
    out = []
    for index in range(N.nvmlDeviceGetCount()):
        handle = N.nvmlDeviceGetHandleByIndex(index)
        ids = [getattr(N, "NVML_FI_DEV_NVLINK_%s_ERROR_COUNT_L%d" % (name, link))
               for link in range(12) for name, _counter in COUNTERS]
        fields = {}
        for field in N.nvmlDeviceGetFieldValues(handle, ids):
            fields[str(field.fieldId)] = ([field.valueType, field.value.ullVal] if field.nvmlReturn == 0
                                          else {"field_error": field.nvmlReturn})
        calls = {}
        for link in range(12):
            for name, counter in COUNTERS:
                field_id = getattr(N, "NVML_FI_DEV_NVLINK_%s_ERROR_COUNT_L%d" % (name, link))
                try:
                    calls[str(field_id)] = N.nvmlDeviceGetNvLinkErrorCounter(handle, link, counter)
                except N.NVMLError as error:
                    calls[str(field_id)] = {"error": error.value}
        out.append({"fields": fields, "calls": calls})
    N.nvmlShutdown()
    print(json.dumps(out))
""")


def test_nvlink_error_fields_carry_the_per_link_counters(library, tmp_path):
    links = [{"state": "active", "errors": {"replay": 10 * link, "recovery": 10 * link + 1,
                                            "crc_flit": 10 * link + 2, "crc_data": 10 * link + 3}}
             for link in range(7)]
    links[5]["errors"]["crc_data"] = None
    scenario = {"gpus": [
        {"name": "NVIDIA RTX A6000", "pci_bus_id": "00000000:41:00.0", "nvlink": {"links": links},
         "field_values": {"108": 77}},  # NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_L6: the scenario's field wins
        {"name": "NVIDIA GeForce RTX 4090", "pci_bus_id": "00000000:42:00.0"},
    ]}
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    (linked, plain), _stderr = read_json(library, path, ERROR_FIELDS_SCRIPT)
    replay_l3, crc_flit_l6 = "49", "96"  # NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_L3, ..._CRC_FLIT_ERROR_COUNT_L6
    # Unsigned long long, as libnvidia-ml types its counters; the same figure as the per-link call.
    assert linked["fields"][replay_l3] == [3, 30] and linked["calls"][replay_l3] == 30
    assert linked["fields"][crc_flit_l6] == [3, 62] and linked["calls"][crc_flit_l6] == 62
    for field_id, value in linked["calls"].items():
        field = linked["fields"][field_id]
        if field_id == "108":
            assert field == [1, 77]  # field_values' integer: unsigned int
        elif isinstance(value, int):
            assert field == [3, value], field_id
        else:  # a counter left out, or a link past the last: the field is NOT_SUPPORTED
            assert field == {"field_error": NVML_ERROR_NOT_SUPPORTED}, field_id
    crc_data_l5 = "44"  # NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_L5
    assert linked["calls"][crc_data_l5] == {"error": NVML_ERROR_NOT_SUPPORTED}
    # No NVLink: every error field NOT_SUPPORTED, like every per-link call.
    assert set(map(json.dumps, plain["fields"].values())) == {json.dumps({"field_error": NVML_ERROR_NOT_SUPPORTED})}
