"""The model role on a fleet serving two models: each snapshot is downloaded once however many hosts serve it,
every host gets its own model, and a second run changes nothing.

Runs the role for real with ansible-playbook against three local hosts (connection local, one model cache
directory each) and the stand-in hub on 127.0.0.1; about 15 seconds.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "tests" / "harness" / "make_tiny_model.py"
HUB = REPO / "tests" / "harness" / "fake_hf_hub.py"
RECAP_KEYS = ("ok", "changed", "failed")

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None or shutil.which("ansible-playbook") is None,
                                reason="needs rsync and ansible-playbook")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    work = tmp_path_factory.mktemp("model-role")
    model_a = work / "model-a"
    subprocess.run([sys.executable, str(TINY), str(model_a)], check=True, capture_output=True)
    model_b = work / "model-b"
    shutil.copytree(model_a, model_b)
    config = json.loads((model_b / "generation_config.json").read_text())
    config["temperature"] = 0.5  # another file, so another commit
    (model_b / "generation_config.json").write_text(json.dumps(config))
    hub = subprocess.Popen([sys.executable, str(HUB), "--repo", "t/a=%s" % model_a, "--repo", "t/b=%s" % model_b,
                            "--port", "0", "--port-file", str(work / "port"), "--log", str(work / "hub.jsonl"),
                            "--max-seconds", "300"])
    try:
        deadline = time.time() + 20
        while not (work / "port").exists() and time.time() < deadline:
            time.sleep(0.1)
        port = int((work / "port").read_text())
        shas = {}
        for name in ("a", "b"):
            shas[name] = subprocess.run(
                [sys.executable, "-c", "import json, urllib.request; print(json.load(urllib.request.urlopen("
                 "'http://127.0.0.1:%d/api/models/t/%s/revision/main'))['sha'])" % (port, name)],
                check=True, capture_output=True, text=True).stdout.strip()
        inventory = {"all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                     "model_hf_endpoint": "http://127.0.0.1:%d" % port, "model_owner": "root" if os.geteuid() == 0
                     else os.environ.get("USER", "nobody"),
                     "model_controller_cache_dir": str(work / "controller")},
            "hosts": {
                "h1": {"model_repo_id": "t/a", "model_revision": shas["a"], "model_cache_dir": str(work / "h1")},
                "h2": {"model_repo_id": "t/b", "model_revision": shas["b"], "model_cache_dir": str(work / "h2")},
                "h3": {"model_repo_id": "t/a", "model_revision": shas["a"], "model_cache_dir": str(work / "h3")},
            }}}
        (work / "inventory.yml").write_text(yaml.safe_dump(inventory))
        (work / "play.yml").write_text(yaml.safe_dump([{
            "hosts": "all", "gather_facts": False, "roles": ["llmfleet.workstation.model"],
            "post_tasks": [{"name": "Save model_path", "ansible.builtin.copy": {
                "content": "{{ model_path }}", "dest": "{{ model_cache_dir }}.path", "mode": "0644"}}]}]))
        yield work, shas
    finally:
        hub.terminate()
        hub.wait(timeout=10)


def converge(work):
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="false", NO_COLOR="1", ANSIBLE_STDOUT_CALLBACK="default")
    completed = subprocess.run(["ansible-playbook", "-i", str(work / "inventory.yml"), str(work / "play.yml")],
                               env=env, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    recap = {}
    for line in completed.stdout.split("PLAY RECAP", 1)[1].splitlines():
        if ":" in line:
            host, counts = line.split(":", 1)
            fields = dict(field.split("=") for field in counts.split())
            recap[host.strip()] = {key: int(fields[key]) for key in RECAP_KEYS}
    return recap


def test_each_model_is_downloaded_once_and_each_host_gets_its_own(fleet):
    work, shas = fleet
    recap = converge(work)
    assert all(counts["failed"] == 0 for counts in recap.values())
    expected = {"h1": ("a", shas["a"]), "h2": ("b", shas["b"]), "h3": ("a", shas["a"])}
    for host, (name, sha) in expected.items():
        path = Path((work / ("%s.path" % host)).read_text())
        assert path == work / host / ("models--t--%s" % name) / "snapshots" / sha
        assert (path / "config.json").is_file()
    h2_config = Path((work / "h2.path").read_text(), "generation_config.json").read_text()
    assert h2_config == (work / "model-b" / "generation_config.json").read_text()
    bodies = [json.loads(line) for line in (work / "hub.jsonl").read_text().splitlines()]
    per_repo = {}
    for body in bodies:
        repo = body["path"].split("/resolve/", 1)[0].strip("/")
        file_name = body["path"].split("/", 5)[-1]
        per_repo.setdefault(repo, []).append(file_name)
    assert sorted(per_repo) == ["t/a", "t/b"]
    for names in per_repo.values():
        assert len(names) == len(set(names)), "a file was downloaded twice: %s" % names


def test_second_run_changes_and_downloads_nothing(fleet):
    work, _shas = fleet
    before = (work / "hub.jsonl").read_text()
    recap = converge(work)
    assert {host: counts["changed"] for host, counts in recap.items()} == {"h1": 0, "h2": 0, "h3": 0}
    assert (work / "hub.jsonl").read_text() == before
