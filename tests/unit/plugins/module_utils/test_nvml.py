"""The NVML session layer: error wording, unavailable values, link enumeration, decoding."""

import importlib.util
import sys

import pynvml
import pytest
from conftest import Field, bridge_links, dual_3090, gpu, nvml_error

from ansible_collections.llmfleet.workstation.plugins.module_utils import nvml
from ansible_collections.llmfleet.workstation.plugins.modules import nvlink_status


def raising(code):
    """A pynvml replacement that raises what real NVML would for `code`."""

    def function(*_args):
        raise nvml_error(code)

    return function


# ---- session ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code, nvml_text", [
    (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "Driver Not Loaded"),
    (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "NVML Shared Library Not Found"),
])
def test_missing_driver_names_the_fix(fake_nvml, code, nvml_text):
    fake_nvml.install([], init_error=code)
    with pytest.raises(nvml.NvmlError) as error, nvml.NvmlSession():
        pass
    assert str(error.value) == (
        "NVIDIA driver not loaded: run the nvidia_driver role first (llmfleet.workstation.nvidia_driver), reboot "
        "if it asks for one, and check that nvidia-smi answers (NVML: %s)" % nvml_text
    )
    assert fake_nvml.shutdowns == 0


@pytest.mark.parametrize("code, expected", [
    (pynvml.NVML_ERROR_NO_PERMISSION,
     "NVML could not start (NVMLError_NoPermission: Insufficient Permissions): this user may not open"),
    (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
     "NVML could not start (NVMLError_LibRmVersionMismatch: RM has detected an NVML/RM version mismatch.): "
     "the NVIDIA user-space library and the loaded kernel module are different versions"),
    (pynvml.NVML_ERROR_UNKNOWN,
     "NVML could not start (NVMLError_Unknown: Unknown Error): check the driver with nvidia-smi"),
])
def test_other_init_errors_are_named(fake_nvml, code, expected):
    fake_nvml.install([], init_error=code)
    with pytest.raises(nvml.NvmlError) as error, nvml.NvmlSession():
        pass
    assert str(error.value).startswith(expected)


def test_session_shuts_down_once_even_when_reading_fails(fake_nvml, monkeypatch):
    fake_nvml.install(dual_3090())
    with nvml.NvmlSession() as session:
        assert [card.index for card in session.gpus()] == [0, 1]
    assert fake_nvml.calls == ["init"]
    assert fake_nvml.shutdowns == 1

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", raising(pynvml.NVML_ERROR_UNKNOWN))
    with pytest.raises(nvml.NvmlError, match="NVML nvmlDeviceGetCount failed on the system"), \
            nvml.NvmlSession() as session:
        session.gpus()
    assert fake_nvml.shutdowns == 2


def test_failed_shutdown_is_ignored(fake_nvml, monkeypatch):
    fake_nvml.install([])
    monkeypatch.setattr(pynvml, "nvmlShutdown", raising(pynvml.NVML_ERROR_UNINITIALIZED))
    with nvml.NvmlSession():
        pass


def test_import_without_pynvml_sets_the_flag(monkeypatch):
    """The file imports, with HAS_PYNVML false and the error kept, where nvidia-ml-py is missing.

    Loaded as a separate copy so the module every other test uses (and its NvmlError) stays as it is.
    """
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    spec = importlib.util.spec_from_file_location("nvml_without_pynvml", nvml.__file__)
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    assert copy.HAS_PYNVML is False
    assert "pynvml" in copy.PYNVML_IMPORT_ERROR
    assert copy.NVLINK_MAX_LINKS == 36
    with pytest.raises(copy.NvmlError, match="nvidia-ml-py"), copy.NvmlSession():
        pass


def test_gpus_decode_bytes(fake_nvml):
    cards = [gpu(name=b"NVIDIA GeForce RTX 3090")]
    cards[0]["uuid"] = b"GPU-1"
    fake_nvml.install(cards)
    with nvml.NvmlSession() as session:
        card = session.gpus()[0]
    assert card.identity() == {"index": 0, "name": "NVIDIA GeForce RTX 3090", "uuid": "GPU-1",
                               "pci_bus_id": "00000000:01:00.0"}
    assert card.label == "GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0)"


# ---- readers ----------------------------------------------------------------------------------


