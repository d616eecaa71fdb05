"""Run molecule scenarios a few at a time and report each as one readable block.

    run_scenarios.py [--jobs N] [--log-dir DIR] [--timings FILE] SCENARIO...

Scenarios start in the order given (put the longest first: it sets the total), at most N at a time. Each one's
whole output goes to DIR/<scenario>.log; the terminal gets one line when a scenario starts and one when it ends,
with its wall time and the time of each of molecule's actions (create, converge, verify, ...), and the last lines of
its log when it failed. Every scenario runs even after a failure; the exit status is 1 when any failed. Each result
is appended to FILE in the format of tests/harness/timed.sh.
"""

import argparse
import re
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

TAIL_LINES = 80
# molecule's lines that open and close an action: "INFO     [fleet > converge] Executing" ... "Executed: Successful"
# (without colours; with them, "INFO     fleet ➜ converge: Executing").
ACTION_LINE = re.compile(r"^INFO\s+\[?[\w-]+ (?:>|➜) (?P<action>[\w-]+)\]?:? (?P<event>Executing|Executed)\b")


def minutes(seconds: float) -> str:
    return "%dm%02ds" % divmod(int(seconds), 60)


def tail(path: Path, lines: int) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def copy_and_time(stream, log_path: Path, actions: list) -> None:
    """Copy a scenario's output to its log, noting (action, seconds) for each of molecule's actions as it ends."""
    opened = {}
    with log_path.open("w") as log:
        for line in stream:
            log.write(line)
            log.flush()
            match = ACTION_LINE.match(line)
            if not match:
                continue
            action, event = match.group("action", "event")
            if event == "Executing":
                # verify says "Executing" twice (the action, then its tests): the first one counts.
                if action not in opened:
                    opened[action] = time.monotonic()
            elif action in opened:
                actions.append((action, time.monotonic() - opened.pop(action)))


def action_times(actions: list) -> str:
    return ", ".join("%s %s" % (action, minutes(seconds)) for action, seconds in actions)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--log-dir", type=Path, default=Path("tests/output/integration"))
    parser.add_argument("--timings", type=Path, default=Path(".cache/timings.txt"))
    parser.add_argument("scenarios", nargs="+")
    args = parser.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    args.timings.parent.mkdir(parents=True, exist_ok=True)

    waiting = deque(args.scenarios)
    running = {}  # scenario -> (process, log path, start time, log copier, [(action, seconds)])
    failed = []
    started_all = time.monotonic()
    while waiting or running:
        while waiting and len(running) < args.jobs:
            scenario = waiting.popleft()
            log_path = args.log_dir / ("%s.log" % scenario)
            process = subprocess.Popen(["molecule", "test", "-s", scenario], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                       errors="replace")
            actions = []
            copier = threading.Thread(target=copy_and_time, args=(process.stdout, log_path, actions), daemon=True)
            copier.start()
            running[scenario] = (process, log_path, time.monotonic(), copier, actions)
            print("===== integration: molecule %s: started (log: %s) =====" % (scenario, log_path), flush=True)
        time.sleep(2)
        for scenario, (process, log_path, started, copier, actions) in list(running.items()):
            if process.poll() is None:
                continue
            copier.join()
            del running[scenario]
            elapsed = time.monotonic() - started
            verdict = "ok" if process.returncode == 0 else "FAILED (%d)" % process.returncode
            if process.returncode != 0:
                failed.append(scenario)
                print("----- last %d lines of %s -----\n%s\n-----" % (TAIL_LINES, log_path, tail(log_path, TAIL_LINES)),
                      flush=True)
            print("===== integration: molecule %s: %s in %s (%s) =====" % (
                scenario, verdict, minutes(elapsed), action_times(actions)), flush=True)
            with args.timings.open("a") as timings:
                timings.write("%-50s %6ss  %s\n" % ("integration: molecule %s" % scenario, int(elapsed), verdict))
    print("===== integration: %d scenarios, %d at a time, in %s%s =====" % (
        len(args.scenarios), args.jobs, minutes(time.monotonic() - started_all),
        "; failed: %s" % ", ".join(failed) if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
