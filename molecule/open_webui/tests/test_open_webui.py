"""Open WebUI as an operator meets it: a container that stays up, answers on port 3000, signs people in, keeps its
secret key, and lists the fleet's models through its own API.

The frontend's podman runs the stand-in of the upstream image, deployed by name with open_webui_image_pull false.
Tests run in file order: the last one changes the fleet (a stopped workstation comes up) and converges again.
"""

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import testinfra
import testinfra.utils.ansible_runner
import yaml

REPO = Path(__file__).resolve().parents[3]
SCENARIO = Path(__file__).resolve().parents[1]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
DEFAULTS = yaml.safe_load((REPO / "roles" / "open_webui" / "defaults" / "main.yml").read_text())
IMAGE = "%s:%s" % (DEFAULTS["open_webui_image"], DEFAULTS["open_webui_image_tag"])
CONTAINER = DEFAULTS["open_webui_container_name"]
SECRET_KEY_FILE = "/etc/llmfleet/open-webui/secret_key"
ENV_FILE = "/etc/llmfleet/open-webui/open-webui.env"
BASE_URL = "http://127.0.0.1:%d" % DEFAULTS["open_webui_port"]
ADMIN = {"name": "Fleet Admin", "email": "admin@example.org", "password": "not-a-real-secret-1"}

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("frontends")


def target(name):
    return testinfra.get_host("ansible://%s?ansible_inventory=%s" % (name, INVENTORY))


def address_of(container_name):
    """The target's address on the outer podman network, as the role reads it from facts."""
    completed = subprocess.run(
        ["podman", "inspect", "--format", "{{.NetworkSettings.IPAddress}}", container_name],
        capture_output=True, text=True, check=True,
    )
    return completed.stdout.strip()


def inspect(host):
    return json.loads(host.check_output("podman inspect %s" % CONTAINER))[0]


def container_env(host):
    return dict(entry.split("=", 1) for entry in inspect(host)["Config"]["Env"])


def api(host, method, path, token=None, body=None):
    """Call Open WebUI's HTTP API from inside the frontend; return (status, parsed JSON or None)."""
    command = ["curl", "-s", "-o", "/tmp/owui-response", "-w", "%{http_code}", "-X", method, BASE_URL + path]
    if token:
        command += ["-H", "Authorization: Bearer " + token]
    if body is not None:
        command += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    status = int(host.check_output(" ".join(shlex.quote(part) for part in command)))
    text = host.check_output("cat /tmp/owui-response")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, None


def model_ids(host, token):
    status, body = api(host, "GET", "/api/models", token=token)
    assert status == 200, body
    return {model["id"] for model in body["data"]}


def run_playbook(playbook, *extra):
    env = dict(os.environ)
    env.update(
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"),
    )
    completed = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, str(SCENARIO / playbook), *extra],
        capture_output=True, text=True, env=env, check=False,
    )
    try:
        report = json.loads(completed.stdout)
    except ValueError:
        pytest.fail("ansible-playbook printed no JSON (rc %s): %s %s"
                    % (completed.returncode, completed.stdout[-3000:], completed.stderr[-3000:]))
    return completed.returncode, report


# ---- the container -----------------------------------------------------------------------------


def test_container_runs_the_pinned_image_with_restart_always(host):
    info = inspect(host)
    assert info["State"]["Running"] is True
    assert info["ImageName"] == IMAGE
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert info["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"] == "3000"
    volumes = {(mount["Name"], mount["Destination"]) for mount in info["Mounts"] if mount["Type"] == "volume"}
    assert ("open-webui", "/app/backend/data") in volumes


def test_port_3000_answers_health(host):
    assert api(host, "GET", "/health") == (200, {"status": True})


def test_engine_was_installed_after_the_role_refreshed_the_empty_package_lists(host):
    """prepare.yml left the lists empty and dated now, so a refresh by age would have skipped them and found no
    podman; the role asked apt, refreshed the lists and installed it."""
    assert host.package("podman").is_installed
    lists = host.check_output("find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*'").split()
    assert lists, "no package lists: the role installed podman without refreshing them?"


def test_podman_brings_the_container_back_after_a_reboot(host):
    # Restart policy "always" covers crashes; after a reboot podman-restart.service starts such containers.
    assert host.service("podman-restart.service").is_enabled


# ---- secrets -----------------------------------------------------------------------------------


def test_secret_key_is_root_only_and_is_what_the_container_uses(host):
    secret = host.file(SECRET_KEY_FILE)
    assert secret.user == "root"
    assert secret.mode == 0o600
    key = secret.content_string
    assert len(key) >= 32
    assert container_env(host)["WEBUI_SECRET_KEY"] == key
    assert host.file(ENV_FILE).mode == 0o600
    assert host.file("/etc/llmfleet/open-webui").mode == 0o700


