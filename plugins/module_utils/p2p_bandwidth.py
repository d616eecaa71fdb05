# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The P2P bandwidth gate's logic: what each GPU pair should carry, the measurement, and the verdict.

Three steps, each testable without Ansible, CUDA or a GPU:

1. ``read_topology`` reads from NVML what the path between each pair is (NVLink links and their version, or
   PCIe generation and width) and ``expected_pair`` turns it into the figure a healthy path carries per
   direction, and a floor below it;
2. ``run_measurement`` runs ``p2p_measure`` (a self-contained script, see there why it is a child process) under
   the engine venv's interpreter and reads its JSON, or says why nothing was measured;
3. ``evaluate`` joins both into facts, problems (code, GPU or pair, value, limit, fix) and notes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.llmfleet.workstation.plugins.module_utils import p2p_measure
from ansible_collections.llmfleet.workstation.plugins.module_utils.nvml import (
    decode_nvlink_version,
    decode_remote_device_type,
    describe_gpu,
    link_bidirectional_gbps,
    to_text,
)

# What a PCIe x16 link carries per direction in practice, decimal GB/s, by generation: about 80 % of the
# signalling rate (15.75, 31.5, 63 GB/s for 3.0, 4.0, 5.0), the rest is protocol overhead.
PCIE_X16_PRACTICAL_GBPS = {1: 3.0, 2: 6.0, 3: 12.0, 4: 25.0, 5: 50.0}
# Floor = this fraction of the expected figure. Healthy NVLink copies reach about 90 % of the link rate (two
# bridged RTX 3090s move about 52 of 56.25 GB/s each way) and PCIe copies the practical figure above; 70 %
# leaves room for clocks that are still ramping and for noise, and stays above what the slower path carries
# when traffic takes it instead (an RTX 3090 pair: NVLink floor 39.4 GB/s, PCIe 4.0 x16 about 25 GB/s).
DEFAULT_FLOOR_FRACTION = 0.7
# Not measured for one of these reasons: reported, failing only with require_measurement. Other reasons
# (a hang, a crash of the measurement) are faults and always fail.
NOT_MEASURED_REASONS = {
    "python_missing": "the interpreter does not exist",
    "torch_missing": "torch is not installed there",
    "torch_unusable": "torch does not load",
    "cuda_unavailable": "CUDA is not available to torch",
    "no_gpu": "torch sees no GPU",
    "insufficient_memory": "not enough free GPU memory",
    "gpu_not_measured": "one of its GPUs was not measured",
    "not_visible_to_cuda": "torch does not see this GPU (CUDA_VISIBLE_DEVICES?)",
}
NVLINK_FIX = (
    "NVLink is up but traffic crosses PCIe or another slower path: check P2P is enabled (nvidia-smi topo -p2p n "
    "shows OK for this pair), the bridge or switch links (nvidia-smi nvlink --status), that NCCL_P2P_DISABLE and "
    "CUDA_VISIBLE_DEVICES are not set where this runs, and the IOMMU/ACS settings (iommu=pt, ACS off on the "
    "PCIe switches between the GPUs)"
)
PCIE_FIX = (
    "check each GPU's PCIe link under load (nvidia-smi -q -d PCIE: generation and width; gpu_facts reports a "
    "narrower link), that both slots are wired x16 to the CPU rather than through the chipset, the BIOS PCIe "
    "generation setting, and the IOMMU/ACS settings (iommu=pt, ACS off on the PCIe switches between the GPUs)"
)
GPU_COPY_FIX = (
    "a copy within one GPU this slow points at low memory clocks or a busy GPU: check nvidia-smi -q -d "
    "CLOCK,PERFORMANCE for throttling and that no other process is using the GPU"
)
DATA_FIX = (
    "copies arrived corrupted: do not serve from this host; P2P through an IOMMU or a PCIe switch with ACS "
    "enabled is the usual cause (iommu=pt, ACS off), otherwise a failing GPU or riser (check dmesg for Xid errors)"
)
HANG_FIX = (
    "a copy between GPUs that never finishes is the usual sign of P2P through an IOMMU or ACS-enabled PCIe "
    "switch: set iommu=pt (or disable the IOMMU) and ACS on the switches, check dmesg for Xid errors, and try "
    "NCCL_P2P_DISABLE=1 for the engine meanwhile"
)


