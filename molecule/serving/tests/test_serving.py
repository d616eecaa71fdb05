"""The serving chain as an operator meets it: a hardened vLLM unit that answers the OpenAI API with its key,
weights downloaded once for two hosts and verified on each, and gates that hold back a restart on bad hardware.

Expected values come from the inputs (the tiny model's files on the controller, the scenario's variables), never
from what the roles printed. Tests run in file order: the last two converge again (a restart held back by the
temperature gate, then let through).
"""

import fnmatch
import hashlib
import json
import os
import re
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
SETTINGS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["provisioner"]["inventory"]["group_vars"]
WORKSTATION = SETTINGS["workstations"]
MODEL_DEFAULTS = yaml.safe_load((REPO / "roles" / "model" / "defaults" / "main.yml").read_text())
TINY_MODEL = REPO / ".cache" / "tiny-llama"
HUB_DIR = REPO / ".cache" / "serving-hub"
API = "http://127.0.0.1:%d" % WORKSTATION.get("vllm_service_port", 8000)
KEY = WORKSTATION["vllm_service_api_key"]
SERVED = WORKSTATION["vllm_service_served_model_name"]
SNAPSHOTS = "/var/lib/llmfleet/models/models--llmfleet-test--tiny-llama/snapshots"

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("workstations")


def target(name):
    return testinfra.get_host("ansible://%s?ansible_inventory=%s" % (name, INVENTORY))


def curl(host, path, *args):
    """(HTTP status, body) of a request made on the workstation itself."""
    command = "curl -sS -o /tmp/curl-body -w '%%{http_code}' %s %s" % (
        " ".join(shlex.quote(arg) for arg in args), shlex.quote(API + path))
    status = host.check_output(command)
    return int(status), host.file("/tmp/curl-body").content_string


def authorized(host, path, *args):
    return curl(host, path, "-H", "Authorization: Bearer %s" % KEY, *args)


def allowed_files():
    """The tiny model's files that the model role's default allow patterns select: {relative path: bytes}."""
    files = {}
    for path in TINY_MODEL.rglob("*"):
        relative = path.relative_to(TINY_MODEL).as_posix()
        patterns = MODEL_DEFAULTS["model_allow_patterns"]
        if path.is_file() and any(fnmatch.fnmatch(relative, pattern) for pattern in patterns):
            files[relative] = path.stat().st_size
    return files


def playbook(name, *extra):
    """Run one of the scenario's playbooks against its inventory as molecule does; return the completed process."""
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="false", NO_COLOR="1", ANSIBLE_STDOUT_CALLBACK="default",
               ANSIBLE_ROLES_PATH=str(REPO / "roles"), LLMFLEET_REPO=str(REPO))
    return subprocess.run(["ansible-playbook", "-i", INVENTORY, str(SCENARIO / name), *extra],
                          env=env, capture_output=True, text=True, timeout=1500, check=False)


def converge(*extra):
    return playbook("converge.yml", *extra)


def main_pid(host):
    return int(host.check_output("systemctl show -p MainPID --value vllm"))


def test_unit_is_active_enabled_and_unprivileged(host):
    service = host.service("vllm")
    assert service.is_running
    assert service.is_enabled
    user = host.check_output("ps -o user= -p %s", str(main_pid(host)))
    assert user == "vllm"


def test_unit_exposure_within_the_limit(host):
    report = host.check_output("systemd-analyze security --no-pager vllm.service")
    exposure = float(re.search(r"Overall exposure level for vllm\.service:\s*([0-9.]+)", report).group(1))
    assert exposure <= WORKSTATION.get("vllm_service_max_exposure", 4.0), report[-2000:]


def test_api_key_stays_out_of_the_unit_and_process_list(host):
    env_file = host.file("/etc/llmfleet/vllm.env")
    assert env_file.mode == 0o600 and env_file.user == "root"
    assert "VLLM_API_KEY=%s" % KEY in env_file.content_string
    assert KEY not in host.file("/etc/systemd/system/vllm.service").content_string
    assert KEY not in host.check_output("ps -eo args")


def test_api_refuses_requests_without_the_key(host):
    status, _unused = curl(host, "/v1/models")
    assert status == 401


def test_api_lists_the_served_model(host):
    status, body = authorized(host, "/v1/models")
    assert status == 200, body
    assert [model["id"] for model in json.loads(body)["data"]] == [SERVED]


def test_chat_completion_generates_tokens(host):
    request = {"model": SERVED, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8,
               "temperature": 0}
    status, body = authorized(host, "/v1/chat/completions", "-H", "Content-Type: application/json",
                              "-d", json.dumps(request))
    assert status == 200, body
    answer = json.loads(body)
    assert answer["usage"]["completion_tokens"] > 0
    assert answer["choices"][0]["finish_reason"] in ("length", "stop")


