"""Judge and summarize what check_p2p_bandwidth.sh ran: WORK holds each step's output, OUT gets the three files.

    p2p_summary.py WORK OUT ELAPSED_SECONDS

Writes OUT/module.json (the module's result), OUT/measure.json (the script alone, the wall-clock check and the
not-measured check) and OUT/summary.txt, prints the summary, and exits 1 when a check failed.
"""

import contextlib
import datetime
import json
import sys
from pathlib import Path

MARKER = "LLMFLEET_P2P_RESULT "
# A copy within one H200 measured before: about 4.3 TB/s of memory traffic, reads and writes counted.
H200_REFERENCE_TRAFFIC_GBPS = 4300.0
# Event-timed and wall-timed copies of the same buffers should agree this closely.
WALL_AGREEMENT = 0.15


def read(work, name):
    path = work / name
    return path.read_text(errors="replace") if path.exists() else ""


def status(work, name):
    text = read(work, name).strip()
    return int(text) if text.lstrip("-").isdigit() else None


def last_lines(text, count=5):
    return " | ".join(line.strip() for line in text.strip().splitlines()[-count:])


def marker_result(text):
    for line in reversed(text.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    return None


def module_result(text):
    """The host's result from ansible's oneline callback ("localhost | SUCCESS => {...}"), or from the json
    callback where that one is installed (ansible.posix), or None."""
    for line in text.splitlines():
        if line.startswith("localhost | ") and " => {" in line:
            try:
                return json.loads(line.split(" => ", 1)[1])
            except ValueError:
                return None
    try:
        report = json.loads(text)
        return report["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        return None


class Checks:
    def __init__(self):
        self.lines = []
        self.failed = 0
        self.passed = 0

    def check(self, ok, text):
        self.lines.append("  [%s] %s" % ("ok" if ok else "FAIL", text))
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok


def summarize(work, elapsed):
    checks = Checks()
    lines = []
    plain_text = read(work, "plain.out")
    plain = marker_result(plain_text)
    wall = None
    with contextlib.suppress(ValueError):
        wall = json.loads(read(work, "wall.json") or "null")
    module = module_result(read(work, "module.out"))
    missing = module_result(read(work, "missing.out"))

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    gpus_text = read(work, "gpus.txt").strip().replace("\n", "; ")
    lines.append("P2P bandwidth check, %s, total %s s" % (now, elapsed))
    lines.append("GPUs (nvidia-smi): %s" % gpus_text)
    if plain:
        lines.append("torch %s (CUDA %s), %s GPU(s) seen by torch, %d MiB per copy, median of %s" % (
            plain.get("torch_version"), plain.get("cuda_version"), plain.get("device_count"),
            (plain.get("size_bytes") or 0) // (1024 * 1024), plain.get("repetitions")))
    lines.append("GB/s are decimal (10^9 bytes per second). 'copy' counts each byte copied once (one side); "
                 "'memory traffic' counts it read and written, twice.")
    lines.append("")

    # 1. The script alone.
    if checks.check(status(work, "plain.rc") == 0 and plain is not None and plain.get("measured"),
                    "the measurement script measured (exit %s)" % status(work, "plain.rc")):
        for gpu in plain["gpus"]:
            checks.check(gpu["status"] == "measured" and gpu["data_ok"] is True,
                         "GPU %d within-GPU copy measured and arrived intact (%s)" % (gpu["index"], gpu["status"]))
    else:
        lines.append("script: %s %s" % (plain and plain.get("detail"), last_lines(read(work, "plain.err"))))

    lines.append("Within each GPU (CUDA events, the script alone):")
    for gpu in (plain or {}).get("gpus", []):
        if gpu.get("copy_gbps") is None:
            why = gpu.get("reason") or gpu.get("error")
            lines.append("  GPU %d %s: not measured (%s)" % (gpu["index"], gpu.get("name"), why))
            continue
        lines.append("  GPU %d %s: copy %.1f GB/s (one side) = memory traffic %.1f GB/s (read + write); samples %s s"
                     % (gpu["index"], gpu["name"], gpu["copy_gbps"], gpu["memory_traffic_gbps"],
                        ", ".join("%.6f" % value for value in gpu["samples_seconds"])))
        if "H200" in (gpu.get("name") or ""):
            lines.append("    reference: an H200 moved about %.1f TB/s counting reads and writes; this run %.2f TB/s "
                         "(%.0f %%)" % (H200_REFERENCE_TRAFFIC_GBPS / 1000, gpu["memory_traffic_gbps"] / 1000,
                                        100 * gpu["memory_traffic_gbps"] / H200_REFERENCE_TRAFFIC_GBPS))

    # 2. The wall clock agrees with the CUDA events.
    if wall and plain and plain.get("gpus") and plain["gpus"][0].get("copy_gbps"):
        events = plain["gpus"][0]["copy_gbps"]
        ratio = wall["copy_gbps"] / events
        lines.append("  wall-clock check, GPU 0: copy %.1f GB/s (synchronize + perf_counter over 10 copies), "
                     "%.1f %% of the event-timed figure" % (wall["copy_gbps"], 100 * ratio))
        checks.check(abs(ratio - 1) <= WALL_AGREEMENT, "event timing agrees with the wall clock within %d %%"
                     % (100 * WALL_AGREEMENT))
    else:
        checks.check(False, "wall-clock check: %s GB/s, exit %s, with no event-timed figure to compare: %s" % (
            (wall or {}).get("copy_gbps"), status(work, "wall.rc"), last_lines(read(work, "wall.err"))))

    # 3. Pairs, from the script alone.
    pairs = (plain or {}).get("pairs", [])
    if not (plain or {}).get("measured"):
        lines.append("Pairs: not measured")
    else:
        lines.append("Pairs (the script alone):" if pairs else "Pairs: none (fewer than two GPUs)")
    for pair in pairs:
        if pair["status"] != "measured":
            why = pair.get("error") or pair.get("reason")
            lines.append("  GPU %d<->%d: %s (%s)" % (pair["gpus"][0], pair["gpus"][1], pair["status"], why))
            continue
        for direction in pair["directions"]:
            lines.append("  GPU %d->%d: %.1f GB/s alone, %.1f GB/s with the other direction at once, peer access %s"
                         % (direction["source"], direction["destination"], direction["unidirectional_gbps"],
                            direction["bidirectional_gbps"], direction["peer_access"]))
        lines.append("  GPU %d<->%d both ways: %.1f GB/s in all; data intact: %s" % (
            pair["gpus"][0], pair["gpus"][1], pair["bidirectional_total_gbps"], pair["data_ok"]))
    lines.append("")

    # 4. The module through ansible.
    if checks.check(module is not None and not module.get("failed")
                    and module["ansible_facts"]["llmfleet_p2p_bandwidth"]["measured"],
                    "the module passed and measured (ansible exit %s)" % status(work, "module.rc")):
        facts = module["ansible_facts"]["llmfleet_p2p_bandwidth"]
        lines.append("Module: %s" % module.get("msg"))
        lines.append("  measured in %s s in the child process; notes: %s" % (facts.get("elapsed_seconds"),
                                                                             module.get("notes") or "none"))
        for pair in facts["pairs"]:
            lines.append("  GPU %d<->%d: %s, expected %s GB/s per direction, floor %s (%s), lowest %s" % (
                pair["gpus"][0], pair["gpus"][1], pair["path"], pair["expected_gbps"], pair["floor_gbps"],
                pair["floor_source"], pair["min_gbps"]))
    else:
        output = read(work, "module.out") + "\n" + read(work, "module.err")
        lines.append("Module: %s" % ((module or {}).get("msg") or last_lines(output)))

    # 5. The not-measured path on the same machine.
    reason = ((missing or {}).get("ansible_facts") or {}).get("llmfleet_p2p_bandwidth", {}).get("reason")
    checks.check(missing is not None and not missing.get("failed") and reason == "torch_missing",
                 "with a torch that does not import, the module reports not measured (%s) without failing" % reason)
    if missing is not None:
        lines.append("Not measured: %s" % missing.get("msg"))
    lines.append("")
    lines.append("Checks:")
    lines.extend(checks.lines)
    lines.append("%d passed, %d failed" % (checks.passed, checks.failed))
    record = {"plain": plain, "plain_exit": status(work, "plain.rc"), "wall_check": wall,
              "not_measured_check": missing}
    return "\n".join(lines) + "\n", record, module, checks.failed


def main(argv):
    work, out, elapsed = Path(argv[1]), Path(argv[2]), argv[3]
    text, record, module, failed = summarize(work, elapsed)
    (out / "module.json").write_text(json.dumps(module, indent=1, sort_keys=True) + "\n")
    (out / "measure.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    (out / "summary.txt").write_text(text)
    sys.stdout.write(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
