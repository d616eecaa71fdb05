"""The router in front of two workstations serving one model name, as clients meet it. First the front door from
the controller, as people and programs on the network reach it: Open WebUI and the API over TLS through the gateway
with a client key, a revoked key, plain HTTP, and benchmark.yml through the gateway and the router. Then bounded
loads through the router on the frontend's loopback with the router's key. Where requests land is counted in the
engines' own logs (vLLM's access lines), never taken from what the router says.

Tests run in file order: the engine-stop and drain tests stop and start llmfleet-router-ws2's engine and drain it.
"""

import json
import os
import re
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import testinfra
import yaml

REPO = Path(__file__).resolve().parents[3]
SCENARIO = Path(__file__).resolve().parents[1]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
SETTINGS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["provisioner"]["inventory"]
ROUTERS = SETTINGS["group_vars"]["routers"]
FRONTENDS = SETTINGS["group_vars"]["frontends"]
WORKSTATIONS = SETTINGS["group_vars"]["workstations"]
ROUTER_DEFAULTS = yaml.safe_load((REPO / "roles" / "router" / "defaults" / "main.yml").read_text())
GATEWAY_DEFAULTS = yaml.safe_load((REPO / "roles" / "gateway" / "defaults" / "main.yml").read_text())
WEBUI_DEFAULTS = yaml.safe_load((REPO / "roles" / "open_webui" / "defaults" / "main.yml").read_text())
CLIENT_KEYS = {entry["name"]: entry["key"] for entry in FRONTENDS["gateway_client_keys"]}
CA_FILE = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "gateway-ca" / "ca.crt"
ADMIN = {"name": "Fleet Admin", "email": "admin@example.org", "password": "not-a-real-secret-1"}
FRONTEND, WS1, WS2 = "llmfleet-router-fe", "llmfleet-router-ws1", "llmfleet-router-ws2"
MODEL = WORKSTATIONS["vllm_service_served_model_name"]
ROUTER_KEY = ROUTERS["router_api_key"]
ROUTER = "http://%s:%d/v1" % (ROUTER_DEFAULTS["router_listen_address"], ROUTER_DEFAULTS["router_port"])
LOAD = "/usr/local/bin/router_load.py"
OUTPUT = REPO / "tests" / "output" / "router"
# A bounded load: this many requests, this many at a time, this many tokens each.
CONCURRENCY = 4
MAX_TOKENS = 24
# Seconds after the stopped engine's port first refused a connection within which a request may still have been on
# its way to it (handed to it by the router just before).
STOP_GRACE_S = 1


def target(name):
    return testinfra.get_host("ansible://%s?ansible_inventory=%s" % (name, INVENTORY))


def address(name):
    inspect = json.loads(subprocess.run(["podman", "inspect", "--format", "json", name], capture_output=True,
                                        text=True, check=True).stdout)
    return inspect[0]["NetworkSettings"]["IPAddress"]


def install_load_client():
    subprocess.run(["podman", "cp", str(SCENARIO / "files" / "router_load.py"), "%s:%s" % (FRONTEND, LOAD)],
                   check=True)


def run_load(url=ROUTER, key=ROUTER_KEY, *, model=MODEL, requests=40, prefix="Request", api="completions",
             retries=0):
    """A bounded load from the frontend; returns (summary, records).

    Plain completions where requests are counted in the engines' logs (the router's health checks, if on, send chat
    completions); chat completions, the API Open WebUI uses, where a host fails under the load: LiteLLM retries those
    on another host when the first refuses the connection, and not plain completions (docs/router.md).
    """
    out = "/tmp/load-%s.json" % prefix
    result = subprocess.run(["podman", "exec", FRONTEND, "python3", LOAD, "--url", url, "--key", key, "--model", model,
                             "--requests", str(requests), "--concurrency", str(CONCURRENCY), "--max-tokens",
                             str(MAX_TOKENS), "--prefix", prefix, "--api", api, "--retries", str(retries),
                             "--out", out],
                            capture_output=True, text=True, timeout=900, check=True)
    full = json.loads(target(FRONTEND).file(out).content_string)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / ("load-%s.json" % prefix)).write_text(json.dumps(full, indent=1))
    assert json.loads(result.stdout) == full["summary"]
    return full["summary"], full["records"]


