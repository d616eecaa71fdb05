"""gpu_power_limit's input check (validate.yml), run for real with ansible-playbook on the local host: a number of
watts, a dict of GPU index to watts or null pass; anything else is refused naming gpu_power_limit_w and the fix."""

import ansible_run
import pytest

CHECK = "Require a power limit in watts, a dict of GPU index to watts, or null"

pytestmark = ansible_run.needs_ansible


def validate(tmp_path, limit):
    run = ansible_run.run_role(tmp_path, "llmfleet.workstation.gpu_power_limit", {"gpu_power_limit_w": limit},
                               tasks_from="validate", check=True)
    return run.failed(), run.tasks().get(CHECK, {})


@pytest.mark.parametrize("limit", [280, 280.5, "280", None, {0: 280, 1: None}, {"1": 300}])
def test_watts_a_dict_or_null_pass(tmp_path, limit):
    failed, result = validate(tmp_path, limit)
    assert not failed, result.get("msg")
    assert result and not result.get("failed")


@pytest.mark.parametrize("limit", [0, -5, "lots", True, [280, 300], {"first": 280}, {0: "hot"}, {0: 0}, {0: True}])
def test_anything_else_is_refused_naming_the_variable(tmp_path, limit):
    failed, result = validate(tmp_path, limit)
    assert failed and result["failed"]
    assert result["msg"].startswith("gpu_power_limit_w is ")
    assert "set a number of watts for every GPU (280), a dict of NVML index to watts" in result["msg"]
