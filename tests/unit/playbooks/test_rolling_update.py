"""rolling_update.yml moves the driver branch before the engine, per host, only when asked.

The README's upgrade path for new defaults (driver branch first, then engine) rests on the order of the play's
tasks; the fleet scenario runs the play itself, without a driver to move (llmfleet_manage_driver: false).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK = REPO / "playbooks" / "rolling_update.yml"


def role_of(task):
    include = task.get("ansible.builtin.include_role") or {}
    return include.get("name"), include.get("tasks_from")


def flat_tasks(tasks):
    for task in tasks:
        yield task
        for key in ("block", "rescue", "always"):
            yield from flat_tasks(task.get(key, []))


def test_driver_step_comes_first_and_only_when_asked():
    [play] = yaml.safe_load(PLAYBOOK.read_text())
    tasks = list(flat_tasks(play["tasks"]))
    roles = [role_of(task) for task in tasks]
    driver = roles.index(("llmfleet.workstation.nvidia_driver", None))
    assert driver == 0, "the driver step must run before anything else on the host"
    assert driver < roles.index(("llmfleet.workstation.gpu_gates", None)) < roles.index(
        ("llmfleet.workstation.vllm", None))
    assert tasks[driver]["when"] == ["rolling_update_driver | default(false) | bool",
                                     "llmfleet_manage_driver | default(true) | bool"]


@pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="needs ansible-playbook")
def test_playbook_parses_with_the_driver_step():
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"))
    completed = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(PLAYBOOK), "--syntax-check", "-e", "rolling_update_driver=true"],
        capture_output=True, text=True, env=env, cwd=REPO, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
