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
    # Only the router's drain comes before it: a driver step may reboot the host, which must be out of the router.
    assert roles[:driver] == [("llmfleet.workstation.router", "drain")], (
        "the driver step must run before anything else on the host, after its drain from the router")
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


def included_roles(path):
    [play] = yaml.safe_load(path.read_text())
    return [role_of(task) for task in flat_tasks(play["tasks"]) if role_of(task)[0]]


def test_the_playbook_reaches_the_service_only_through_its_entry_points():
    """The unit, environment and marker paths, the auth header and the health checks belong to vllm_service: the
    playbook calls its entry points and repeats none of them."""
    [play] = yaml.safe_load(PLAYBOOK.read_text())
    body = yaml.safe_dump(play)
    for internal in ("/etc/systemd", "/etc/llmfleet", ".restart-pending", ".env", "/opt/vllm", "Authorization",
                     "/health", "/v1/", "ansible.builtin.uri"):
        assert internal not in body, "%s belongs to a role, not to rolling_update.yml" % internal


def test_every_entry_point_it_calls_has_an_argument_spec():
    for role, entry in included_roles(PLAYBOOK):
        short = role.split(".")[-1]
        specs = yaml.safe_load((REPO / "roles" / short / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        assert (entry or "main") in specs, "%s has no argument spec for %s" % (role, entry or "main")
        assert (REPO / "roles" / short / "tasks" / ("%s.yml" % (entry or "main"))).is_file()


def test_snapshot_and_health_come_before_the_update_and_restore_only_in_the_rescue():
    [play] = yaml.safe_load(PLAYBOOK.read_text())
    update = next(task for task in play["tasks"] if "block" in task)
    before = [role_of(task) for task in play["tasks"] if "block" not in task]
    assert ("llmfleet.workstation.vllm_service", "snapshot") in before
    assert ("llmfleet.workstation.vllm", "snapshot") in before
    gate = [role_of(task) for task in flat_tasks(update["block"])]
    assert gate[-1] == ("llmfleet.workstation.vllm_service", "health")
    rescue = [role_of(task) for task in flat_tasks(update["rescue"])]
    service = "llmfleet.workstation.vllm_service"
    assert rescue.index(("llmfleet.workstation.vllm", "rollback")) < rescue.index(
        (service, "restore")) < rescue.index((service, "health"))
