"""p2p_measure, the script the P2P bandwidth gate runs under the engine's Python: timing arithmetic, streams,
checks of the copied data, and the reasons it gives when it cannot measure. CUDA is tests/fake_torch."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKE_TORCH_DIR, load_fake_torch

from ansible_collections.llmfleet.workstation.plugins.module_utils import p2p_measure

REPO = Path(__file__).resolve().parents[4]
SCRIPT = REPO / "plugins" / "module_utils" / "p2p_measure.py"
MIB = 1024 * 1024
TWO_GPUS = [{"name": "NVIDIA GeForce RTX 3090", "bus_id": "00000000:01:00.0"},
            {"name": "NVIDIA GeForce RTX 3090", "bus_id": "00000000:21:00.0"}]


torch = load_fake_torch()


def settings(*argv):
    return p2p_measure.parse_args(["--size-mib", "64"] + list(argv))


def measure(config, *argv):
    backend = torch.configure(config)
    return p2p_measure.measure(torch, settings(*argv), clock=backend.now), backend


# ---- arithmetic ----------------------------------------------------------------------------------------


def test_gbps_is_decimal_bytes_per_second():
    assert p2p_measure.gbps(256 * MIB, 0.005) == pytest.approx(53.687, abs=0.001)
    assert p2p_measure.gbps(10 ** 9, 1.0) == 1.0
    assert p2p_measure.gbps(10 ** 9, 0) is None
    assert p2p_measure.gbps(10 ** 9, None) is None


def test_a_figure_is_the_median_of_the_timed_copies():
    assert p2p_measure.median_seconds([0.004, 0.001, 0.002, 0.003, 0.100]) == 0.003
    assert p2p_measure.median_seconds([]) is None


def test_within_gpu_entry_counts_bytes_copied_and_memory_traffic_twice():
    entry = p2p_measure.gpu_entry({"index": 0}, 10 ** 9, [0.0005, 0.0004, 0.0006], True)
    assert entry["copy_gbps"] == 2000.0
    assert entry["memory_traffic_gbps"] == 4000.0
    assert entry["status"] == "measured"


def test_pair_entry_aggregates_both_directions_over_their_common_wall_time():
    entry = p2p_measure.pair_entry(torch, 0, 1, 10 ** 9, one_way=([0.02], [0.025]), both_ways=([0.021], [0.022]),
                                   wall=[0.025], data_ok=True)
    assert [direction["unidirectional_gbps"] for direction in entry["directions"]] == [50.0, 40.0]
    assert [direction["bidirectional_gbps"] for direction in entry["directions"]] == [47.619, 45.455]
    # 2 x 10^9 bytes in 25 ms, not the sum of the two per-direction figures.
    assert entry["bidirectional_total_gbps"] == 80.0
    assert [(direction["source"], direction["destination"]) for direction in entry["directions"]] == [(0, 1), (1, 0)]


def test_pci_bus_id_is_written_as_nvml_writes_it():
    class Properties:
        pci_domain_id, pci_bus_id, pci_device_id = 0, 0x18, 0

    assert p2p_measure.pci_bus_id(Properties()) == "00000000:18:00.0"
    assert p2p_measure.pci_bus_id(object()) is None


def test_options_are_checked():
    assert settings().size_mib == 64
    with pytest.raises(SystemExit):
        p2p_measure.parse_args(["--repetitions", "0"])


# ---- measurement with a fake CUDA ------------------------------------------------------------------------


def test_within_gpu_copy_on_one_gpu():
    result, _backend = measure({"gpus": [{"name": "NVIDIA H200", "bus_id": "00000000:18:00.0"}],
                                "within_gbps": 2150})
    assert result["measured"] is True
    assert result["pairs"] == []
    gpu = result["gpus"][0]
    assert gpu["copy_gbps"] == pytest.approx(2150.0)
    assert gpu["memory_traffic_gbps"] == pytest.approx(4300.0)
    assert gpu["data_ok"] is True
    assert gpu["pci_bus_id"] == "00000000:18:00.0"
    assert len(gpu["samples_seconds"]) == 5  # the warm-up copies are not counted


def test_pair_each_way_and_both_ways_at_once():
    result, _backend = measure({"gpus": TWO_GPUS, "pair_gbps": 52})
    pair = result["pairs"][0]
    assert pair["status"] == "measured"
    assert pair["gpus"] == [0, 1]
    for direction in pair["directions"]:
        assert direction["unidirectional_gbps"] == pytest.approx(52.0)
        assert direction["bidirectional_gbps"] == pytest.approx(52.0)
        assert direction["peer_access"] is True
    # The two directions overlapped: both directions' bytes in the time of one.
    assert pair["bidirectional_total_gbps"] == pytest.approx(104.0)
    assert pair["data_ok"] is True


def test_opposite_copies_on_the_current_streams_would_serialize():
    """What the four streams of measure_both_ways avoid: torch's cross-device barrier on shared streams."""
    backend = torch.configure({"gpus": TWO_GPUS, "pair_gbps": 50})
    first = p2p_measure.Buffers(torch, 0, 64 * MIB)
    second = p2p_measure.Buffers(torch, 1, 64 * MIB)
    started = backend.now()
    second.target.copy_(first.source)
    first.target.copy_(second.source)
    torch.cuda.synchronize(0)
    torch.cuda.synchronize(1)
    assert 2 * 64 * MIB / (backend.now() - started) / 1e9 == pytest.approx(50.0)


