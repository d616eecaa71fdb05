"""A fleet converged by site.yml as an operator meets it: the healthy workstation serves from a hardened unit, the
one with a misseated NVLink bridge was stopped at the gates and got nothing else, and Open WebUI offers only the
model that answers. Then the operator's other playbooks on the same fleet: benchmark.yml, preflight.yml, site.yml
--check, rolling_update.yml, and site.yml again with a hot GPU and with a context the engine refuses.

Expected values come from the inputs (molecule.yml, the fake NVML scenario files, the tiny model's files), never from
what the playbooks printed. Tests run in file order: the tests from the rolling updates on restart the engine on
llmfleet-fleet-ws1.
"""

import csv
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import testinfra
import yaml
from fleet_settings import ADMIN

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "harness"))
from target_http import curl_in, json_api  # noqa: E402 - the scenarios' shared helper, on the path just above

REPO = Path(__file__).resolve().parents[3]
SCENARIO = Path(__file__).resolve().parents[1]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
SETTINGS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["provisioner"]["inventory"]
WORKSTATIONS = SETTINGS["group_vars"]["workstations"]
HOST_VARS = SETTINGS["host_vars"]
WEBUI_DEFAULTS = yaml.safe_load((REPO / "roles" / "open_webui" / "defaults" / "main.yml").read_text())
RECORD_DIR = REPO / ".cache" / "fleet"
HEALTHY, BROKEN, FRONTEND = "llmfleet-fleet-ws1", "llmfleet-fleet-ws2", "llmfleet-fleet-web1"
SERVED = WORKSTATIONS["vllm_service_served_model_name"]
KEY = WORKSTATIONS["vllm_service_api_key"]
API = "http://127.0.0.1:%d" % WORKSTATIONS.get("vllm_service_port", 8000)
VENVS = "/opt/vllm/venvs"
VENV = "%s/%s-%s" % (VENVS, WORKSTATIONS["vllm_package"], WORKSTATIONS["vllm_version"])
GATES_PLAY = "Verify the workstations' GPUs, NVLink and temperatures"
WEBUI_URL = "http://127.0.0.1:%d" % WEBUI_DEFAULTS["open_webui_port"]
MODEL_DEFAULTS = yaml.safe_load((REPO / "roles" / "model" / "defaults" / "main.yml").read_text())
TINY_MODEL = REPO / ".cache" / "tiny-llama"
HUB_DIR = RECORD_DIR / "hub"
SNAPSHOTS = "/var/lib/llmfleet/models/models--llmfleet-test--tiny-llama/snapshots"


def target(name):
    return testinfra.get_host("ansible://%s?ansible_inventory=%s" % (name, INVENTORY))


def playbook(name, *extra, callback="ansible.posix.json", directory=REPO / "playbooks"):
    """Run one of the collection's playbooks (or the scenario's) against the fleet as an operator does; return the
    completed process."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK=callback, ANSIBLE_FORCE_COLOR="false", NO_COLOR="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"), LLMFLEET_REPO=str(REPO))
    return subprocess.run(["ansible-playbook", "-i", INVENTORY, str(directory / name), *extra],
                          env=env, capture_output=True, text=True, timeout=1800, check=False)


def report_of(completed):
    try:
        return json.loads(completed.stdout)
    except ValueError:
        pytest.fail("no JSON report (exit %d): %s %s"
                    % (completed.returncode, completed.stdout[-3000:], completed.stderr[-3000:]))


def failures(report, host):
    """[(play name, task name, message)] of the host's failed tasks, in order."""
    return [(play["play"]["name"], task["task"]["name"], str(task["hosts"][host].get("msg", "")))
            for play in report["plays"] for task in play["tasks"]
            if host in task["hosts"] and task["hosts"][host].get("failed")]


def changed_tasks(report, host):
    """Names of the tasks that reported a change on the host, in order."""
    return [task["task"]["name"] for play in report["plays"] for task in play["tasks"]
            if host in task["hosts"] and task["hosts"][host].get("changed")]


def tasks_run(report, host):
    """Names of the tasks that ran on the host (not skipped), in order."""
    return [task["task"]["name"] for play in report["plays"] for task in play["tasks"]
            if host in task["hosts"] and not task["hosts"][host].get("skipped")]


