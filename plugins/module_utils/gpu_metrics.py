# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the GPU exporter reads through NVML and how it renders it in Prometheus' text format.

Two steps, each a plain function: ``read_host`` turns one open NvmlSession into a snapshot (a dict of
readings, None where the GPU does not expose a value), and ``render_metrics`` turns a snapshot plus the
exporter's settings into the exposition text. A value the GPU hides is left out of the output, never
written as 0, so an alert on it stays silent instead of reading a false "cold" or "idle".

The metric names are a contract with the monitoring role's rules and dashboard: change them only together.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ansible_collections.llmfleet.workstation.plugins.module_utils.nvml import (
    CLOCK_EVENT_REASONS,
    NVLINK_ERROR_COUNTERS,
    NVLINK_MAX_LINKS,
    TEMPERATURE_GPU,
    Gpu,
    NvmlError,
    NvmlSession,
    pynvml,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Every family the exporter can publish: name -> (type, help). Rendered in this order.
FAMILIES = (
    ("llmfleet_gpu_info", "gauge", "GPU identity; always 1."),
    ("llmfleet_gpu_temperature_celsius", "gauge",
     "Temperature by sensor (core, memory); the memory series is absent where the card does not expose it."),
    ("llmfleet_gpu_temperature_limit_celsius", "gauge",
     "The gates' temperature limits (gpu_gates_max_core_temp_c, gpu_gates_max_memory_temp_c)."),
    ("llmfleet_gpu_clock_event_active", "gauge", "1 while this clock-event (throttle) reason is active."),
    ("llmfleet_gpu_power_draw_watts", "gauge", "Power draw, W."),
    ("llmfleet_gpu_power_limit_watts", "gauge", "Enforced power limit, W."),
    ("llmfleet_gpu_power_limit_min_watts", "gauge", "Lowest power limit the card accepts, W."),
    ("llmfleet_gpu_power_limit_max_watts", "gauge", "Highest power limit the card accepts, W."),
    ("llmfleet_gpu_power_limit_default_watts", "gauge", "The card's default power limit, W."),
    ("llmfleet_gpu_memory_used_bytes", "gauge", "GPU memory allocated, bytes."),
    ("llmfleet_gpu_memory_total_bytes", "gauge", "GPU memory, bytes."),
    ("llmfleet_gpu_pcie_link_generation", "gauge", "PCIe link generation, now (current) and at most (max)."),
    ("llmfleet_gpu_pcie_link_width", "gauge", "PCIe lanes, now (current) and at most (max)."),
    ("llmfleet_nvlink_link_up", "gauge", "1 for an active NVLink link; only links the GPU has."),
    ("llmfleet_nvlink_link_expected", "gauge",
     "1 where the host's profile requires NVLink (gpu_gates_nvlink_required)."),
    ("llmfleet_nvlink_errors_total", "counter", "NVLink error counters by link and counter."),
    ("llmfleet_exporter_nvml_up", "gauge", "1 when the last scrape read NVML without an error."),
    ("llmfleet_exporter_scrape_duration_seconds", "gauge", "Time the last scrape spent reading NVML, s."),
)
FAMILY_TYPES = dict((name, kind) for name, kind, _help in FAMILIES)

Sample = Tuple[str, Dict[str, str], float]


# ---- reading ------------------------------------------------------------------------------


def read_memory(session: NvmlSession, gpu: Gpu) -> Tuple[Optional[int], Optional[int]]:
    """(used, total) bytes. The v2 struct's `used` leaves out what the driver reserves, as nvidia-smi does;
    drivers or pynvml releases without v2 give the v1 figure."""
    memory = None
    version = getattr(pynvml, "nvmlMemory_v2", None)
    if version is not None:
        try:
            memory = session.optional(gpu.label, "nvmlDeviceGetMemoryInfo", gpu.handle, version)
        except (NvmlError, TypeError):  # a driver without the v2 struct: read v1 below
            memory = None
    if memory is None:
        memory = session.optional(gpu.label, "nvmlDeviceGetMemoryInfo", gpu.handle)
    if memory is None:
        return None, None
    return int(memory.used), int(memory.total)


def read_nvlink(session: NvmlSession, gpu: Gpu) -> List[Dict[str, Any]]:
    """Each link the GPU has, with its state and error counters; [] without NVLink.

    The link states double as the link count (NVML answers InvalidArgument past the last link, NotSupported
    on a GPU without NVLink). Links 0-11's counters come from one field call per GPU; only counters the
    driver does not serve that way are read link by link.
    """
    states = []  # type: List[bool]
    for link in range(NVLINK_MAX_LINKS):
        state = session.optional(gpu.label, "nvmlDeviceGetNvLinkState", gpu.handle, link,
                                 also_unavailable=("NVMLError_InvalidArgument",))
        if state is None:
            break
        states.append(state == 1)
    if not states:
        return []
    batched = session.nvlink_error_fields(gpu)
    links = []
    for link, active in enumerate(states):
        errors = dict(batched.get(link, {}))
        for counter_name, counter in NVLINK_ERROR_COUNTERS:
            if counter_name not in errors:
                value = session.optional("%s link %d" % (gpu.label, link), "nvmlDeviceGetNvLinkErrorCounter",
                                         gpu.handle, link, counter,
                                         also_unavailable=("NVMLError_NotFound", "NVMLError_InvalidArgument"))
                if value is not None:
                    errors[counter_name] = int(value)
        links.append({"link": link, "active": active, "errors": errors})
    return links


