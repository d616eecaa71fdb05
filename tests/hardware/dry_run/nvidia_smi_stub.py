"""A stand-in for nvidia-smi, for the dry run of check_exporter.sh only: it answers the few calls that script makes
from the same (fake) NVML the exporter reads, in nvidia-smi's output shapes. It proves the script's plumbing
(parsing, comparison, timing, report), never the exporter's figures: both sides read the same library.
"""

import sys

import pynvml

NOT_SUPPORTED = "[N/A]"


def watts(milliwatts):
    return "%.2f" % (milliwatts / 1000.0)


def temperature_memory(_index, handle):
    value = pynvml.nvmlDeviceGetFieldValues(handle, [82])[0]
    return NOT_SUPPORTED if value.nvmlReturn != 0 else str(value.value.uiVal)


def memory(handle):
    return pynvml.nvmlDeviceGetMemoryInfo(handle, pynvml.nvmlMemory_v2)


FIELDS = {
    "index": lambda index, handle: str(index),
    "uuid": lambda index, handle: pynvml.nvmlDeviceGetUUID(handle),
    "name": lambda index, handle: pynvml.nvmlDeviceGetName(handle),
    "pci.bus_id": lambda index, handle: pynvml.nvmlDeviceGetPciInfo(handle).busId,
    "driver_version": lambda index, handle: pynvml.nvmlSystemGetDriverVersion(),
    "temperature.gpu": lambda index, handle: str(pynvml.nvmlDeviceGetTemperature(handle, 0)),
    "temperature.memory": temperature_memory,
    "power.draw": lambda index, handle: watts(pynvml.nvmlDeviceGetPowerUsage(handle)),
    "power.limit": lambda index, handle: watts(pynvml.nvmlDeviceGetPowerManagementLimit(handle)),
    "enforced.power.limit": lambda index, handle: watts(pynvml.nvmlDeviceGetEnforcedPowerLimit(handle)),
    "power.min_limit": lambda index, handle: watts(pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)[0]),
    "power.max_limit": lambda index, handle: watts(pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)[1]),
    "power.default_limit": lambda index, handle: watts(pynvml.nvmlDeviceGetPowerManagementDefaultLimit(handle)),
    "memory.used": lambda index, handle: str(memory(handle).used // 1048576),
    "memory.total": lambda index, handle: str(memory(handle).total // 1048576),
    "pcie.link.gen.current": lambda index, handle: str(pynvml.nvmlDeviceGetCurrPcieLinkGeneration(handle)),
    "pcie.link.gen.max": lambda index, handle: str(pynvml.nvmlDeviceGetMaxPcieLinkGeneration(handle)),
    "pcie.link.width.current": lambda index, handle: str(pynvml.nvmlDeviceGetCurrPcieLinkWidth(handle)),
    "pcie.link.width.max": lambda index, handle: str(pynvml.nvmlDeviceGetMaxPcieLinkWidth(handle)),
    "clocks_event_reasons.active": lambda index, handle: "0x%016X" % pynvml.nvmlDeviceGetCurrentClocksEventReasons(
        handle),
}


def cell(field, index, handle):
    try:
        return FIELDS[field](index, handle)
    except pynvml.NVMLError:
        return NOT_SUPPORTED


def links(handle):
    found = []
    for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
        try:
            found.append(pynvml.nvmlDeviceGetNvLinkState(handle, link) == 1)
        except pynvml.NVMLError:
            break
    return found


def counter(handle, link, number):
    try:
        return pynvml.nvmlDeviceGetNvLinkErrorCounter(handle, link, number)
    except pynvml.NVMLError:
        return 0


def main(argv):
    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(index) for index in range(pynvml.nvmlDeviceGetCount())]
    query = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--query-gpu=")]
    if query:
        fields = query[0].split(",")
        unknown = [field for field in fields if field not in FIELDS]
        if unknown:
            sys.stderr.write('Field "%s" is not a valid field to query.\n' % unknown[0])
            return 2
        for index, handle in enumerate(handles):
            print(", ".join(cell(field, index, handle) for field in fields))
        return 0
    if argv[:1] == ["nvlink"]:
        for index, handle in enumerate(handles):
            print("GPU %d: %s (UUID: %s)" % (index, pynvml.nvmlDeviceGetName(handle), pynvml.nvmlDeviceGetUUID(handle)))
            for link, active in enumerate(links(handle)):
                if "--status" in argv:
                    print("\t Link %d: %s" % (link, "26.562 GB/s" if active else "<inactive>"))
                else:
                    print("\t Link %d: Replay Errors: %d" % (link, counter(handle, link, 0)))
                    print("\t Link %d: Recovery Errors: %d" % (link, counter(handle, link, 1)))
                    print("\t Link %d: CRC Errors: %d" % (link, counter(handle, link, 2) + counter(handle, link, 3)))
        return 0
    print("nvidia-smi stand-in for the dry run of check_exporter.sh (fake NVML, %d GPUs)" % len(handles))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