def curl(host, url, *args):
    """(HTTP status, body) of a request made on the host itself."""
    return curl_in(host, url, *args, body_path="/tmp/fleet-curl-body")


def engine(host, path, *args):
    return curl(host, API + path, "-H", "Authorization: Bearer %s" % KEY, *args)


def served_models(host):
    status, body = engine(host, "/v1/models")
    assert status == 200, body
    return [model["id"] for model in json.loads(body)["data"]]


def completion_tokens(host):
    request = {"model": SERVED, "prompt": "The fleet", "max_tokens": 4, "temperature": 0}
    status, body = engine(host, "/v1/completions", "-H", "Content-Type: application/json", "-d", json.dumps(request))
    assert status == 200, body
    return json.loads(body)["usage"]["completion_tokens"]


def main_pid(host):
    return int(host.check_output("systemctl show -p MainPID --value vllm"))


def allowed_files():
    """The tiny model's files that the model role's default allow patterns select: {relative path: bytes}."""
    files = {}
    for path in TINY_MODEL.rglob("*"):
        relative = path.relative_to(TINY_MODEL).as_posix()
        patterns = MODEL_DEFAULTS["model_allow_patterns"]
        if path.is_file() and any(fnmatch.fnmatch(relative, pattern) for pattern in patterns):
            files[relative] = path.stat().st_size
    return files


def wait_for_models(host, seconds=120):
    """The served models once the engine answers again after a restart."""
    deadline = time.time() + seconds
    status, body = engine(host, "/v1/models")
    while status != 200 and time.time() < deadline:
        time.sleep(2)
        status, body = engine(host, "/v1/models")
    assert status == 200, body
    return [model["id"] for model in json.loads(body)["data"]]


def address_of(container_name):
    completed = subprocess.run(["podman", "inspect", "--format", "{{.NetworkSettings.IPAddress}}", container_name],
                               capture_output=True, text=True, check=True)
    return completed.stdout.strip()


def webui(host, method, path, token=None, body=None):
    """(HTTP status, parsed JSON or None) of a call to Open WebUI's API made on the frontend."""
    return json_api(host, method, WEBUI_URL + path, token=token, body=body, body_path="/tmp/fleet-owui")


# ---- site.yml's run: one bad host does not take the fleet down --------------------------------------------------


@pytest.fixture(scope="module")
def site_report():
    return json.loads((RECORD_DIR / "site-latest.json").read_text())


def test_site_run_stopped_the_bad_bridge_at_the_gates_with_the_fix(site_report):
    assert site_report["stats"][BROKEN]["failures"] == 1
    [(play, task, message)] = failures(site_report, BROKEN)
    assert play == GATES_PLAY
    assert "NVLink" in task
    assert message.startswith(HOST_VARS[BROKEN]["fleet_expected_failure"])
    assert "0 of 4" in message and "reseat" in message


def test_site_run_converged_the_rest_of_the_fleet(site_report):
    for name in (HEALTHY, FRONTEND):
        stats = site_report["stats"][name]
        assert stats["failures"] == 0 and stats["unreachable"] == 0, name
    plays_on_healthy = {play["play"]["name"] for play in site_report["plays"]
                        if any(HEALTHY in task["hosts"] for task in play["tasks"])}
    assert "Serve the model as a hardened systemd unit and check that it answers" in plays_on_healthy


# ---- the workstations --------------------------------------------------------------------------------------------


def test_healthy_workstation_serves_the_model():
    healthy = target(HEALTHY)
    assert healthy.service("vllm").is_running and healthy.service("vllm").is_enabled
    assert healthy.file("/opt/vllm/current").linked_to == VENV
    assert served_models(healthy) == [SERVED]
    assert completion_tokens(healthy) > 0


def test_bad_workstation_has_its_gates_venv_and_nothing_after_it():
    broken = target(BROKEN)
    assert broken.file("/opt/llmfleet/gates/bin/python").exists
    assert not broken.file("/opt/vllm").exists
    assert not broken.file("/etc/systemd/system/vllm.service").exists
    assert not broken.file("/var/lib/llmfleet/models").exists
    assert "LISTEN" not in broken.check_output("ss -ltnH 'sport = :8000'")


