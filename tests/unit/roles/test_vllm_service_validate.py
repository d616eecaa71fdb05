"""vllm_service's input checks, run for real with ansible-playbook on the local host: validate.yml only, in check
mode, where the checks of the engine venv and the model directory wait for the roles that make them. An engine
listening beyond loopback without an API key is refused unless the operator says so with
vllm_service_allow_unauthenticated."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
REFUSE = "Refuse to listen beyond loopback without an API key"

pytestmark = pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="needs ansible-playbook")


def validate(tmp_path, **extra_vars):
    """(failed, the refusal task's result) of validate.yml with these variables."""
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": sys.executable},
             "tasks": [{"name": "Validate", "ansible.builtin.include_role": {
                 "name": "llmfleet.workstation.vllm_service", "tasks_from": "validate"}}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    variables = {"vllm_service_model": "/srv/models/tiny", "vllm_service_served_model_name": "tiny"}
    variables.update(extra_vars)
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"), ANSIBLE_LOCALHOST_WARNING="false")
    completed = subprocess.run(
        ["ansible-playbook", "--check", "-i", "localhost,", str(tmp_path / "play.yml"), "-e", json.dumps(variables)],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    report = json.loads(completed.stdout)
    results = {task["task"]["name"].split(" : ")[-1]: task["hosts"]["localhost"]
               for play_report in report["plays"] for task in play_report["tasks"]}
    return report["stats"]["localhost"]["failures"] > 0, results.get(REFUSE, {})


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
