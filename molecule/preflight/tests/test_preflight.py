"""playbooks/preflight.yml as an operator runs it against the simulated fleet.

Expected values come from the fake NVML scenario files each host runs on, not from the playbook's output:
a healthy NVLink pair (ok), a pair with its bridge unseated (fail, links down), a pair with a hot memory
junction (fail, the scenario's temperature), a host without the driver (fail). An extra inventory adds a
host that cannot be reached (pf-gone), which must show as unreachable rather than vanish.
"""

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import testinfra
import testinfra.utils.ansible_runner

REPO = Path(__file__).resolve().parents[3]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
PLAYBOOK = REPO / "playbooks" / "preflight.yml"
SCENARIOS = REPO / "tests" / "fake_nvml" / "scenarios"
WORK = REPO / ".cache" / "preflight-test"
FLEET = {
    "pf-ok": "dual_3090_nvlink_ok",
    "pf-bridge": "dual_3090_bridge_misseated",
    "pf-hot": "dual_3090_hot_junction",
    "pf-nodriver": None,
}
UNREACHABLE = "pf-gone"
COLUMNS = ["host", "GPUs", "NVLink active/expected", "temps C core/memory", "power W draw/limit", "PCIe", "driver",
           "disk free GB", "verdict", "reasons"]
CSV_KEYS = ["host", "gpus", "nvlink", "temps", "power", "pcie", "driver", "disk_free_gb", "verdict", "reasons"]
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("pf-ok")


def scenario(host):
    return json.loads((SCENARIOS / ("%s.json" % FLEET[host])).read_text())


def run_preflight(name, *args, extra_hosts=True):
    """Run the preflight into its own report directory; return (completed process, report directory)."""
    report_dir = WORK / name
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.mkdir(parents=True)
    command = ["ansible-playbook", "-i", INVENTORY]
    if extra_hosts:
        command += ["-i", str(WORK / "unreachable.yml")]
    command += [str(PLAYBOOK), "-e", "preflight_report_dir=%s" % report_dir, *args]
    env = dict(os.environ)
    env.update(
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_CALLBACK_RESULT_FORMAT="yaml",
        ANSIBLE_FORCE_COLOR="false",
        ANSIBLE_NOCOLOR="1",
        NO_COLOR="1",
        ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"),
    )
    completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    return completed, report_dir


def printed_table(stdout):
    """The table as printed by the 'Print the table' task: header, separator, rows (lines, unindented)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("TASK [Print the table]"))
    block = next(i for i in range(start, len(lines)) if lines[i].strip() == "msg: |-")
    table = []
    for line in lines[block + 1:]:
        if not line.startswith(" " * 8):
            break  # the blank line before the gates' messages, or the next task
        table.append(line[8:])
    return table


def parse_rows(table):
    """Cells by column, cut at the separator line's column starts."""
    header, separator, *rows = table
    assert header.split("  ")[0] == "host"
    starts = [match.start() for match in re.finditer(r"-+", separator)]
    ends = starts[1:] + [None]
    parsed = {}
    for row in rows:
        cells = [row[start:end].strip() for start, end in zip(starts, ends)]
        parsed[cells[0]] = dict(zip(COLUMNS, cells))
    return parsed


def recap(stdout):
    return {match[0]: {"changed": int(match[2]), "unreachable": int(match[3]), "failed": int(match[4])}
            for match in RECAP.findall(stdout)}


def free_gb_where_the_cache_will_be():
    """Free space on pf-ok's filesystem of /var/lib, where /var/lib/llmfleet/models will be created."""
    df = testinfra.get_host("ansible://pf-ok?ansible_inventory=%s" % INVENTORY).run("df -P -k /var/lib")
    assert df.rc == 0, df.stderr
    return int(df.stdout.splitlines()[1].split()[3]) * 1024 / 1e9


