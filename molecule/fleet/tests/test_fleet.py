"""A fleet converged by site.yml as an operator meets it: the healthy workstation serves, the one with a misseated
NVLink bridge was stopped at the gates and got nothing else, and Open WebUI offers only the model that answers.
Then the operator's other playbooks on the same fleet: preflight.yml, site.yml --check, rolling_update.yml.

Expected values come from the inputs (molecule.yml, the fake NVML scenario files), never from what the playbooks
printed. Tests run in file order: the rolling-update tests at the end restart the engine on llmfleet-fleet-ws1.
"""

import csv
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import testinfra
import yaml

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
ADMIN = {"name": "Fleet Admin", "email": "admin@example.org", "password": "not-a-real-secret-1"}


def target(name):
    return testinfra.get_host("ansible://%s?ansible_inventory=%s" % (name, INVENTORY))


def playbook(name, *extra, callback="ansible.posix.json"):
    """Run one of the collection's playbooks against the fleet as an operator does; return the completed process."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK=callback, ANSIBLE_FORCE_COLOR="false", NO_COLOR="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"), LLMFLEET_REPO=str(REPO))
    return subprocess.run(["ansible-playbook", "-i", INVENTORY, str(REPO / "playbooks" / name), *extra],
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
    command = "curl -sS -o /tmp/fleet-curl-body -w '%%{http_code}' %s %s" % (
        " ".join(shlex.quote(arg) for arg in args), shlex.quote(url))
    status = host.run(command)
    return int(status.stdout or 0), host.file("/tmp/fleet-curl-body").content_string


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


def address_of(container_name):
    completed = subprocess.run(["podman", "inspect", "--format", "{{.NetworkSettings.IPAddress}}", container_name],
                               capture_output=True, text=True, check=True)
    return completed.stdout.strip()


def webui(host, method, path, token=None, body=None):
    command = ["curl", "-s", "-o", "/tmp/fleet-owui", "-w", "%{http_code}", "-X", method, WEBUI_URL + path]
    if token:
        command += ["-H", "Authorization: Bearer " + token]
    if body is not None:
        command += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    status = int(host.check_output(" ".join(shlex.quote(part) for part in command)))
    text = host.file("/tmp/fleet-owui").content_string
    try:
        return status, json.loads(text)
    except ValueError:
        return status, None


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
    if status != 200:  # first verify on this fleet: the first account is the admin
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
    # gates install from the offline wheelhouse through gpu_gates_pip_extra_args); nothing else may change.
    assert changed_tasks(report, HEALTHY) == [
        "llmfleet.workstation.gpu_gates : Install the NVML Python bindings into the gates venv"]
    [(play, _task, message)] = failures(report, BROKEN)
    assert play == GATES_PLAY and message.startswith("NVLink gate failed")
    assert main_pid(target(HEALTHY)) == pid


# ---- rolling_update.yml -------------------------------------------------------------------------------------------


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


def test_rollout_restarts_and_gates_each_host():
    healthy = target(HEALTHY)
    pid = main_pid(healthy)
    completed = playbook("rolling_update.yml", "--limit", HEALTHY, "-e", settings_with(LLMFLEET_ROLLOUT=1))
    report = report_of(completed)
    assert completed.returncode == 0, failures(report, HEALTHY)
    assert "Health gate: require one completion" in tasks_run(report, HEALTHY)
    assert main_pid(healthy) != pid
    assert "LLMFLEET_ROLLOUT=1" in healthy.file("/etc/llmfleet/vllm.env").content_string
    assert served_models(healthy) == [SERVED]


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
