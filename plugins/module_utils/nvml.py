# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One NVML session for the collection's gate modules.

Everything that talks to NVML goes through here: opening and closing the session, turning NVML errors
into messages an operator can act on, reading values that a GPU may not expose (returned as None,
never as a made-up number) and decoding NVML's enums into names.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import time
import traceback
from typing import Any, Callable, Dict, List, Optional  # noqa: F401  (used by the type comments)

try:
    import pynvml
except ImportError:
    pynvml = None
    HAS_PYNVML = False
    PYNVML_IMPORT_ERROR = traceback.format_exc()  # type: Optional[str]
else:
    HAS_PYNVML = True
    PYNVML_IMPORT_ERROR = None

DRIVER_NOT_LOADED = (
    "NVIDIA driver not loaded: run the nvidia_driver role first (llmfleet.workstation.nvidia_driver), "
    "reboot if it asks for one, and check that nvidia-smi answers"
)

# NVML's field id for memory (HBM or GDDR junction) temperature; not exposed for GeForce GDDR6X.
FI_DEV_MEMORY_TEMP = 82
# Upper bound on NVLink links per GPU in nvml.h; a GPU's own links end earlier (InvalidArgument).
NVLINK_MAX_LINKS = 36

CLOCK_EVENT_REASONS = (
    (0x0001, "gpu_idle"),
    (0x0002, "applications_clocks_setting"),
    (0x0004, "sw_power_cap"),
    (0x0008, "hw_slowdown"),
    (0x0010, "sync_boost"),
    (0x0020, "sw_thermal_slowdown"),
    (0x0040, "hw_thermal_slowdown"),
    (0x0080, "hw_power_brake_slowdown"),
    (0x0100, "display_clock_setting"),
    (0x0200, "board_limit"),
    (0x0400, "reliability"),
)
THERMAL_CLOCK_EVENT_REASONS = frozenset(("sw_thermal_slowdown", "hw_thermal_slowdown"))

NVLINK_VERSIONS = {1: "1.0", 2: "2.0", 3: "2.2", 4: "3.0", 5: "3.1", 6: "4.0", 7: "5.0", 8: "6.0"}
REMOTE_DEVICE_TYPES = {0: "gpu", 1: "ibmnpu", 2: "switch", 255: "unknown"}
P2P_STATUSES = {
    0: "ok",
    1: "chipset_not_supported",
    2: "gpu_not_supported",
    3: "ioh_topology_not_supported",
    4: "disabled_by_regkey",
    5: "not_supported",
    6: "unknown",
}
TOPOLOGY_LEVELS = {0: "internal", 10: "single", 20: "multiple", 30: "hostbridge", 40: "node", 50: "system"}
P2P_CAPS_INDEX_NVLINK = 2
NVLINK_CAP_P2P_SUPPORTED = 0
NVLINK_ERROR_COUNTERS = (("replay", 0), ("recovery", 1), ("crc_flit", 2), ("crc_data", 3))
TEMPERATURE_GPU = 0
TEMPERATURE_THRESHOLDS = (("shutdown_c", 0), ("slowdown_c", 1), ("memory_max_c", 2), ("gpu_max_c", 3))

# Bidirectional bandwidth of one NVLink link, GB/s, by NVLink version (estimates from NVIDIA's specs).
NVLINK_LINK_BIDIRECTIONAL_GBPS = {"1.0": 40.0, "2.0": 50.0, "2.2": 50.0, "3.0": 50.0, "3.1": 50.0, "4.0": 50.0,
                                  "5.0": 100.0}
# GA102 (RTX 3090, RTX A6000) runs NVLink 3 over 4 narrower links: 112.5 GB/s bidirectional in all.
GA102_LINK_BIDIRECTIONAL_GBPS = 112.5 / 4
GA102_MAX_LINKS = 4


class NvmlError(Exception):
    """An NVML failure, worded for the operator."""


