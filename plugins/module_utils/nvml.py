# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One NVML session for the collection's gate modules.

Everything that talks to NVML goes through here: opening and closing the session, turning NVML errors
into messages an operator can act on, reading values that a GPU may not expose (returned as None,
never as a made-up number) and decoding NVML's enums into names.

This file imports nothing from Ansible, so it can be unit-tested on its own; modules import it as
``ansible_collections.llmfleet.workstation.plugins.module_utils.nvml``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import re
import time
import traceback
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

try:
    import pynvml
except ImportError:
    pynvml = None
    HAS_PYNVML = False
    PYNVML_IMPORT_ERROR = traceback.format_exc()  # type: Optional[str]
else:
    HAS_PYNVML = True
    PYNVML_IMPORT_ERROR = None

DRIVER_NOT_LOADED_FIX = (
    "run the nvidia_driver role first (llmfleet.workstation.nvidia_driver), reboot if it asks for one, and check "
    "that nvidia-smi answers"
)
DRIVER_NOT_LOADED = "NVIDIA driver not loaded: " + DRIVER_NOT_LOADED_FIX
NVML_MISSING_FIX = "install nvidia-ml-py in the gates venv: run site.yml --tags gates"
# nvmlInit failures other than a missing driver that an operator meets, with what to do about them.
INIT_ERROR_FIXES = {
    "NVMLError_LibRmVersionMismatch": (
        "the NVIDIA user-space library and the loaded kernel module are different versions, which happens "
        "after a driver upgrade without a reboot: reboot the host (or unload and reload the nvidia modules)"
    ),
    "NVMLError_NoPermission": (
        "this user may not open the GPU device files: run the task with become: true, or check the "
        "permissions of /dev/nvidia*"
    ),
}

# NVML's field id for memory (HBM or GDDR junction) temperature; not exposed for GeForce GDDR6X.
FI_DEV_MEMORY_TEMP = 82
# Upper bound on NVLink links per GPU (NVML_NVLINK_MAX_LINKS, 36 in nvml.h 13); a GPU's own links end
# earlier, where NVML answers InvalidArgument (RTX 3090: 4, H100/H200 SXM: 18).
NVLINK_MAX_LINKS = int(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 36))

# nvmlClocksEventReason* bits (called ClocksThrottleReason* before driver 535).
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

# nvmlNvlinkVersion_t: the enum, not the version number (enum 6 is NVLink 4.0, seen on H200).
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
# The same counters as NVML fields (nvml.h NVML_FI_DEV_NVLINK_*_ERROR_COUNT_L0 to _L11), so that one
# nvmlDeviceGetFieldValues call per GPU replaces four nvmlDeviceGetNvLinkErrorCounter calls per link (about
# 0.9 ms each on an H200: 144 calls, 135 ms, for two GPUs of 18 links). First field id of links 0-5 and of
# links 6-11, by counter; links from 12 on have no such field and are read per link.
NVLINK_ERROR_FIELDS = {"crc_flit": (32, 96), "crc_data": (39, 102), "replay": (46, 108), "recovery": (53, 114)}
NVLINK_ERROR_FIELD_LINKS = 12
TEMPERATURE_GPU = 0
TEMPERATURE_THRESHOLDS = (("shutdown_c", 0), ("slowdown_c", 1), ("memory_max_c", 2), ("gpu_max_c", 3))

# Errors that mean "this GPU or driver does not expose it": the reading is None, the gate goes on.
UNAVAILABLE_ERRORS = ("NVMLError_NotSupported", "NVMLError_FunctionNotFound")
# Per-field statuses inside a successful nvmlDeviceGetFieldValues call that mean the same: not supported,
# not found, function not found, and invalid argument (a field id this driver does not know yet).
FIELD_UNAVAILABLE_STATUSES = frozenset((3, 6, 13, 2))
# nvmlValueType_t -> the member of nvmlValue_t that holds the value.
FIELD_VALUE_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}