def test_optional_turns_not_supported_and_function_not_found_into_none(fake_nvml, monkeypatch):
    fake_nvml.install([gpu(fan=None)])
    with nvml.NvmlSession() as session:
        card = session.gpus()[0]
        assert session.optional(card.label, "nvmlDeviceGetFanSpeed", card.handle) is None
        monkeypatch.setattr(pynvml, "nvmlDeviceGetFanSpeed", raising(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND))
        assert session.optional(card.label, "nvmlDeviceGetFanSpeed", card.handle) is None
        assert session.optional(card.label, "nvmlNoSuchWrapperInThisPynvml", card.handle) is None


def test_not_found_is_unavailable_only_where_the_caller_says_so(fake_nvml, monkeypatch):
    fake_nvml.install([gpu()])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetFanSpeed", raising(pynvml.NVML_ERROR_NOT_FOUND))
    with nvml.NvmlSession() as session:
        card = session.gpus()[0]
        assert session.optional(card.label, "nvmlDeviceGetFanSpeed", card.handle,
                                also_unavailable=("NVMLError_NotFound",)) is None
        with pytest.raises(nvml.NvmlError, match="Not Found"):
            session.optional(card.label, "nvmlDeviceGetFanSpeed", card.handle)


def test_other_errors_name_the_gpu_and_the_call(fake_nvml, monkeypatch):
    fake_nvml.install([gpu()])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetFanSpeed", raising(pynvml.NVML_ERROR_GPU_IS_LOST))
    with nvml.NvmlSession() as session:
        card = session.gpus()[0]
        with pytest.raises(nvml.NvmlError) as error:
            session.optional(card.label, "nvmlDeviceGetFanSpeed", card.handle)
    assert str(error.value) == (
        "NVML nvmlDeviceGetFanSpeed failed on GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0): GPU is lost"
    )


def test_call_raises_even_for_not_supported(fake_nvml, monkeypatch):
    fake_nvml.install([gpu()])
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", raising(pynvml.NVML_ERROR_NOT_SUPPORTED))
    with nvml.NvmlSession() as session, pytest.raises(nvml.NvmlError, match="nvmlSystemGetDriverVersion"):
        session.driver_version()


# ---- NVLink -----------------------------------------------------------------------------------


@pytest.mark.parametrize("links, expected", [(4, 4), (18, 18), (None, None)])
def test_link_enumeration_stops_where_nvml_says(fake_nvml, links, expected):
    described = bridge_links("00000000:21:00.0", count=links) if links else None
    fake_nvml.install([gpu(links=described)])
    with nvml.NvmlSession() as session:
        assert session.nvlink_link_count(session.gpus()[0]) == expected
    # Every link up to the end is asked for, then exactly one InvalidArgument (or NotSupported on link 0).
    states = [call for call in fake_nvml.link_calls if call[0] == "nvmlDeviceGetNvLinkState"]
    assert [call[2] for call in states] == list(range((links or 0) + 1))


def test_invalid_argument_on_link_zero_means_no_nvlink(fake_nvml):
    fake_nvml.install([gpu(links=[])])  # a GPU that answers InvalidArgument at link 0
    with nvml.NvmlSession() as session:
        assert session.nvlink_link_count(session.gpus()[0]) is None


def test_enumeration_is_bounded_by_nvml_max_links(fake_nvml):
    fake_nvml.install([gpu(links=bridge_links("00000000:21:00.0", count=nvml.NVLINK_MAX_LINKS + 5))])
    with nvml.NvmlSession() as session:
        assert session.nvlink_link_count(session.gpus()[0]) == nvml.NVLINK_MAX_LINKS


def test_other_link_state_errors_name_gpu_and_link(fake_nvml, monkeypatch):
    fake_nvml.install([gpu(links=bridge_links("00000000:21:00.0"))])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetNvLinkState", raising(pynvml.NVML_ERROR_GPU_IS_LOST))
    with nvml.NvmlSession() as session, pytest.raises(nvml.NvmlError) as error:
        session.nvlink_link_count(session.gpus()[0])
    assert "GPU 0 (NVIDIA GeForce RTX 3090, 00000000:01:00.0) link 0: GPU is lost" in str(error.value)


def test_link_reading_of_a_switch_attached_link(fake_nvml):
    fake_nvml.install([gpu(name="NVIDIA H200", links=bridge_links("FFFFFFFF:FF:FF.0", count=18, version=6,
                                                                  remote_type=2, errors=None))])
    with nvml.NvmlSession() as session:
        link = session.nvlink_link(session.gpus()[0], 17)
    assert link == {
        "link": 17, "active": True, "version": "4.0", "remote_pci_bus_id": "FFFFFFFF:FF:FF.0",
        "remote_device_type": "switch", "p2p_supported": True,
        "errors": {"replay": None, "recovery": None, "crc_flit": None, "crc_data": None},
    }


