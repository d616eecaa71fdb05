"""gpu_metrics: the exporter's readings (against mocked pynvml and the fake libnvidia-ml.so.1), its text format
(against canned snapshots), and the reused NVML session that reopens after an error."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pynvml
import pytest
from conftest import bridge_links, dual_3090, gpu

from ansible_collections.llmfleet.workstation.plugins.module_utils import gpu_metrics, nvml

REPO = Path(__file__).resolve().parents[4]
SCENARIOS = REPO / "tests" / "fake_nvml" / "scenarios"
SETTINGS = {"core_temp_limit_c": 85, "memory_temp_limit_c": 100, "nvlink_expected": True}


def canned_gpu(**overrides):
    reading = {
        "index": 0, "uuid": "GPU-1", "name": "NVIDIA GeForce RTX 3090", "pci_bus_id": "00000000:01:00.0",
        "core_temp_c": 71, "memory_temp_c": None, "clock_event_reasons": ["sw_power_cap"],
        "power_draw_mw": 301500, "power_limit_mw": 280000, "power_min_limit_mw": 100000,
        "power_max_limit_mw": 400000, "power_default_limit_mw": 350000, "memory_used_bytes": 1048576,
        "memory_total_bytes": 25769803776, "pcie_current_generation": 4, "pcie_max_generation": 4,
        "pcie_current_width": 16, "pcie_max_width": 16,
        "nvlink": [{"link": 0, "active": True, "errors": {"replay": 3, "recovery": 0, "crc_flit": 1, "crc_data": 0}},
                   {"link": 1, "active": False, "errors": {}}],
    }
    reading.update(overrides)
    return reading


def samples_of(text):
    return {(name, tuple(sorted(labels.items()))): value for name, labels, value in gpu_metrics.parse_metrics(text)}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


# ---- rendering, on canned snapshots ----------------------------------------------------------------------


def test_every_series_of_a_canned_gpu():
    text = gpu_metrics.render_metrics({"driver_version": "560.35.03", "gpus": [canned_gpu()]}, SETTINGS, 0.0042)
    lines = text.splitlines()
    assert ('llmfleet_gpu_info{gpu="0",uuid="GPU-1",name="NVIDIA GeForce RTX 3090",pci_bus_id="00000000:01:00.0",'
            'driver_version="560.35.03"} 1') in lines
    for line in ('llmfleet_gpu_temperature_celsius{gpu="0",sensor="core"} 71',
                 'llmfleet_gpu_temperature_limit_celsius{gpu="0",sensor="core"} 85',
                 'llmfleet_gpu_temperature_limit_celsius{gpu="0",sensor="memory"} 100',
                 'llmfleet_gpu_clock_event_active{gpu="0",reason="sw_power_cap"} 1',
                 'llmfleet_gpu_clock_event_active{gpu="0",reason="sw_thermal_slowdown"} 0',
                 'llmfleet_gpu_power_draw_watts{gpu="0"} 301.5',
                 'llmfleet_gpu_power_limit_watts{gpu="0"} 280',
                 'llmfleet_gpu_power_limit_min_watts{gpu="0"} 100',
                 'llmfleet_gpu_power_limit_max_watts{gpu="0"} 400',
                 'llmfleet_gpu_power_limit_default_watts{gpu="0"} 350',
                 'llmfleet_gpu_memory_used_bytes{gpu="0"} 1048576',
                 'llmfleet_gpu_memory_total_bytes{gpu="0"} 25769803776',
                 'llmfleet_gpu_pcie_link_generation{gpu="0",kind="current"} 4',
                 'llmfleet_gpu_pcie_link_width{gpu="0",kind="max"} 16',
                 'llmfleet_nvlink_link_up{gpu="0",link="0"} 1',
                 'llmfleet_nvlink_link_up{gpu="0",link="1"} 0',
                 'llmfleet_nvlink_link_expected{gpu="0"} 1',
                 'llmfleet_nvlink_errors_total{gpu="0",link="0",counter="replay"} 3',
                 'llmfleet_nvlink_errors_total{gpu="0",link="0",counter="crc_flit"} 1',
                 "llmfleet_exporter_nvml_up 1",
                 "llmfleet_exporter_scrape_duration_seconds 0.0042"):
        assert line in lines, line
    # Every reason nvml.py decodes gets a series, so an alert can tell "not throttling" from "not read".
    assert sum(line.startswith('llmfleet_gpu_clock_event_active{gpu="0"') for line in lines) == 11
    # A link that is down and whose counters the driver does not serve has no counter series.
    assert not any('link="1",counter' in line for line in lines)
    assert "# TYPE llmfleet_nvlink_errors_total counter" in lines
    assert "# TYPE llmfleet_gpu_temperature_celsius gauge" in lines


def test_hidden_readings_are_absent_not_zero():
    hidden = canned_gpu(core_temp_c=None, memory_temp_c=None, clock_event_reasons=None, power_draw_mw=None,
                        power_min_limit_mw=None, power_max_limit_mw=None, nvlink=[])
    text = gpu_metrics.render_metrics({"driver_version": "1", "gpus": [hidden]}, {}, 0.001)
    assert "llmfleet_gpu_temperature_celsius" not in text
    assert "llmfleet_gpu_temperature_limit_celsius" not in text  # no limits given: none published
    assert "llmfleet_gpu_clock_event_active" not in text
    assert "llmfleet_gpu_power_draw_watts" not in text
    assert "llmfleet_gpu_power_limit_min_watts" not in text
    assert "llmfleet_nvlink_link_up" not in text
    assert 'llmfleet_nvlink_link_expected{gpu="0"} 0' in text
    assert 'llmfleet_gpu_power_limit_watts{gpu="0"} 280' in text


def test_memory_temperature_where_the_card_exposes_it():
    text = gpu_metrics.render_metrics({"driver_version": "1", "gpus": [canned_gpu(memory_temp_c=106)]}, SETTINGS, 0)
    assert value(samples_of(text), "llmfleet_gpu_temperature_celsius", gpu="0", sensor="memory") == 106


def test_nvml_down_publishes_only_the_exporter_series():
    text = gpu_metrics.render_metrics(None, SETTINGS, 0.25)
    assert [line for line in text.splitlines() if not line.startswith("#")] == [
        "llmfleet_exporter_nvml_up 0", "llmfleet_exporter_scrape_duration_seconds 0.25"]


def test_label_values_are_escaped_and_parse_back():
    odd = canned_gpu(name='Card "X"\\ 2\nrev')
    text = gpu_metrics.render_metrics({"driver_version": "1", "gpus": [odd]}, SETTINGS, 0)
    assert 'name="Card \\"X\\"\\\\ 2\\nrev"' in text
    info = [labels for name, labels, _value in gpu_metrics.parse_metrics(text) if name == "llmfleet_gpu_info"]
    assert info[0]["name"] == 'Card "X"\\ 2\nrev'


def test_each_family_has_help_and_type_once_and_families_are_known():
    text = gpu_metrics.render_metrics({"driver_version": "1", "gpus": [canned_gpu(), canned_gpu(index=1)]},
                                      SETTINGS, 0)
    for name, kind, _help in gpu_metrics.FAMILIES:
        assert text.count("# TYPE %s %s\n" % (name, kind)) == 1, name
    with pytest.raises(ValueError, match="unknown metric family llmfleet_gpu_fan"):
        gpu_metrics.render_samples([("llmfleet_gpu_fan", {}, 1)])


# ---- reading, against mocked pynvml -----------------------------------------------------------------------


def read_all(fake_nvml, cards):
    fake_nvml.install(cards)
    with nvml.NvmlSession() as session:
        return gpu_metrics.read_host(session, session.gpus())


def test_readings_of_a_bridged_pair(fake_nvml):
    cards = dual_3090()
    cards[1]["memory_c"] = 97
    cards[1]["reasons"] = 0x20 | 0x4
    snapshot = read_all(fake_nvml, cards)
    assert snapshot["driver_version"] == "560.35.03"
    second = snapshot["gpus"][1]
    assert {key: second[key] for key in ("index", "core_temp_c", "memory_temp_c", "clock_event_reasons",
                                         "power_draw_mw", "power_limit_mw", "power_min_limit_mw",
                                         "power_max_limit_mw", "power_default_limit_mw", "memory_total_bytes",
                                         "pcie_current_width")} == {
        "index": 1, "core_temp_c": 40, "memory_temp_c": 97,
        "clock_event_reasons": ["sw_power_cap", "sw_thermal_slowdown"],
        "power_draw_mw": 30000, "power_limit_mw": 350000, "power_min_limit_mw": 100000,
        "power_max_limit_mw": 400000, "power_default_limit_mw": 350000, "memory_total_bytes": 24576 * 1024 * 1024,
        "pcie_current_width": 16}
    assert [link["active"] for link in second["nvlink"]] == [True] * 4
    assert snapshot["gpus"][0]["memory_temp_c"] is None


def test_nvlink_counters_come_from_one_field_call_per_gpu(fake_nvml):
    cards = dual_3090()
    cards[0]["links"] = bridge_links("00000000:21:00.0", errors=2)
    snapshot = read_all(fake_nvml, cards)
    assert snapshot["gpus"][0]["nvlink"][3]["errors"] == {"replay": 2, "recovery": 2, "crc_flit": 2, "crc_data": 2}
    counter_calls = [call for call in fake_nvml.link_calls if call[0] == "nvmlDeviceGetNvLinkErrorCounter"]
    assert counter_calls == []
    error_field_calls = [call for call in fake_nvml.field_calls if len(call[1]) > 1]
    assert [gpu_index for gpu_index, _ids in error_field_calls] == [0, 1]


def test_links_past_eleven_and_drivers_without_the_fields_are_read_link_by_link(fake_nvml):
    cards = [gpu(links=bridge_links("FFFFFFFF:FF:FF.0", count=18, errors=1), error_fields=False)]
    snapshot = read_all(fake_nvml, cards)
    assert len(snapshot["gpus"][0]["nvlink"]) == 18
    assert snapshot["gpus"][0]["nvlink"][17]["errors"]["replay"] == 1
    counter_calls = [call for call in fake_nvml.link_calls if call[0] == "nvmlDeviceGetNvLinkErrorCounter"]
    assert len(counter_calls) == 18 * 4


def test_a_gpu_without_nvlink_has_no_links(fake_nvml):
    assert read_all(fake_nvml, [gpu(links=None)])["gpus"][0]["nvlink"] == []


# ---- the reused session ---------------------------------------------------------------------------------


class Session:
    """Stands in for NvmlSession: counts opens and closes, and fails where told to."""

    opened = 0
    closed = 0
    fail_open = False

    def __enter__(self):
        if Session.fail_open:
            raise nvml.NvmlError("NVIDIA driver not loaded", code="driver_not_loaded")
        Session.opened += 1
        return self

    def __exit__(self, *_args):
        Session.closed += 1

    def gpus(self):
        return []

    def driver_version(self):
        return "560.35.03"


@pytest.fixture
def session_counts():
    Session.opened = Session.closed = 0
    Session.fail_open = False
    return Session


def test_one_session_serves_every_scrape_and_reopens_after_an_error(session_counts, monkeypatch):
    logged = []
    source = gpu_metrics.MetricsSource(SETTINGS, logged.append, session_factory=Session)
    for _scrape in range(3):
        assert "llmfleet_exporter_nvml_up 1" in source.scrape()
    assert (Session.opened, Session.closed) == (1, 0)

    def broken(*_args):
        raise nvml.NvmlError("NVML nvmlDeviceGetCount failed: GPU is lost")

    monkeypatch.setattr(gpu_metrics, "read_host", broken)
    assert "llmfleet_exporter_nvml_up 0" in source.scrape()
    assert "llmfleet_exporter_nvml_up 0" in source.scrape()
    assert logged == ["NVML read failed, reopening on the next scrape: NVML nvmlDeviceGetCount failed: GPU is lost"]
    monkeypatch.undo()
    assert "llmfleet_exporter_nvml_up 1" in source.scrape()
    # The first session, closed by the first failure; one opened (and closed) by the second failed scrape; one
    # opened by the scrape that healed and kept.
    assert (Session.opened, Session.closed) == (3, 2)
    assert logged[-1] == "NVML read again after: NVML nvmlDeviceGetCount failed: GPU is lost"


def test_a_driver_that_never_loads_is_reported_not_raised(session_counts):
    session_counts.fail_open = True
    logged = []
    source = gpu_metrics.MetricsSource(SETTINGS, logged.append, session_factory=Session)
    text = source.scrape()
    assert "llmfleet_exporter_nvml_up 0" in text
    assert "llmfleet_gpu_info" not in text
    assert logged == ["NVML read failed, reopening on the next scrape: NVIDIA driver not loaded"]


# ---- against the fake libnvidia-ml.so.1 ------------------------------------------------------------------

SCRAPE = textwrap.dedent("""
    import sys
    from ansible_collections.llmfleet.workstation.plugins.module_utils.gpu_metrics import MetricsSource
    source = MetricsSource({"core_temp_limit_c": 85, "memory_temp_limit_c": 100, "nvlink_expected": True},
                           sys.stderr.write)
    sys.stdout.write(source.scrape())