def read_gpu(session: NvmlSession, gpu: Gpu) -> Dict[str, Any]:
    """One GPU's readings; None for what it does not expose."""
    where = gpu.label
    constraints = session.optional(where, "nvmlDeviceGetPowerManagementLimitConstraints", gpu.handle)
    used, total = read_memory(session, gpu)
    return {
        "index": gpu.index,
        "uuid": gpu.uuid,
        "name": gpu.name,
        "pci_bus_id": gpu.pci_bus_id,
        "core_temp_c": session.optional(where, "nvmlDeviceGetTemperature", gpu.handle, TEMPERATURE_GPU),
        "memory_temp_c": session.memory_temperature(gpu),
        "clock_event_reasons": session.clock_event_reasons(gpu),
        "power_draw_mw": session.optional(where, "nvmlDeviceGetPowerUsage", gpu.handle),
        "power_limit_mw": session.optional(where, "nvmlDeviceGetEnforcedPowerLimit", gpu.handle),
        "power_min_limit_mw": constraints[0] if constraints else None,
        "power_max_limit_mw": constraints[1] if constraints else None,
        "power_default_limit_mw": session.optional(where, "nvmlDeviceGetPowerManagementDefaultLimit", gpu.handle),
        "memory_used_bytes": used,
        "memory_total_bytes": total,
        "pcie_current_generation": session.optional(where, "nvmlDeviceGetCurrPcieLinkGeneration", gpu.handle),
        "pcie_max_generation": session.optional(where, "nvmlDeviceGetMaxPcieLinkGeneration", gpu.handle),
        "pcie_current_width": session.optional(where, "nvmlDeviceGetCurrPcieLinkWidth", gpu.handle),
        "pcie_max_width": session.optional(where, "nvmlDeviceGetMaxPcieLinkWidth", gpu.handle),
        "nvlink": read_nvlink(session, gpu),
    }


def read_host(session: NvmlSession, gpus: Iterable[Gpu]) -> Dict[str, Any]:
    """The snapshot render_metrics takes: the driver and every GPU's readings."""
    return {"driver_version": session.driver_version(), "gpus": [read_gpu(session, gpu) for gpu in gpus]}


# ---- rendering ----------------------------------------------------------------------------


def escape_label(value: Any) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53):
        return str(int(value))
    return repr(float(value))


def milliwatts(value: Optional[int]) -> Optional[float]:
    return None if value is None else value / 1000.0


def gpu_samples(gpu: Dict[str, Any], driver_version: str, settings: Dict[str, Any]) -> List[Sample]:
    """Every series of one GPU; readings that are None give no series."""
    index = str(gpu["index"])
    label = {"gpu": index}
    samples = [("llmfleet_gpu_info", {"gpu": index, "uuid": gpu["uuid"], "name": gpu["name"],
                                      "pci_bus_id": gpu["pci_bus_id"], "driver_version": driver_version}, 1)]
    for sensor, value in (("core", gpu["core_temp_c"]), ("memory", gpu["memory_temp_c"])):
        samples.append(("llmfleet_gpu_temperature_celsius", {"gpu": index, "sensor": sensor}, value))
    for sensor, key in (("core", "core_temp_limit_c"), ("memory", "memory_temp_limit_c")):
        samples.append(("llmfleet_gpu_temperature_limit_celsius", {"gpu": index, "sensor": sensor},
                        settings.get(key)))
    reasons = gpu["clock_event_reasons"]
    if reasons is not None:
        for _bit, reason in CLOCK_EVENT_REASONS:
            samples.append(("llmfleet_gpu_clock_event_active", {"gpu": index, "reason": reason}, reason in reasons))
    for name, key in (("llmfleet_gpu_power_draw_watts", "power_draw_mw"),
                      ("llmfleet_gpu_power_limit_watts", "power_limit_mw"),
                      ("llmfleet_gpu_power_limit_min_watts", "power_min_limit_mw"),
                      ("llmfleet_gpu_power_limit_max_watts", "power_max_limit_mw"),
                      ("llmfleet_gpu_power_limit_default_watts", "power_default_limit_mw")):
        samples.append((name, label, milliwatts(gpu[key])))
    samples.append(("llmfleet_gpu_memory_used_bytes", label, gpu["memory_used_bytes"]))
    samples.append(("llmfleet_gpu_memory_total_bytes", label, gpu["memory_total_bytes"]))
    for kind in ("current", "max"):
        samples.append(("llmfleet_gpu_pcie_link_generation", {"gpu": index, "kind": kind},
                        gpu["pcie_%s_generation" % kind]))
        samples.append(("llmfleet_gpu_pcie_link_width", {"gpu": index, "kind": kind}, gpu["pcie_%s_width" % kind]))
    for link in gpu["nvlink"]:
        link_labels = {"gpu": index, "link": str(link["link"])}
        samples.append(("llmfleet_nvlink_link_up", link_labels, link["active"]))
        for counter_name, _counter in NVLINK_ERROR_COUNTERS:
            samples.append(("llmfleet_nvlink_errors_total", dict(link_labels, counter=counter_name),
                            link["errors"].get(counter_name)))
    samples.append(("llmfleet_nvlink_link_expected", label, bool(settings.get("nvlink_expected"))))
    return [sample for sample in samples if sample[2] is not None]


