"""The gateway as a client meets it, checked from outside the role: TLS and its names, keys let in, refused and
revoked, plain HTTP answered, streams and websockets passed through, and what reached the upstreams behind it.

The upstreams are a recording fixture (files/recording_upstream.py) on the target's loopback, on the router's port
4000 and Open WebUI's port 3000: the gateway is what is under test. Expected values come from molecule.yml and the
role's defaults, never from what the role printed. Tests run in file order; the last one changes the keys.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import testinfra
import yaml

REPO = Path(__file__).resolve().parents[3]
SCENARIO = Path(__file__).resolve().parents[1]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
INVENTORY_SETTINGS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["provisioner"]["inventory"]
SETTINGS = INVENTORY_SETTINGS["group_vars"]["frontends"]
DEFAULTS = yaml.safe_load((REPO / "roles" / "gateway" / "defaults" / "main.yml").read_text())
FRONTEND = "llmfleet-gateway-frontend"
KEYS = {entry["name"]: entry for entry in SETTINGS["gateway_client_keys"]}
ROUTER_KEY = SETTINGS["router_api_key"]
CA_DIR = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "gateway-ca"
API_PORT, WEBUI_PORT = DEFAULTS["gateway_api_port"], DEFAULTS["gateway_webui_port"]
HTTP_PORT = DEFAULTS["gateway_http_port"]
ROUTER_RECORD, WEBUI_RECORD = "/var/log/standin-4000.jsonl", "/var/log/standin-3000.jsonl"
TARGET_CA = "/tmp/fleet-ca.crt"
# A name the certificate must cover (molecule.yml's gateway_tls_extra_names), and one it must not.
SERVED_NAME, OTHER_NAME = SETTINGS["gateway_tls_extra_names"][0], "not-in-the-certificate.example.test"
ALL_SECRETS = [entry["key"] for entry in SETTINGS["gateway_client_keys"]] + [ROUTER_KEY]


@pytest.fixture(scope="module")
def frontend():
    # podman exec, not an ansible run per command: the checks make about sixty.
    host = testinfra.get_host("podman://%s" % FRONTEND)
    # Clients are given the CA's certificate; the test gives the target the one on the controller.
    copied = subprocess.run(["podman", "cp", str(CA_DIR / "ca.crt"), "%s:%s" % (FRONTEND, TARGET_CA)],
                            capture_output=True, text=True, check=False)
    assert copied.returncode == 0, copied.stderr
    return host


def probe(host, port, *args, name=SERVED_NAME, scheme="https"):
    """One request through the probe client on the target; its JSON answer."""
    command = ["python3", "/usr/local/bin/gateway_probe.py", "%s://127.0.0.1:%d%s" % (scheme, port, args[0])]
    if scheme == "https":
        command += ["--cacert", TARGET_CA, "--servername", name]
    command += list(args[1:])
    result = host.run(" ".join("'%s'" % part.replace("'", "'\\''") for part in command))
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def bearer(name):
    return "--header=Authorization: Bearer %s" % KEYS[name]["key"]


def records(host, path):
    content = host.run("cat %s 2>/dev/null" % path).stdout
    return [json.loads(line) for line in content.splitlines() if line.strip()]


def error_of(answer):
    assert answer["headers"]["content-type"].startswith("application/json"), answer["headers"]
    return json.loads(answer["body"])["error"]


# ---- TLS --------------------------------------------------------------------------------------------------------


def test_certificate_verifies_against_the_fleet_ca_with_the_frontends_names(frontend):
    names = frontend.run("openssl x509 -noout -ext subjectAltName -in /etc/nginx/llmfleet-gateway/tls/server.crt")
    assert names.rc == 0, names.stderr
    alt_names = set(re.findall(r"(DNS:[^,\s]+|IP Address:[^,\s]+)", names.stdout))
    assert alt_names == {"DNS:%s" % FRONTEND, "DNS:%s" % SERVED_NAME, "IP Address:192.0.2.41"}
    served = frontend.run("openssl s_client -connect 127.0.0.1:%d -servername %s -CAfile %s -verify_return_error "
                          "-verify_hostname %s </dev/null" % (API_PORT, SERVED_NAME, TARGET_CA, SERVED_NAME))
    assert served.rc == 0, served.stdout[-2000:] + served.stderr
    assert "Verify return code: 0 (ok)" in served.stdout
    # The CA's key stays on the controller, readable by its owner only.
    assert (CA_DIR / "ca.key").stat().st_mode & 0o777 == 0o600
    assert frontend.run("grep -rl 'PRIVATE KEY' /etc/nginx | grep -v /tls/server.key").stdout == ""


def test_a_name_the_certificate_does_not_cover_is_refused(frontend):
    result = frontend.run("python3 /usr/local/bin/gateway_probe.py https://127.0.0.1:%d/v1/models --cacert %s "
                          "--servername %s" % (API_PORT, TARGET_CA, OTHER_NAME))
    assert result.rc != 0
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr


@pytest.mark.parametrize("version, accepted", [("tls1_1", False), ("tls1_2", True), ("tls1_3", True)])
def test_only_tls_1_2_and_1_3_are_spoken(frontend, version, accepted):
    # Security level 0 lets the client offer TLS 1.1, so a refusal is the server's.
    result = frontend.run("openssl s_client -connect 127.0.0.1:%d -%s -cipher DEFAULT@SECLEVEL=0 -servername %s "
                          "</dev/null" % (WEBUI_PORT, version, SERVED_NAME))
    assert (result.rc == 0 and "BEGIN CERTIFICATE" in result.stdout) == accepted, result.stdout[-500:]


def test_nginx_hides_its_version_and_runs_its_workers_as_its_own_user(frontend):
    answer = probe(frontend, WEBUI_PORT, "/")
    assert answer["headers"]["server"] == "nginx"
    workers = frontend.run("for proc in /proc/[0-9]*; do [ \"$(cat $proc/comm 2>/dev/null)\" = nginx ] && "
                           "stat -c %U $proc; done; true").stdout.split()
    assert set(workers) == {"root", DEFAULTS["gateway_nginx_user"]}, workers


# ---- keys -------------------------------------------------------------------------------------------------------


def test_a_valid_key_reaches_the_router_under_the_routers_key(frontend):
    before = len(records(frontend, ROUTER_RECORD))
    answer = probe(frontend, API_PORT, "/v1/models", bearer("alice"))
    assert answer["status"] == 200
    assert json.loads(answer["body"])["data"][0]["id"] == "standin-model"
    [received] = records(frontend, ROUTER_RECORD)[before:]
    assert received["path"] == "/v1/models"
    assert received["authorization"] == "Bearer %s" % ROUTER_KEY
    assert received["x-gateway-client"] == "alice"


def test_a_stream_arrives_piece_by_piece(frontend):
    request = json.dumps({"model": "standin-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    answer = probe(frontend, API_PORT, "/v1/chat/completions", bearer("team-data"), "--data=%s" % request,
                   "--header=Content-Type: application/json")
    assert answer["status"] == 200
    events = [line for line in answer["body"].splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) == 5
    event_times = [at for at, line in zip(answer["line_times"], answer["body"].splitlines(keepends=True))
                   if line.startswith("data: ")]
    # The fixture waits 0.5 s after each of its four chunks: buffered, they would all arrive together at the end.
    assert event_times[-1] - event_times[0] >= 1.4, event_times
    assert records(frontend, ROUTER_RECORD)[-1]["x-gateway-client"] == "team-data"


@pytest.mark.parametrize("header, code, says", [
    (None, "invalid_api_key", "Missing or unknown API key"),
    ("--header=Authorization: Bearer not-a-key-anyone-was-given-0000000000", "invalid_api_key", "unknown API key"),
    # The key in another case is another key.
    ("--header=Authorization: Bearer ALICE-KEY-5D1C8E7F2A9B4C6D8E0F1A2B3C4D5E6F", "invalid_api_key", "unknown API key"),
    ("--header=Authorization: Bearer " + ROUTER_KEY, "invalid_api_key", "unknown API key"),
    ("revoked", "revoked_api_key", "This API key was revoked (it was issued to bob)"),
])
def test_unknown_and_revoked_keys_get_401_and_reach_nothing(frontend, header, code, says):
    header = bearer("bob") if header == "revoked" else header
    before = len(records(frontend, ROUTER_RECORD))
    answer = probe(frontend, API_PORT, "/v1/chat/completions", *([header] if header else []),
                   '--data={"model": "standin-model", "messages": []}')
    assert answer["status"] == 401
    error = error_of(answer)
    assert error["code"] == code and says in error["message"], error
    assert len(records(frontend, ROUTER_RECORD)) == before


def test_the_access_log_names_clients_and_holds_no_key(frontend):
    log = frontend.file("/var/log/nginx/gateway-api.log").content_string
    assert 'client="alice"' in log and 'client="team-data"' in log and 'revoked="bob"' in log
    for secret in ALL_SECRETS:
        assert secret not in frontend.run("cat /var/log/nginx/*.log").stdout


def test_the_files_holding_keys_are_root_only(frontend):
    for name in ("client-keys.map", "revoked-keys.map", "upstream-auth.conf"):
        secrets = frontend.file("/etc/nginx/llmfleet-gateway/secrets/%s" % name)
        assert (secrets.user, secrets.mode) == ("root", 0o600), name
    assert frontend.file("/etc/nginx/llmfleet-gateway/tls/server.key").mode == 0o600
    assert ROUTER_KEY not in frontend.file("/etc/nginx/nginx.conf").content_string


# ---- plain HTTP -------------------------------------------------------------------------------------------------


def test_plain_http_to_the_api_port_gets_a_json_400_and_reaches_nothing(frontend):
    before = len(records(frontend, ROUTER_RECORD))
    answer = probe(frontend, API_PORT, "/v1/models", bearer("alice"), "--plain", scheme="http")
    assert answer["status"] == 400
    error = error_of(answer)
    assert error["code"] == "https_required" and "HTTPS only" in error["message"]
    assert len(records(frontend, ROUTER_RECORD)) == before


def test_plain_http_on_port_80_refuses_the_api_and_redirects_the_ui(frontend):
    before = (len(records(frontend, ROUTER_RECORD)), len(records(frontend, WEBUI_RECORD)))
    api = probe(frontend, HTTP_PORT, "/v1/chat/completions", bearer("alice"), "--data={}", scheme="http")
    assert api["status"] == 400
    assert error_of(api)["code"] == "https_required" and ":%d/v1/" % API_PORT in error_of(api)["message"]
    ui = probe(frontend, HTTP_PORT, "/c/123?x=1", scheme="http")
    assert ui["status"] == 301
    assert ui["headers"]["location"] == "https://127.0.0.1/c/123?x=1"
    ui_on_tls_port = probe(frontend, WEBUI_PORT, "/c/123", "--plain", scheme="http")
    assert ui_on_tls_port["status"] == 301
    assert ui_on_tls_port["headers"]["location"] == "https://127.0.0.1:%d/c/123" % WEBUI_PORT
    assert (len(records(frontend, ROUTER_RECORD)), len(records(frontend, WEBUI_RECORD))) == before


# ---- Open WebUI -------------------------------------------------------------------------------------------------


def test_the_ui_is_served_over_tls_with_hsts_and_its_websockets_pass(frontend):
    page = probe(frontend, WEBUI_PORT, "/")
    assert page["status"] == 200 and json.loads(page["body"])["standin"] == 3000
    assert page["headers"]["strict-transport-security"] == "max-age=%d" % DEFAULTS["gateway_hsts_max_age"]
    upgraded = probe(frontend, WEBUI_PORT, "/ws/socket.io/", "--upgrade")
    assert upgraded["received"].startswith("HTTP/1.1 101") and upgraded["received"].endswith("upgraded\n")
    received = records(frontend, WEBUI_RECORD)[-1]
    assert (received["upgrade"], received["connection"]) == ("websocket", "upgrade")
    assert received["authorization"] is None


# ---- the playbook again -----------------------------------------------------------------------------------------


def playbook(*extra):
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="false", NO_COLOR="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"), LLMFLEET_REPO=str(REPO))
    return subprocess.run(["ansible-playbook", "-v", "-i", INVENTORY, str(REPO / "playbooks" / "site.yml"),
                           "--tags", "gateway", "--limit", FRONTEND, *extra],
                          env=env, capture_output=True, text=True, timeout=600, check=False)


def recap(completed):
    match = re.search(r"%s\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)" % FRONTEND,
                      completed.stdout)
    assert match, completed.stdout[-3000:] + completed.stderr[-2000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups())))


def test_check_mode_through_site_yml_changes_nothing_and_shows_no_key(frontend):
    pid = frontend.run("cat /run/nginx.pid").stdout
    completed = playbook("--check", "--diff")
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert recap(completed)["changed"] == 0
    for secret in ALL_SECRETS:
        assert secret not in completed.stdout + completed.stderr
    assert frontend.run("cat /run/nginx.pid").stdout == pid


def test_a_key_issued_and_one_revoked_take_effect_on_the_next_run_without_showing_a_key(frontend):
    carol = {"name": "carol", "key": "carol-key-77aa88bb99cc00dd11ee22ff33aa44bb"}
    revised = [dict(KEYS["alice"], state="revoked"), KEYS["team-data"], KEYS["bob"], carol]
    completed = playbook("--diff", "-e", json.dumps({"gateway_client_keys": revised}))
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert recap(completed)["changed"] == 2  # the key files, and nginx reloaded
    for secret in ALL_SECRETS + [carol["key"]]:
        assert secret not in completed.stdout + completed.stderr
    KEYS["carol"] = carol
    assert probe(frontend, API_PORT, "/v1/models", bearer("carol"))["status"] == 200
    refused = probe(frontend, API_PORT, "/v1/models", bearer("alice"))
    assert refused["status"] == 401 and "issued to alice" in error_of(refused)["message"]