def test_frontend_runs_no_engine():
    frontend = target(FRONTEND)
    assert not frontend.file("/opt/vllm").exists
    assert not frontend.file("/opt/llmfleet/gates").exists


# ---- the serving chain on the healthy workstation ---------------------------------------------------------------


def test_unit_is_active_enabled_and_unprivileged():
    healthy = target(HEALTHY)
    assert healthy.service("vllm").is_running and healthy.service("vllm").is_enabled
    assert healthy.check_output("ps -o user= -p %s", str(main_pid(healthy))) == "vllm"


def test_unit_exposure_within_the_limit():
    report = target(HEALTHY).check_output("systemd-analyze security --no-pager vllm.service")
    exposure = float(re.search(r"Overall exposure level for vllm\.service:\s*([0-9.]+)", report).group(1))
    assert exposure <= WORKSTATIONS.get("vllm_service_max_exposure", 4.0), report[-2000:]


def test_api_key_stays_out_of_the_unit_and_process_list():
    healthy = target(HEALTHY)
    env_file = healthy.file("/etc/llmfleet/vllm.env")
    assert env_file.mode == 0o600 and env_file.user == "root"
    assert "VLLM_API_KEY=%s" % KEY in env_file.content_string
    assert KEY not in healthy.file("/etc/systemd/system/vllm.service").content_string
    assert KEY not in healthy.check_output("ps -eo args")


def test_api_refuses_requests_without_the_key():
    status, _unused = curl(target(HEALTHY), API + "/v1/models")
    assert status == 401


def test_chat_completion_generates_tokens():
    request = {"model": SERVED, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8,
               "temperature": 0}
    status, body = engine(target(HEALTHY), "/v1/chat/completions", "-H", "Content-Type: application/json",
                          "-d", json.dumps(request))
    assert status == 200, body
    answer = json.loads(body)
    assert answer["usage"]["completion_tokens"] > 0
    assert answer["choices"][0]["finish_reason"] in ("length", "stop")


def test_engine_runs_from_the_pinned_venv():
    healthy = target(HEALTHY)
    assert healthy.check_output("%s/bin/python -c 'import importlib.metadata as m; print(m.version(\"%s\"))'",
                                VENV, WORKSTATIONS["vllm_package"]) == WORKSTATIONS["vllm_version"]
    assert "%s/bin/python" % VENV in healthy.check_output("ps -o args= -p %s", str(main_pid(healthy)))


def test_planner_chose_the_flags():
    """Every size is auto: one GPU means TP 1 x PP 1, the context is the model's own limit (its config.json),
    and concurrency is the cap the scenario sets; the CPU-only float32 model gets no quantization flag."""
    healthy = target(HEALTHY)
    limit = json.loads((TINY_MODEL / "config.json").read_text())["max_position_embeddings"]
    args = healthy.check_output("ps -o args= -p %s", str(main_pid(healthy))).split()
    flags = dict(zip(args, args[1:]))  # each flag to the word after it
    assert flags["--tensor-parallel-size"] == "1"
    assert flags["--pipeline-parallel-size"] == "1"
    assert flags["--max-model-len"] == str(limit)
    assert flags["--max-num-seqs"] == str(WORKSTATIONS["vllm_service_plan_max_num_seqs"])
    assert "--quantization" not in flags


def test_benchmark_from_the_controller():
    """llm_benchmark and playbooks/benchmark.yml against the engine; benchmark.yml asserts the numbers are
    consistent (positive, TTFT inside the request, four streams beat one) and that the report files exist."""
    completed = playbook("benchmark.yml", "--limit", HEALTHY, callback="default", directory=SCENARIO)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert "TTFT" in output


# ---- the weights: pulled once for the fleet, verified on each host ------------------------------------------------


def test_a_second_host_gets_the_weights_without_a_second_download():
    """weights.yml gives ws2 (stopped at the gates by site.yml, so without weights) its copy: the hub's body log
    still shows every allowed file sent exactly once, in full, though two hosts now hold the model."""
    completed = playbook("weights.yml", callback="default", directory=SCENARIO)
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
    records = [json.loads(line) for line in (HUB_DIR / "requests.jsonl").read_text().splitlines()]
    sent = {}
    for record in records:
        name = record["path"].split("/resolve/", 1)[1].split("/", 1)[1]
        sent[name] = sent.get(name, 0) + record["bytes"]
    assert sent == allowed_files()
    assert len(records) == len(allowed_files())