def test_inactive_link_has_no_remote(fake_nvml):
    fake_nvml.install(dual_3090(active=False))
    with nvml.NvmlSession() as session:
        link = session.nvlink_link(session.gpus()[0], 0)
    assert link["active"] is False
    assert link["remote_pci_bus_id"] is None and link["remote_device_type"] is None
    assert link["p2p_supported"] is False
    # Nothing is asked about the far end of a link that is down.
    asked = {call[0] for call in fake_nvml.link_calls}
    assert "nvmlDeviceGetNvLinkRemotePciInfo" not in asked


def test_inactive_link_tolerates_invalid_argument_on_its_details(fake_nvml, monkeypatch):
    fake_nvml.install(dual_3090(active=False))
    for name in ("nvmlDeviceGetNvLinkVersion", "nvmlDeviceGetNvLinkCapability", "nvmlDeviceGetNvLinkErrorCounter"):
        monkeypatch.setattr(pynvml, name, raising(pynvml.NVML_ERROR_INVALID_ARGUMENT))
    with nvml.NvmlSession() as session:
        link = session.nvlink_link(session.gpus()[0], 2)
    assert link == {"link": 2, "active": False, "version": None, "remote_pci_bus_id": None,
                    "remote_device_type": None, "p2p_supported": None,
                    "errors": {"replay": None, "recovery": None, "crc_flit": None, "crc_data": None}}


def test_active_link_does_not_hide_invalid_argument(fake_nvml, monkeypatch):
    fake_nvml.install(dual_3090())
    monkeypatch.setattr(pynvml, "nvmlDeviceGetNvLinkVersion", raising(pynvml.NVML_ERROR_INVALID_ARGUMENT))
    with nvml.NvmlSession() as session, pytest.raises(nvml.NvmlError, match="nvmlDeviceGetNvLinkVersion"):
        session.nvlink_link(session.gpus()[0], 0)


def test_pair_status_and_topology(fake_nvml):
    fake_nvml.install(dual_3090(), p2p={(0, 1): pynvml.NVML_P2P_STATUS_NOT_SUPPORTED},
                      topology={(0, 1): pynvml.NVML_TOPOLOGY_SYSTEM})
    with nvml.NvmlSession() as session:
        first, second = session.gpus()
        assert session.p2p_nvlink_status(first, second) == "not_supported"
        assert session.topology_level(first, second) == "system"


def test_pair_status_not_supported_is_none(fake_nvml, monkeypatch):
    fake_nvml.install(dual_3090())
    monkeypatch.setattr(pynvml, "nvmlDeviceGetP2PStatus", raising(pynvml.NVML_ERROR_NOT_SUPPORTED))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTopologyCommonAncestor", raising(pynvml.NVML_ERROR_NOT_SUPPORTED))
    with nvml.NvmlSession() as session:
        first, second = session.gpus()
        assert session.p2p_nvlink_status(first, second) is None
        assert session.topology_level(first, second) is None


# ---- thermal ----------------------------------------------------------------------------------


def test_memory_temperature_per_field_status(fake_nvml):
    fake_nvml.install([gpu(memory_c=None), gpu(bus_id="00000000:21:00.0", memory_c=71)])
    with nvml.NvmlSession() as session:
        first, second = session.gpus()
        assert session.memory_temperature(first) is None
        assert session.memory_temperature(second) == 71


@pytest.mark.parametrize("status", [pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_NOT_FOUND,
                                    pynvml.NVML_ERROR_INVALID_ARGUMENT, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND])
def test_memory_temperature_unavailable_statuses(fake_nvml, monkeypatch, status):
    fake_nvml.install([gpu()])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetFieldValues", lambda handle, ids: [Field(status)])
    with nvml.NvmlSession() as session:
        assert session.memory_temperature(session.gpus()[0]) is None


