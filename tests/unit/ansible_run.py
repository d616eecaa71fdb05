"""Run a playbook, or a role's entry point, with ansible-playbook and read the json callback's report.

Shared by the unit tests that apply roles and playbooks for real to the local host (connection local), against
this checkout (ANSIBLE_COLLECTIONS_PATH=.cache/collections, linked by conftest.py).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HAS_ANSIBLE = shutil.which("ansible-playbook") is not None
needs_ansible = pytest.mark.skipif(not HAS_ANSIBLE, reason="needs ansible-playbook")


class Run:
    """One ansible-playbook run: its exit status, output and json report."""

    def __init__(self, completed, report):
        self.completed = completed
        self.report = report

    @property
    def returncode(self):
        return self.completed.returncode

    def failed(self, host="localhost"):
        return self.report["stats"].get(host, {}).get("failures", 0) > 0

    def tasks(self, host="localhost"):
        """{task name without the role's prefix: the host's result}; the last result of a name wins."""
        return {task["task"]["name"].split(" : ")[-1]: task["hosts"][host]
                for play in self.report["plays"] for task in play["tasks"] if host in task["hosts"]}


def run_playbook(playbook, extra_vars=None, inventory="localhost,", check=False, timeout=300):
    """ansible-playbook with the json callback; fails the test, with the output, when no report comes back."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"), ANSIBLE_LOCALHOST_WARNING="false")
    command = ["ansible-playbook", "-i", str(inventory), str(playbook), "-e", json.dumps(extra_vars or {})]
    completed = subprocess.run(command + (["--check"] if check else []), capture_output=True, text=True, env=env,
                               timeout=timeout, check=False, cwd=str(REPO))
    try:
        report = json.loads(completed.stdout)
    except ValueError:
        pytest.fail("no JSON from ansible-playbook (rc %s): %s %s"
                    % (completed.returncode, completed.stdout[-2000:], completed.stderr[-2000:]))
    return Run(completed, report)


def run_role(tmp_path, role, extra_vars=None, tasks_from="main", check=False):
    """Apply one role's entry point to localhost with this interpreter."""
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": sys.executable},
             "tasks": [{"name": "Apply the role", "ansible.builtin.include_role": {
                 "name": role, "tasks_from": tasks_from}}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    return run_playbook(tmp_path / "play.yml", extra_vars, check=check)