# ---- what each pair should carry ---------------------------------------------------------------------


def gb(value: float) -> str:
    """A GB/s figure as a message prints it: 56.25, 39.38, 450, 24.3."""
    return ("%.2f" % value).rstrip("0").rstrip(".")


def _bus(bus_id: Optional[str]) -> str:
    return (bus_id or "").upper()


def read_gpu_path(session: Any, gpu: Any) -> Dict[str, Any]:
    """What decides a GPU's copy bandwidth: its PCIe link and its active NVLink links, with their far ends.

    Reads only what the floor needs (no error counters, which are the slow part of an NVLink read).
    """
    facts = gpu.identity()
    where = gpu.label
    facts.update(
        pcie_max_generation=session.optional(where, "nvmlDeviceGetMaxPcieLinkGeneration", gpu.handle),
        pcie_current_width=session.optional(where, "nvmlDeviceGetCurrPcieLinkWidth", gpu.handle),
        nvlink_link_count=session.nvlink_link_count(gpu) or 0,
        nvlink_version=None,
        nvlink_links=[],
    )
    for link in range(facts["nvlink_link_count"]):
        link_where = "%s link %d" % (where, link)
        if session.call(link_where, "nvmlDeviceGetNvLinkState", gpu.handle, link) != 1:
            continue
        unavailable = ("NVMLError_NotFound",)
        version = session.optional(link_where, "nvmlDeviceGetNvLinkVersion", gpu.handle, link,
                                   also_unavailable=unavailable)
        remote = session.optional(link_where, "nvmlDeviceGetNvLinkRemotePciInfo", gpu.handle, link,
                                  also_unavailable=unavailable)
        remote_type = session.optional(link_where, "nvmlDeviceGetNvLinkRemoteDeviceType", gpu.handle, link,
                                       also_unavailable=unavailable)
        if facts["nvlink_version"] is None and version is not None:
            facts["nvlink_version"] = version
        facts["nvlink_links"].append({
            "remote_pci_bus_id": to_text(remote.busId) if remote is not None else None,
            "remote_device_type": decode_remote_device_type(remote_type),
        })
    facts["nvlink_version"] = decode_nvlink_version(facts["nvlink_version"])
    return facts


def read_topology(session: Any) -> Dict[str, Any]:
    """Every GPU's path facts and every pair's P2P-over-NVLink status, in one NVML session."""
    gpus = session.gpus()
    facts = [read_gpu_path(session, gpu) for gpu in gpus]
    p2p = {}
    for position, first in enumerate(gpus):
        for second in gpus[position + 1:]:
            p2p[(first.index, second.index)] = session.p2p_nvlink_status(first, second)
    return {"gpus": facts, "p2p_nvlink": p2p}


def nvlink_links_between(first: Dict[str, Any], second: Dict[str, Any]) -> Tuple[str, int]:
    """Active links that carry traffic between two GPUs, and how: ('direct', n), ('switch', n) or ('none', 0).

    A bridge joins two GPUs directly (each link's far end is the other GPU); on NVSwitch systems every GPU's
    links end at switches, and a pair gets the smaller of the two GPUs' link counts.
    """
    direct = [link for link in first["nvlink_links"]
              if link["remote_device_type"] == "gpu" and _bus(link["remote_pci_bus_id"]) == _bus(second["pci_bus_id"])]
    if direct:
        back = [link for link in second["nvlink_links"]
                if link["remote_device_type"] == "gpu" and _bus(link["remote_pci_bus_id"]) == _bus(first["pci_bus_id"])]
        return "direct", min(len(direct), len(back)) if back else len(direct)
    first_switch = [link for link in first["nvlink_links"] if link["remote_device_type"] == "switch"]
    second_switch = [link for link in second["nvlink_links"] if link["remote_device_type"] == "switch"]
    if first_switch and second_switch:
        return "switch", min(len(first_switch), len(second_switch))
    return "none", 0