def test_memory_temperature_other_field_error_names_gpu_and_field(fake_nvml, monkeypatch):
    fake_nvml.install([gpu()])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetFieldValues",
                        lambda handle, ids: [Field(pynvml.NVML_ERROR_GPU_IS_LOST)])
    with nvml.NvmlSession() as session, pytest.raises(nvml.NvmlError) as error:
        session.memory_temperature(session.gpus()[0])
    assert str(error.value) == ("NVML nvmlDeviceGetFieldValues(NVML_FI_DEV_MEMORY_TEMP) failed on GPU 0 "
                                "(NVIDIA GeForce RTX 3090, 00000000:01:00.0): GPU is lost")


def test_memory_temperature_whole_call_unsupported(fake_nvml, monkeypatch):
    fake_nvml.install([gpu()])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetFieldValues", raising(pynvml.NVML_ERROR_NOT_SUPPORTED))
    with nvml.NvmlSession() as session:
        assert session.memory_temperature(session.gpus()[0]) is None


def test_memory_temperature_follows_the_value_type(fake_nvml, monkeypatch):
    fake_nvml.install([gpu()])
    field = Field(pynvml.NVML_SUCCESS)
    field.valueType = pynvml.NVML_VALUE_TYPE_DOUBLE
    field.value.dVal = 87.6
    monkeypatch.setattr(pynvml, "nvmlDeviceGetFieldValues", lambda handle, ids: [field])
    with nvml.NvmlSession() as session:
        assert session.memory_temperature(session.gpus()[0]) == 88


def test_clock_events_fall_back_to_throttle_reasons(fake_nvml, monkeypatch):
    fake_nvml.install([gpu()])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons",
                        raising(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", lambda handle: 0x60)
    with nvml.NvmlSession() as session:
        assert session.clock_event_reasons(session.gpus()[0]) == ["sw_thermal_slowdown", "hw_thermal_slowdown"]


def test_clock_events_fall_back_when_pynvml_predates_the_rename(fake_nvml, monkeypatch):
    fake_nvml.install([gpu()])
    monkeypatch.delattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", lambda handle: 0x4)
    with nvml.NvmlSession() as session:
        assert session.clock_event_reasons(session.gpus()[0]) == ["sw_power_cap"]


def test_clock_events_unavailable_everywhere(fake_nvml, monkeypatch):
    fake_nvml.install([gpu(reasons=None)])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons",
                        raising(pynvml.NVML_ERROR_NOT_SUPPORTED))
    with nvml.NvmlSession() as session:
        assert session.clock_event_reasons(session.gpus()[0]) is None


# ---- system and decoding ----------------------------------------------------------------------


def test_system_versions(fake_nvml):
    fake_nvml.install([], cuda=12060, driver=b"560.35.03")
    with nvml.NvmlSession() as session:
        assert session.driver_version() == "560.35.03"
        assert session.cuda_driver_version() == "12.6"
    fake_nvml.cuda = 13000
    with nvml.NvmlSession() as session:
        assert session.cuda_driver_version() == "13.0"
    fake_nvml.cuda = None
    with nvml.NvmlSession() as session:
        assert session.cuda_driver_version() is None


def test_decoders():
    assert nvml.decode_clock_event_reasons(0x1 | 0x40) == ["gpu_idle", "hw_thermal_slowdown"]
    assert nvml.decode_clock_event_reasons(0) == []
    assert nvml.decode_clock_event_reasons(None) is None
    assert nvml.decode_clock_event_reasons(0x4 | 0x1000) == ["sw_power_cap", "unknown_0x1000"]
    assert [nvml.decode_nvlink_version(enum) for enum in range(9)] == [
        None, "1.0", "2.0", "2.2", "3.0", "3.1", "4.0", "5.0", "6.0"]
    assert nvml.decode_nvlink_version(None) is None
    assert [nvml.decode_remote_device_type(kind) for kind in (0, 1, 2, 255, 7, None)] == [
        "gpu", "ibmnpu", "switch", "unknown", "unknown", None]
    assert nvml.decode_p2p_status(pynvml.NVML_P2P_STATUS_OK) == "ok"
    assert nvml.decode_p2p_status(pynvml.NVML_P2P_STATUS_DISABLED_BY_REGKEY) == "disabled_by_regkey"
    assert nvml.decode_p2p_status(42) == "unknown"
    assert nvml.decode_p2p_status(None) is None
    assert nvml.decode_topology_level(pynvml.NVML_TOPOLOGY_HOSTBRIDGE) == "hostbridge"
    assert nvml.decode_topology_level(pynvml.NVML_TOPOLOGY_SYSTEM) == "system"
    assert nvml.decode_topology_level(None) is None
    assert nvml.decode_cuda_version(12060) == "12.6"
    assert nvml.decode_cuda_version(None) is None
    assert nvml.to_text(b"RTX") == "RTX" and nvml.to_text("RTX") == "RTX" and nvml.to_text(None) is None
    assert nvml.milliwatts_to_watts(350000) == 350.0 and nvml.milliwatts_to_watts(None) is None