def test_secrets_never_reach_a_command_line(host):
    create_command = " ".join(inspect(host)["Config"]["CreateCommand"])
    assert host.file(SECRET_KEY_FILE).content_string not in create_command
    assert "test-key-backend" not in create_command
    assert "--env-file" in create_command


# ---- connections and sign-in -------------------------------------------------------------------


def test_environment_points_at_the_answering_backend_only(host):
    env = container_env(host)
    assert env["OPENAI_API_BASE_URLS"] == "http://%s:8000/v1" % address_of("owui-backend")
    assert env["OPENAI_API_KEYS"] == "test-key-backend"
    assert env["WEBUI_AUTH"] == "True"
    assert env["ENABLE_OLLAMA_API"] == "False"
    assert env["ENABLE_PERSISTENT_CONFIG"] == "False"
    assert env["OFFLINE_MODE"] == "True"
    # vLLM refuses OpenAI tools unless started with tool parsing: tools stay in the prompt.
    assert json.loads(env["DEFAULT_MODEL_PARAMS"]) == {"function_calling": DEFAULTS["open_webui_function_calling"]}


def test_models_need_a_signed_in_user(host):
    status, _unused = api(host, "GET", "/api/models")
    assert status == 401


def test_first_account_is_admin_and_sees_the_backend_model(host):
    status, body = api(host, "POST", "/api/v1/auths/signup", body=ADMIN)
    assert status == 200, body
    assert body["role"] == "admin"
    assert model_ids(host, body["token"]) == {"tiny-llama"}


def test_signup_is_closed_after_the_admin(host):
    status, _unused = api(host, "POST", "/api/v1/auths/signup",
                          body={"name": "Someone", "email": "someone@example.org", "password": "another-password-2"})
    assert status == 403


# ---- check mode --------------------------------------------------------------------------------


def test_check_mode_on_the_converged_frontend_reports_no_change():
    returncode, report = run_playbook("converge.yml", "--check")
    assert returncode == 0, json.dumps(report["stats"])
    assert report["stats"]["owui-frontend"]["failures"] == 0
    assert report["stats"]["owui-frontend"]["changed"] == 0


def test_check_mode_on_a_fresh_host_fails_nothing_and_changes_nothing():
    returncode, report = run_playbook("check_fresh.yml", "--check")
    assert returncode == 0, json.dumps(report["stats"])
    assert report["stats"]["owui-fresh"]["failures"] == 0
    assert report["stats"]["owui-fresh"]["changed"] > 0  # it says what a real run would do
    fresh = target("owui-fresh")
    assert not fresh.file("/etc/llmfleet/open-webui").exists
    assert not fresh.exists("podman")
    # Its package lists were empty: check mode says a real run refreshes them, and leaves them empty itself.
    messages = [str(result.get("msg", "")) for play in report["plays"] for task in play["tasks"]
                for name, result in task["hosts"].items() if name == "owui-fresh"]
    assert any("a real run refreshes them and installs the engine" in message for message in messages), messages
    assert fresh.check_output("find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*'") == ""


# ---- the fleet changes: a workstation comes up ------------------------------------------------


def test_next_run_adds_a_backend_that_answers_and_keeps_key_and_accounts(host):
    key_before = host.file(SECRET_KEY_FILE).content_string
    down = target("owui-down")
    down.run_expect([0], "systemctl start openai-standin.service")
    deadline = time.monotonic() + 30
    while down.run("curl -s -o /dev/null http://127.0.0.1:8000/health").rc != 0:
        assert time.monotonic() < deadline, "the stand-in on owui-down did not start"
        time.sleep(1)

    returncode, report = run_playbook("converge.yml")
    assert returncode == 0, json.dumps(report["stats"])
    assert report["stats"]["owui-frontend"]["changed"] > 0

    env = container_env(host)
    assert env["OPENAI_API_BASE_URLS"] == "http://%s:8000/v1;http://%s:8000/v1" % (
        address_of("owui-backend"), address_of("owui-down"))
    assert env["OPENAI_API_KEYS"] == "test-key-backend;test-key-down"
    assert host.file(SECRET_KEY_FILE).content_string == key_before
    assert env["WEBUI_SECRET_KEY"] == key_before

    # The recreated container kept its volume: the admin signs in with the same password.
    status, body = api(host, "POST", "/api/v1/auths/signin",
                       body={"email": ADMIN["email"], "password": ADMIN["password"]})
    assert status == 200, body
    assert model_ids(host, body["token"]) == {"tiny-llama", "tiny-llama-down"}