def expected_cells(host):
    """What the table must say about a host, read from its scenario file."""
    data = scenario(host)
    gpus = data["gpus"]
    names = {gpu["name"] for gpu in gpus}
    assert len(names) == 1
    links = ["%d/%d" % (sum(link["state"] == "active" for link in gpu["nvlink"]["links"]), len(gpu["nvlink"]["links"]))
             for gpu in gpus]
    temps = ["%s/%s" % (gpu["temperature"]["gpu_c"], gpu["temperature"]["memory_c"] or "-") for gpu in gpus]
    return {
        "GPUs": "%dx %s" % (len(gpus), names.pop()),
        "NVLink active/expected": "%s (P2P %s)" % (", ".join(links), data["pairs"]["0-1"]["p2p"]["nvlink"]),
        "temps C core/memory": ", ".join(temps),
        "power W draw/limit": ", ".join("%d/%d" % (round(gpu["power"]["usage_mw"] / 1000),
                                                   round(gpu["power"]["enforced_limit_mw"] / 1000)) for gpu in gpus),
        "PCIe": ", ".join("gen%d x%d" % (gpu["pcie"]["current_gen"], gpu["pcie"]["current_width"]) for gpu in gpus),
        "driver": data["driver_version"],
    }


@pytest.fixture(scope="module")
def runs():
    """The preflight run once normally and once with --check, against the fleet plus an unreachable host."""
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "unreachable.yml").write_text(
        "workstations:\n  hosts:\n    %s:\n      ansible_connection: containers.podman.podman\n" % UNREACHABLE
    )
    results = {}
    for name, args in (("normal", ()), ("check", ("--check",))):
        free_before = free_gb_where_the_cache_will_be()
        completed, report_dir = run_preflight(name, *args)
        free_after = free_gb_where_the_cache_will_be()
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        table = printed_table(completed.stdout)
        results[name] = {"completed": completed, "report_dir": report_dir, "table": table, "rows": parse_rows(table),
                         "free_gb_around": (free_before, free_after)}
    return results


# ---- each host's row ----------------------------------------------------------------------------


def test_healthy_pair_is_ok(runs):
    row = runs["normal"]["rows"]["pf-ok"]
    for column, value in expected_cells("pf-ok").items():
        assert row[column] == value, column
    assert row["NVLink active/expected"].startswith("4/4, 4/4")
    # GeForce cards do not expose the memory junction: shown as '-', never as a number, and not held against them.
    assert row["temps C core/memory"] == "41/-, 41/-"
    assert row["verdict"] == "ok"
    assert row["reasons"] == ""


def test_misseated_bridge_fails_with_its_links_down(runs):
    row = runs["normal"]["rows"]["pf-bridge"]
    for column, value in expected_cells("pf-bridge").items():
        assert row[column] == value, column
    assert row["NVLink active/expected"] == "0/4, 0/4 (P2P not_supported)"
    assert row["verdict"] == "fail"
    assert "NVLink bridge misseated: GPU 0 0/4, GPU 1 0/4 links active" in row["reasons"]
    assert "no P2P over NVLink (not_supported)" in row["reasons"]


def test_hot_memory_junction_fails_with_the_scenario_temperature(runs):
    row = runs["normal"]["rows"]["pf-hot"]
    for column, value in expected_cells("pf-hot").items():
        assert row[column] == value, column
    hot = scenario("pf-hot")["gpus"][1]
    assert hot["temperature"]["memory_c"] == 106
    assert row["temps C core/memory"].endswith("83/106")
    assert row["verdict"] == "fail"
    assert "hot junction: GPU 1 memory 106 C above 100 C" in row["reasons"]
    throttling = [reason for reason in hot["clocks_event_reasons"] if "thermal" in reason]
    assert "GPU 1 thermally throttling (%s)" % ", ".join(throttling) in row["reasons"]
    assert "GPU 0" not in row["reasons"]


def test_host_without_driver_fails_as_driver_missing(runs):
    row = runs["normal"]["rows"]["pf-nodriver"]
    assert row["verdict"] == "fail"
    assert row["reasons"] == "driver missing: NVIDIA driver not loaded"
    assert row["GPUs"] == row["driver"] == "-"


def test_unreachable_host_is_a_row_not_a_gap(runs):
    row = runs["normal"]["rows"][UNREACHABLE]
    assert row["verdict"] == "unreachable"
    assert set(runs["normal"]["rows"]) == set(FLEET) | {UNREACHABLE}