@pytest.mark.parametrize("name, owner", [(HEALTHY, "vllm"), (BROKEN, "root")])
def test_each_host_holds_a_verified_copy(name, owner):
    """Same bytes as the hub's files, owned by model_owner (the engine user, or root on ws2), no locks."""
    other = target(name)
    commit = (HUB_DIR / "commit").read_text().strip()
    snapshot = "%s/%s" % (SNAPSHOTS, commit)
    for relative in allowed_files():
        expected = hashlib.sha256((TINY_MODEL / relative).read_bytes()).hexdigest()
        assert other.check_output("sha256sum %s/%s", snapshot, relative).split()[0] == expected, relative
        assert other.check_output("stat -L -c %%U %s/%s", snapshot, relative) == owner, relative
    assert not other.file("%s/.locks" % SNAPSHOTS).exists


def test_weights_only_host_has_no_engine():
    broken = target(BROKEN)
    assert not broken.file("/etc/systemd/system/vllm.service").exists
    assert not broken.file("/opt/vllm").exists


# ---- Open WebUI ------------------------------------------------------------------------------------------------


def test_frontend_connects_only_the_workstation_that_answers():
    frontend = target(FRONTEND)
    info = json.loads(frontend.check_output("podman inspect %s" % WEBUI_DEFAULTS["open_webui_container_name"]))[0]
    env = dict(entry.split("=", 1) for entry in info["Config"]["Env"])
    assert info["State"]["Running"] is True
    assert env["OPENAI_API_BASE_URLS"] == "http://%s:8000/v1" % address_of(HEALTHY)
    assert env["OPENAI_API_KEYS"] == KEY


def test_frontend_lists_the_healthy_workstation_model():
    """Signed in, Open WebUI's own API lists the models it fetched from the workstations: ws1's only."""
    frontend = target(FRONTEND)
    status, body = webui(frontend, "POST", "/api/v1/auths/signin",
                         body={"email": ADMIN["email"], "password": ADMIN["password"]})
    if status != 200:  # the browser test did not run (or failed before signing up): the first account is the admin
        status, body = webui(frontend, "POST", "/api/v1/auths/signup", body=ADMIN)
    assert status == 200, body
    status, models = webui(frontend, "GET", "/api/models", token=body["token"])
    assert status == 200, models
    assert {model["id"] for model in models["data"]} == {SERVED}


# ---- preflight.yml: the audit of the same fleet -------------------------------------------------------------------