def render_samples(samples: Iterable[Sample]) -> str:
    """Samples grouped by family, each family once with HELP and TYPE, in FAMILIES order."""
    by_family = {}  # type: Dict[str, List[Sample]]
    for sample in samples:
        if sample[0] not in FAMILY_TYPES:
            raise ValueError("unknown metric family %s" % sample[0])
        by_family.setdefault(sample[0], []).append(sample)
    lines = []
    for name, kind, help_text in FAMILIES:
        if name not in by_family:
            continue
        lines.append("# HELP %s %s" % (name, help_text))
        lines.append("# TYPE %s %s" % (name, kind))
        for _name, labels, value in by_family[name]:
            text = ",".join('%s="%s"' % (key, escape_label(labels[key])) for key in labels)
            lines.append("%s%s %s" % (name, "{%s}" % text if text else "", format_value(value)))
    return "\n".join(lines) + "\n"


def render_metrics(snapshot: Optional[Dict[str, Any]], settings: Dict[str, Any], scrape_seconds: float) -> str:
    """The exposition text. A snapshot of None (NVML could not be read) publishes only the exporter's own
    series, with llmfleet_exporter_nvml_up 0, so Prometheus tells "NVML broken" from "exporter down"."""
    samples = []  # type: List[Sample]
    if snapshot is not None:
        for gpu in snapshot["gpus"]:
            samples.extend(gpu_samples(gpu, snapshot["driver_version"], settings))
    samples.append(("llmfleet_exporter_nvml_up", {}, snapshot is not None))
    samples.append(("llmfleet_exporter_scrape_duration_seconds", {}, round(scrape_seconds, 6)))
    return render_samples(samples)


def parse_metrics(text: str) -> List[Sample]:
    """The samples of exposition text as render_samples writes it (no timestamps), for the tests and the
    hardware check: [(name, labels, value)]."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        labels = {}  # type: Dict[str, str]
        name = series
        if "{" in series:
            name, body = series[:-1].split("{", 1)
            position = 0
            while position < len(body):
                key_end = body.index('="', position)
                key = body[position:key_end]
                cursor = key_end + 2
                chars = []
                while body[cursor] != '"':
                    if body[cursor] == "\\":
                        cursor += 1
                        chars.append({"n": "\n"}.get(body[cursor], body[cursor]))
                    else:
                        chars.append(body[cursor])
                    cursor += 1
                labels[key] = "".join(chars)
                position = cursor + 1
                if position < len(body) and body[position] == ",":
                    position += 1
        samples.append((name, labels, float(value)))
    return samples


class MetricsSource:
    """One NVML session, opened once and reused for every scrape; closed after an NVML error and opened again
    on the next scrape, so a driver reload or a GPU that fell off the bus heals without a restart.

    `log` receives one line per failure (the exporter writes it to the journal); `session_factory` and `clock`
    are parameters so tests can drive it without NVML.
    """

    def __init__(self, settings: Dict[str, Any], log: Callable[[str], Any],
                 session_factory: Callable[[], NvmlSession] = NvmlSession,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.log = log
        self.session_factory = session_factory
        self.clock = clock
        self.session = None  # type: Optional[NvmlSession]
        self.gpus = []  # type: List[Gpu]
        self.last_error = None  # type: Optional[str]

    def open(self) -> None:
        session = self.session_factory()
        session.__enter__()
        try:
            self.gpus = session.gpus()
        except NvmlError:
            session.__exit__(None, None, None)
            raise
        self.session = session

    def close(self) -> None:
        if self.session is not None:
            self.session.__exit__(None, None, None)
            self.session = None
            self.gpus = []

    def scrape(self) -> str:
        """The exposition text of one scrape; never raises for an NVML failure."""
        started = self.clock()
        snapshot = None
        try:
            if self.session is None:
                self.open()
            snapshot = read_host(self.session, self.gpus)
        except NvmlError as error:
            self.close()
            message = str(error)
            if message != self.last_error:  # one line per new failure, not one per scrape
                self.log("NVML read failed, reopening on the next scrape: %s" % message)
            self.last_error = message
        else:
            if self.last_error is not None:
                self.log("NVML read again after: %s" % self.last_error)
            self.last_error = None
        return render_metrics(snapshot, self.settings, self.clock() - started)