# Bidirectional bandwidth of one NVLink link, GB/s, by NVLink version (NVIDIA's published figures:
# P100 160 GB/s over 4 links, V100 300/6, A100 600/12, H100 900/18, B200 1800/18).
NVLINK_LINK_BIDIRECTIONAL_GBPS = {"1.0": 40.0, "2.0": 50.0, "2.2": 50.0, "3.0": 50.0, "3.1": 50.0, "4.0": 50.0,
                                  "5.0": 100.0}
# GA102 (RTX 3090, RTX A6000, A40) runs NVLink 3 over 4 narrower links: 112.5 GB/s bidirectional in all,
# about 14.06 GB/s each way per link. GA100 (A100, A800, A30) runs full-width NVLink 3 links.
GA102_LINK_BIDIRECTIONAL_GBPS = 112.5 / 4
GA102_MAX_LINKS = 4
GA100_NAME = re.compile(r"\bA(100|800|30)\b")


class NvmlError(Exception):
    """An NVML failure, worded for the operator.

    `code` names the failure for callers that judge from data (the gates' `problems`): `driver_not_loaded`,
    `nvml_missing`, `nvml_init_failed`, `nvml_call_failed`; `fix` is what the operator does about it, where known.
    """

    def __init__(self, message: str, code: str = "nvml_call_failed", fix: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.fix = fix


def to_text(value: Any) -> Any:
    """pynvml returns bytes or str depending on its version; modules return str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def decode_clock_event_reasons(mask: Optional[int]) -> Optional[List[str]]:
    """A clock-event (throttle) reason bit mask as names; bits NVML adds later show as unknown_0x..."""
    if mask is None:
        return None
    names = [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]
    known = 0
    for bit, _name in CLOCK_EVENT_REASONS:
        known |= bit
    unknown = mask & ~known
    bit = 1
    while unknown >= bit:
        if unknown & bit:
            names.append("unknown_%#x" % bit)
        bit <<= 1
    return names


def decode_nvlink_version(version: Optional[int]) -> Optional[str]:
    """nvmlNvlinkVersion_t -> "4.0"; None for unavailable or NVML_NVLINK_VERSION_INVALID."""
    return NVLINK_VERSIONS.get(version) if version is not None else None


def decode_remote_device_type(device_type: Optional[int]) -> Optional[str]:
    if device_type is None:
        return None
    return REMOTE_DEVICE_TYPES.get(device_type, "unknown")


def decode_p2p_status(status: Optional[int]) -> Optional[str]:
    return P2P_STATUSES.get(status, "unknown") if status is not None else None


def decode_topology_level(level: Optional[int]) -> Optional[str]:
    return TOPOLOGY_LEVELS.get(level, "unknown") if level is not None else None


def decode_cuda_version(version: Optional[int]) -> Optional[str]:
    """CUDA driver version as NVML packs it: 12060 -> "12.6"."""
    if version is None:
        return None
    return "%d.%d" % (version // 1000, (version % 1000) // 10)


def nvlink_error_field_id(counter_name: str, link: int) -> Optional[int]:
    """NVML's field id of one link's error counter ("replay", link 7 -> 109), or None past link 11."""
    if not 0 <= link < NVLINK_ERROR_FIELD_LINKS:
        return None
    first_low, first_high = NVLINK_ERROR_FIELDS[counter_name]
    return first_low + link if link < 6 else first_high + link - 6


def field_number(field: Any) -> Any:
    """The value an nvmlFieldValue_t carries, from the member its valueType names."""
    member = FIELD_VALUE_MEMBERS.get(getattr(field, "valueType", 1), "uiVal")
    return getattr(field.value, member)


def link_bidirectional_gbps(version: Optional[str], link_count: int, gpu_name: Optional[str] = None) -> Optional[float]:
    """Estimated bidirectional bandwidth of one link, or None for an unknown version.

    NVLink 3 comes in two widths: GA100 (A100, A30) links carry 50 GB/s; GA102 cards (RTX 3090, RTX A6000),
    which have at most 4 links, carry 112.5 GB/s over all 4.
    """
    if version is None:
        return None
    if version in ("3.0", "3.1") and link_count <= GA102_MAX_LINKS and not GA100_NAME.search(gpu_name or ""):
        return GA102_LINK_BIDIRECTIONAL_GBPS
    return NVLINK_LINK_BIDIRECTIONAL_GBPS.get(version)


def format_ranges(numbers: Iterable[int]) -> str:
    """[0, 1, 2, 3, 7] -> '0-3, 7': how an operator reads a list of link numbers."""
    ordered = sorted(set(numbers))
    parts = []
    position = 0
    while position < len(ordered):
        start = end = ordered[position]
        while position + 1 < len(ordered) and ordered[position + 1] == end + 1:
            position += 1
            end = ordered[position]
        parts.append(str(start) if start == end else "%d-%d" % (start, end))
        position += 1
    return ", ".join(parts)


def milliwatts_to_watts(value: Optional[int]) -> Optional[float]:
    return None if value is None else round(value / 1000.0, 1)


def _error_classes(names: Iterable[str]) -> Tuple[type, ...]:
    # pynvml builds these classes at import time; look them up by name so a missing one is harmless.
    found = (getattr(pynvml, name, None) for name in names) if pynvml is not None else ()
    return tuple(cls for cls in found if isinstance(cls, type))


def is_unavailable(error: Exception, also: Iterable[str] = ()) -> bool:
    """Whether an NVML error means the GPU or driver does not expose the value (NotSupported,
    FunctionNotFound, plus the error class names in `also` where the caller knows they mean the same)."""
    classes = _error_classes(tuple(UNAVAILABLE_ERRORS) + tuple(also))
    return bool(classes) and isinstance(error, classes)


def describe_gpu(gpu: Dict[str, Any]) -> str:
    """How every message names a GPU: 'GPU 1 (NVIDIA GeForce RTX 3090, 00000000:21:00.0)'."""
    return "GPU %d (%s, %s)" % (gpu["index"], gpu["name"], gpu["pci_bus_id"])


def _nvml_text(error: Exception) -> str:
    return to_text(str(error))


class Gpu:
    """One GPU as NVML enumerates it."""

    def __init__(self, index: int, handle: Any, name: str, uuid: str, pci_bus_id: str) -> None:
        self.index = index
        self.handle = handle
        self.name = name
        self.uuid = uuid
        self.pci_bus_id = pci_bus_id

    @property
    def label(self) -> str:
        return describe_gpu(self.identity())

    def identity(self) -> Dict[str, Any]:
        return {"index": self.index, "name": self.name, "uuid": self.uuid, "pci_bus_id": self.pci_bus_id}


class NvmlSession:
    """Context manager around one nvmlInit/nvmlShutdown, with readers that never invent values.

    ``call`` raises NvmlError for any NVML error; ``optional`` returns None where the GPU or driver does
    not expose the value and raises NvmlError, naming the GPU and the call, for anything else.
    """

    def __init__(self) -> None:
        self._open = False
        # GPU index -> the error counters one field call returned, and the links already handed out: a link
        # read a second time gets a fresh call, so counters are never older than the read that asks for them.
        self._error_fields = {}  # type: Dict[int, Dict[str, Any]]

    def __enter__(self) -> "NvmlSession":
        if pynvml is None:
            raise NvmlError("The Python package nvidia-ml-py (module pynvml) is not installed on the target",
                            code="nvml_missing", fix=NVML_MISSING_FIX)
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            if isinstance(error, _error_classes(("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded"))):
                raise NvmlError("%s (NVML: %s)" % (DRIVER_NOT_LOADED, _nvml_text(error)),
                                code="driver_not_loaded", fix=DRIVER_NOT_LOADED_FIX) from error
            kind = type(error).__name__
            fix = INIT_ERROR_FIXES.get(kind, "check the driver with nvidia-smi")
            raise NvmlError("NVML could not start (%s: %s): %s" % (kind, _nvml_text(error), fix),
                            code="nvml_init_failed", fix=fix) from error
        self._open = True
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._open:
            self._open = False
            with contextlib.suppress(pynvml.NVMLError):  # a failed shutdown changes nothing the module reports
                pynvml.nvmlShutdown()

    # ---- generic readers ------------------------------------------------------------------

    def call(self, where: str, function_name: str, *args: Any) -> Any:
        """Call pynvml.<function_name>; any NVML error becomes NvmlError naming the GPU and the call."""
        try:
            return getattr(pynvml, function_name)(*args)
        except pynvml.NVMLError as error:
            raise NvmlError("NVML %s failed on %s: %s" % (function_name, where, _nvml_text(error))) from error

    def optional(self, where: str, function_name: str, *args: Any, also_unavailable: Iterable[str] = ()) -> Any:
        """Like call(), but a value the GPU or driver does not expose is None.

        `also_unavailable` names further error classes that mean "not exposed" for this particular read.
        """
        function = getattr(pynvml, function_name, None)
        if function is None:
            return None  # an older pynvml without this wrapper: unavailable, like FunctionNotFound
        try:
            return function(*args)
        except pynvml.NVMLError as error:
            if is_unavailable(error, also_unavailable):
                return None
            raise NvmlError("NVML %s failed on %s: %s" % (function_name, where, _nvml_text(error))) from error

    # ---- system -----------------------------------------------------------------------------

    def driver_version(self) -> str:
        return to_text(self.call("the system", "nvmlSystemGetDriverVersion"))

    def cuda_driver_version(self) -> Optional[str]:
        """CUDA version the driver supports, 12060 -> '12.6'."""
        return decode_cuda_version(self.optional("the system", "nvmlSystemGetCudaDriverVersion"))

    def nvml_version(self) -> Optional[str]:
        return to_text(self.optional("the system", "nvmlSystemGetNVMLVersion"))

    def gpus(self) -> List[Gpu]:
        """Every GPU NVML enumerates: index, handle, name, UUID, PCI bus id."""
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

    def nvlink_link_count(self, gpu: Gpu) -> Optional[int]:
        """Links this GPU has, or None if it has no NVLink.

        NVML answers InvalidArgument past the GPU's last link, and NotSupported (on link 0) on a GPU
        without NVLink; either at link 0 means no NVLink.
        """
        for link in range(NVLINK_MAX_LINKS):
            try:
                pynvml.nvmlDeviceGetNvLinkState(gpu.handle, link)
            except pynvml.NVMLError as error:
                if is_unavailable(error, ("NVMLError_InvalidArgument",)):
                    return link or None
                raise NvmlError("NVML nvmlDeviceGetNvLinkState failed on %s link %d: %s"
                                % (gpu.label, link, _nvml_text(error))) from error
        return NVLINK_MAX_LINKS

    def nvlink_link(self, gpu: Gpu, link: int) -> Dict[str, Any]:
        """Everything about one link; a link that is down has no remote end and may have no version."""
        where = "%s link %d" % (gpu.label, link)
        active = self.call(where, "nvmlDeviceGetNvLinkState", gpu.handle, link) == 1
        # On a link that is down there is nothing at the other end to ask about: drivers answer
        # NotSupported, NotFound or InvalidArgument there, all of which mean "no value".
        unavailable = ("NVMLError_NotFound",) if active else ("NVMLError_NotFound", "NVMLError_InvalidArgument")
        version = self.optional(where, "nvmlDeviceGetNvLinkVersion", gpu.handle, link, also_unavailable=unavailable)
        remote_bus_id = remote_type = None
        if active:
            remote = self.optional(where, "nvmlDeviceGetNvLinkRemotePciInfo", gpu.handle, link,
                                   also_unavailable=unavailable)
            remote_bus_id = to_text(remote.busId) if remote is not None else None
            remote_type = decode_remote_device_type(self.optional(
                where, "nvmlDeviceGetNvLinkRemoteDeviceType", gpu.handle, link, also_unavailable=unavailable))
        p2p = self.optional(where, "nvmlDeviceGetNvLinkCapability", gpu.handle, link, NVLINK_CAP_P2P_SUPPORTED,
                            also_unavailable=unavailable)
        # Active links' counters come from one field call per GPU where the driver serves them; the rest (a
        # field the driver does not serve, links past 11, links that are down) from a call per counter, as
        # before, so the result is the same either way.
        batched = self._batched_link_errors(gpu, link) if active else {}
        errors = {}
        for counter_name, counter in NVLINK_ERROR_COUNTERS:
            if counter_name in batched:
                errors[counter_name] = batched[counter_name]
                continue
            errors[counter_name] = self.optional(where, "nvmlDeviceGetNvLinkErrorCounter", gpu.handle, link, counter,
                                                 also_unavailable=unavailable)
        return {
            "link": link,
            "active": active,
            "version": decode_nvlink_version(version),
            "remote_pci_bus_id": remote_bus_id,
            "remote_device_type": remote_type,
            "p2p_supported": bool(p2p) if p2p is not None else None,
            "errors": errors,
        }

    def nvlink_error_fields(self, gpu: Gpu) -> Dict[int, Dict[str, int]]:
        """Links 0-11's error counters in one nvmlDeviceGetFieldValues call: {link: {counter: value}}.

        Only fields the driver answered with SUCCESS are in the result; a driver or GPU that does not serve
        them (older drivers, pynvml without the call, a field id it does not know) gives an empty one.
        """
        requests = [(link, counter_name, nvlink_error_field_id(counter_name, link))
                    for link in range(NVLINK_ERROR_FIELD_LINKS) for counter_name, _counter in NVLINK_ERROR_COUNTERS]
        try:
            values = self.optional(gpu.label, "nvmlDeviceGetFieldValues", gpu.handle,
                                   [field_id for _link, _name, field_id in requests])
        except NvmlError:
            return {}  # the per-link calls that follow report the GPU's error, as they always did
        found = {}  # type: Dict[int, Dict[str, int]]
        for (link, counter_name, _field_id), field in zip(requests, values or []):
            if int(field.nvmlReturn) == 0:
                found.setdefault(link, {})[counter_name] = int(field_number(field))
        return found

    def _batched_link_errors(self, gpu: Gpu, link: int) -> Dict[str, int]:
        if link >= NVLINK_ERROR_FIELD_LINKS:
            return {}
        entry = self._error_fields.get(gpu.index)
        if entry is None or link in entry["used"]:
            entry = {"links": self.nvlink_error_fields(gpu), "used": set()}
            self._error_fields[gpu.index] = entry
        entry["used"].add(link)
        return entry["links"].get(link, {})

    def p2p_nvlink_status(self, first: Gpu, second: Gpu) -> Optional[str]:
        """P2P over NVLink between two GPUs: 'ok', or why not ('not_supported', ...)."""
        where = "%s and %s" % (first.label, second.label)
        status = self.optional(where, "nvmlDeviceGetP2PStatus", first.handle, second.handle, P2P_CAPS_INDEX_NVLINK)
        return decode_p2p_status(status)

    def topology_level(self, first: Gpu, second: Gpu) -> Optional[str]:
        where = "%s and %s" % (first.label, second.label)
        return decode_topology_level(
            self.optional(where, "nvmlDeviceGetTopologyCommonAncestor", first.handle, second.handle))

    # ---- thermal ----------------------------------------------------------------------------

    def field_value(self, gpu: Gpu, field_id: int, field_name: str) -> Optional[Any]:
        """One NVML field; NVML reports NotSupported per field, inside a call that succeeds."""
        values = self.optional(gpu.label, "nvmlDeviceGetFieldValues", gpu.handle, [field_id])
        if not values:
            return None
        field = values[0]
        status = int(field.nvmlReturn)
        if status in FIELD_UNAVAILABLE_STATUSES:
            return None
        if status != 0:
            error = pynvml.NVMLError(status)
            raise NvmlError("NVML nvmlDeviceGetFieldValues(%s) failed on %s: %s"
                            % (field_name, gpu.label, _nvml_text(error)))
        return field_number(field)

    def memory_temperature(self, gpu: Gpu) -> Optional[int]:
        """NVML_FI_DEV_MEMORY_TEMP in degrees C, or None where the GPU does not expose it (GeForce GDDR6X)."""
        value = self.field_value(gpu, FI_DEV_MEMORY_TEMP, "NVML_FI_DEV_MEMORY_TEMP")
        return None if value is None else int(round(value))

    def clock_event_reasons(self, gpu: Gpu) -> Optional[List[str]]:
        mask = self.optional(gpu.label, "nvmlDeviceGetCurrentClocksEventReasons", gpu.handle)
        if mask is None:  # drivers and pynvml before the rename (535) only have the throttle-reasons call
            mask = self.optional(gpu.label, "nvmlDeviceGetCurrentClocksThrottleReasons", gpu.handle)
        return decode_clock_event_reasons(mask)


# Why NVML refused a power limit, by pynvml error class: (problem code, what the operator does).
POWER_LIMIT_REFUSALS = {
    "NVMLError_NoPermission": ("power_limit_no_permission", "run the task as root (become: true)"),
    "NVMLError_NotSupported": ("power_limit_not_supported",
                               "this card or driver does not let its power limit be set: leave the limit null"),
    "NVMLError_InvalidArgument": ("power_limit_out_of_range",
                                  "choose a value within the card's range (gpu_facts: power_min_limit_w to "
                                  "power_max_limit_w)"),
}


def power_readings(session: "NvmlSession", gpu: Gpu) -> Dict[str, Optional[float]]:
    """A GPU's power draw and limits in W; None where the card does not expose one.

    `limit_w` is the limit management software set (what nvmlDeviceSetPowerManagementLimit changes),
    `enforced_limit_w` the one in force (the lowest of every limit that applies).
    """
    where = gpu.label
    constraints = session.optional(where, "nvmlDeviceGetPowerManagementLimitConstraints", gpu.handle)
    return {
        "draw_w": milliwatts_to_watts(session.optional(where, "nvmlDeviceGetPowerUsage", gpu.handle)),
        "limit_w": milliwatts_to_watts(session.optional(where, "nvmlDeviceGetPowerManagementLimit", gpu.handle)),
        "enforced_limit_w": milliwatts_to_watts(session.optional(where, "nvmlDeviceGetEnforcedPowerLimit",
                                                                 gpu.handle)),
        "min_limit_w": milliwatts_to_watts(constraints[0]) if constraints else None,
        "max_limit_w": milliwatts_to_watts(constraints[1]) if constraints else None,
        "default_limit_w": milliwatts_to_watts(session.optional(where, "nvmlDeviceGetPowerManagementDefaultLimit",
                                                                gpu.handle)),
    }


def set_power_limit(gpu: Gpu, milliwatts: int) -> None:
    """nvmlDeviceSetPowerManagementLimit; a refusal is an NvmlError whose code says why (POWER_LIMIT_REFUSALS).

    The v1 call on purpose: pynvml's nvmlDeviceSetPowerManagementLimit_v2 wrapper (nvidia-ml-py 13.615)
    ignores the driver's answer and always returns success.
    """
    try:
        pynvml.nvmlDeviceSetPowerManagementLimit(gpu.handle, int(milliwatts))
    except pynvml.NVMLError as error:
        kind = type(error).__name__
        code, fix = POWER_LIMIT_REFUSALS.get(kind, ("nvml_call_failed", None))
        raise NvmlError("NVML refused power limit %.1f W on %s (%s: %s)%s"
                        % (milliwatts / 1000.0, gpu.label, kind, _nvml_text(error), ": " + fix if fix else ""),
                        code=code, fix=fix) from error


def wait_until(check: Callable[[], Tuple[bool, Any]], timeout: float, interval: float,
               sleep: Callable[[float], Any] = time.sleep,
               monotonic: Callable[[], float] = time.monotonic) -> Tuple[bool, Any, float]:
    """Call check() until it returns (done, value) with done true, or the timeout passes.

    Returns (done, value, waited_seconds); value is the last check's. The clock and sleep are
    parameters so tests can run a ten-minute wait in no time.
    """
    started = monotonic()
    while True:
        done, value = check()
        waited = monotonic() - started
        if done or waited >= timeout:
            return done, value, waited
        sleep(min(interval, max(timeout - waited, 0)))