def test_preflight_reports_every_workstation_with_its_verdict():
    report_dir = RECORD_DIR / "preflight"
    completed = playbook("preflight.yml", "-e", "preflight_report_dir=%s" % report_dir, callback="default")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    with (report_dir / "preflight-latest.md").open() as markdown:
        table = markdown.read()
    csv_files = sorted(report_dir.glob("preflight-*.csv"))
    with csv_files[-1].open(newline="") as handle:
        rows = {row["host"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {HEALTHY, BROKEN}
    for name in rows:
        assert "| %s |" % name in table
        assert name in completed.stdout
    assert rows[HEALTHY]["verdict"] == "ok", rows[HEALTHY]
    assert rows[HEALTHY]["gpus"] == "1x NVIDIA GeForce RTX 5090"
    assert rows[HEALTHY]["nvlink"] == "none"
    assert rows[BROKEN]["verdict"] == "fail"
    assert rows[BROKEN]["nvlink"] == "0/4, 0/4 (P2P not_supported)"
    assert "NVLink bridge misseated" in rows[BROKEN]["reasons"]


# ---- site.yml --check ---------------------------------------------------------------------------------------------


def test_check_mode_on_the_converged_fleet_changes_nothing():
    pid = main_pid(target(HEALTHY))
    completed = playbook("site.yml", "--check")
    report = report_of(completed)
    assert completed.returncode == 2
    for name in (HEALTHY, FRONTEND):
        assert report["stats"][name]["failures"] == 0, failures(report, name)
    assert changed_tasks(report, FRONTEND) == []
    # ansible.builtin.pip reports every install with extra_args as a change in check mode without looking (the
    # exporter and the gates install from the offline wheelhouse through gpu_gates_pip_extra_args); nothing else
    # may change.
    assert changed_tasks(report, HEALTHY) == [
        "llmfleet.workstation.gpu_exporter : Install the NVML Python bindings into the exporter venv",
        "llmfleet.workstation.gpu_gates : Install the NVML Python bindings into the gates venv"]
    [(play, _task, message)] = failures(report, BROKEN)
    assert play == GATES_PLAY and message.startswith("NVLink gate failed")
    assert main_pid(target(HEALTHY)) == pid


# ---- rolling_update.yml -------------------------------------------------------------------------------------------
# A rollout that restarts each host through its health gate is the router scenario's check (two hosts, under load,
# drained and undrained in the router); here the canary and the rollback.


def settings_with(**extra):
    """The scenario's engine environment plus extra variables, as one -e value."""
    return json.dumps({"vllm_service_environment": dict(WORKSTATIONS["vllm_service_environment"], **extra)})


def test_failed_canary_stops_the_rollout_before_any_other_host():
    healthy = target(HEALTHY)
    pid = main_pid(healthy)
    env_before = healthy.file("/etc/llmfleet/vllm.env").content_string
    completed = playbook("rolling_update.yml", "-e", "rolling_update_canary=%s" % BROKEN,
                         "-e", settings_with(LLMFLEET_ROLLOUT=1))
    report = report_of(completed)
    assert completed.returncode != 0
    [(_play, task, message)] = failures(report, BROKEN)
    assert message.startswith("NVLink gate failed")
    assert tasks_run(report, HEALTHY) == []
    assert main_pid(healthy) == pid
    assert healthy.file("/etc/llmfleet/vllm.env").content_string == env_before


@pytest.fixture
def broken_release():
    """A release whose venv installed and was recorded as verified, but whose Python cannot run the engine (the
    venv's interpreter has no vllm): it starts and dies, so the host fails its health gate."""
    healthy = target(HEALTHY)
    version = WORKSTATIONS["vllm_version"] + ".post9"
    venv = "%s/%s-%s" % (VENVS, WORKSTATIONS["vllm_package"], version)
    spec = " ".join(["%s==%s" % (WORKSTATIONS["vllm_package"], version)]
                    + ["-" + name for name in WORKSTATIONS["vllm_uninstall_packages"]])
    # testinfra quotes each argument itself.
    healthy.run_expect([0], "python3 -m venv --without-pip %s && echo %s > %s/.llmfleet-installed", venv, spec, venv)
    yield version
    healthy.run("rm -rf %s" % venv)


def test_failed_update_is_rolled_back_to_the_previous_venv(broken_release):
    healthy = target(HEALTHY)
    unit_before = healthy.file("/etc/systemd/system/vllm.service").content_string
    env_before = healthy.file("/etc/llmfleet/vllm.env").content_string
    assert VENV in unit_before
    # Use up the unit's start limit (StartLimitBurst=3 in 600 s), as a few updates in a row would: the update's own
    # restart must still go through and meet the health gate, not systemd's start-limit-hit.
    healthy.run_expect([0], "systemctl reset-failed vllm.service")
    healthy.run_expect([0], " && ".join(["systemctl restart vllm.service"] * 3))
    completed = playbook("rolling_update.yml", "--limit", HEALTHY, "-e", "vllm_version=%s" % broken_release,
                         "-e", settings_with(LLMFLEET_ROLLOUT=1),
                         # The broken engine never answers: give up on it soon; the rollback still waits in full.
                         "-e", "vllm_service_start_timeout=60")
    report = report_of(completed)
    assert completed.returncode == 2
    # The failed health check and the role's own report of it were rescued; the host fails once, at the end.
    assert report["stats"][HEALTHY]["failures"] == 1
    _play, task, message = failures(report, HEALTHY)[-1]
    assert task == "Fail the host with what happened"
    assert "Health" in message or "health" in message or "did not serve" in message
    assert "Rolled back to %s" % VENV in message and "the engine answers again" in message
    assert healthy.file("/opt/vllm/current").linked_to == VENV
    assert healthy.file("/etc/systemd/system/vllm.service").content_string == unit_before
    assert healthy.file("/etc/llmfleet/vllm.env").content_string == env_before
    assert "%s/bin/python" % VENV in healthy.check_output("ps -o args= -p %s", str(main_pid(healthy)))
    assert not healthy.file("/etc/llmfleet/vllm.restart-pending").exists
    assert served_models(healthy) == [SERVED]
    assert completion_tokens(healthy) > 0


# ---- site.yml again on the healthy workstation: the restart gate --------------------------------------------------
# Each run is limited to the service's stage, as an operator changing only vllm_service_* settings runs it (site.yml's
# header: --tags vllm_service runs the engine and weights stages too, which change nothing here); the whole site.yml
# already ran three times above (converge, idempotence, --check).
SERVICE_ONLY = ("--limit", HEALTHY, "--tags", "vllm_service")


def test_hot_gpu_holds_back_a_restart():
    """A change that needs a restart meets GPUs above the service's limit (the scenario's cores run at 41 C, the
    limit is set to 35 C): the play stops at the restart gate after the cooldown wait, the running engine is left
    alone, and the pending restart is remembered."""
    healthy = target(HEALTHY)
    pid = main_pid(healthy)
    completed = playbook("site.yml", *SERVICE_ONLY, "-e", "vllm_service_max_core_temp_c=35",
                         "-e", "vllm_service_cooldown_timeout=5", "-e", settings_with(LLMFLEET_TEST=1),
                         callback="default")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output[-3000:]
    assert "Thermal gate failed after waiting 5s" in output, output[-3000:]
    assert "core at 41 C, limit 35 C" in output, output[-3000:]
    assert main_pid(healthy) == pid
    assert healthy.file("/etc/llmfleet/vllm.restart-pending").exists
    assert "LLMFLEET_TEST=1" in healthy.file("/etc/llmfleet/vllm.env").content_string


# ---- site.yml with a context the engine refuses ---------------------------------------------------------------


def test_engine_refusing_the_context_fails_the_play_at_once_with_its_reason():
    """All sizes explicit (the planner off) and a context longer than the tiny model's max_position_embeddings: the
    engine exits at start, and the role stops waiting at once (far below vllm_service_start_timeout) with the
    engine's own reason and the variable to change."""
    limit = json.loads((TINY_MODEL / "config.json").read_text())["max_position_embeddings"]
    too_long = limit * 8
    completed = playbook("site.yml", *SERVICE_ONLY, "-e", "vllm_service_max_model_len=%d" % too_long,
                         "-e", "vllm_service_tensor_parallel_size=1", "-e", "vllm_service_pipeline_parallel_size=1",
                         "-e", "vllm_service_max_num_seqs=%d" % WORKSTATIONS["vllm_service_plan_max_num_seqs"])
    report = report_of(completed)
    assert completed.returncode == 2, failures(report, HEALTHY)
    [wait] = [task for play in report["plays"] for task in play["tasks"]
              if task["task"]["name"].endswith("Wait until the API answers /health, or the engine exits")
              and HEALTHY in task["hosts"]]
    assert wait["hosts"][HEALTHY].get("failed"), wait["hosts"][HEALTHY]
    started, ended = (wait["task"]["duration"][key] for key in ("start", "end"))
    waited = (datetime.fromisoformat(ended.rstrip("Z")) - datetime.fromisoformat(started.rstrip("Z"))).total_seconds()
    assert waited < 120 < WORKSTATIONS["vllm_service_start_timeout"], "waited %d s for an engine that exited" % waited
    _play, _task, message = failures(report, HEALTHY)[-1]
    assert "vllm_service_max_model_len is %d" % too_long in message, message
    assert "is greater than the derived max_model_len" in message, message


def test_the_next_run_within_the_limits_restarts_and_serves_again():
    """The next run with the scenario's own settings, its GPUs within the limits: the restart pending since the hot
    run happens, the refused settings are gone, the API answers again and the marker is gone."""
    healthy = target(HEALTHY)
    completed = playbook("site.yml", *SERVICE_ONLY, callback="default")
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    assert not healthy.file("/etc/llmfleet/vllm.restart-pending").exists
    assert "LLMFLEET_TEST" not in healthy.file("/etc/llmfleet/vllm.env").content_string
    assert wait_for_models(healthy) == [SERVED]
    assert completion_tokens(healthy) > 0