def test_tables_agree_with_pynvml():
    """Our decoding tables use NVML's own numbers (nvml.h, as pynvml mirrors them)."""
    assert nvml.FI_DEV_MEMORY_TEMP == pynvml.NVML_FI_DEV_MEMORY_TEMP
    assert nvml.P2P_CAPS_INDEX_NVLINK == pynvml.NVML_P2P_CAPS_INDEX_NVLINK
    assert nvml.NVLINK_MAX_LINKS == pynvml.NVML_NVLINK_MAX_LINKS
    assert dict(nvml.TEMPERATURE_THRESHOLDS) == {
        "shutdown_c": pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN,
        "slowdown_c": pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
        "memory_max_c": pynvml.NVML_TEMPERATURE_THRESHOLD_MEM_MAX,
        "gpu_max_c": pynvml.NVML_TEMPERATURE_THRESHOLD_GPU_MAX,
    }
    reasons = dict((name, bit) for bit, name in nvml.CLOCK_EVENT_REASONS)
    assert reasons["sw_thermal_slowdown"] == pynvml.nvmlClocksEventReasonSwThermalSlowdown
    assert reasons["hw_thermal_slowdown"] == pynvml.nvmlClocksThrottleReasonHwThermalSlowdown
    assert reasons["gpu_idle"] == pynvml.nvmlClocksEventReasonGpuIdle
    assert nvml.REMOTE_DEVICE_TYPES[pynvml.NVML_NVLINK_DEVICE_TYPE_SWITCH] == "switch"
    assert nvml.TOPOLOGY_LEVELS[pynvml.NVML_TOPOLOGY_NODE] == "node"


def test_format_ranges():
    assert nvml.format_ranges([3, 0, 1, 2, 7, 9, 10]) == "0-3, 7, 9-10"
    assert nvml.format_ranges([2]) == "2"
    assert nvml.format_ranges([]) == ""


def test_bandwidth_estimates():
    assert nvml.link_bidirectional_gbps("3.0", 4, "NVIDIA GeForce RTX 3090") * 4 == pytest.approx(112.5)
    assert nvml.link_bidirectional_gbps("3.0", 4, "NVIDIA RTX A6000") * 4 == pytest.approx(112.5)
    assert nvml.link_bidirectional_gbps("3.0", 12, "NVIDIA A100-SXM4-80GB") == 50.0
    assert nvml.link_bidirectional_gbps("3.0", 4, "NVIDIA A30") == 50.0  # GA100: full-width links
    assert nvml.link_bidirectional_gbps("4.0", 18, "NVIDIA H200") * 18 == 900.0
    assert nvml.link_bidirectional_gbps("5.0", 18, "NVIDIA B200") * 18 == 1800.0
    assert nvml.link_bidirectional_gbps("6.0", 18) is None  # no published figure yet: no number
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

    clock["now"] = 0.0
    done, _value, waited = nvml.wait_until(lambda: (False, None), 0, 10, sleep, lambda: clock["now"])
    assert (done, waited) == (False, 0.0)


# ---- NVLink error counters: one field call per GPU, per-link calls where fields are not served --------------


def counted_links(count=4, **overrides):
    """Links whose four counters differ, so a counter read from the wrong field or link shows."""
    links = bridge_links("00000000:21:00.0", count=count, **overrides)
    for number, link in enumerate(links):
        link["errors"] = [100 * number + counter for counter in range(4)]
    return links


def read_all_links(fake_nvml, cards):
    fake_nvml.install(cards)
    with nvml.NvmlSession() as session:
        gpus = session.gpus()
        return [[session.nvlink_link(card, link) for link in range(session.nvlink_link_count(card))]
                for card in gpus]


def counter_calls(fake_nvml):
    return [call for call in fake_nvml.link_calls if call[0] == "nvmlDeviceGetNvLinkErrorCounter"]