""")


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.fail("make and cc are needed to build the fake NVML library")
    out = tmp_path_factory.mktemp("fake_nvml_metrics_build")
    built = subprocess.run(["make", "-s", "-C", str(REPO / "tests" / "fake_nvml"), "PYTHON=%s" % sys.executable,
                            "OUT=%s" % out], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def scrape(library, scenario, tmp_path):
    env = dict(os.environ, LD_LIBRARY_PATH=str(library), FAKE_NVML_SCENARIO=str(SCENARIOS / scenario),
               FAKE_NVML_STATE=str(tmp_path / "power_limits"), PYTHONPATH=os.pathsep.join(sys.path))
    completed = subprocess.run([sys.executable, "-c", SCRAPE], env=env, capture_output=True, text=True, check=False,
                               timeout=60)
    assert completed.returncode == 0, completed.stderr
    return samples_of(completed.stdout)


def test_fake_nvml_hot_junction(library, tmp_path):
    samples = scrape(library, "dual_3090_hot_junction.json", tmp_path)
    scenario = json.loads((SCENARIOS / "dual_3090_hot_junction.json").read_text())
    hot = scenario["gpus"][1]
    assert value(samples, "llmfleet_exporter_nvml_up") == 1
    memory_c = value(samples, "llmfleet_gpu_temperature_celsius", gpu="1", sensor="memory")
    assert memory_c == hot["temperature"]["memory_c"]
    assert value(samples, "llmfleet_gpu_temperature_celsius", gpu="1", sensor="core") == hot["temperature"]["gpu_c"]
    assert value(samples, "llmfleet_gpu_temperature_celsius", gpu="1", sensor="memory") > value(
        samples, "llmfleet_gpu_temperature_limit_celsius", gpu="1", sensor="memory")
    assert value(samples, "llmfleet_gpu_clock_event_active", gpu="1", reason="hw_thermal_slowdown") == 1
    assert value(samples, "llmfleet_gpu_clock_event_active", gpu="0", reason="hw_thermal_slowdown") == 0
    assert value(samples, "llmfleet_gpu_power_draw_watts", gpu="1") == hot["power"]["usage_mw"] / 1000
    assert value(samples, "llmfleet_nvlink_link_up", gpu="0", link="3") == 1
    assert value(samples, "llmfleet_nvlink_link_up", gpu="0", link="4") is None


def test_fake_nvml_geforce_hides_memory_temperature(library, tmp_path):
    samples = scrape(library, "dual_3090_nvlink_ok.json", tmp_path)
    assert value(samples, "llmfleet_gpu_temperature_celsius", gpu="0", sensor="core") is not None
    assert value(samples, "llmfleet_gpu_temperature_celsius", gpu="0", sensor="memory") is None
    assert value(samples, "llmfleet_gpu_temperature_celsius", gpu="1", sensor="memory") is None


def test_fake_nvml_h200_reserved_memory_is_not_used_memory(library, tmp_path):
    samples = scrape(library, "dual_h200_nvswitch.json", tmp_path)
    scenario = json.loads((SCENARIOS / "dual_h200_nvswitch.json").read_text())["gpus"][0]
    used_mib = scenario.get("memory_used_mib", 0)
    assert value(samples, "llmfleet_gpu_memory_used_bytes", gpu="0") == used_mib * 1024 * 1024
    assert len([key for key in samples if key[0] == "llmfleet_nvlink_link_up" and ("gpu", "0") in key[1]]) == 18


def test_fake_nvml_without_driver(library, tmp_path):
    samples = scrape(library, "no_gpu.json", tmp_path)
    assert value(samples, "llmfleet_exporter_nvml_up") == 0


def test_pynvml_error_class_names_are_the_ones_nvml_py_expects():
    # set_power_limit maps refusals by class name; these must exist in the pinned pynvml.
    for name in nvml.POWER_LIMIT_REFUSALS:
        assert isinstance(getattr(pynvml, name), type), name
