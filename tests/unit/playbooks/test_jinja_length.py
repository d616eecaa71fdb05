"""No Jinja expression in playbooks/ or roles/ is longer than 500 characters (STYLE.md, "Where logic lives").

A value that long is a program: it belongs in a filter, plugin_utils or module_utils function with unit tests,
called in one line from the task. Counts every templated string ({{ }} or {% %}) and every bare condition (when,
that, failed_when, changed_when, until), in every YAML file of the playbooks and the roles.
"""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
LONGEST_JINJA = 500
# Keys whose values Ansible evaluates as Jinja expressions without braces.
CONDITION_KEYS = {"when", "that", "failed_when", "changed_when", "until"}
# Known exceptions, each with the reason it is still here. Keep this empty.
KNOWN_LONGER = {
}


def yaml_files():
    return sorted(path for directory in ("playbooks", "roles") for pattern in ("*.yml", "*.yaml")
                  for path in (REPO / directory).rglob(pattern))


def jinja_values(node, path="", condition=False):
    """(path, text) of every string of the document Ansible templates or evaluates."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from jinja_values(value, "%s.%s" % (path, key), key in CONDITION_KEYS)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from jinja_values(value, "%s[%d]" % (path, index), condition)
    elif isinstance(node, str) and (condition or "{{" in node or "{%" in node):
        yield path, node


def longest(path):
    values = list(jinja_values(yaml.safe_load(path.read_text())))
    return max(values, key=lambda item: len(item[1])) if values else ("", "")


def test_the_scan_sees_the_playbooks_and_every_role():
    files = yaml_files()
    assert REPO / "playbooks" / "site.yml" in files
    assert {path.relative_to(REPO).parts[1] for path in files if path.parts[-4:-3] != ("playbooks",)} >= {
        "vllm", "vllm_service", "gpu_gates", "model", "nvidia_driver"}


def test_a_long_expression_is_found():
    document = {"tasks": [{"name": "x", "when": "a" * 501}, {"debug": {"msg": "{{ short }}"}}]}
    path, text = max(jinja_values(document), key=lambda item: len(item[1]))
    assert (path, len(text)) == (".tasks[0].when", 501)


@pytest.mark.parametrize("path", yaml_files(), ids=lambda path: str(path.relative_to(REPO)))
def test_no_jinja_expression_is_longer_than_500_characters(path):
    where, text = longest(path)
    relative = str(path.relative_to(REPO))
    if relative in KNOWN_LONGER:
        pytest.xfail(KNOWN_LONGER[relative])
    assert len(text) <= LONGEST_JINJA, (
        "%s%s is %d characters of Jinja: move the logic into a filter or module with unit tests"
        % (relative, where, len(text)))
