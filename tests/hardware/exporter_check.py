"""Steps of check_exporter.sh that need Python: compare the exporter with nvidia-smi, time both, plan and record
the power-limit trial, and write report.md.

Usage (check_exporter.sh calls these; the collection must be importable as ansible_collections.llmfleet.workstation):
  exporter_check.py smi-query OUT            print the --query-gpu fields compared (SMI_QUERY)
  exporter_check.py bench OUT URL RUNS        N scrapes of URL and N runs of the equivalent nvidia-smi queries
  exporter_check.py power-args OUT STEP       print gpu_power_limit's arguments (JSON) for STEP: current, low, original
  exporter_check.py nvml-set-current OUT      set each GPU's limit to its current value straight through NVML
  exporter_check.py report OUT                compare, judge and write OUT/report.md; exit 1 when a figure differs
The functions are plain so tests/unit/hardware/test_check_exporter.py runs them on captured text.
"""

import datetime
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_with_nvidia_smi import parse_nvlink_errors, parse_nvlink_status, parse_query_csv  # noqa: E402
from p2p_summary import module_result  # noqa: E402

from ansible_collections.llmfleet.workstation.plugins.module_utils.gpu_metrics import parse_metrics  # noqa: E402
from ansible_collections.llmfleet.workstation.plugins.module_utils.nvml import CLOCK_EVENT_REASONS  # noqa: E402

# Column order of the --query-gpu call in check_exporter.sh (SMI_QUERY there); every field is in
# `nvidia-smi --help-query-gpu` of the 5xx drivers.
SMI_COLUMNS = ("index", "uuid", "name", "pci_bus_id", "driver_version", "core_temp_c", "memory_temp_c", "power_draw_w",
               "power_limit_w", "enforced_power_limit_w", "power_min_limit_w", "power_max_limit_w",
               "power_default_limit_w", "memory_used_mib", "memory_total_mib", "pcie_current_generation",
               "pcie_max_generation", "pcie_current_width", "pcie_max_width")
SMI_QUERY = ("index,uuid,name,pci.bus_id,driver_version,temperature.gpu,temperature.memory,power.draw,power.limit,"
             "enforced.power.limit,power.min_limit,power.max_limit,power.default_limit,memory.used,memory.total,"
             "pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max")
# What Prometheus pays for one scrape is compared with what an operator's script pays for the same figures:
# this query, the clock-event reasons, the NVLink states and the NVLink error counters.
SMI_COMMANDS = (
    ["nvidia-smi", "--query-gpu=" + SMI_QUERY, "--format=csv,noheader,nounits"],
    ["nvidia-smi", "--query-gpu=index,clocks_event_reasons.active", "--format=csv,noheader"],
    ["nvidia-smi", "nvlink", "--status"],
    ["nvidia-smi", "nvlink", "--errorcounters"],
)
# Figures that move between two reads a second apart: compared within these tolerances.
TEMPERATURE_TOLERANCE_C = 5
POWER_DRAW_TOLERANCE = (0.25, 40.0)  # share of the larger reading, or W, whichever is more
MEMORY_USED_TOLERANCE_MIB = 512
MIB = 1024 * 1024


def metric_table(samples):
    """Exporter samples -> {(name, gpu, other labels as a sorted tuple): value}."""
    table = {}
    for name, labels, value in samples:
        rest = tuple(sorted((key, text) for key, text in labels.items() if key != "gpu"))
        table[(name, labels.get("gpu"), rest)] = value
    return table


def series(table, name, gpu, **labels):
    return table.get((name, str(gpu), tuple(sorted(labels.items()))))


def close(first, second, tolerance):
    return first is not None and second is not None and abs(first - second) <= tolerance


