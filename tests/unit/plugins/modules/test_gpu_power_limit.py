"""gpu_power_limit: the wanted limits, the range check before any change, check mode, NVML's refusals."""

import pynvml
import pytest
from conftest import dual_3090, nvml_error

from ansible_collections.llmfleet.workstation.plugins.module_utils import nvml
from ansible_collections.llmfleet.workstation.plugins.modules import gpu_power_limit


class Driver:
    """What the card holds: the management limit per GPU, changed only by nvmlDeviceSetPowerManagementLimit."""

    def __init__(self, fake_nvml, monkeypatch, cards, refuse=None):
        self.limits = {index: card["power_mw"]["enforced"] for index, card in enumerate(cards)}
        self.sets = []
        self.refuse = refuse
        fake_nvml.install(cards)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerManagementLimit", lambda handle: self.limits[handle[1]])
        monkeypatch.setattr(pynvml, "nvmlDeviceSetPowerManagementLimit", self.set)

    def set(self, handle, milliwatts):
        if self.refuse is not None:
            raise nvml_error(self.refuse)
        self.sets.append((handle[1], milliwatts))
        self.limits[handle[1]] = milliwatts


def run(limit_w, check_mode=False):
    with nvml.NvmlSession() as session:
        return gpu_power_limit.run({"limit_w": limit_w}, session, check_mode)


def test_one_value_for_every_gpu(fake_nvml, monkeypatch):
    driver = Driver(fake_nvml, monkeypatch, dual_3090())
    result = run(280)
    assert result["changed"] is True
    assert driver.sets == [(0, 280000), (1, 280000)]
    assert [(gpu["before_w"], gpu["after_w"], gpu["changed"]) for gpu in result["gpus"]] == [
        (350.0, 280.0, True), (350.0, 280.0, True)]
    assert result["gpus"][0]["min_limit_w"] == 100.0 and result["gpus"][0]["max_limit_w"] == 400.0
    assert result["msg"] == "GPU 0 350 -> 280 W; GPU 1 350 -> 280 W"
    assert result["diff"] == {"before": {"0": 350.0, "1": 350.0}, "after": {"0": 280.0, "1": 280.0}}


def test_a_second_run_changes_nothing(fake_nvml, monkeypatch):
    driver = Driver(fake_nvml, monkeypatch, dual_3090())
    run(280)
    result = run(280.0)
    assert result["changed"] is False
    assert len(driver.sets) == 2
    assert result["msg"] == "Every GPU already has the limit it should"


def test_per_gpu_dict_and_null_keep_the_limit(fake_nvml, monkeypatch):
    driver = Driver(fake_nvml, monkeypatch, dual_3090())
    result = run({"1": 260, 0: None})
    assert driver.sets == [(1, 260000)]
    assert [gpu["wanted_w"] for gpu in result["gpus"]] == [None, 260.0]
    assert run(None)["changed"] is False


def test_check_mode_reports_without_setting(fake_nvml, monkeypatch):
    driver = Driver(fake_nvml, monkeypatch, dual_3090())
    result = run(300, check_mode=True)
    assert result["changed"] is True
    assert driver.sets == []
    assert [gpu["after_w"] for gpu in result["gpus"]] == [300.0, 300.0]


def test_outside_the_range_is_refused_with_the_range_before_any_change(fake_nvml, monkeypatch):
    cards = dual_3090()
    cards[0]["power_mw"] = dict(cards[0]["power_mw"], constraints=(100000, 600000))  # GPU 0 would accept 500
    driver = Driver(fake_nvml, monkeypatch, cards)
    with pytest.raises(gpu_power_limit.LimitError) as raised:
        run(500)
    assert driver.sets == []  # GPU 0 untouched although its own range allows 500
    found = raised.value.problem
    assert found["code"] == "power_limit_out_of_range"
    assert found["gpu"] == 1
    assert found["limit"] == [100.0, 400.0]
    assert str(raised.value) == (
        "GPU 1 (NVIDIA GeForce RTX 3090, 00000000:21:00.0): power limit 500 W is outside the card's range 100-400 W: "
        "choose a value from 100 to 400 W")


