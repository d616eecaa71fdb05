"""role_default: a default read from the role that owns it, so that other roles refer to it instead of repeating it."""

from pathlib import Path

import pytest
import yaml
from ansible_run import needs_ansible, run_playbook

from ansible_collections.llmfleet.workstation.plugins.plugin_utils import role_defaults

REPO = Path(__file__).resolve().parents[4]


def test_the_owner_is_the_longest_role_name_that_prefixes_the_variable():
    roles = ["vllm", "vllm_service", "gpu_gates"]
    assert role_defaults.owner_of("vllm_service_port", roles) == "vllm_service"
    assert role_defaults.owner_of("vllm_version", roles) == "vllm"
    with pytest.raises(ValueError, match="private to role vllm_service"):
        role_defaults.owner_of("vllm_service__plan", roles)
    with pytest.raises(ValueError, match="no role's default"):
        role_defaults.owner_of("benchmark_hosts", roles)


def test_the_value_is_the_owners_own():
    gates = yaml.safe_load((REPO / "roles" / "gpu_gates" / "defaults" / "main.yml").read_text())
    for name in ("gpu_gates_max_core_temp_c", "gpu_gates_max_memory_temp_c", "gpu_gates_cooldown_timeout",
                 "gpu_gates_venv", "gpu_gates_nvidia_ml_py_version"):
        assert role_defaults.role_default(name) == gates[name]


def test_a_variable_its_owner_lacks_is_named(tmp_path):
    (tmp_path / "gpu_gates" / "defaults").mkdir(parents=True)
    (tmp_path / "gpu_gates" / "defaults" / "main.yml").write_text("gpu_gates_venv: /opt/x\n")
    assert role_defaults.role_default("gpu_gates_venv", tmp_path) == "/opt/x"
    with pytest.raises(ValueError, match="gpu_gates_typo is not in the defaults of role gpu_gates"):
        role_defaults.role_default("gpu_gates_typo", tmp_path)


@needs_ansible
def test_the_lookup_in_a_play_and_an_inventory_value_still_wins(tmp_path):
    limit = ("{{ gpu_gates_max_core_temp_c | default(lookup('llmfleet.workstation.role_default', "
             "'gpu_gates_max_core_temp_c')) }}")
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
        {"name": "Read", "ansible.builtin.set_fact": {"limit": limit}},
        {"name": "Show", "ansible.builtin.debug": {"var": "limit"}}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    assert run_playbook(tmp_path / "play.yml").tasks()["Show"]["limit"] == 85
    assert run_playbook(tmp_path / "play.yml", {"gpu_gates_max_core_temp_c": 80}).tasks()["Show"]["limit"] == 80
