"""Compare the gate modules' results with nvidia-smi's, figure by figure; write report.md.

Usage: compare_with_nvidia_smi.py OUT_DIR (as filled by check_gates.sh). Exit status 1 on a mismatch.
The parsers are plain functions so they can be unit-tested on captured nvidia-smi text
(tests/unit/hardware/test_compare_with_nvidia_smi.py).

Figures that must agree: GPU count, names, UUIDs, bus ids, memory, PCIe generation and width, persistence,
power limit, driver version, NVLink links (count, state link by link, active count), `topo -m` NVn, P2P over
NVLink against `topo -p2p n`; temperatures within TEMPERATURE_TOLERANCE_C since they move between reads.
Figures that move too much to compare (power draw, clock-event reasons, link speed) are listed as `info`.
"""

import datetime
import importlib.util
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Column order of the --query-gpu call in check_gates.sh (SMI_QUERY there).
SMI_COLUMNS = ("index", "name", "uuid", "pci_bus_id", "driver_version", "memory_total_mib", "core_temp_c",
               "memory_temp_c", "pcie_current_generation", "pcie_max_generation", "pcie_current_width",
               "pcie_max_width", "persistence_mode", "power_limit_w", "fan_speed_pct")
SMI_UNAVAILABLE = ("[N/A]", "N/A", "[Not Supported]", "Not Supported", "[Unknown Error]", "")
# Temperatures move between two reads a few seconds apart (an idle H200 on a shared host read 38 C, then 42 C,
# on 2026-12-01); everything else must match exactly.
TEMPERATURE_TOLERANCE_C = 5
# nvidia-smi underlines matrix headers with terminal escapes even when its output goes to a file.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def smi_value(text):
    """One nvidia-smi CSV cell (nounits) as a Python value; '[N/A]' and friends are None."""
    text = text.strip()
    if text in SMI_UNAVAILABLE:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"Enabled": True, "Disabled": False}.get(text, text)


def parse_query_csv(text, columns=SMI_COLUMNS):
    """Rows of `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` as dicts."""
    rows = []
    for line in text.strip().splitlines():
        if not line.strip():
            continue
        values = [smi_value(cell) for cell in line.split(",")]
        rows.append(dict(zip(columns, values)))
    return rows


def parse_clock_event_reasons(text):
    """`--query-gpu=index,clocks_event_reasons.active --format=csv,noheader` -> {index: bit mask or None}."""
    masks = {}
    for row in parse_query_csv(text, ("index", "mask")):
        mask = row.get("mask")
        masks[row["index"]] = int(mask, 16) if isinstance(mask, str) and mask.startswith("0x") else None
    return masks


def parse_nvlink_status(text):
    """`nvidia-smi nvlink --status` -> {gpu_index: {link: active}}."""
    return {index: {link: speed is not None for link, speed in links.items()}
            for index, links in parse_nvlink_speeds(text).items()}


def gpu_sections(text):
    """Split `nvidia-smi nvlink ...` output into {gpu_index: [the lines under its 'GPU N:' header]}."""
    sections, current = {}, None
    for line in text.splitlines():
        header = re.match(r"GPU (\d+):", line)
        if header:
            current = int(header.group(1))
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def parse_nvlink_speeds(text):
    """`nvidia-smi nvlink --status` -> {gpu_index: {link: GB/s each way, or None while inactive}}."""
    gpus = {}
    for index, lines in gpu_sections(text).items():
        gpus[index] = {}
        for line in lines:
            link = re.match(r"\s*Link (\d+):\s*(.*)$", line)
            if link:
                speed = re.match(r"([\d.]+)\s*GB/s", link.group(2).strip())
                inactive = "inactive" in link.group(2).lower()
                gpus[index][int(link.group(1))] = float(speed.group(1)) if speed and not inactive else None
    return gpus


def parse_nvlink_errors(text):
    """`nvidia-smi nvlink --errorcounters` -> {gpu_index: {link: {"replay": n, "recovery": n, "crc": n}}}."""
    gpus = {}
    for index, lines in gpu_sections(text).items():
        gpus[index] = {}
        for line in lines:
            counter = re.match(r"\s*Link (\d+): (.+?) Errors: (\d+)", line)
            if counter:
                name = counter.group(2).strip().lower().replace(" ", "_")
                gpus[index].setdefault(int(counter.group(1)), {})[name] = int(counter.group(3))
    return gpus