def to_text(value):
    # type: (Any) -> Any
    """pynvml returns bytes or str depending on its version; modules return str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def decode_clock_event_reasons(mask):
    # type: (Optional[int]) -> Optional[List[str]]
    if mask is None:
        return None
    return [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]


def link_bidirectional_gbps(version, link_count):
    # type: (Optional[str], int) -> Optional[float]
    """Estimated bidirectional bandwidth of one link, or None for an unknown version."""
    if version is None:
        return None
    if version in ("3.0", "3.1") and link_count <= GA102_MAX_LINKS:
        return GA102_LINK_BIDIRECTIONAL_GBPS
    return NVLINK_LINK_BIDIRECTIONAL_GBPS.get(version)


def format_ranges(numbers):
    # type: (List[int]) -> str
    """[0, 1, 2, 3, 7] -> '0-3, 7': how an operator reads a list of link numbers."""
    parts = []
    numbers = sorted(numbers)
    start = previous = None
    for number in numbers + [None]:
        if start is not None and number == previous + 1:
            previous = number
            continue
        if start is not None:
            parts.append(str(start) if start == previous else "%d-%d" % (start, previous))
        start = previous = number
    return ", ".join(parts)


def _error_class(name):
    # pynvml builds these classes at import time; look them up by name so a missing one is harmless.
    return getattr(pynvml, name, ()) if pynvml is not None else ()


def _is_unavailable(error):
    # type: (Exception) -> bool
    """NotSupported (the GPU lacks it) and FunctionNotFound (the driver lacks it) both mean 'unavailable'."""
    unavailable = tuple(
        cls for cls in (_error_class("NVMLError_NotSupported"), _error_class("NVMLError_FunctionNotFound"))
        if isinstance(cls, type)
    )
    return bool(unavailable) and isinstance(error, unavailable)


def describe_gpu(gpu):
    # type: (Dict[str, Any]) -> str
    """How every message names a GPU: 'GPU 1 (NVIDIA GeForce RTX 3090, 00000000:21:00.0)'."""
    return "GPU %d (%s, %s)" % (gpu["index"], gpu["name"], gpu["pci_bus_id"])


class Gpu:
    """One GPU as NVML enumerates it."""

    def __init__(self, index, handle, name, uuid, pci_bus_id):
        # type: (int, Any, str, str, str) -> None
        self.index = index
        self.handle = handle
        self.name = name
        self.uuid = uuid
        self.pci_bus_id = pci_bus_id

    @property
    def label(self):
        # type: () -> str
        return describe_gpu(self.identity())

    def identity(self):
        # type: () -> Dict[str, Any]
        return {"index": self.index, "name": self.name, "uuid": self.uuid, "pci_bus_id": self.pci_bus_id}


class NvmlSession:
    """Context manager around nvmlInit/nvmlShutdown with readers that never invent values."""

    def __init__(self):
        # type: () -> None
        self._open = False

    def __enter__(self):
        # type: () -> NvmlSession
        if pynvml is None:
            raise NvmlError("The Python package nvidia-ml-py (module pynvml) is not installed on the target")
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            driver_missing = tuple(
                cls for cls in (_error_class("NVMLError_LibraryNotFound"), _error_class("NVMLError_DriverNotLoaded"))
                if isinstance(cls, type)
            )
            if driver_missing and isinstance(error, driver_missing):
                raise NvmlError("%s (NVML: %s)" % (DRIVER_NOT_LOADED, to_text(str(error)))) from error
            detail = to_text(str(error))
            raise NvmlError("NVML could not start: %s. Check the driver with nvidia-smi" % detail) from error
        self._open = True
        return self

    def __exit__(self, *exc_info):
        # type: (Any) -> None
        if self._open:
            self._open = False
            with contextlib.suppress(pynvml.NVMLError):  # a failed shutdown changes nothing the module reports
                pynvml.nvmlShutdown()

    # ---- generic readers ------------------------------------------------------------------

    def call(self, where, function_name, *args):
        # type: (str, str, Any) -> Any
        """Call pynvml.<function_name>; any NVML error becomes NvmlError naming the GPU and the call."""
        try:
            return getattr(pynvml, function_name)(*args)
        except pynvml.NVMLError as error:
            raise NvmlError("NVML %s failed on %s: %s" % (function_name, where, to_text(str(error)))) from error

    def optional(self, where, function_name, *args):
        # type: (str, str, Any) -> Any
        """Like call(), but a value the GPU or driver does not expose is None."""
        function = getattr(pynvml, function_name, None)
        if function is None:
            return None  # an older pynvml without this wrapper: unavailable, like FunctionNotFound
        try:
            return function(*args)
        except pynvml.NVMLError as error:
            if _is_unavailable(error):
                return None
            raise NvmlError("NVML %s failed on %s: %s" % (function_name, where, to_text(str(error)))) from error

    # ---- system -----------------------------------------------------------------------------

    def driver_version(self):
        # type: () -> str
        return to_text(self.call("the system", "nvmlSystemGetDriverVersion"))

    def cuda_driver_version(self):
        # type: () -> Optional[str]
        """CUDA version the driver supports, 12060 -> '12.6'."""
        version = self.optional("the system", "nvmlSystemGetCudaDriverVersion")
        if version is None:
            return None
        return "%d.%d" % (version // 1000, (version % 1000) // 10)

    def nvml_version(self):
        # type: () -> Optional[str]
        return to_text(self.optional("the system", "nvmlSystemGetNVMLVersion"))

    def gpus(self):
        # type: () -> List[Gpu]
        found = []
        for index in range(self.call("the system", "nvmlDeviceGetCount")):
            where = "GPU %d" % index
            handle = self.call(where, "nvmlDeviceGetHandleByIndex", index)
            name = to_text(self.call(where, "nvmlDeviceGetName", handle))
            where = "GPU %d (%s)" % (index, name)
            uuid = to_text(self.call(where, "nvmlDeviceGetUUID", handle))
            pci = self.call(where, "nvmlDeviceGetPciInfo", handle)
            found.append(Gpu(index, handle, name, uuid, to_text(pci.busId)))
        return found

    # ---- NVLink -----------------------------------------------------------------------------

    def nvlink_link_count(self, gpu):
        # type: (Gpu) -> Optional[int]
        """Links this GPU has: stops where NVML answers InvalidArgument; None if it has no NVLink."""
        for link in range(NVLINK_MAX_LINKS):
            try:
                pynvml.nvmlDeviceGetNvLinkState(gpu.handle, link)
            except pynvml.NVMLError as error:
                if isinstance(error, pynvml.NVMLError_InvalidArgument):
                    return link
                if _is_unavailable(error):
                    return None if link == 0 else link
                raise NvmlError("NVML nvmlDeviceGetNvLinkState failed on %s link %d: %s"
                                % (gpu.label, link, to_text(str(error)))) from error
        return NVLINK_MAX_LINKS

    def nvlink_link(self, gpu, link):
        # type: (Gpu, int) -> Dict[str, Any]
        where = "%s link %d" % (gpu.label, link)
        active = self.call(where, "nvmlDeviceGetNvLinkState", gpu.handle, link) == 1
        version = self.optional(where, "nvmlDeviceGetNvLinkVersion", gpu.handle, link)
        remote_bus_id = remote_type = None
        if active:
            remote = self.optional(where, "nvmlDeviceGetNvLinkRemotePciInfo", gpu.handle, link)
            remote_bus_id = to_text(remote.busId) if remote is not None else None
            remote_type_code = self.optional(where, "nvmlDeviceGetNvLinkRemoteDeviceType", gpu.handle, link)
            remote_type = REMOTE_DEVICE_TYPES.get(remote_type_code) if remote_type_code is not None else None
        p2p = self.optional(where, "nvmlDeviceGetNvLinkCapability", gpu.handle, link, NVLINK_CAP_P2P_SUPPORTED)
        errors = {}
        for counter_name, counter in NVLINK_ERROR_COUNTERS:
            errors[counter_name] = self.optional(where, "nvmlDeviceGetNvLinkErrorCounter", gpu.handle, link, counter)
        return {
            "link": link,
            "active": active,
            "version": NVLINK_VERSIONS.get(version) if version is not None else None,
            "remote_pci_bus_id": remote_bus_id,
            "remote_device_type": remote_type,
            "p2p_supported": bool(p2p) if p2p is not None else None,
            "errors": errors,
        }

    def p2p_nvlink_status(self, first, second):
        # type: (Gpu, Gpu) -> Optional[str]
        where = "%s and %s" % (first.label, second.label)
        status = self.optional(where, "nvmlDeviceGetP2PStatus", first.handle, second.handle, P2P_CAPS_INDEX_NVLINK)
        return P2P_STATUSES.get(status, "unknown") if status is not None else None

    def topology_level(self, first, second):
        # type: (Gpu, Gpu) -> Optional[str]
        where = "%s and %s" % (first.label, second.label)
        level = self.optional(where, "nvmlDeviceGetTopologyCommonAncestor", first.handle, second.handle)
        return TOPOLOGY_LEVELS.get(level, "unknown") if level is not None else None

    # ---- thermal ----------------------------------------------------------------------------

    def memory_temperature(self, gpu):
        # type: (Gpu) -> Optional[int]
        """NVML_FI_DEV_MEMORY_TEMP; NVML reports NotSupported per field, inside a successful call."""
        values = self.optional(gpu.label, "nvmlDeviceGetFieldValues", gpu.handle, [FI_DEV_MEMORY_TEMP])
        if not values:
            return None
        field = values[0]
        if field.nvmlReturn != 0:
            return None
        return int(field.value.uiVal)

    def clock_event_reasons(self, gpu):
        # type: (Gpu) -> Optional[List[str]]
        mask = self.optional(gpu.label, "nvmlDeviceGetCurrentClocksEventReasons", gpu.handle)
        if mask is None:  # drivers before the rename only have the throttle-reasons call
            mask = self.optional(gpu.label, "nvmlDeviceGetCurrentClocksThrottleReasons", gpu.handle)
        return decode_clock_event_reasons(mask)


def milliwatts_to_watts(value):
    # type: (Optional[int]) -> Optional[float]
    return None if value is None else round(value / 1000.0, 1)


def wait_until(check, timeout, interval, sleep=time.sleep, monotonic=time.monotonic):
    # type: (Callable[[], Any], float, float, Callable[[float], Any], Callable[[], float]) -> Any
    """Call check() until it returns (done, value) with done true, or the timeout passes.

    Returns (done, value, waited_seconds); value is the last check's.
    """
    started = monotonic()
    while True:
        done, value = check()
        waited = monotonic() - started
        if done or waited >= timeout:
            return done, value, waited
        sleep(min(interval, max(timeout - waited, 0)))