def pcie_gbps(gpu: Dict[str, Any]) -> Optional[float]:
    """What one GPU's PCIe link carries per direction in practice: the x16 figure scaled by the lanes.

    The generation is the highest the GPU and slot allow (idle GPUs drop to a lower one, and the copies raise
    it again); the width is the negotiated one, which does not drop when idle.
    """
    per_x16 = PCIE_X16_PRACTICAL_GBPS.get(gpu.get("pcie_max_generation"))
    width = gpu.get("pcie_current_width")
    if per_x16 is None or not width:
        return None
    return round(per_x16 * width / 16.0, 3)


def expected_pair(first: Dict[str, Any], second: Dict[str, Any]) -> Dict[str, Any]:
    """The path a pair's copies should take and what it carries per direction (GB/s), with its description."""
    kind, links = nvlink_links_between(first, second)
    if links:
        version = first["nvlink_version"] or second["nvlink_version"]
        per_link = link_bidirectional_gbps(version, max(first["nvlink_link_count"], second["nvlink_link_count"]),
                                           first["name"])
        expected = round(per_link / 2.0 * links, 3) if per_link else None
        return {
            "path": "nvlink",
            "nvlink_links": links,
            "expected_gbps": expected,
            "expected_source": "NVLink %s, %d link%s %s, %s GB/s per link per direction" % (
                version or "of unknown version", links, "" if links == 1 else "s",
                "between the GPUs" if kind == "direct" else "to NVSwitch on each GPU",
                "%.2f" % (per_link / 2.0) if per_link else "no published figure"),
        }
    figures = [pcie_gbps(first), pcie_gbps(second)]
    expected = min(figures) if None not in figures else None
    slower = first if figures[0] == expected else second
    return {
        "path": "pcie",
        "nvlink_links": 0,
        "expected_gbps": expected,
        "expected_source": ("PCIe %s x%s, about %s GB/s per direction in practice" % (
            slower.get("pcie_max_generation"), slower.get("pcie_current_width"), expected) if expected is not None
            else "PCIe generation or width unknown"),
    }


def floor_for(expected: Dict[str, Any], fraction: float,
              min_pair_gbps: Optional[float]) -> Tuple[Optional[float], str]:
    """The floor each direction of a pair must reach, and where it comes from."""
    if min_pair_gbps is not None:
        return float(min_pair_gbps), "min_pair_gbps"
    if expected["expected_gbps"] is None:
        return None, "none: %s" % expected["expected_source"]
    return round(expected["expected_gbps"] * fraction, 2), "%d%% of %s" % (round(fraction * 100),
                                                                           expected["expected_source"])


# ---- the measurement ------------------------------------------------------------------------------------


def measurement_source() -> str:
    """p2p_measure's own source, from wherever the module runs (Ansible ships module_utils inside a zip)."""
    loader = getattr(p2p_measure, "__loader__", None)
    source = loader.get_source(p2p_measure.__name__) if loader is not None else None
    if source is None:
        with open(p2p_measure.__file__, "r") as handle:
            source = handle.read()
    return to_text(source)


def not_measured(reason: str, detail: str) -> Dict[str, Any]:
    return p2p_measure.not_measured(reason, detail)


