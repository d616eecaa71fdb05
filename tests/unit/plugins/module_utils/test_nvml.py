"""The NVML session layer: error wording, unavailable values, link enumeration, decoding."""

import pynvml
import pytest
from conftest import bridge_links, dual_3090, gpu, nvml_error

from ansible_collections.llmfleet.workstation.plugins.module_utils import nvml


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND])
def test_missing_driver_names_the_fix(fake_nvml, code):
    fake_nvml.install([], init_error=code)
    with pytest.raises(nvml.NvmlError) as error, nvml.NvmlSession():
        pass
    assert "NVIDIA driver not loaded: run the nvidia_driver role first" in str(error.value)
    assert fake_nvml.shutdowns == 0


def test_other_init_error_is_named(fake_nvml):
    fake_nvml.install([], init_error=pynvml.NVML_ERROR_NO_PERMISSION)
    with pytest.raises(nvml.NvmlError, match="NVML could not start: Insufficient Permissions"), nvml.NvmlSession():
        pass


def test_session_shuts_down_once(fake_nvml):
    fake_nvml.install(dual_3090())
    with nvml.NvmlSession() as session:
        assert [card.index for card in session.gpus()] == [0, 1]
    assert fake_nvml.calls == ["init"]
    assert fake_nvml.shutdowns == 1


def test_missing_pynvml_is_reported(monkeypatch):
    monkeypatch.setattr(nvml, "pynvml", None)
    with pytest.raises(nvml.NvmlError, match="nvidia-ml-py"), nvml.NvmlSession():
        pass


def test_optional_turns_not_supported_and_function_not_found_into_none(fake_nvml, monkeypatch):
    fake_nvml.install([gpu(fan=None)])
    with nvml.NvmlSession() as session:
        card = session.gpus()[0]
        assert session.optional(card.label, "nvmlDeviceGetFanSpeed", card.handle) is None

        def missing(handle):
            raise nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

        monkeypatch.setattr(pynvml, "nvmlDeviceGetFanSpeed", missing)
        assert session.optional(card.label, "nvmlDeviceGetFanSpeed", card.handle) is None
        assert session.optional(card.label, "nvmlNoSuchWrapperInThisPynvml", card.handle) is None


def test_other_errors_name_the_gpu_and_the_call(fake_nvml, monkeypatch):
    fake_nvml.install([gpu()])

    def lost(handle):
        raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetFanSpeed", lost)
    with nvml.NvmlSession() as session:
        card = session.gpus()[0]
        with pytest.raises(nvml.NvmlError) as error:
            session.optional(card.label, "nvmlDeviceGetFanSpeed", card.handle)
    message = str(error.value)
    assert "nvmlDeviceGetFanSpeed" in message
    assert "GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0)" in message
    assert "GPU is lost" in message


@pytest.mark.parametrize("links, expected", [(4, 4), (18, 18), (None, None)])
def test_link_enumeration_stops_where_nvml_says(fake_nvml, links, expected):
    described = bridge_links("00000000:21:00.0", count=links) if links else None
    fake_nvml.install([gpu(links=described)])
    with nvml.NvmlSession() as session:
        assert session.nvlink_link_count(session.gpus()[0]) == expected


def test_link_reading_of_a_switch_attached_link(fake_nvml):
    fake_nvml.install([gpu(name="NVIDIA H200", links=bridge_links("00000000:80:00.0", count=18, version=6,
                                                                  remote_type=2, errors=None))])
    with nvml.NvmlSession() as session:
        link = session.nvlink_link(session.gpus()[0], 17)
    assert link == {
        "link": 17, "active": True, "version": "4.0", "remote_pci_bus_id": "00000000:80:00.0",
        "remote_device_type": "switch", "p2p_supported": True,
        "errors": {"replay": None, "recovery": None, "crc_flit": None, "crc_data": None},
    }


def test_inactive_link_has_no_remote(fake_nvml):
    fake_nvml.install(dual_3090(active=False))
    with nvml.NvmlSession() as session:
        link = session.nvlink_link(session.gpus()[0], 0)
    assert link["active"] is False
    assert link["remote_pci_bus_id"] is None
    assert link["p2p_supported"] is False


def test_memory_temperature_per_field_status(fake_nvml):
    fake_nvml.install([gpu(memory_c=None), gpu(bus_id="00000000:21:00.0", memory_c=71)])
    with nvml.NvmlSession() as session:
        first, second = session.gpus()
        assert session.memory_temperature(first) is None
        assert session.memory_temperature(second) == 71


def test_clock_events_fall_back_to_throttle_reasons(fake_nvml, monkeypatch):
    fake_nvml.install([gpu()])

    def renamed_call_missing(handle):
        raise nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", renamed_call_missing)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", lambda handle: 0x60)
    with nvml.NvmlSession() as session:
        assert session.clock_event_reasons(session.gpus()[0]) == ["sw_thermal_slowdown", "hw_thermal_slowdown"]


def test_cuda_version_decoding(fake_nvml):
    fake_nvml.install([], cuda=12060)
    with nvml.NvmlSession() as session:
        assert session.cuda_driver_version() == "12.6"
    fake_nvml.cuda = 13000
    with nvml.NvmlSession() as session:
        assert session.cuda_driver_version() == "13.0"


def test_decoders_and_estimates():
    assert nvml.decode_clock_event_reasons(0x1 | 0x40) == ["gpu_idle", "hw_thermal_slowdown"]
    assert nvml.decode_clock_event_reasons(None) is None
    assert nvml.format_ranges([3, 0, 1, 2, 7, 9, 10]) == "0-3, 7, 9-10"
    assert nvml.format_ranges([]) == ""
    assert nvml.link_bidirectional_gbps("3.0", 4) * 4 == pytest.approx(112.5)  # RTX 3090 bridge
    assert nvml.link_bidirectional_gbps("3.0", 12) == 50.0  # A100
    assert nvml.link_bidirectional_gbps("4.0", 18) * 18 == 900.0  # H100/H200 SXM
    assert nvml.link_bidirectional_gbps(None, 4) is None


def test_wait_until_polls_with_the_given_clock():
    clock = {"now": 0.0}
    readings = iter([False, False, True])

    def sleep(seconds):
        clock["now"] += seconds

    done, value, waited = nvml.wait_until(lambda: (next(readings), "reading"), 60, 10, sleep, lambda: clock["now"])
    assert (done, value, waited) == (True, "reading", 20.0)

    clock["now"] = 0.0
    done, _value, waited = nvml.wait_until(lambda: (False, None), 25, 10, sleep, lambda: clock["now"])
    assert done is False
    assert waited == 25.0
