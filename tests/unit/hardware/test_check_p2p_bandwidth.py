"""tests/hardware/check_p2p_bandwidth.sh without a GPU: the fake NVML library and tests/fake_torch stand in for the
driver and torch, ansible-core is this venv's. The run on one H200 is what the script is for; this proves the
script around the figures (its steps, time limits, files and verdicts)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "tests" / "hardware" / "check_p2p_bandwidth.sh"
SUMMARY = REPO / "tests" / "hardware" / "p2p_summary.py"
H200 = {"name": "NVIDIA H200", "bus_id": "00000000:18:00.0", "total_mib": 143771}

spec = importlib.util.spec_from_file_location("p2p_summary", SUMMARY)
p2p_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(p2p_summary)


@pytest.fixture(scope="module")
def nvml_library(tmp_path_factory):
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.fail("make and cc are needed to build the fake NVML library")
    out = tmp_path_factory.mktemp("fake_nvml_p2p")
    built = subprocess.run(["make", "-s", "-C", str(REPO / "tests" / "fake_nvml"), "PYTHON=%s" % sys.executable,
                            "OUT=%s" % out], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def test_one_gpu_run_measures_and_writes_three_files(nvml_library, tmp_path):
    scenario = REPO / "tests" / "fake_nvml" / "scenarios" / "single_5090.json"
    env = dict(os.environ, LD_LIBRARY_PATH=str(nvml_library), FAKE_NVML_SCENARIO=str(scenario),
               PYTHONPATH=str(REPO / "tests" / "fake_torch"), PYTHON=sys.executable, OUT=str(tmp_path / "out"),
               PATH="%s:%s" % (Path(sys.executable).parent, os.environ["PATH"]),
               FAKE_TORCH_CONFIG=json.dumps({"gpus": [H200], "within_gbps": 2150, "real_time": True}))
    completed = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False,
                               timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["measure.json", "module.json",
                                                                          "summary.txt"]
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert summary == completed.stdout.split("==> The not-measured path")[1].split("\n", 1)[1]
    assert "memory traffic" in summary and "(read + write)" in summary and "(one side)" in summary
    assert "reference: an H200 moved about 4.3 TB/s counting reads and writes" in summary
    assert "5 passed, 0 failed" in summary  # script, GPU 0, wall clock, module, not measured
    module = json.loads((tmp_path / "out" / "module.json").read_text())
    assert module["ansible_facts"]["llmfleet_p2p_bandwidth"]["gpus"][0]["status"] == "measured"
    record = json.loads((tmp_path / "out" / "measure.json").read_text())
    assert record["not_measured_check"]["ansible_facts"]["llmfleet_p2p_bandwidth"]["reason"] == "torch_missing"


def test_missing_tools_stop_with_a_clear_message(tmp_path):
    env = dict(os.environ, PYTHON="/nonexistent/python3", OUT=str(tmp_path))
    completed = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False)
    assert completed.returncode == 2
    assert "no python3 (set PYTHON=/path/to/python3)" in completed.stderr


def write_work(work, plain=None, wall=None, module=None, missing=None, rcs=(0, 0, 0, 0)):
    work.mkdir()
    (work / "gpus.txt").write_text("0, NVIDIA H200, 00000000:18:00.0\n")
    if plain is not None:
        (work / "plain.out").write_text("%s%s\n" % (p2p_summary.MARKER, json.dumps(plain)))
    (work / "wall.json").write_text(json.dumps(wall) if wall else "")
    for name, result in (("module.out", module), ("missing.out", missing)):
        if result is not None:
            (work / name).write_text(json.dumps({"plays": [{"tasks": [{"hosts": {"localhost": result}}]}]}))
    for name, code in zip(("plain.rc", "wall.rc", "module.rc", "missing.rc"), rcs):
        (work / name).write_text("%d\n" % code)


def plain_result(copy_gbps=2150.0):
    return {"measured": True, "torch_version": "2.11.0", "cuda_version": "13.0", "device_count": 1,
            "size_bytes": 268435456, "repetitions": 5, "pairs": [],
            "gpus": [{"index": 0, "name": "NVIDIA H200", "status": "measured", "data_ok": True,
                      "copy_gbps": copy_gbps, "memory_traffic_gbps": 2 * copy_gbps,
                      "samples_seconds": [0.000125] * 5}]}


def test_wall_clock_disagreeing_with_events_fails(tmp_path):
    facts = {"measured": True, "pairs": [], "elapsed_seconds": 4.0}
    write_work(tmp_path / "work", plain=plain_result(2150.0), wall={"copy_gbps": 1500.0},
               module={"msg": "ok", "ansible_facts": {"llmfleet_p2p_bandwidth": facts}},
               missing={"msg": "not measured",
                        "ansible_facts": {"llmfleet_p2p_bandwidth": {"reason": "torch_missing"}}})
    text, _record, _module, failed = p2p_summary.summarize(tmp_path / "work", 30)
    assert failed == 1
    assert "[FAIL] event timing agrees with the wall clock within 15 %" in text
    assert "this run 4.30 TB/s (100 %)" in text


def test_nothing_ran_is_reported_step_by_step(tmp_path):
    write_work(tmp_path / "work", rcs=(124, 124, 124, 124))
    text, _record, module, failed = p2p_summary.summarize(tmp_path / "work", 60)
    assert module is None
    assert failed == 4
    assert "[FAIL] the measurement script measured (exit 124)" in text
    assert "[FAIL] the module passed and measured (ansible exit 124)" in text