def test_engine_runs_from_the_pinned_venv(host):
    venv = "/opt/vllm/venvs/%s-%s" % (WORKSTATION["vllm_package"], WORKSTATION["vllm_version"])
    assert host.file("/opt/vllm/current").linked_to == venv
    assert host.check_output("%s/bin/python -c 'import importlib.metadata as m; print(m.version(\"%s\"))'",
                             venv, WORKSTATION["vllm_package"]) == WORKSTATION["vllm_version"]
    assert "%s/bin/python" % venv in host.check_output("ps -o args= -p %s", str(main_pid(host)))


def test_planner_chose_the_flags(host):
    """Every size is auto: one GPU means TP 1 x PP 1, the context is the model's own limit (its config.json),
    and concurrency is the cap the scenario sets; the CPU-only float32 model gets no quantization flag."""
    limit = json.loads((TINY_MODEL / "config.json").read_text())["max_position_embeddings"]
    args = host.check_output("ps -o args= -p %s", str(main_pid(host))).split()
    flags = dict(zip(args, args[1:]))  # each flag to the word after it
    assert flags["--tensor-parallel-size"] == "1"
    assert flags["--pipeline-parallel-size"] == "1"
    assert flags["--max-model-len"] == str(limit)
    assert flags["--max-num-seqs"] == str(WORKSTATION["vllm_service_plan_max_num_seqs"])
    assert "--quantization" not in flags


def test_benchmark_from_the_controller():
    """llm_benchmark and playbooks/benchmark.yml against the engine; benchmark.yml asserts the numbers are
    consistent (positive, TTFT inside the request, four streams beat one) and that the report files exist."""
    completed = playbook("benchmark.yml")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert "TTFT" in output


def test_weights_were_downloaded_once_for_two_hosts():
    """The hub's body log: every allowed file sent exactly once, in full, though two hosts hold the model."""
    records = [json.loads(line) for line in (HUB_DIR / "requests.jsonl").read_text().splitlines()]
    sent = {}
    for record in records:
        name = record["path"].split("/resolve/", 1)[1].split("/", 1)[1]
        sent[name] = sent.get(name, 0) + record["bytes"]
    assert sent == allowed_files()
    assert len(records) == len(allowed_files())


@pytest.mark.parametrize("name, owner", [("llmfleet-serve1", "vllm"), ("llmfleet-serve2", "root")])
def test_each_host_holds_a_verified_copy(name, owner):
    """Same bytes as the hub's files, owned by model_owner (the engine user, or root on serve2), no locks."""
    other = target(name)
    commit = (HUB_DIR / "commit").read_text().strip()
    snapshot = "%s/%s" % (SNAPSHOTS, commit)
    for relative in allowed_files():
        expected = hashlib.sha256((TINY_MODEL / relative).read_bytes()).hexdigest()
        assert other.check_output("sha256sum %s/%s", snapshot, relative).split()[0] == expected, relative
        assert other.check_output("stat -L -c %%U %s/%s", snapshot, relative) == owner, relative
    assert not other.file("%s/.locks" % SNAPSHOTS).exists


def test_weights_only_host_has_no_engine():
    other = target("llmfleet-serve2")
    assert not other.file("/etc/systemd/system/vllm.service").exists
    assert not other.file("/opt/vllm").exists


def test_hot_gpu_holds_back_a_restart(host):
    """A change that needs a restart meets GPUs above the service's limit (the scenario's cores run at 41 C, the
    limit is set to 35 C; the host gates at the role's own limit still pass): the play stops at the restart gate
    after the cooldown wait, the running engine is left alone, and the pending restart is remembered."""
    pid = main_pid(host)
    completed = converge("--limit", host.backend.hostname, "-e", "vllm_service_max_core_temp_c=35",
                         "-e", "vllm_service_cooldown_timeout=5",
                         "-e", '{"vllm_service_environment": {"VLLM_CPU_KVCACHE_SPACE": 1, "LLMFLEET_TEST": 1}}')
    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output[-3000:]
    assert "Thermal gate failed after waiting 5s" in output, output[-3000:]
    assert "core at 41 C, limit 35 C" in output, output[-3000:]
    assert main_pid(host) == pid
    assert host.file("/etc/llmfleet/vllm.restart-pending").exists
    assert "LLMFLEET_TEST=1" in host.file("/etc/llmfleet/vllm.env").content_string


def test_cool_gpu_lets_the_remembered_restart_through(host):
    """The next run, within the limits again, restores the settings; the restart (pending from the hot run and due
    to the settings change back) happens, the API answers again, and the marker is gone."""
    pid = main_pid(host)
    completed = converge("--limit", host.backend.hostname)
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    assert main_pid(host) != pid
    assert not host.file("/etc/llmfleet/vllm.restart-pending").exists
    assert "LLMFLEET_TEST" not in host.file("/etc/llmfleet/vllm.env").content_string
    deadline = time.time() + 60
    status, body = authorized(host, "/v1/models")
    while status != 200 and time.time() < deadline:
        time.sleep(2)
        status, body = authorized(host, "/v1/models")
    assert status == 200, body