def requests_since(name, since, path):
    """How many POSTs to `path` the host's engine logged since `since` (epoch seconds)."""
    log = target(name).check_output("journalctl -u vllm --since @%d -o cat --no-pager" % int(since))
    return sum(1 for line in log.splitlines() if "POST %s " % path in line)


def completions_since(name, since):
    """How many /v1/completions requests the host's engine logged since `since` (epoch seconds)."""
    return requests_since(name, since, "/v1/completions")


def first_completion_after(name, since):
    """Epoch seconds of the first /v1/completions the host's engine logged after `since`, or None."""
    log = target(name).check_output("journalctl -u vllm --since @%d -o short-unix --no-pager" % int(since))
    for line in log.splitlines():
        if "POST /v1/completions" in line:
            return float(line.split()[0])
    return None


def main_pid(host):
    return int(host.check_output("systemctl show -p MainPID --value vllm"))


def wait_for_engine(name, timeout=600):
    host = target(name)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if host.run("python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:%d/health', "
                    "timeout=5)\"" % WORKSTATIONS.get("vllm_service_port", 8000)).rc == 0:
            return
        time.sleep(3)
    raise AssertionError("%s's engine did not answer /health within %d s" % (name, timeout))


def http(method, url, key, body=None):
    """Status and body of one request made on the frontend."""
    script = ("import json,sys,urllib.request,urllib.error\n"
              "r=urllib.request.Request(sys.argv[1],data=sys.argv[3].encode() or None,method=sys.argv[4],"
              "headers={'Authorization':'Bearer '+sys.argv[2],'Content-Type':'application/json'})\n"
              "try:\n r=urllib.request.urlopen(r,timeout=60);print(r.status);print(r.read().decode())\n"
              "except urllib.error.HTTPError as e:\n print(e.code);print(e.read().decode())\n")
    result = target(FRONTEND).run("python3 -c %s %s %s %s %s", script, url, key, json.dumps(body) if body else "",
                                  method)
    status, unused_newline, text = result.stdout.partition("\n")
    return int(status), text


def from_controller(url, key=None, body=None, method=None):
    """Status and parsed JSON body (None if not JSON) of one request from the controller, TLS verified against the
    fleet CA the gateway role made."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer %s" % key
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers=headers, method=method or ("POST" if body is not None else "GET"))
    context = ssl.create_default_context(cafile=str(CA_FILE)) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=300, context=context) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, None


def run_playbook(playbook, extra_vars, timeout=900, log=None):
    """ansible-playbook against the scenario's inventory, as an operator runs it; the completed process. With `log`,
    its output, each task timed (profile_tasks), is kept as OUTPUT/<log>."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"), LLMFLEET_REPO=str(REPO))
    if log:
        env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"
    completed = subprocess.run(["ansible-playbook", "-i", INVENTORY, str(playbook), "-e", json.dumps(extra_vars)],
                               capture_output=True, text=True, timeout=timeout, check=False, env=env)
    if log:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        (OUTPUT / log).write_text(completed.stdout + completed.stderr)
    return completed


def test_router_runs_hardened_on_the_loopback_only():
    host = target(FRONTEND)
    service = host.service(ROUTER_DEFAULTS["router_service_name"])
    assert service.is_running and service.is_enabled
    properties = host.check_output("systemctl show %s -p User -p NoNewPrivileges -p ProtectSystem -p MemoryMax "
                                   "-p Restart", ROUTER_DEFAULTS["router_service_name"])
    assert "User=%s" % ROUTER_DEFAULTS["router_user"] in properties
    assert "NoNewPrivileges=yes" in properties and "ProtectSystem=strict" in properties
    assert "Restart=on-failure" in properties and "MemoryMax=infinity" not in properties
    listening = host.check_output("ss -Hltn 'sport = :%d'" % ROUTER_DEFAULTS["router_port"])
    assert listening.split()[3] == "%s:%d" % (ROUTER_DEFAULTS["router_listen_address"], ROUTER_DEFAULTS["router_port"])
    assert len(listening.splitlines()) == 1