class Comparison:
    """Rows of (gpu, figure, exporter, nvidia-smi, verdict); verdict ok, DIFF or info."""

    def __init__(self):
        self.rows = []

    def add(self, gpu, figure, exporter, smi, verdict):
        self.rows.append((gpu, figure, exporter, smi, verdict))

    def exact(self, gpu, figure, exporter, smi):
        self.add(gpu, figure, exporter, smi, "ok" if exporter == smi else "DIFF")

    def within(self, gpu, figure, exporter, smi, tolerance):
        if exporter is None and smi is None:
            self.add(gpu, figure, exporter, smi, "ok")
        else:
            self.add(gpu, figure, exporter, smi, "ok" if close(exporter, smi, tolerance) else "DIFF")

    @property
    def differences(self):
        return [row for row in self.rows if row[4] == "DIFF"]


def as_int(value):
    return None if value is None else int(round(value))


def compare_gpu(comparison, table, row, reasons_mask):
    """One GPU's exporter series against its nvidia-smi row."""
    gpu = row["index"]
    info = [labels for (name, index, labels) in table if name == "llmfleet_gpu_info" and index == str(gpu)]
    labels = dict(info[0]) if info else {}
    for figure, key in (("uuid", "uuid"), ("name", "name"), ("pci_bus_id", "pci_bus_id"),
                        ("driver_version", "driver_version")):
        smi_value = row[key]
        comparison.exact(gpu, figure, labels.get(figure), None if smi_value is None else str(smi_value))
    comparison.within(gpu, "core temperature C", series(table, "llmfleet_gpu_temperature_celsius", gpu, sensor="core"),
                      row["core_temp_c"], TEMPERATURE_TOLERANCE_C)
    # Absent on both sides where the card hides it: the exporter must not publish a 0.
    comparison.within(gpu, "memory temperature C",
                      series(table, "llmfleet_gpu_temperature_celsius", gpu, sensor="memory"),
                      row["memory_temp_c"], TEMPERATURE_TOLERANCE_C)
    draw_exporter, draw_smi = series(table, "llmfleet_gpu_power_draw_watts", gpu), row["power_draw_w"]
    draw_tolerance = max(POWER_DRAW_TOLERANCE[1], POWER_DRAW_TOLERANCE[0] * max(draw_exporter or 0, draw_smi or 0))
    comparison.within(gpu, "power draw W", draw_exporter, draw_smi, draw_tolerance)
    for figure, name, key in (("power limit W (enforced)", "llmfleet_gpu_power_limit_watts", "enforced_power_limit_w"),
                              ("power limit min W", "llmfleet_gpu_power_limit_min_watts", "power_min_limit_w"),
                              ("power limit max W", "llmfleet_gpu_power_limit_max_watts", "power_max_limit_w"),
                              ("power limit default W", "llmfleet_gpu_power_limit_default_watts",
                               "power_default_limit_w")):
        comparison.within(gpu, figure, series(table, name, gpu), row[key], 0.5)
    enforced = series(table, "llmfleet_gpu_power_limit_watts", gpu)
    comparison.add(gpu, "power limit W (set, nvidia-smi power.limit)", enforced, row["power_limit_w"], "info")
    total = series(table, "llmfleet_gpu_memory_total_bytes", gpu)
    comparison.exact(gpu, "memory total MiB", None if total is None else int(total // MIB),
                     as_int(row["memory_total_mib"]))
    used = series(table, "llmfleet_gpu_memory_used_bytes", gpu)
    comparison.within(gpu, "memory used MiB", None if used is None else round(used / MIB, 1), row["memory_used_mib"],
                      MEMORY_USED_TOLERANCE_MIB)
    for kind in ("current", "max"):
        generation = series(table, "llmfleet_gpu_pcie_link_generation", gpu, kind=kind)
        width = series(table, "llmfleet_gpu_pcie_link_width", gpu, kind=kind)
        # An idle GPU changes its link generation between reads; the width and the maxima must match.
        verdict_gen = as_int(generation) == row["pcie_%s_generation" % kind] or kind == "current"
        comparison.add(gpu, "PCIe generation (%s)" % kind, as_int(generation), row["pcie_%s_generation" % kind],
                       "ok" if as_int(generation) == row["pcie_%s_generation" % kind] else
                       ("info" if verdict_gen else "DIFF"))
        comparison.exact(gpu, "PCIe width (%s)" % kind, as_int(width), row["pcie_%s_width" % kind])
    active = sorted(name for _bit, name in CLOCK_EVENT_REASONS
                    if series(table, "llmfleet_gpu_clock_event_active", gpu, reason=name) == 1)
    smi_active = None if reasons_mask is None else sorted(name for bit, name in CLOCK_EVENT_REASONS
                                                          if reasons_mask & bit)
    comparison.add(gpu, "clock-event reasons (move)", ",".join(active) or "none",
                   "n/a" if smi_active is None else (",".join(smi_active) or "none"),
                   "info")


def compare_nvlink(comparison, table, smi_status, smi_errors):
    """Link states must match nvidia-smi link by link; replay and recovery counters only grow, so the
    exporter's (read first) is at most nvidia-smi's."""
    exporter_links = {}
    for (name, gpu, labels), value in table.items():
        if name == "llmfleet_nvlink_link_up":
            exporter_links.setdefault(int(gpu), {})[int(dict(labels)["link"])] = value == 1
    for gpu in sorted(set(exporter_links) | set(index for index, links in smi_status.items() if links)):
        mine, theirs = exporter_links.get(gpu, {}), smi_status.get(gpu, {})
        comparison.exact(gpu, "NVLink links", len(mine), len(theirs))
        comparison.exact(gpu, "NVLink links up", sorted(link for link, up in mine.items() if up),
                         sorted(link for link, up in theirs.items() if up))
        for counter in ("replay", "recovery"):
            mine_total = sum(series(table, "llmfleet_nvlink_errors_total", gpu, link=str(link), counter=counter) or 0
                             for link in mine)
            smi_total = sum(counters.get(counter, 0) for counters in smi_errors.get(gpu, {}).values())
            comparison.add(gpu, "NVLink %s errors (all links)" % counter, mine_total, smi_total,
                           "ok" if mine_total <= smi_total or not smi_errors.get(gpu) else "DIFF")
        crc = sum(value for (name, index, labels), value in table.items()
                  if name == "llmfleet_nvlink_errors_total" and index == str(gpu) and dict(labels)["counter"]
                  in ("crc_flit", "crc_data"))
        smi_crc = sum(counters.get("crc", 0) for counters in smi_errors.get(gpu, {}).values())
        comparison.add(gpu, "NVLink CRC errors (flit+data vs nvidia-smi CRC)", crc, smi_crc, "info")


def percentile(values, share):
    ordered = sorted(values)
    position = min(len(ordered) - 1, max(0, int(round(share * (len(ordered) - 1)))))
    return ordered[position]


def timing_summary(seconds):
    return {"runs": len(seconds), "median_ms": round(statistics.median(seconds) * 1000, 2),
            "p95_ms": round(percentile(seconds, 0.95) * 1000, 2)} if seconds else None


def bench(out, url, runs):
    """Time RUNS scrapes of the exporter and RUNS rounds of the equivalent nvidia-smi calls, interleaved so
    both see the same machine; write bench.json."""
    scrapes, smi_rounds, self_reported = [], [], []
    for _run in range(runs):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as answer:
            body = answer.read().decode("utf-8")
        scrapes.append(time.perf_counter() - started)
        for name, _labels, value in parse_metrics(body):
            if name == "llmfleet_exporter_scrape_duration_seconds":
                self_reported.append(value)
        started = time.perf_counter()
        for command in SMI_COMMANDS:
            subprocess.run(command, capture_output=True, check=False, timeout=60)
        smi_rounds.append(time.perf_counter() - started)
    result = {"exporter_http": timing_summary(scrapes), "exporter_nvml_read": timing_summary(self_reported),
              "nvidia_smi": timing_summary(smi_rounds),
              "nvidia_smi_commands": [" ".join(command) for command in SMI_COMMANDS]}
    if scrapes and smi_rounds:
        result["ratio_smi_to_exporter_median"] = round(statistics.median(smi_rounds) / statistics.median(scrapes), 1)
    (Path(out) / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


def read(out, name):
    path = Path(out) / name
    return path.read_text(errors="replace") if path.exists() else ""


def module_status(text):
    """The host's status word from the oneline callback: SUCCESS, CHANGED, FAILED!, UNREACHABLE!; None if absent."""
    for line in text.splitlines():
        if line.startswith("localhost | "):
            return line[len("localhost | "):].split(" ", 1)[0].rstrip(":")
    return None


def facts_gpus(text):
    result = module_result(text) or {}
    return (result.get("ansible_facts") or {}).get("llmfleet_gpu", {}).get("gpus", [])


def power_args(out, step):
    """gpu_power_limit's arguments for a step of the trial, from the limits read before it (gpu_facts_before.txt):
    `current` keeps each limit, `low` asks for min + 10 W, `original` puts back what was there."""
    limits = {}
    for gpu in facts_gpus(read(out, "gpu_facts_before.txt")):
        if gpu.get("power_limit_w") is None or gpu.get("power_min_limit_w") is None:
            continue
        if step == "low":
            limits[str(gpu["index"])] = gpu["power_min_limit_w"] + 10
        else:
            limits[str(gpu["index"])] = gpu["power_limit_w"]
    return json.dumps({"limit_w": limits})


def nvml_set_current(out):
    """Set each GPU's limit to its current value with one plain NVML call and record NVML's answer."""
    import pynvml  # noqa: PLC0415 - only this step talks to NVML directly

    answers = []
    pynvml.nvmlInit()
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            entry = {"gpu": index}
            try:
                entry["limit_mw"] = pynvml.nvmlDeviceGetPowerManagementLimit(handle)
                pynvml.nvmlDeviceSetPowerManagementLimit(handle, entry["limit_mw"])
                entry["answer"] = "SUCCESS"
            except pynvml.NVMLError as error:
                entry["answer"] = "%s: %s" % (type(error).__name__, error)
            answers.append(entry)
    finally:
        pynvml.nvmlShutdown()
    (Path(out) / "nvml_set_current.json").write_text(json.dumps(answers, indent=2) + "\n")
    print(json.dumps(answers))


def power_trial(out):
    """What each step of the power-limit trial did: lines for the report, and the problems (no limit read back,
    or a limit not put back). NVML refusing a value is recorded, not a problem: the machine may not allow it."""
    lines = []
    before = {gpu["index"]: gpu for gpu in facts_gpus(read(out, "gpu_facts_before.txt"))}
    after = {gpu["index"]: gpu for gpu in facts_gpus(read(out, "gpu_facts_after.txt"))}
    low = {gpu["index"]: gpu for gpu in facts_gpus(read(out, "gpu_facts_low.txt"))}
    for index, gpu in sorted(before.items()):
        lines.append("- GPU %d via gpu_facts: limit %s W (enforced), range %s-%s W, default %s W, draw %s W" % (
            index, gpu.get("power_limit_w"), gpu.get("power_min_limit_w"), gpu.get("power_max_limit_w"),
            gpu.get("power_default_limit_w"), gpu.get("power_draw_w")))
    for entry in json.loads(read(out, "nvml_set_current.json") or "[]"):
        lines.append("- GPU %d, nvmlDeviceSetPowerManagementLimit(current %s mW) straight through NVML: %s"
                     % (entry["gpu"], entry.get("limit_mw"), entry["answer"]))
    for step, name in (("current", "power_current.txt"), ("min + 10 W", "power_low.txt"),
                       ("restore", "power_restore.txt")):
        text = read(out, name)
        result = module_result(text)
        if result is None:
            lines.append("- gpu_power_limit (%s): no result (%s; see %s)" % (step, module_status(text), name))
            continue
        lines.append("- gpu_power_limit (%s): %s, changed=%s: %s" % (
            step, module_status(text), result.get("changed"), result.get("msg")))
    for index, gpu in sorted(low.items()):
        lines.append("- GPU %d read back after min + 10 W: %s W" % (index, gpu.get("power_limit_w")))
    problems = []
    if not before:
        lines.append("- gpu_facts read no power limit: see gpu_facts_before.txt")
        problems.append("gpu_facts gave no power limit to read back (gpu_facts_before.txt)")
        return lines, problems
    restored = all(after.get(index, {}).get("power_limit_w") == gpu.get("power_limit_w")
                   for index, gpu in before.items())
    lines.append("- limit back to the value before the trial on every GPU: %s" % ("yes" if restored else "NO"))
    if not restored:
        problems.append("the power limit is not back to its value before the trial: see Power limit")
    return lines, problems


def report(out):
    out = Path(out)
    comparison = Comparison()
    samples = parse_metrics(read(out, "metrics.txt")) if read(out, "metrics.txt") else []
    table = metric_table(samples)
    rows = parse_query_csv(read(out, "smi_query.csv"), SMI_COLUMNS)
    masks = {}
    for line in read(out, "smi_reasons.csv").splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) == 2 and cells[1].startswith("0x"):
            masks[int(cells[0])] = int(cells[1], 16)
    for row in rows:
        compare_gpu(comparison, table, row, masks.get(row["index"]))
    compare_nvlink(comparison, table, parse_nvlink_status(read(out, "smi_nvlink_status.txt")),
                   parse_nvlink_errors(read(out, "smi_nvlink_errors.txt")))
    problems = []
    if not samples:
        problems.append("the exporter gave no metrics (exporter.log)")
    if not rows:
        problems.append("nvidia-smi gave no rows (smi_query.err)")
    nvml_up = [value for name, _labels, value in samples if name == "llmfleet_exporter_nvml_up"]
    if nvml_up != [1.0]:
        problems.append("llmfleet_exporter_nvml_up is %s, not 1" % nvml_up)
    bench_result = json.loads(read(out, "bench.json") or "null")
    power_lines, power_problems = power_trial(out)
    problems += power_problems
    dry_run = read(out, "dry_run.txt").strip()
    lines = ["# GPU exporter on this machine", "",
             "Date: %s. %s" % (datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                               read(out, "machine.txt").strip())]
    if dry_run:
        lines += ["", "**DRY RUN: %s. Nothing here is a measurement of a GPU.**" % dry_run]
    lines += ["", "## Figures: exporter against nvidia-smi", "",
              "| GPU | figure | exporter | nvidia-smi | verdict |", "| --- | --- | --- | --- | --- |"]
    lines += ["| %s | %s | %s | %s | %s |" % row for row in comparison.rows]
    lines += ["", "%d figures, %d differ." % (len(comparison.rows), len(comparison.differences)), "",
              "## Cost per scrape", ""]
    if bench_result:
        for key, title in (("exporter_http", "exporter, one HTTP scrape of /metrics"),
                           ("exporter_nvml_read",
                            "exporter, its NVML read (llmfleet_exporter_scrape_duration_seconds)"),
                           ("nvidia_smi", "nvidia-smi, the same figures (%d commands)" % len(SMI_COMMANDS))):
            figures = bench_result.get(key)
            if figures:
                lines.append("- %s: median %s ms, p95 %s ms over %d runs"
                             % (title, figures["median_ms"], figures["p95_ms"], figures["runs"]))
        lines.append("- ratio (nvidia-smi median / exporter scrape median): %s"
                     % bench_result.get("ratio_smi_to_exporter_median"))
        lines.append("- nvidia-smi commands: `%s`" % "`, `".join(bench_result["nvidia_smi_commands"]))
    else:
        lines.append("- not measured (bench.json missing: see bench.err)")
        problems.append("the timing did not run")
    lines += ["", "## Power limit", ""] + power_lines
    lines += ["", "## Verdict", ""]
    problems += ["GPU %s %s: exporter %s, nvidia-smi %s" % row[:4] for row in comparison.differences]
    lines += ["- " + text for text in problems] or ["- every figure agrees; the limit is back where it was"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if problems else 0


def main(argv):
    command, out = argv[1], argv[2]
    if command == "bench":
        bench(out, argv[3], int(argv[4]))
    elif command == "smi-query":
        print(SMI_QUERY)
    elif command == "power-args":
        print(power_args(out, argv[3]))
    elif command == "nvml-set-current":
        nvml_set_current(out)
    elif command == "report":
        return report(out)
    else:
        raise SystemExit("unknown step %s" % command)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