def test_copies_are_timed_on_the_stream_they_run_on():
    _result, backend = measure({"gpus": TWO_GPUS})
    # Every timed copy ran on a stream measure created, never on a device's default stream.
    defaults = set(map(id, backend.default.values()))
    assert backend.copies
    assert all(id(stream) not in defaults for _source, _destination, stream, _start, _end in backend.copies)


def test_copies_that_arrive_altered_are_reported():
    result, _backend = measure({"gpus": TWO_GPUS, "corrupt_pairs": [[0, 1]]})
    assert result["pairs"][0]["data_ok"] is False
    assert all(gpu["data_ok"] for gpu in result["gpus"])


def test_a_cuda_error_on_a_pair_is_that_pairs_result():
    result, _backend = measure({"gpus": TWO_GPUS + [{"bus_id": "00000000:41:00.0"}], "error_pairs": [[0, 2]]})
    by_gpus = {tuple(pair["gpus"]): pair for pair in result["pairs"]}
    assert by_gpus[(0, 2)]["status"] == "error"
    assert "illegal memory access" in by_gpus[(0, 2)]["error"]
    assert by_gpus[(0, 1)]["status"] == by_gpus[(1, 2)]["status"] == "measured"


def test_a_gpu_without_room_for_the_buffers_is_not_measured():
    gpus = [dict(TWO_GPUS[0], free_mib=100), TWO_GPUS[1]]
    result, _backend = measure({"gpus": gpus})
    assert result["gpus"][0]["status"] == "not_measured"
    assert result["gpus"][0]["reason"] == "insufficient_memory"
    assert "100 MiB free, 192 MiB needed" in result["gpus"][0]["detail"]
    assert result["gpus"][1]["status"] == "measured"
    assert result["pairs"][0]["status"] == "not_measured"
    assert result["pairs"][0]["reason"] == "gpu_not_measured"


def test_no_pairs_measures_within_each_gpu_only():
    result, _backend = measure({"gpus": TWO_GPUS}, "--no-pairs")
    assert result["pairs"] == []
    assert [gpu["status"] for gpu in result["gpus"]] == ["measured", "measured"]


# ---- when there is nothing to measure ------------------------------------------------------------------


def importer_raising(error):
    def importer():
        raise error

    return importer


@pytest.mark.parametrize("error, reason", [
    (ImportError("No module named 'torch'"), "torch_missing"),
    (OSError("libcudart.so.13: cannot open shared object file"), "torch_unusable"),
])
def test_torch_that_does_not_import(error, reason):
    result = p2p_measure.run([], importer=importer_raising(error))
    assert result["measured"] is False
    assert result["reason"] == reason
    assert sys.executable in result["detail"]


def test_cpu_build_of_torch():
    torch.configure({"cuda": False})
    result = p2p_measure.run([], importer=lambda: torch)
    assert result["reason"] == "cuda_unavailable"
    assert "torch.cuda.is_available() is false" in result["detail"]


def test_no_visible_gpu():
    torch.configure({"gpus": []})
    assert p2p_measure.run([], importer=lambda: torch)["reason"] == "no_gpu"


# ---- as a script -----------------------------------------------------------------------------------------


def test_imports_only_the_standard_library_and_torch():
    tree = ast.parse(SCRIPT.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "argparse", "contextlib", "importlib", "json", "statistics", "sys", "time",
                        "torch"}


def run_script(env_extra, *argv):
    env = dict(os.environ, PYTHONPATH=str(FAKE_TORCH_DIR), **env_extra)
    completed = subprocess.run([sys.executable, "-", "--size-mib", "8"] + list(argv), input=SCRIPT.read_text(),
                               capture_output=True, text=True, env=env, check=True, timeout=60)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(p2p_measure.RESULT_MARKER + " ")]
    assert len(lines) == 1, completed.stdout
    return json.loads(lines[0].split(" ", 1)[1]), completed.stderr


def test_runs_from_stdin_and_prints_one_result_line():
    config = {"gpus": TWO_GPUS, "pair_gbps": 50, "within_gbps": 800, "real_time": True}
    result, stderr = run_script({"FAKE_TORCH_CONFIG": json.dumps(config)})
    assert result["measured"] is True
    assert result["version"] == p2p_measure.FORMAT_VERSION
    # The fake copy sleeps for the time 50 GB/s takes; a loaded machine oversleeps, never undersleeps, so the figure
    # is bounded above tightly and below loosely.
    assert 45.0 <= result["pairs"][0]["directions"][0]["unidirectional_gbps"] <= 50.5
    assert result["size_bytes"] == 8 * MIB
    assert "GPU 0 <-> GPU 1" in stderr  # progress, for whoever ends a hung run


def test_script_reports_a_missing_torch_instead_of_failing():
    result, _stderr = run_script({"FAKE_TORCH_IMPORT_ERROR": "ImportError"})
    assert result == {"version": 1, "measured": False, "reason": "torch_missing", "detail": result["detail"],
                      "gpus": [], "pairs": []}