def test_router_lists_the_model_once_and_keeps_the_workstations_keys():
    status, body = http("GET", ROUTER + "/models", ROUTER_KEY)
    assert status == 200, body
    assert [model["id"] for model in json.loads(body)["data"]] == [MODEL]
    config = target(FRONTEND).file("/etc/llmfleet/router/upstreams.yaml")
    assert config.mode == 0o640 and config.user == "root"
    deployments = yaml.safe_load(config.content_string)["model_list"]
    assert sorted((d["model_info"]["id"], d["litellm_params"]["api_base"], d["litellm_params"]["api_key"])
                  for d in deployments) == [
        (WS1, "http://%s:8000/v1" % address(WS1), SETTINGS["host_vars"][WS1]["vllm_service_api_key"]),
        (WS2, "http://%s:8000/v1" % address(WS2), SETTINGS["host_vars"][WS2]["vllm_service_api_key"])]


# ---- the front door, from the controller ------------------------------------------------------------------------


def test_open_webui_has_the_router_as_its_one_connection():
    container = json.loads(target(FRONTEND).check_output(
        "podman inspect %s" % WEBUI_DEFAULTS["open_webui_container_name"]))
    env = dict(entry.split("=", 1) for entry in container[0]["Config"]["Env"])
    router_url = "http://%s:%d/v1" % (ROUTER_DEFAULTS["router_listen_address"], ROUTER_DEFAULTS["router_port"])
    assert env["OPENAI_API_BASE_URLS"] == router_url
    assert env["OPENAI_API_KEYS"] == ROUTER_KEY


def test_a_person_chats_through_tls_open_webui_and_the_router():
    """Signed up over https on the gateway's UI port, the person sees the model once and gets tokens from an engine."""
    webui = "https://%s:%d" % (address(FRONTEND), GATEWAY_DEFAULTS["gateway_webui_port"])
    status, account = from_controller(webui + "/api/v1/auths/signup", body=ADMIN)
    assert status == 200, account
    status, models = from_controller(webui + "/api/models", key=account["token"])
    assert status == 200, models
    assert [model["id"] for model in models["data"]] == [MODEL]
    start = time.time() - 1
    status, reply = from_controller(webui + "/api/chat/completions", key=account["token"],
                                    body={"model": MODEL, "stream": False, "max_tokens": 8,
                                          "messages": [{"role": "user", "content": "Say hello."}]})
    assert status == 200, reply
    assert reply["model"] == MODEL and reply["usage"]["completion_tokens"] > 0, reply
    time.sleep(1)
    assert sum(requests_since(name, start, "/v1/chat/completions") for name in (WS1, WS2)) >= 1


def test_a_client_key_over_tls_reaches_an_engine_and_bad_ones_reach_none():
    api = "https://%s:%d/v1" % (address(FRONTEND), GATEWAY_DEFAULTS["gateway_api_port"])
    start = time.time() - 1
    status, models = from_controller(api + "/models", key=CLIENT_KEYS["alice"])
    assert status == 200, models
    assert [model["id"] for model in models["data"]] == [MODEL]
    status, completion = from_controller(api + "/completions", key=CLIENT_KEYS["alice"],
                                         body={"model": MODEL, "prompt": "Hello", "max_tokens": 4})
    assert status == 200, completion
    assert completion["usage"]["completion_tokens"] == 4, completion
    time.sleep(1)
    assert sum(requests_since(name, start, "/v1/completions") for name in (WS1, WS2)) == 1
    start = time.time() - 1
    request = {"model": MODEL, "prompt": "Hello", "max_tokens": 4}
    status, answer = from_controller(api + "/completions", key=CLIENT_KEYS["bob"], body=request)
    assert (status, answer["error"]["code"]) == (401, "revoked_api_key"), answer
    status, answer = from_controller(api + "/completions", key="not-a-key-anyone-was-given-0123456789", body=request)
    assert (status, answer["error"]["code"]) == (401, "invalid_api_key"), answer
    status, answer = from_controller(api.replace("https:", "http:") + "/completions", key=CLIENT_KEYS["alice"],
                                     body=request)
    assert (status, answer["error"]["code"]) == (400, "https_required"), answer
    status, answer = from_controller(api + "/completions", key=CLIENT_KEYS["alice"], body=dict(request, model="nope"))
    assert status in (400, 404) and "nope" in json.dumps(answer), answer
    time.sleep(1)
    assert sum(requests_since(name, start, "/v1/completions") for name in (WS1, WS2)) == 0