@pytest.mark.parametrize("counter, link, field_name", [
    (counter, link, "NVML_FI_DEV_NVLINK_%s_ERROR_COUNT_L%d" % (counter.upper(), link))
    for counter in ("replay", "recovery", "crc_flit", "crc_data") for link in range(12)
])
def test_error_field_ids_are_nvml_h_s(counter, link, field_name):
    assert nvml.nvlink_error_field_id(counter, link) == getattr(pynvml, field_name)


def test_no_error_field_past_link_eleven():
    assert nvml.nvlink_error_field_id("replay", 12) is None


def test_error_counters_of_a_gpu_come_from_one_field_call(fake_nvml):
    cards = [gpu(links=counted_links()), gpu(bus_id="00000000:21:00.0", links=counted_links())]
    links = read_all_links(fake_nvml, cards)
    assert links[0][3]["errors"] == {"replay": 300, "recovery": 301, "crc_flit": 302, "crc_data": 303}
    assert links[1][0]["errors"] == {"replay": 0, "recovery": 1, "crc_flit": 2, "crc_data": 3}
    assert [index for index, _ids in fake_nvml.field_calls] == [0, 1]
    assert counter_calls(fake_nvml) == []


def test_without_error_fields_every_counter_is_read_per_link_with_the_same_result(fake_nvml):
    batched = read_all_links(fake_nvml, [gpu(links=counted_links())])
    per_link = read_all_links(fake_nvml, [gpu(links=counted_links(), error_fields=False)])
    assert per_link == batched
    assert len(counter_calls(fake_nvml)) == 4 * 4


def test_counters_a_driver_does_not_expose_stay_null_either_way(fake_nvml):
    switch_links = bridge_links("FFFFFFFF:FF:FF.0", count=18, version=6, remote_type=2, errors=None)
    h200 = gpu(name="NVIDIA H200", links=switch_links)
    links = read_all_links(fake_nvml, [h200])[0]
    assert {value for link in links for value in link["errors"].values()} == {None}
    # Fields were asked once; each counter NVML did not serve was then asked per link, as before.
    assert len(fake_nvml.field_calls) == 1
    assert len(counter_calls(fake_nvml)) == 4 * 18


def test_links_past_eleven_are_read_per_link(fake_nvml):
    links = read_all_links(fake_nvml, [gpu(name="NVIDIA H200", links=counted_links(count=18, version=6))])[0]
    assert links[17]["errors"] == {"replay": 1700, "recovery": 1701, "crc_flit": 1702, "crc_data": 1703}
    assert links[11]["errors"]["crc_data"] == 1103
    assert {link for _name, _gpu, link in counter_calls(fake_nvml)} == set(range(12, 18))


def test_links_that_are_down_are_read_per_link(fake_nvml):
    links = read_all_links(fake_nvml, [gpu(links=counted_links(active=False))])[0]
    assert links[2]["errors"]["recovery"] == 201
    assert fake_nvml.field_calls == []
    assert len(counter_calls(fake_nvml)) == 4 * 4


def test_a_failing_field_call_falls_back_to_per_link_calls(fake_nvml, monkeypatch):
    fake_nvml.install([gpu(links=counted_links())])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetFieldValues", raising(pynvml.NVML_ERROR_UNKNOWN))
    with nvml.NvmlSession() as session:
        link = session.nvlink_link(session.gpus()[0], 1)
    assert link["errors"] == {"replay": 100, "recovery": 101, "crc_flit": 102, "crc_data": 103}
    assert len(counter_calls(fake_nvml)) == 4


def test_a_link_read_again_gets_fresh_counters(fake_nvml):
    cards = [gpu(links=counted_links())]
    fake_nvml.install(cards)
    with nvml.NvmlSession() as session:
        card = session.gpus()[0]
        first = session.nvlink_link(card, 0)["errors"]["replay"]
        cards[0]["links"][0]["errors"] = [7, 1, 2, 3]
        second = session.nvlink_link(card, 0)["errors"]["replay"]
    assert (first, second) == (0, 7)
    assert len(fake_nvml.field_calls) == 2


def test_nvlink_status_facts_are_the_same_with_and_without_error_fields(fake_nvml):
    def facts(error_fields):
        cards = [gpu(links=counted_links(), error_fields=error_fields),
                 gpu(bus_id="00000000:21:00.0", links=counted_links(), error_fields=error_fields)]
        fake_nvml.install(cards)
        with nvml.NvmlSession() as session:
            return nvlink_status.collect_nvlink(session)

    assert facts(True) == facts(False)
