"""run_scenarios.py times each of molecule's actions from the lines molecule prints."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "tests" / "harness" / "run_scenarios.py"
SPEC = importlib.util.spec_from_file_location("run_scenarios", SCRIPT)
run_scenarios = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(run_scenarios)

MOLECULE_OUTPUT = """\
INFO     [fleet > discovery] scenario test matrix: destroy, create, converge, verify
INFO     [fleet > destroy] Executing
PLAY [Destroy the test targets] ****
INFO     [fleet > destroy] Executed: Successful
INFO     fleet ➜ create: Executing
INFO     fleet ➜ create: Executed: Successful
INFO     [fleet > converge] Executing
TASK [a task that mentions [fleet > verify] Executing inside its name] ****
INFO     [fleet > converge] Executed: Failed
INFO     [fleet > verify] Executing
INFO     [fleet > verify] Executing Testinfra tests found in /repo/molecule/fleet/tests/...
INFO     [fleet > verify] Executed: Successful
"""


def test_each_action_is_timed_once_from_its_first_executing_line(tmp_path, monkeypatch):
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(run_scenarios.time, "monotonic", lambda: next(clock))
    log = tmp_path / "fleet.log"
    actions = []
    run_scenarios.copy_and_time(iter(MOLECULE_OUTPUT.splitlines(keepends=True)), log, actions)
    assert log.read_text() == MOLECULE_OUTPUT
    # One clock reading per line that opens or closes an action: a task's name that quotes such a line is not one,
    # and verify's second Executing line does not open it again.
    assert actions == [("destroy", 10), ("create", 10), ("converge", 10), ("verify", 10)]
    assert run_scenarios.action_times(actions) == "destroy 0m10s, create 0m10s, converge 0m10s, verify 0m10s"