def test_benchmark_measures_a_host_and_the_router_behind_the_gateway():
    """playbooks/benchmark.yml as an operator runs it: one workstation straight and the fleet's front door (the
    gateway's API port, a client key, the fleet CA) as an extra endpoint, one report."""
    with tempfile.TemporaryDirectory(prefix="llmfleet-bench-") as report_dir:
        settings = {
            "benchmark_hosts": WS1, "benchmark_report_dir": report_dir, "benchmark_prompt_tokens": 32,
            "benchmark_max_tokens": 8, "benchmark_concurrency": [1, 2], "benchmark_repeats": 1,
            "benchmark_model_weight_gb": 0.006, "benchmark_tensor_parallel_size": 1,
            "benchmark_extra_endpoints": [{
                "name": "router", "model": MODEL, "api_key": CLIENT_KEYS["alice"], "ca_path": str(CA_FILE),
                "base_url": "https://%s:%d/v1" % (address(FRONTEND), GATEWAY_DEFAULTS["gateway_api_port"])}]}
        completed = run_playbook(REPO / "playbooks" / "benchmark.yml", settings)
        assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
        report = (Path(report_dir) / "benchmark-latest.md").read_text()
        OUTPUT.mkdir(parents=True, exist_ok=True)
        (OUTPUT / "benchmark.md").write_text(report)
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")}
    assert WS1 in rows and "router" in rows, report
    # Both rows carry measured numbers: the aggregate at each concurrency (only an engine behind the router makes
    # tokens; a failed endpoint is a row with its reason, and fails the run).
    for name in (WS1, "router"):
        assert re.search(r"c=1: [0-9.]+, c=2: [0-9.]+", rows[name]), report


def test_bad_requests_get_the_routers_error_and_reach_no_workstation():
    start = time.time() - 1
    status, body = http("POST", ROUTER + "/completions", ROUTER_KEY,
                        {"model": "no-such-model", "prompt": "hello", "max_tokens": 4})
    assert status in (400, 404), body
    assert "no-such-model" in body
    # A key that is not the router's (here a workstation's): LiteLLM without a key database refuses it with 400 "No
    # connected db." (docs/router.md); clients reach the router through the gateway, which answers such keys 401.
    status, body = http("POST", ROUTER + "/completions", SETTINGS["host_vars"][WS1]["vllm_service_api_key"],
                        {"model": MODEL, "prompt": "hello", "max_tokens": 4})
    assert status in (400, 401), body
    assert "error" in json.loads(body), body
    time.sleep(1)
    assert completions_since(WS1, start) == 0 and completions_since(WS2, start) == 0


def test_forty_requests_land_on_both_hosts_each_within_a_fair_share():
    install_load_client()
    start = time.time() - 1
    summary, unused_records = run_load(requests=40, prefix="spread")
    assert summary["failed"] == 0, summary
    time.sleep(1)
    landed = {WS1: completions_since(WS1, start), WS2: completions_since(WS2, start)}
    (OUTPUT / "spread.json").write_text(json.dumps(landed))
    assert sum(landed.values()) == 40, landed
    # A fair share: each host between 25 % and 75 % of the requests. The router's default picks at random, so two
    # equal hosts fall outside by chance in 7 of 10,000 runs (binomial, 40 draws); least-busy sent 38 of 40 to the
    # first host here, the engines answering faster than the router handed them requests (docs/router.md).
    assert all(10 <= count <= 30 for count in landed.values()), landed


