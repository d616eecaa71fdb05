"""vllm_service's input checks, run for real with ansible-playbook on the local host: validate.yml only, in check
mode, where the checks of the engine venv and the model directory wait for the roles that make them. An engine
listening beyond loopback without an API key is refused unless the operator says so with
vllm_service_allow_unauthenticated."""

import ansible_run
import pytest

REFUSE = "Refuse to listen beyond loopback without an API key"

pytestmark = ansible_run.needs_ansible


def validate(tmp_path, **extra_vars):
    """(failed, the refusal task's result) of validate.yml with these variables."""
    variables = {"vllm_service_model": "/srv/models/tiny", "vllm_service_served_model_name": "tiny"}
    variables.update(extra_vars)
    run = ansible_run.run_role(tmp_path, "llmfleet.workstation.vllm_service", variables, tasks_from="validate",
                               check=True)
    return run.failed(), run.tasks().get(REFUSE, {})


def test_defaults_on_all_addresses_without_a_key_are_refused(tmp_path):
    failed, result = validate(tmp_path)
    assert failed
    for words in ("vllm_service_host is 0.0.0.0", "vllm_service_api_key is empty",
                  "vllm_service_allow_unauthenticated"):
        assert words in result["msg"]


@pytest.mark.parametrize("extra", [{"vllm_service_api_key": "s3cret"}, {"vllm_service_host": "127.0.0.1"},
                                   {"vllm_service_allow_unauthenticated": True}])
def test_a_key_loopback_or_an_explicit_yes_pass(tmp_path, extra):
    failed, result = validate(tmp_path, **extra)
    assert not failed, result.get("msg")
    assert result and not result.get("failed")


def test_a_memory_share_above_the_planners_ceiling_is_refused(tmp_path):
    """The ceiling is the planner's own (vllm_plan_limit), not a second copy of 0.95 in the role."""
    run = ansible_run.run_role(tmp_path, "llmfleet.workstation.vllm_service",
                               {"vllm_service_model": "/srv/models/tiny", "vllm_service_served_model_name": "tiny",
                                "vllm_service_host": "127.0.0.1", "vllm_service_gpu_memory_utilization": 0.97},
                               tasks_from="validate", check=True)
    refusal = run.tasks()["Refuse a GPU memory share that runs out of memory under load"]
    assert run.failed() and refusal["failed"]
    assert "vllm_service_gpu_memory_utilization is 0.97; it must be above 0 and at most 0.95" in refusal["msg"]
