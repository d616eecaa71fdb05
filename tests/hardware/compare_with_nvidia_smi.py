"""Compare the gate modules' results with nvidia-smi's, figure by figure; write report.md.

Usage: compare_with_nvidia_smi.py OUT_DIR (as filled by check_gates.sh). Exit status 1 on a mismatch.
The parsers are plain functions so they can be unit-tested on captured nvidia-smi text.
"""

import datetime
import json
import re
import sys
from pathlib import Path

SMI_COLUMNS = ("index", "name", "uuid", "pci_bus_id", "driver_version", "memory_total_mib", "core_temp_c",
               "memory_temp_c", "pcie_current_generation", "pcie_max_generation", "pcie_current_width",
               "pcie_max_width", "persistence_mode", "power_limit_w", "fan_speed_pct")
# Temperatures move between two reads a second apart; everything else must match exactly.
TEMPERATURE_TOLERANCE_C = 3


def smi_value(text):
    text = text.strip()
    if text in ("[N/A]", "N/A", "[Not Supported]", "Not Supported", ""):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"Enabled": True, "Disabled": False}.get(text, text)


def parse_query_csv(text):
    """Rows of `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` as dicts."""
    rows = []
    for line in text.strip().splitlines():
        values = [smi_value(cell) for cell in line.split(",")]
        rows.append(dict(zip(SMI_COLUMNS, values)))
    return rows


def parse_nvlink_status(text):
    """`nvidia-smi nvlink --status` -> {gpu_index: {link: active}}."""
    gpus, current = {}, None
    for line in text.splitlines():
        header = re.match(r"GPU (\d+):", line)
        if header:
            current = int(header.group(1))
            gpus[current] = {}
            continue
        link = re.match(r"\s*Link (\d+):\s*(.*)$", line)
        if link and current is not None:
            gpus[current][int(link.group(1))] = "inactive" not in link.group(2).lower()
    return gpus


def parse_topology(text):
    """`nvidia-smi topo -m` -> {(i, j): 'NV18' | 'PHB' | ...} for GPU pairs."""
    lines = [line for line in text.splitlines() if line.strip()]
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


def module_result(out_dir, module):
    """The registered result run_gates.yml saved for one module."""
    return json.loads((out_dir / ("%s.json" % module)).read_text())


class Comparison:
    def __init__(self):
        self.rows = []

    def add(self, field, module_value, smi_value_, tolerance=0):
        if isinstance(module_value, (int, float)) and isinstance(smi_value_, (int, float)):
            match = abs(module_value - smi_value_) <= tolerance
        else:
            match = module_value == smi_value_
        self.rows.append((field, module_value, smi_value_, match))

    @property
    def mismatches(self):
        return [row for row in self.rows if not row[3]]

    def markdown(self):
        lines = ["| field | module | nvidia-smi | match |", "| --- | --- | --- | --- |"]
        for field, module_value, smi_value_, match in self.rows:
            lines.append("| %s | %s | %s | %s |" % (field, module_value, smi_value_, "yes" if match else "**NO**"))
        return "\n".join(lines)


def compare(out_dir):
    facts = module_result(out_dir, "gpu_facts")["ansible_facts"]["llmfleet_gpu"]
    nvlink_result = module_result(out_dir, "nvlink_status")
    nvlink = nvlink_result["ansible_facts"]["llmfleet_nvlink"]
    thermal = module_result(out_dir, "gpu_junction_temp")["ansible_facts"]["llmfleet_gpu_thermal"]
    smi_rows = parse_query_csv((out_dir / "smi_query.csv").read_text())
    smi_links = parse_nvlink_status((out_dir / "smi_nvlink_status.txt").read_text())
    topology = parse_topology((out_dir / "smi_topo.txt").read_text())

    table = Comparison()
    table.add("GPU count", facts["gpu_count"], len(smi_rows))
    for gpu, smi, links, heat in zip(facts["gpus"], smi_rows, nvlink["gpus"], thermal["gpus"]):
        prefix = "GPU %d " % gpu["index"]
        for key in ("name", "uuid", "pci_bus_id", "memory_total_mib", "pcie_current_generation",
                    "pcie_max_generation", "pcie_current_width", "pcie_max_width", "persistence_mode"):
            table.add(prefix + key, gpu[key], smi[key])
        table.add(prefix + "power_limit_w", gpu["power_limit_w"], smi["power_limit_w"], tolerance=1)
        table.add(prefix + "core_temp_c", heat["core_temp_c"], smi["core_temp_c"], tolerance=TEMPERATURE_TOLERANCE_C)
        table.add(prefix + "memory_temp_c", heat["memory_temp_c"], smi["memory_temp_c"],
                  tolerance=TEMPERATURE_TOLERANCE_C)
        table.add(prefix + "fan_speed_pct", heat["fan_speed_pct"], smi["fan_speed_pct"], tolerance=5)
        smi_gpu_links = smi_links.get(gpu["index"], {})
        table.add(prefix + "NVLink links", links["link_count"], len(smi_gpu_links))
        table.add(prefix + "NVLink active links", links["active_links"], sum(smi_gpu_links.values()))
        for link in links["links"]:
            table.add(prefix + "link %d active" % link["link"], link["active"], smi_gpu_links.get(link["link"]))
    table.add("driver_version", facts["driver_version"], smi_rows[0]["driver_version"] if smi_rows else None)
    for pair in nvlink["pairs"]:
        first, second = pair["gpus"]
        active = nvlink["gpus"][first]["active_links"]
        expected = "NV%d" % active if active else topology.get((first, second))
        table.add("topo GPU%d-GPU%d" % (first, second), expected, topology.get((first, second)))
    return table, nvlink


def main(out_dir):
    out_dir = Path(out_dir)
    table, nvlink = compare(out_dir)
    smi_header = (out_dir / "smi.txt").read_text().splitlines() if (out_dir / "smi.txt").exists() else []
    summary = [
        "# Gate modules vs nvidia-smi, %s" % datetime.date.today().isoformat(),
        "",
        "GPUs: %s" % ", ".join(sorted({gpu["name"] for gpu in nvlink["gpus"]})),
        "NVLink: active links per GPU %s, versions %s, remote types %s, P2P over NVLink %s"
        % (nvlink["active_links_per_gpu"],
           sorted({link["version"] for gpu in nvlink["gpus"] for link in gpu["links"] if link["version"]}),
           sorted({link["remote_device_type"] for gpu in nvlink["gpus"] for link in gpu["links"]
                   if link["remote_device_type"]}),
           [pair["p2p_nvlink"] for pair in nvlink["pairs"]]),
        "",
        table.markdown(),
        "",
        "%d figures compared, %d mismatches." % (len(table.rows), len(table.mismatches)),
    ]
    if smi_header:
        summary += ["", "```", *smi_header[:4], "```"]
    report = "\n".join(summary) + "\n"
    (out_dir / "report.md").write_text(report)
    print(report)
    return 1 if table.mismatches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/hw-out"))