def wait_for_refusal(host_address, port, closed, deadline_s=300):
    """Note in `closed` when the port first refuses a connection, trying every 0.2 s from the controller."""
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        try:
            socket.create_connection((host_address, port), timeout=1).close()
        except ConnectionRefusedError:
            closed["at"] = time.time()
            return
        except OSError:
            pass
        time.sleep(0.2)


def test_a_stopped_engine_fails_only_what_it_had_and_gets_traffic_again_once_started():
    summary, closed = {}, {}

    def load():
        summary["result"] = run_load(requests=160, prefix="stop", api="chat")

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(4)
    stop_began = time.time()
    try:
        # Not waiting for the stop: the engine takes its time over requests in flight, and the load goes on meanwhile.
        target(WS2).check_output("systemctl stop --no-block vllm")
        watcher = threading.Thread(target=wait_for_refusal, args=(address(WS2), 8000, closed))
        watcher.start()
        loader.join(timeout=900)
        watcher.join(timeout=300)
    finally:
        # Started again whatever the checks below find, so that the next checks meet two engines.
        target(WS2).check_output("systemctl start vllm")
        wait_for_engine(WS2)
    ready_at = time.time()
    result, records = summary["result"]
    (OUTPUT / "stop.json").write_text(json.dumps(dict(result, stop_began=stop_began, port_closed_at=closed.get("at"))))
    assert "at" in closed, "the stopped engine's port still took connections after 300 s"
    # Only requests the stopping host had accepted may fail (at most one per client connection): those sent before
    # its port closed (a loaded machine can take seconds from `systemctl stop` to there). Every later request went to
    # the other host: the router sends a request refused by one workstation to another.
    failed = [record for record in records if record["error"] is not None]
    assert len(failed) <= CONCURRENCY, result
    later = [record for record in records if result["started_at"] + record["start_s"] > closed["at"] + STOP_GRACE_S]
    assert len(later) >= CONCURRENCY, "the load ended before the engine's port closed: %s" % result
    assert [record for record in later if record["error"] is not None] == [], result
    back = run_load(requests=40, prefix="back")[0]
    assert back["failed"] == 0, back
    first = first_completion_after(WS2, ready_at - 1)
    (OUTPUT / "back.json").write_text(json.dumps({"ready_at": ready_at, "first_request_at": first}))
    assert first is not None, "the started engine got no request of 40"
    # Put back once a health check or a request finds it answering: within the cool-down and the check interval.
    assert first - ready_at <= ROUTERS["router_cooldown_time"] + ROUTERS["router_health_check_interval"] + 10, \
        (ready_at, first)


def drain(action):
    """Run the router role's drain or undrain entry point for llmfleet-router-ws2 (drain.yml)."""
    return run_playbook(SCENARIO / "drain.yml", {"router_drain_action": action, "router_drain_host": WS2}, timeout=600)


def test_drain_under_load_fails_no_request_and_the_drained_host_gets_none():
    summary = {}

    def load():
        summary["result"] = run_load(requests=60, prefix="drain", api="chat")[0]

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(3)
    drained = drain("drain")
    drained_at = time.time()
    assert drained.returncode == 0, drained.stdout[-3000:] + drained.stderr[-2000:]
    loader.join(timeout=900)
    assert summary["result"]["failed"] == 0, summary["result"]
    after = run_load(requests=20, prefix="drained")[0]
    assert after["failed"] == 0, after
    assert completions_since(WS2, drained_at + 1) == 0