def test_disk_free_is_that_of_the_model_cache_filesystem(host, runs):
    # /var/lib/llmfleet/models does not exist yet: the filesystem it will be created on is measured.
    assert not host.file("/var/lib/llmfleet/models").exists
    # Other work on the test machine moves free space while the preflight runs: df before and after bracket it.
    before, after = runs["normal"]["free_gb_around"]
    reported = float(runs["normal"]["rows"]["pf-ok"]["disk free GB"])
    assert min(before, after) - 0.5 <= reported <= max(before, after) + 0.5


# ---- read-only, check mode, report files ------------------------------------------------------


def test_no_host_was_changed(runs):
    for name in ("normal", "check"):
        stats = recap(runs[name]["completed"].stdout)
        for host in FLEET:
            assert stats[host] == {"changed": 0, "unreachable": 0, "failed": 0}, (name, host)
        # ignore_unreachable: the host is reported, the play goes on.
        assert stats[UNREACHABLE]["failed"] == 0


def test_check_mode_prints_the_same_table(runs):
    def without_disk(rows):
        return {host: {key: value for key, value in row.items() if key != "disk free GB"} for host, row in rows.items()}

    assert without_disk(runs["check"]["rows"]) == without_disk(runs["normal"]["rows"])


def test_report_files_hold_the_printed_rows(runs):
    run = runs["normal"]
    report_dir = run["report_dir"]
    markdown = sorted(report_dir.glob("preflight-2*.md"))
    csv_files = sorted(report_dir.glob("preflight-2*.csv"))
    assert len(markdown) == 1 and len(csv_files) == 1
    assert markdown[0].stem == csv_files[0].stem
    assert (report_dir / "preflight-latest.md").read_text() == markdown[0].read_text()

    printed = {host: [row[column] for column in COLUMNS] for host, row in run["rows"].items()}
    table_lines = [line for line in markdown[0].read_text().splitlines() if line.startswith("| ")]
    assert [cell.strip() for cell in table_lines[0].strip("|").split("|")] == COLUMNS
    from_markdown = {}
    assert set(table_lines[1].replace("|", "").split()) == {"---"}
    for line in table_lines[2:]:
        cells = [cell.strip() for cell in line[1:-1].split(" | ")]
        from_markdown[cells[0]] = cells
    assert from_markdown == printed

    with csv_files[0].open(newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == CSV_KEYS
        from_csv = {cells[0]: cells for cells in reader}
    assert from_csv == printed
    # The gates' messages, with the operator's fix, follow the table.
    assert "reseat the NVLink bridge" in markdown[0].read_text()
    # Each host's engine line: no vLLM unit runs on these targets, and the audit says so rather than guessing.
    engine_lines = [line for line in markdown[0].read_text().splitlines() if line.startswith("- pf-ok: ")]
    assert len(engine_lines) == 1 and engine_lines[0].endswith("; engine not serving"), engine_lines


# ---- thresholds and the CI gate ---------------------------------------------------------------


def test_unprepared_host_and_low_disk_are_reported_not_fixed(host):
    completed, _unused = run_preflight(
        "unprepared", "--limit", "pf-ok", "-e", "gpu_gates_venv=/opt/llmfleet/absent",
        "-e", "preflight_min_free_gb=100000", extra_hosts=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:]
    row = parse_rows(printed_table(completed.stdout))["pf-ok"]
    assert row["verdict"] == "fail"
    assert "not prepared: run site.yml --tags gates" in row["reasons"]
    assert "low disk:" in row["reasons"] and "below 100000 GB" in row["reasons"]
    assert not host.file("/opt/llmfleet/absent").exists
    assert recap(completed.stdout)["pf-ok"]["changed"] == 0


def test_fail_on_verdict_fails_the_unfit_hosts():
    failing, _unused = run_preflight("gate-fleet", "-e", "preflight_fail_on_verdict=true")
    assert failing.returncode != 0
    stats = recap(failing.stdout)
    assert {host: stats[host]["failed"] for host in stats if host in FLEET or host == UNREACHABLE} == {
        "pf-ok": 0, "pf-bridge": 1, "pf-hot": 1, "pf-nodriver": 1, UNREACHABLE: 1,
    }
    assert "Preflight verdict fail: NVLink bridge misseated" in failing.stdout + failing.stderr

    passing, _unused = run_preflight("gate-ok", "--limit", "pf-ok", "-e", "preflight_fail_on_verdict=true",
                                     extra_hosts=False)
    assert passing.returncode == 0, passing.stdout[-3000:]