def _last_line(text: Any) -> str:
    lines = [line for line in to_text(text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def parse_output(stdout: str) -> Optional[Dict[str, Any]]:
    """The result line of p2p_measure's stdout (torch or CUDA may print before it), or None."""
    for line in reversed(to_text(stdout or "").splitlines()):
        if line.startswith(p2p_measure.RESULT_MARKER + " "):
            try:
                return json.loads(line[len(p2p_measure.RESULT_MARKER) + 1:])
            except ValueError:
                return None
    return None


def run_measurement(python: str, size_mib: int, repetitions: int, timeout: float, *, pairs: bool = True,
                    runner: Optional[Callable[..., Any]] = None,
                    environ: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Run p2p_measure under `python` (script on stdin) and return its result, or why there is none.

    `runner` stands in for subprocess.run in tests.
    """
    runner = runner or subprocess.run
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        return not_measured("python_missing", "%s does not exist or is not executable" % python)
    env = dict(os.environ if environ is None else environ)
    # CUDA numbers GPUs fastest first unless told otherwise; NVML and nvidia-smi number them by PCI address.
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    command = [python, "-", "--size-mib", str(size_mib), "--repetitions", str(repetitions)]
    if not pairs:
        command.append("--no-pairs")
    try:
        completed = runner(command, input=measurement_source(), capture_output=True, text=True, timeout=timeout,
                           env=env, check=False)
    except subprocess.TimeoutExpired as error:
        return not_measured("timeout", "no result after %s s; it was at: %s" % (
            timeout, _last_line(error.stderr) or "start-up (importing torch)"))
    except OSError as error:
        return not_measured("python_missing", "%s cannot be run: %s" % (python, error))
    result = parse_output(completed.stdout)
    if result is None:
        return not_measured("measurement_error", "%s exited with status %s without a result: %s" % (
            python, completed.returncode, _last_line(completed.stderr) or _last_line(completed.stdout) or "no output"))
    return result


# ---- the verdict -----------------------------------------------------------------------------------------


def _match_cuda_gpus(nvml_gpus: List[Dict[str, Any]], cuda_gpus: List[Dict[str, Any]]) -> Dict[int, Dict[str, Any]]:
    """NVML index -> torch's entry for the same GPU: by PCI address, else by UUID, else by position."""
    matched = {}
    by_bus = {_bus(gpu.get("pci_bus_id")): gpu for gpu in cuda_gpus if gpu.get("pci_bus_id")}
    by_uuid = {_uuid(gpu.get("uuid")): gpu for gpu in cuda_gpus if gpu.get("uuid")}
    for gpu in nvml_gpus:
        found = by_bus.get(_bus(gpu["pci_bus_id"])) or by_uuid.get(_uuid(gpu["uuid"]))
        if found is not None:
            matched[gpu["index"]] = found
    if not matched and len(cuda_gpus) == len(nvml_gpus):
        # A torch that gives neither address nor UUID: the child runs with CUDA_DEVICE_ORDER=PCI_BUS_ID, which
        # numbers GPUs as NVML does.
        matched = {gpu["index"]: cuda for gpu, cuda in zip(nvml_gpus, cuda_gpus)}
    return matched


def _uuid(value: Optional[str]) -> str:
    text = (value or "").lower()
    return text[4:] if text.startswith("gpu-") else text


def _direction(names: Dict[int, int], entry: Dict[str, Any]) -> Dict[str, Any]:
    source, destination = names[entry["source"]], names[entry["destination"]]
    return {
        "source": source,
        "destination": destination,
        "direction": "%d->%d" % (source, destination),
        "peer_access": entry.get("peer_access"),
        "unidirectional_gbps": entry.get("unidirectional_gbps"),
        "bidirectional_gbps": entry.get("bidirectional_gbps"),
    }


def gpu_facts(gpu: Dict[str, Any], cuda: Optional[Dict[str, Any]], measurement: Dict[str, Any]) -> Dict[str, Any]:
    facts = {key: gpu[key] for key in ("index", "name", "uuid", "pci_bus_id")}
    facts.update(status="not_measured", reason=measurement.get("reason"), detail=measurement.get("detail"),
                 copy_gbps=None, memory_traffic_gbps=None, data_ok=None, error=None)
    if measurement.get("measured"):
        if cuda is None:
            facts.update(reason="not_visible_to_cuda", detail=NOT_MEASURED_REASONS["not_visible_to_cuda"])
        else:
            facts.update(status=cuda["status"], reason=cuda.get("reason"), detail=cuda.get("detail"),
                         copy_gbps=cuda.get("copy_gbps"), memory_traffic_gbps=cuda.get("memory_traffic_gbps"),
                         data_ok=cuda.get("data_ok"), error=cuda.get("error"))
    return facts


def pair_facts(first: Dict[str, Any], second: Dict[str, Any], *, p2p_nvlink: Optional[str], params: Dict[str, Any],
               measurement: Dict[str, Any], cuda_pair: Optional[Dict[str, Any]],
               names: Dict[int, int]) -> Dict[str, Any]:
    expected = expected_pair(first, second)
    floor, floor_source = floor_for(expected, params["floor_fraction"], params.get("min_pair_gbps"))
    facts = {
        "gpus": [first["index"], second["index"]],
        "path": expected["path"],
        "nvlink_links": expected["nvlink_links"],
        "p2p_nvlink": p2p_nvlink,
        "expected_gbps": expected["expected_gbps"],
        "floor_gbps": floor,
        "floor_source": floor_source,
        "status": "not_measured",
        "reason": measurement.get("reason"),
        "detail": measurement.get("detail"),
        "peer_access": None,
        "directions": [],
        "bidirectional_total_gbps": None,
        "min_gbps": None,
        "data_ok": None,
        "error": None,
    }
    if not measurement.get("measured"):
        return facts
    if cuda_pair is None:
        facts.update(reason="not_visible_to_cuda", detail=NOT_MEASURED_REASONS["not_visible_to_cuda"])
        return facts
    directions = [_direction(names, entry) for entry in cuda_pair.get("directions", [])]
    figures = [value for direction in directions
               for value in (direction["unidirectional_gbps"], direction["bidirectional_gbps"]) if value is not None]
    access = [direction["peer_access"] for direction in directions]
    facts.update(
        status=cuda_pair["status"],
        reason=cuda_pair.get("reason"),
        detail=NOT_MEASURED_REASONS.get(cuda_pair.get("reason")) if cuda_pair.get("reason") else None,
        peer_access=None if not access or None in access else all(access),
        directions=directions,
        bidirectional_total_gbps=cuda_pair.get("bidirectional_total_gbps"),
        min_gbps=min(figures) if figures else None,
        data_ok=cuda_pair.get("data_ok"),
        error=cuda_pair.get("error"),
    )
    return facts


def _problem(code: str, message: str, fix: str, *, gpu: Optional[int] = None, pair: Optional[List[int]] = None,
             value: Optional[float] = None, limit: Optional[float] = None, **extra: Any) -> Dict[str, Any]:
    problem = {"code": code, "gpu": gpu, "pair": pair, "value": value, "limit": limit, "message": message, "fix": fix}
    problem.update(extra)
    return problem


def _pair_label(pair: Dict[str, Any], gpus: Dict[int, Dict[str, Any]]) -> str:
    return "%s and %s" % (describe_gpu(gpus[pair["gpus"][0]]), describe_gpu(gpus[pair["gpus"][1]]))


def pair_problems(pair: Dict[str, Any], gpus: Dict[int, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """What fails the gate for one measured pair: an error, corrupted data, or a figure below the floor."""
    label = _pair_label(pair, gpus)
    if pair["error"]:
        return [_problem("pair_copy_error", "copying between %s failed: %s" % (label, pair["error"]), HANG_FIX,
                         pair=pair["gpus"])]
    problems = []
    if pair["data_ok"] is False:
        problems.append(_problem("pair_data_mismatch", "copies between %s arrived different from what was sent"
                                 % label, DATA_FIX, pair=pair["gpus"]))
    floor = pair["floor_gbps"]
    if floor is None or pair["status"] != "measured":
        return problems
    slow = []
    for direction in pair["directions"]:
        for mode in ("unidirectional", "bidirectional"):
            value = direction["%s_gbps" % mode]
            if value is not None and value < floor:
                slow.append((value, direction["direction"], mode))
    if not slow:
        return problems
    value, direction, mode = min(slow)
    seen = ", ".join("%s %s %s" % (name, kind, gb(figure)) for figure, name, kind in sorted(slow))
    expected = ("expected about %s GB/s (%s)" % (gb(pair["expected_gbps"]), pair["floor_source"].split(" of ", 1)[-1])
                if pair["expected_gbps"] is not None else "floor from %s" % pair["floor_source"])
    fix = NVLINK_FIX if pair["path"] == "nvlink" else PCIE_FIX
    if pair["peer_access"] is False:
        fix = "CUDA cannot enable peer access between them (torch.cuda.can_device_access_peer is false), so " \
              "copies go through host memory; " + fix
    problems.append(_problem(
        "pair_below_floor",
        "%s copy at %s GB/s per direction (%s), floor %s GB/s, %s" % (label, gb(value), seen, gb(floor), expected),
        fix, pair=pair["gpus"], value=value, limit=floor, direction=direction, mode=mode,
        expected=pair["expected_gbps"], path=pair["path"]))
    return problems


def gpu_problems(gpu: Dict[str, Any], min_gpu_copy_gbps: Optional[float]) -> List[Dict[str, Any]]:
    label = describe_gpu(gpu)
    if gpu["error"]:
        return [_problem("gpu_copy_error", "copying within %s failed: %s" % (label, gpu["error"]),
                         "check dmesg for Xid errors and nvidia-smi for the GPU's state", gpu=gpu["index"])]
    problems = []
    if gpu["data_ok"] is False:
        problems.append(_problem("gpu_data_mismatch", "a copy within %s arrived different from what was sent"
                                 % label, DATA_FIX, gpu=gpu["index"]))
    if min_gpu_copy_gbps is not None and gpu["copy_gbps"] is not None and gpu["copy_gbps"] < min_gpu_copy_gbps:
        problems.append(_problem(
            "gpu_copy_below_floor", "%s copies within itself at %s GB/s, floor %s GB/s (bytes copied; the "
            "memory moves twice that, read and write)" % (label, gb(gpu["copy_gbps"]), gb(min_gpu_copy_gbps)),
            GPU_COPY_FIX, gpu=gpu["index"], value=gpu["copy_gbps"], limit=float(min_gpu_copy_gbps)))
    return problems


def not_measured_problems(facts: Dict[str, Any], gpus: Dict[int, Dict[str, Any]],
                          require_measurement: bool) -> List[Dict[str, Any]]:
    """A run that never produced figures: a fault (hang, crash), or, with require_measurement, an absence."""
    reason = facts["reason"]
    if reason == "timeout":
        return [_problem("measurement_timeout", "the measurement did not finish: %s" % facts["detail"], HANG_FIX)]
    if reason == "measurement_error":
        return [_problem("measurement_error", "the measurement failed: %s" % facts["detail"],
                         "run %s -c 'import torch; print(torch.cuda.device_count())' to see torch's own error, and "
                         "check dmesg for Xid errors" % facts["python"])]
    problems = []
    if not require_measurement:
        return problems
    if reason is not None:
        return [_problem("not_measured", "not measured: %s" % facts["detail"],
                         "install the engine (llmfleet.workstation.vllm) or point python at an interpreter with a "
                         "CUDA build of torch; or set require_measurement: false")]
    for gpu in facts["gpus"]:
        if gpu["status"] == "not_measured":
            problems.append(_problem("not_measured", "%s not measured: %s" % (describe_gpu(gpu), gpu["detail"]
                                                                              or gpu["reason"]),
                                     "stop what uses the GPU (the engine) during the measurement, or lower "
                                     "buffer_size_mib", gpu=gpu["index"]))
    for pair in facts["pairs"]:
        if pair["status"] == "not_measured":
            problems.append(_problem("not_measured", "%s not measured: %s" % (_pair_label(pair, gpus),
                                                                              pair["detail"] or pair["reason"]),
                                     "measure with every GPU visible and free", pair=pair["gpus"]))
    return problems


def evaluate(topology: Dict[str, Any], measurement: Dict[str, Any], params: Dict[str, Any],
             python: str) -> Dict[str, Any]:
    """Join NVML's view and the measurement into the module's result (facts, problems, notes, msg)."""
    nvml_gpus = topology["gpus"]
    by_index = {gpu["index"]: gpu for gpu in nvml_gpus}
    measured = bool(measurement.get("measured"))
    cuda_by_nvml = _match_cuda_gpus(nvml_gpus, measurement.get("gpus", [])) if measured else {}
    cuda_to_nvml = {cuda["index"]: index for index, cuda in cuda_by_nvml.items()}
    cuda_pairs = {}
    for entry in measurement.get("pairs", []):
        if all(index in cuda_to_nvml for index in entry["gpus"]):
            cuda_pairs[tuple(sorted(cuda_to_nvml[index] for index in entry["gpus"]))] = entry
    facts = {
        "measured": measured,
        "reason": measurement.get("reason"),
        "detail": measurement.get("detail"),
        "python": python,
        "torch_version": measurement.get("torch_version"),
        "cuda_version": measurement.get("cuda_version"),
        "buffer_bytes": measurement.get("size_bytes"),
        "repetitions": measurement.get("repetitions"),
        "elapsed_seconds": measurement.get("elapsed_seconds"),
        "units": "GB/s = 10^9 bytes copied per second; memory_traffic_gbps counts each copied byte twice "
                 "(read and write)",
        "gpus": [gpu_facts(gpu, cuda_by_nvml.get(gpu["index"]), measurement) for gpu in nvml_gpus],
        "pairs": [],
    }
    for position, first in enumerate(nvml_gpus):
        for second in nvml_gpus[position + 1:]:
            key = (first["index"], second["index"])
            facts["pairs"].append(pair_facts(first, second, p2p_nvlink=topology["p2p_nvlink"].get(key), params=params,
                                             measurement=measurement, cuda_pair=cuda_pairs.get(key),
                                             names=cuda_to_nvml))
    problems = not_measured_problems(facts, by_index, params["require_measurement"])
    for gpu in facts["gpus"]:
        problems.extend(gpu_problems(gpu, params.get("min_gpu_copy_gbps")))
    for pair in facts["pairs"]:
        problems.extend(pair_problems(pair, by_index))
    return {"facts": facts, "problems": problems, "notes": notes_for(facts)}


def notes_for(facts: Dict[str, Any]) -> List[str]:
    notes = []
    if not facts["measured"]:
        notes.append("Not measured: %s" % facts["detail"])
        return notes
    if len(facts["gpus"]) == 1:
        notes.append("Single GPU: no pair to measure; the copy within the GPU was measured")
    if not facts["gpus"]:
        notes.append("NVML reports no GPU")
    for pair in facts["pairs"]:
        if pair["status"] == "measured" and pair["floor_gbps"] is None:
            notes.append("GPU %d<->%d: no floor (%s); set min_pair_gbps to gate it" % (
                pair["gpus"][0], pair["gpus"][1], pair["floor_source"]))
    return notes


def summary(facts: Dict[str, Any]) -> str:
    """One line an operator reads: each pair's figures against its floor, and each GPU's own copy."""
    if not facts["measured"]:
        return "P2P bandwidth not measured: %s" % facts["detail"]
    parts = []
    for pair in facts["pairs"]:
        name = "GPU %d<->%d" % tuple(pair["gpus"])
        if pair["status"] != "measured":
            parts.append("%s not measured (%s)" % (name, pair["error"] or pair["detail"] or pair["reason"]))
            continue
        one_way = "/".join(gb(direction["unidirectional_gbps"]) for direction in pair["directions"])
        parts.append("%s %s GB/s one way, %s GB/s both ways at once (%s, floor %s)" % (
            name, one_way, gb(pair["bidirectional_total_gbps"] or 0.0), pair["path"],
            gb(pair["floor_gbps"]) if pair["floor_gbps"] is not None else "none"))
    within = ["GPU %d %s" % (gpu["index"], gb(gpu["copy_gbps"])) for gpu in facts["gpus"]
              if gpu["copy_gbps"] is not None]
    if within:
        parts.append("within each GPU (GB/s copied; memory traffic is twice that): %s" % ", ".join(within))
    return "; ".join(parts) or "nothing to measure"


def run(params: Dict[str, Any], session: Any, runner: Optional[Callable[..., Any]] = None,
        environ: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Read NVML, measure, judge: the module's result as a plain dict."""
    topology = read_topology(session)
    measurement = run_measurement(params["python"], params["buffer_size_mib"], params["repetitions"],
                                  params["timeout"], pairs=len(topology["gpus"]) > 1, runner=runner, environ=environ)
    judged = evaluate(topology, measurement, params, params["python"])
    facts, problems = judged["facts"], judged["problems"]
    result = {"changed": False, "ansible_facts": {"llmfleet_p2p_bandwidth": facts}, "problems": problems,
              "notes": judged["notes"]}
    if problems:
        result["failed"] = True
        result["msg"] = "P2P bandwidth gate failed: " + " | ".join(
            "%s. Fix: %s" % (problem["message"], problem["fix"]) for problem in problems)
    else:
        result["msg"] = summary(facts)
    return result