def test_router_overhead_against_the_same_host_straight():
    """With llmfleet-router-ws2 drained, every routed request goes to llmfleet-router-ws1: the same prompts straight
    to it and through the router, one after the other, compare what the router adds."""
    start = time.time() - 1
    direct = run_load(url="http://%s:8000/v1" % address(WS1), key=SETTINGS["host_vars"][WS1]["vllm_service_api_key"],
                      requests=40, prefix="overhead")[0]
    routed = run_load(requests=40, prefix="overhead")[0]
    assert direct["failed"] == 0 and routed["failed"] == 0, (direct, routed)
    assert completions_since(WS1, start) == 80 and completions_since(WS2, start) == 0
    # Greedy decoding of the same prompts, every request generating its max_tokens: the same tokens both ways.
    assert direct["tokens"] == routed["tokens"] == 40 * MAX_TOKENS, (direct, routed)
    ratios = {"ttft_median_ratio": routed["ttft_median_s"] / direct["ttft_median_s"],
              "ttft_median_added_s": routed["ttft_median_s"] - direct["ttft_median_s"],
              "ttft_p95_ratio": routed["ttft_p95_s"] / direct["ttft_p95_s"],
              "tokens_per_s_ratio": routed["tokens_per_s"] / direct["tokens_per_s"],
              "direct": direct, "routed": routed}
    (OUTPUT / "overhead.json").write_text(json.dumps(ratios, indent=1))
    # The router's Python shares this machine's two cores with the engines, so its cost shows here far above the
    # 5 ms measured on a GPU host (docs/hardware/2026-12-02-1xH200-router.md); two seconds more to the first token
    # is what a stall looks like (a tokenizer download it waits on, a retry against a dead host).
    assert ratios["ttft_median_added_s"] < 2.0, ratios


def test_undrain_brings_the_host_back():
    undrained = drain("undrain")
    assert undrained.returncode == 0, undrained.stdout[-3000:] + undrained.stderr[-2000:]
    time.sleep(2)
    start = time.time()
    assert run_load(requests=20, prefix="undrained")[0]["failed"] == 0
    assert completions_since(WS2, start - 1) > 0


def test_a_rolling_update_of_both_hosts_under_load_fails_no_request():
    """rolling_update.yml restarts each engine in turn (a changed environment), draining it in the router first and
    undraining it after its health gate, while bounded loads run through the router."""
    done = threading.Event()
    summaries = []

    def loads():
        round_index = 0
        while not done.is_set():
            summaries.append(run_load(requests=20, prefix="roll%d" % round_index, api="chat", retries=1)[0])
            round_index += 1
            # A pause between rounds leaves the update its share of the two cores; the load stays continuous enough
            # that every drain, restart and undrain happens under it.
            done.wait(2)

    engines = {name: target(name) for name in (WS1, WS2)}
    pids = {name: main_pid(host) for name, host in engines.items()}
    loader = threading.Thread(target=loads)
    loader.start()
    environment = dict(WORKSTATIONS["vllm_service_environment"], LLMFLEET_ROLL="%d" % time.time())
    rolled = run_playbook(REPO / "playbooks" / "rolling_update.yml",
                          {"vllm_service_environment": environment, "rolling_update_batch_size": 1}, timeout=1500,
                          log="rolling_update.log")
    done.set()
    loader.join(timeout=900)
    (OUTPUT / "rolling.json").write_text(json.dumps(summaries, indent=1))
    assert rolled.returncode == 0, rolled.stdout[-4000:] + rolled.stderr[-2000:]
    assert "Take the host out of the router" in rolled.stdout and "Put the host back into the router" in rolled.stdout
    # Each host, one batch after the other: restarted on the new environment and through the playbook's health gate.
    gate = "TASK [Health gate: the API answers, lists the served model and completes a prompt]"
    assert rolled.stdout.count(gate) == 2, rolled.stdout[-4000:]
    for name, host in engines.items():
        assert main_pid(host) != pids[name], name
        assert "LLMFLEET_ROLL=%s" % environment["LLMFLEET_ROLL"] in host.file("/etc/llmfleet/vllm.env").content_string
    assert summaries and sum(summary["failed"] for summary in summaries) == 0, summaries
    # A client that sends a request again once when it failed before any reply, as the OpenAI SDKs do, sees no
    # failure. The router's four worker replacements (drain and undrain of each host) may each cost one such retry:
    # one of 1,800 requests got a 500 from a replaced LiteLLM worker (docs/router.md); more is a regression.
    assert sum(summary["retried"] for summary in summaries) <= 4, summaries
    assert target(FRONTEND).file("/var/lib/llmfleet/router/drained.json").content_string.strip() == "[]"
