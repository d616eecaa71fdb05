"""Every llmfleet.workstation filter, lookup, module and role that the playbooks, roles and scenarios name exists.

A renamed plugin or a search-and-replace that reaches into a plugin's name fails here, not after twenty minutes of
a scenario.
"""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
REFERENCE = re.compile(r"llmfleet\.workstation\.([A-Za-z_][A-Za-z0-9_]*)")
LOOKUP = re.compile(r"lookup\(\s*['\"]llmfleet\.workstation\.([A-Za-z0-9_]+)")


def known_names():
    names = set()
    for kind in ("filter", "modules", "lookup"):
        names |= {path.stem for path in (REPO / "plugins" / kind).glob("*.py") if path.stem != "__init__"}
    for path in (REPO / "plugins" / "filter").glob("*.py"):
        # A filter file may hold more than one filter: its FilterModule returns {"name": ...}.
        names |= set(re.findall(r'"([a-z_0-9]+)":\s*[a-z_0-9]+[,}\n]', path.read_text()))
    names |= {path.name for path in (REPO / "roles").iterdir() if path.is_dir()}
    return names


def referencing_files():
    for directory in ("playbooks", "roles", "molecule", "inventories"):
        for path in sorted((REPO / directory).rglob("*")):
            if path.suffix in (".yml", ".yaml", ".j2") and path.is_file():
                yield path


def test_the_known_names_include_every_kind():
    names = known_names()
    assert {"vllm_plan", "vllm_service_plan", "llm_benchmark", "role_default", "vllm_service"} <= names


@pytest.mark.parametrize("path", list(referencing_files()), ids=lambda path: str(path.relative_to(REPO)))
def test_every_collection_name_used_exists(path):
    text = path.read_text()
    missing = sorted(set(REFERENCE.findall(text)) - known_names())
    assert not missing, "%s names llmfleet.workstation.%s, which the collection does not have" % (
        path.relative_to(REPO), ", ".join(missing))


def test_a_misspelt_filter_is_caught():
    assert "vllm_service__plan" not in known_names()
