"""playbooks/preflight.yml orchestrates; the verdict and the report are Python (plugins/plugin_utils/preflight.py).

The regression guard for STYLE.md's "Where logic lives": no templated value in the playbook is longer than 500
characters (before the logic moved out, the fail reasons alone were 3,717), and the judging and rendering are
the filters'.
"""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK = REPO / "playbooks" / "preflight.yml"
LONGEST_JINJA = 500


def templated_values(node, path="play"):
    """(path, text) of every string in the YAML that Jinja will template."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from templated_values(value, "%s.%s" % (path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from templated_values(value, "%s[%d]" % (path, index))
    elif isinstance(node, str) and ("{{" in node or "{%" in node):
        yield path, node


def flat_tasks(tasks):
    for task in tasks:
        yield task
        for key in ("block", "rescue", "always"):
            yield from flat_tasks(task.get(key, []))


def test_no_templated_value_is_a_program():
    values = list(templated_values(yaml.safe_load(PLAYBOOK.read_text())))
    assert values, "the playbook has no templated values: is this the right file?"
    path, text = max(values, key=lambda item: len(item[1]))
    assert len(text) < LONGEST_JINJA, "%s is %d characters of Jinja; move the logic into a filter" % (path, len(text))


def test_verdict_and_report_are_the_filters():
    [play] = yaml.safe_load(PLAYBOOK.read_text())
    tasks = {task["name"]: task for task in flat_tasks(play["tasks"])}
    judge = tasks["Judge the host and keep its row for the report"]
    assert "llmfleet.workstation.preflight_row(" in judge["ansible.builtin.set_fact"]["preflight_row"]
    report = tasks["Report the fleet in one table"]
    assert "llmfleet.workstation.preflight_report(" in report["vars"]["preflight_report"]
    # What the filters judge from: every gate's registered result, the engine's, the vllm role's compat verdict.
    assert set(judge["vars"]["preflight_results"]) == {"host", "venv_python", "gpu", "nvlink", "thermal", "p2p",
                                                       "engine", "compat", "df"}
    text = PLAYBOOK.read_text()
    assert " in gpu_message" not in text and "'driver not loaded'" not in text