def test_below_the_minimum_is_refused_too(fake_nvml, monkeypatch):
    Driver(fake_nvml, monkeypatch, dual_3090())
    refusal = r"^GPU 0 .*: power limit 99.5 W is outside the card's range 100-400 W"
    with pytest.raises(gpu_power_limit.LimitError, match=refusal):
        run(99.5)


def test_a_card_without_a_range_is_refused_only_when_asked_to_change(fake_nvml, monkeypatch):
    cards = dual_3090()
    cards[1]["power_mw"] = dict(cards[1]["power_mw"], constraints=None)
    driver = Driver(fake_nvml, monkeypatch, cards)
    assert run({0: 300})["changed"] is True
    with pytest.raises(gpu_power_limit.LimitError) as raised:
        run({1: 300})
    assert raised.value.problem["code"] == "power_limit_not_supported"
    assert driver.sets == [(0, 300000)]


@pytest.mark.parametrize("limit_w, expected", [
    ({"7": 280}, "limit_w names GPU '7', which this host does not have (GPUs: 0, 1): key the dict by NVML index"),
    ({"first": 280}, "limit_w names GPU 'first', which this host does not have (GPUs: 0, 1): key the dict by NVML "
                     "index"),
    (-5, "limit_w must be a positive number of watts (or null to keep the card's limit), got -5"),
    ("lots", "limit_w must be a positive number of watts (or null to keep the card's limit), got 'lots'"),
    (True, "limit_w must be a positive number of watts (or null to keep the card's limit), got True"),
    ({"0": 0}, "limit_w[0] must be a positive number of watts (or null to keep the card's limit), got 0"),
])
def test_bad_values_name_the_option(fake_nvml, monkeypatch, limit_w, expected):
    Driver(fake_nvml, monkeypatch, dual_3090())
    with pytest.raises(gpu_power_limit.LimitError) as raised:
        run(limit_w)
    assert str(raised.value) == expected
    assert raised.value.problem["code"] == "limit_invalid"


@pytest.mark.parametrize("code, problem_code, fix", [
    (pynvml.NVML_ERROR_NO_PERMISSION, "power_limit_no_permission", "run the task as root (become: true)"),
    (pynvml.NVML_ERROR_NOT_SUPPORTED, "power_limit_not_supported",
     "this card or driver does not let its power limit be set: leave the limit null"),
    (pynvml.NVML_ERROR_INVALID_ARGUMENT, "power_limit_out_of_range", None),
    (pynvml.NVML_ERROR_GPU_IS_LOST, "nvml_call_failed", None),
])
def test_nvml_refusals_keep_their_reason(fake_nvml, monkeypatch, code, problem_code, fix):
    Driver(fake_nvml, monkeypatch, dual_3090(), refuse=code)
    with pytest.raises(nvml.NvmlError) as raised:
        run(280)
    assert raised.value.code == problem_code
    assert str(raised.value).startswith("NVML refused power limit 280.0 W on GPU 0 (NVIDIA GeForce RTX 3090, "
                                        "00000000:01:00.0) (NVMLError_")
    if fix is not None:
        assert raised.value.fix == fix and str(raised.value).endswith(fix)


def test_the_v1_call_is_used_because_the_v2_wrapper_hides_errors(fake_nvml, monkeypatch):
    driver = Driver(fake_nvml, monkeypatch, dual_3090())
    monkeypatch.setattr(pynvml, "nvmlDeviceSetPowerManagementLimit_v2",
                        lambda *_args: pytest.fail("the v2 wrapper ignores NVML's answer"), raising=False)
    run(250)
    assert driver.sets == [(0, 250000), (1, 250000)]
