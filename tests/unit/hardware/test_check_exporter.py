"""tests/hardware/exporter_check.py (check_exporter.sh's judge) on captured shapes: a run that agrees, a figure that
differs, a memory temperature published where nvidia-smi has none, and the power-limit trial's verdicts."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from ansible_collections.llmfleet.workstation.plugins.module_utils import gpu_metrics

HARDWARE = Path(__file__).resolve().parents[3] / "tests" / "hardware"
sys.path.insert(0, str(HARDWARE))
spec = importlib.util.spec_from_file_location("exporter_check", HARDWARE / "exporter_check.py")
exporter_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(exporter_check)

MIB = 1024 * 1024
# One H200 as nvidia-smi 580 prints the SMI_QUERY columns (nounits).
SMI_ROW = ("0, GPU-77f8edcf-8957-8e06-a961-6b24cb2daec3, NVIDIA H200, 00000000:18:00.0, 580.159.04, 39, 41, 101.62, "
           "700.00, 700.00, 200.00, 700.00, 700.00, 0, 143771, 5, 5, 16, 16\n")
SMI_NVLINK_STATUS = "GPU 0: NVIDIA H200 (UUID: GPU-77f8edcf-8957-8e06-a961-6b24cb2daec3)\n" + "".join(
    "\t Link %d: 26.562 GB/s\n" % link for link in range(2))
SMI_NVLINK_ERRORS = "GPU 0: NVIDIA H200 (UUID: GPU-77f8edcf-8957-8e06-a961-6b24cb2daec3)\n" + "".join(
    "\t Link %d: Replay Errors: 0\n\t Link %d: Recovery Errors: 0\n\t Link %d: CRC Errors: 0\n" % (link, link, link)
    for link in range(2))


def snapshot(**overrides):
    reading = {
        "index": 0, "uuid": "GPU-77f8edcf-8957-8e06-a961-6b24cb2daec3", "name": "NVIDIA H200",
        "pci_bus_id": "00000000:18:00.0", "core_temp_c": 40, "memory_temp_c": 41, "clock_event_reasons": ["gpu_idle"],
        "power_draw_mw": 99000, "power_limit_mw": 700000, "power_min_limit_mw": 200000, "power_max_limit_mw": 700000,
        "power_default_limit_mw": 700000, "memory_used_bytes": 0, "memory_total_bytes": 143771 * MIB,
        "pcie_current_generation": 5, "pcie_max_generation": 5, "pcie_current_width": 16, "pcie_max_width": 16,
        "nvlink": [{"link": link, "active": True, "errors": {"replay": 0, "recovery": 0, "crc_flit": 0, "crc_data": 0}}
                   for link in range(2)],
    }
    reading.update(overrides)
    return {"driver_version": "580.159.04", "gpus": [reading]}


def facts_line(limit_w):
    facts = {"ansible_facts": {"llmfleet_gpu": {"gpus": [{
        "index": 0, "power_limit_w": limit_w, "power_min_limit_w": 200.0, "power_max_limit_w": 700.0,
        "power_default_limit_w": 700.0, "power_draw_w": 101.6}]}}, "changed": False}
    return "localhost | SUCCESS => %s\n" % json.dumps(facts)


def write_run(out, metrics=None, smi_row=SMI_ROW, after_limit=700.0):
    text = gpu_metrics.render_metrics(metrics or snapshot(), {"core_temp_limit_c": 85, "memory_temp_limit_c": 100},
                                      0.012)
    files = {
        "metrics.txt": text, "smi_query.csv": smi_row, "smi_reasons.csv": "0, 0x0000000000000001\n",
        "smi_nvlink_status.txt": SMI_NVLINK_STATUS, "smi_nvlink_errors.txt": SMI_NVLINK_ERRORS,
        "machine.txt": "GPUs: 1 NVIDIA H200", "dry_run.txt": "",
        "bench.json": json.dumps({"exporter_http": {"runs": 3, "median_ms": 4.0, "p95_ms": 5.0},
                                  "exporter_nvml_read": {"runs": 3, "median_ms": 2.0, "p95_ms": 3.0},
                                  "nvidia_smi": {"runs": 3, "median_ms": 400.0, "p95_ms": 450.0},
                                  "nvidia_smi_commands": ["nvidia-smi nvlink --status"],
                                  "ratio_smi_to_exporter_median": 100.0}),
        "gpu_facts_before.txt": facts_line(700.0), "gpu_facts_low.txt": facts_line(210.0),
        "gpu_facts_after.txt": facts_line(after_limit),
        "nvml_set_current.json": json.dumps([{"gpu": 0, "limit_mw": 700000, "answer": "SUCCESS"}]),
        "power_current.txt": 'localhost | SUCCESS => {"changed": false, "msg": "Every GPU already has the limit it '
                             'should"}\n',
        "power_low.txt": 'localhost | FAILED! => {"changed": false, "msg": "NVML refused power limit 210.0 W on GPU '
                         '0 (NVMLError_NoPermission: Insufficient Permissions)"}\n',
        "power_restore.txt": 'localhost | SUCCESS => {"changed": false, "msg": "Every GPU already has the limit it '
                             'should"}\n',
    }
    for name, content in files.items():
        (out / name).write_text(content)


def test_a_run_that_agrees_passes_and_records_the_refusal(tmp_path):
    write_run(tmp_path)
    assert exporter_check.report(str(tmp_path)) == 0
    report = (tmp_path / "report.md").read_text()
    assert " differ." in report and "0 differ." in report
    assert "| 0 | memory temperature C | 41.0 | 41 | ok |" in report
    assert "| 0 | NVLink links up | [0, 1] | [0, 1] | ok |" in report
    assert "gpu_power_limit (min + 10 W): FAILED!, changed=False: NVML refused power limit 210.0 W" in report
    assert "ratio (nvidia-smi median / exporter scrape median): 100.0" in report
    assert "DRY RUN" not in report


def test_a_figure_that_differs_fails_the_run(tmp_path):
    write_run(tmp_path, metrics=snapshot(pcie_current_width=8))
    assert exporter_check.report(str(tmp_path)) == 1
    assert "| 0 | PCIe width (current) | 8 | 16 | DIFF |" in (tmp_path / "report.md").read_text()


def test_a_memory_temperature_nvidia_smi_does_not_have_is_a_difference(tmp_path):
    write_run(tmp_path, smi_row=SMI_ROW.replace(", 39, 41, ", ", 39, [N/A], "))
    assert exporter_check.report(str(tmp_path)) == 1
    assert "| 0 | memory temperature C | 41.0 | None | DIFF |" in (tmp_path / "report.md").read_text()


def test_both_absent_memory_temperature_agrees(tmp_path):
    write_run(tmp_path, metrics=snapshot(memory_temp_c=None), smi_row=SMI_ROW.replace(", 39, 41, ", ", 39, [N/A], "))
    assert exporter_check.report(str(tmp_path)) == 0


def test_a_limit_not_put_back_fails_the_run(tmp_path):
    write_run(tmp_path, after_limit=210.0)
    assert exporter_check.report(str(tmp_path)) == 1
    assert "- the power limit is not back to its value before the trial" in (tmp_path / "report.md").read_text()


def test_no_power_limit_read_back_fails_the_run(tmp_path):
    write_run(tmp_path)
    (tmp_path / "gpu_facts_before.txt").write_text("localhost | UNREACHABLE!: Failed to create temporary directory\n")
    assert exporter_check.report(str(tmp_path)) == 1
    assert "gpu_facts gave no power limit" in (tmp_path / "report.md").read_text()


def test_the_dry_run_says_it_is_not_a_measurement(tmp_path):
    write_run(tmp_path)
    (tmp_path / "dry_run.txt").write_text("fake NVML scenario dual_h200_nvswitch\n")
    exporter_check.report(str(tmp_path))
    assert "**DRY RUN: fake NVML scenario dual_h200_nvswitch. Nothing here is a measurement of a GPU.**" in (
        tmp_path / "report.md").read_text()


@pytest.mark.parametrize("step, expected", [("current", {"0": 700.0}), ("low", {"0": 210.0}),
                                            ("original", {"0": 700.0})])
def test_power_args_for_each_step(tmp_path, step, expected):
    write_run(tmp_path)
    assert json.loads(exporter_check.power_args(str(tmp_path), step)) == {"limit_w": expected}


def test_percentile_and_module_status():
    assert exporter_check.percentile([5, 1, 3, 2, 4], 0.95) == 5
    assert exporter_check.percentile([5, 1, 3, 2, 4], 0.5) == 3
    assert exporter_check.module_status('localhost | FAILED! => {"msg": "x"}') == "FAILED!"
    assert exporter_check.module_status("localhost | UNREACHABLE!: no tmp") == "UNREACHABLE!"
    assert exporter_check.module_status("") is None