def parse_topology(text):
    """A GPU matrix (`nvidia-smi topo -m`, `topo -p2p n`) -> {(i, j): 'NV18' | 'PHB' | 'OK' | ...}."""
    lines = [ANSI_ESCAPE.sub("", line) for line in text.splitlines() if line.strip()]
    if not lines:
        return {}
    columns = lines[0].split()
    gpu_columns = [position for position, name in enumerate(columns) if re.fullmatch(r"GPU\d+", name)]
    pairs = {}
    for line in lines[1:]:
        cells = line.split()
        if not cells or not re.fullmatch(r"GPU\d+", cells[0]):
            continue
        row = int(cells[0][3:])
        for position in gpu_columns:
            column = int(columns[position][3:])
            if column != row and position + 1 < len(cells):
                pairs[(row, column)] = cells[position + 1]
    return pairs


def load_nvml_utils():
    """plugins/module_utils/nvml.py by path (it imports nothing from Ansible), for the reason names."""
    spec = importlib.util.spec_from_file_location("llmfleet_nvml", REPO / "plugins" / "module_utils" / "nvml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def module_result(out_dir, module):
    """The registered result run_gates.yml saved for one module."""
    return json.loads((out_dir / ("%s.json" % module)).read_text())


def read_optional(out_dir, name):
    path = out_dir / name
    return path.read_text() if path.exists() else ""


class Comparison:
    """Rows of field | module | nvidia-smi | match; `info` rows never count as mismatches."""

    def __init__(self):
        self.rows = []

    def add(self, field, module_value, smi_value_, tolerance=0):
        if isinstance(module_value, (int, float)) and isinstance(smi_value_, (int, float)) \
                and not isinstance(module_value, bool) and not isinstance(smi_value_, bool):
            match = abs(module_value - smi_value_) <= tolerance
        else:
            match = module_value == smi_value_
        self.rows.append((field, module_value, smi_value_, "yes" if match else "**NO**"))

    def info(self, field, module_value, smi_value_):
        self.rows.append((field, module_value, smi_value_, "info"))

    @property
    def compared(self):
        return [row for row in self.rows if row[3] != "info"]

    @property
    def mismatches(self):
        return [row for row in self.rows if row[3] == "**NO**"]

    def markdown(self):
        lines = ["| field | module | nvidia-smi | match |", "| --- | --- | --- | --- |"]
        for field, module_value, smi_value_, match in self.rows:
            lines.append("| %s | %s | %s | %s |" % (field, module_value, smi_value_, match))
        return "\n".join(lines)


def error_totals(links, names):
    """Sum each counter over links; None where no link exposes it."""
    totals = {}
    for name in names:
        values = [link[name] for link in links if link.get(name) is not None]
        totals[name] = sum(values) if values else None
    return totals


def compare_results(facts, nvlink, thermal, smi_rows, smi_links, smi_speeds, topology, p2p, reasons, power_draw,
                    decode_reasons=None, smi_errors=None):
    """Every comparison, from already-parsed inputs (so it can be tested without files or GPUs)."""
    table = Comparison()
    table.add("GPU count", facts["gpu_count"], len(smi_rows))
    smi_by_index = {row["index"]: row for row in smi_rows}
    for gpu, links, heat in zip(facts["gpus"], nvlink["gpus"], thermal["gpus"]):
        index = gpu["index"]
        smi = smi_by_index.get(index, {})
        prefix = "GPU %d " % index
        for key in ("name", "uuid", "pci_bus_id", "memory_total_mib", "pcie_current_generation",
                    "pcie_max_generation", "pcie_current_width", "pcie_max_width", "persistence_mode"):
            table.add(prefix + key, gpu[key], smi.get(key))
        table.add(prefix + "power_limit_w", gpu["power_limit_w"], smi.get("power_limit_w"), tolerance=1)
        table.add(prefix + "core_temp_c", heat["core_temp_c"], smi.get("core_temp_c"),
                  tolerance=TEMPERATURE_TOLERANCE_C)
        table.add(prefix + "memory_temp_c", heat["memory_temp_c"], smi.get("memory_temp_c"),
                  tolerance=TEMPERATURE_TOLERANCE_C)
        table.add(prefix + "fan_speed_pct", heat["fan_speed_pct"], smi.get("fan_speed_pct"), tolerance=5)
        smi_gpu_links = smi_links.get(index, {})
        table.add(prefix + "NVLink links", links["link_count"], len(smi_gpu_links))
        table.add(prefix + "NVLink active links", links["active_links"], sum(smi_gpu_links.values()))
        for link in links["links"]:
            table.add(prefix + "link %d active" % link["link"], link["active"], smi_gpu_links.get(link["link"]))
        speeds = [speed for speed in smi_speeds.get(index, {}).values() if speed]
        if speeds or links["estimated_bidirectional_bandwidth_gbps"]:
            table.info(prefix + "NVLink GB/s bidirectional (module: spec estimate; smi: 2 x signalling rate)",
                       links["estimated_bidirectional_bandwidth_gbps"], round(2 * sum(speeds), 1))
        if smi_errors and smi_errors.get(index):
            table.info(prefix + "NVLink error counters, sum over links",
                       error_totals([link["errors"] for link in links["links"]],
                                    ("replay", "recovery", "crc_flit", "crc_data")),
                       error_totals(list(smi_errors[index].values()), ("replay", "recovery", "crc")))
        if index in power_draw:
            table.info(prefix + "power_draw_w", heat["power_draw_w"], power_draw[index])
        if index in reasons:
            mask = reasons[index]
            smi_names = decode_reasons(mask) if decode_reasons and mask is not None else mask
            table.info(prefix + "clock_event_reasons", heat["clock_event_reasons"], smi_names)
    table.add("driver_version", facts["driver_version"], smi_rows[0]["driver_version"] if smi_rows else None)
    for pair in nvlink["pairs"]:
        first, second = pair["gpus"]
        active = nvlink["gpus"][first]["active_links"]
        expected = "NV%d" % active if active else topology.get((first, second))
        table.add("topo -m GPU%d-GPU%d" % (first, second), expected, topology.get((first, second)))
        if p2p:
            table.add("P2P over NVLink GPU%d-GPU%d ok" % (first, second), pair["p2p_nvlink"] == "ok",
                      p2p.get((first, second)) == "OK")
    return table


def compare(out_dir):
    facts = module_result(out_dir, "gpu_facts")["ansible_facts"]["llmfleet_gpu"]
    nvlink = module_result(out_dir, "nvlink_status")["ansible_facts"]["llmfleet_nvlink"]
    thermal = module_result(out_dir, "gpu_junction_temp")["ansible_facts"]["llmfleet_gpu_thermal"]
    status_text = read_optional(out_dir, "smi_nvlink_status.txt")
    power_rows = parse_query_csv(read_optional(out_dir, "smi_power.csv"), ("index", "power_draw_w"))
    try:
        decode_reasons = load_nvml_utils().decode_clock_event_reasons
    except (ImportError, OSError, SyntaxError):
        decode_reasons = None
    table = compare_results(
        facts, nvlink, thermal,
        smi_rows=parse_query_csv((out_dir / "smi_query.csv").read_text()),
        smi_links=parse_nvlink_status(status_text),
        smi_speeds=parse_nvlink_speeds(status_text),
        topology=parse_topology(read_optional(out_dir, "smi_topo.txt")),
        p2p=parse_topology(read_optional(out_dir, "smi_topo_p2p_nvlink.txt")),
        reasons=parse_clock_event_reasons(read_optional(out_dir, "smi_reasons.csv")),
        power_draw={row["index"]: row["power_draw_w"] for row in power_rows},
        decode_reasons=decode_reasons,
        smi_errors=parse_nvlink_errors(read_optional(out_dir, "smi_nvlink_errors.txt")),
    )
    return table, nvlink


def summary_lines(nvlink):
    links = [link for gpu in nvlink["gpus"] for link in gpu["links"]]
    return [
        "GPUs: %s" % ", ".join(sorted({gpu["name"] for gpu in nvlink["gpus"]})),
        "NVLink: active links per GPU %s, versions %s, remote types %s, P2P over NVLink %s, estimated %s GB/s "
        "bidirectional per GPU, %s GB/s for the host"
        % (nvlink["active_links_per_gpu"], sorted({link["version"] for link in links if link["version"]}),
           sorted({link["remote_device_type"] for link in links if link["remote_device_type"]}),
           [pair["p2p_nvlink"] for pair in nvlink["pairs"]], nvlink["estimated_bidirectional_bandwidth_gbps"],
           nvlink.get("estimated_total_bidirectional_bandwidth_gbps")),
        "NVLink error counters (sum over links, null = not exposed): %s" % {
            name: (sum(link["errors"][name] for link in links if link["errors"][name] is not None)
                   if any(link["errors"][name] is not None for link in links) else None)
            for name in ("replay", "recovery", "crc_flit", "crc_data")
        },
    ]


def main(out_dir):
    out_dir = Path(out_dir)
    table, nvlink = compare(out_dir)
    smi_header = read_optional(out_dir, "smi.txt").splitlines()
    summary = ["# Gate modules vs nvidia-smi, %s" % datetime.date.today().isoformat(), ""]
    summary += summary_lines(nvlink)
    summary += [
        "",
        table.markdown(),
        "",
        "%d figures compared, %d mismatches (%d rows for information only)."
        % (len(table.compared), len(table.mismatches), len(table.rows) - len(table.compared)),
    ]
    if smi_header:
        summary += ["", "```", *smi_header[:4], "```"]
    report = "\n".join(summary) + "\n"
    (out_dir / "report.md").write_text(report)
    sys.stdout.write(report)
    return 1 if table.mismatches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/hw-out"))
