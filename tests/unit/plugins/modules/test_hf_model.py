"""hf_model against the real huggingface_hub client and a fake hub (tests/harness/fake_hf_hub.py) in a subprocess.

The fake hub serves a tiny Llama made by tests/harness/make_tiny_model.py and logs every file body it sends,
so the tests count what crossed the wire: one copy on the first run, nothing on the second.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.llmfleet.workstation.plugins.module_utils import hf_snapshot
from ansible_collections.llmfleet.workstation.plugins.modules import hf_model

huggingface_hub = pytest.importorskip("huggingface_hub")

HARNESS = Path(__file__).resolve().parents[3] / "harness"
REPO_ID = "acme/tiny-llama"
START_TIMEOUT_S = 20


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, HARNESS / ("%s.py" % name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """The model directory and {path: bytes} of its files."""
    dest = tmp_path_factory.mktemp("tiny-llama")
    load_script("make_tiny_model").make_tiny_model(dest, seed=0)
    return dest, {path.name: path.read_bytes() for path in sorted(dest.iterdir())}


class FakeHub:
    def __init__(self, workdir, model_dir, extra_args):
        self.log = workdir / "hub-log.jsonl"
        port_file = workdir / "hub.port"
        self.process = subprocess.Popen(
            [sys.executable, str(HARNESS / "fake_hf_hub.py"), "--repo", "%s=%s" % (REPO_ID, model_dir),
             "--port", "0", "--port-file", str(port_file), "--log", str(self.log), "--max-seconds", "300",
             *extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake hub did not start: %s" % self.process.stderr.read().decode())
            time.sleep(0.05)
        self.url = "http://127.0.0.1:%d" % int(port_file.read_text())

    def bodies(self):
        """One record per file body sent: method, path, range, status, bytes, aborted."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def body_bytes(self):
        return sum(record["bytes"] for record in self.bodies())

    def forget(self):
        if self.log.exists():
            self.log.unlink()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stderr.close()


@pytest.fixture
def start_hub(tmp_path, tiny_model, monkeypatch):
    """start_hub(*extra_args) -> a running FakeHub over the tiny model; stopped after the test."""
    # No token or endpoint from the developer's environment, and no token file from their home.
    for name in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    hubs = []

    def start(*extra_args):
        hub = FakeHub(tmp_path, tiny_model[0], [str(arg) for arg in extra_args])
        hubs.append(hub)
        return hub

    yield start
    for hub in hubs:
        hub.stop()


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


def args_for(hub, cache_dir, **extra):
    arguments = {"repo_id": REPO_ID, "revision": "main", "cache_dir": str(cache_dir), "endpoint": hub.url}
    arguments.update(extra)
    return arguments


def every_file_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_first_run_fetches_one_copy_second_run_nothing(start_hub, cache_dir, tiny_model, run_module):
    hub = start_hub()
    _model_dir, contents = tiny_model
    first = run_module(hf_model, args_for(hub, cache_dir))
    assert first["changed"] is True
    assert "failed" not in first
    assert sorted(first["fetched"]) == sorted(contents)
    assert first["bytes_fetched"] == first["bytes_total"] == sum(len(data) for data in contents.values())
    assert hub.body_bytes() == first["bytes_total"]  # one copy of each file crossed the wire, no more
    assert sorted(record["path"].rsplit("/", 1)[-1] for record in hub.bodies()) == sorted(contents)
    assert first["would_fetch"] == []
    commit = first["commit_hash"]
    assert len(commit) == 40
    snapshot = cache_dir / "models--acme--tiny-llama" / "snapshots" / commit
    assert first["snapshot_path"] == str(snapshot)
    assert (cache_dir / "models--acme--tiny-llama" / "refs" / "main").read_text() == commit
    for entry in first["files"]:
        data = contents[entry["path"]]
        assert (snapshot / entry["path"]).read_bytes() == data
        assert entry["size"] == len(data)
        assert entry["sha256"] == hf_snapshot.hashlib.sha256(data).hexdigest()

    hub.forget()
    second = run_module(hf_model, args_for(hub, cache_dir))
    assert second["changed"] is False
    assert second["fetched"] == [] and second["bytes_fetched"] == 0
    assert second["files"] == first["files"]
    assert hub.bodies() == []

    hub.forget()
    pinned = run_module(hf_model, args_for(hub, cache_dir, revision=commit, verify_checksums=True))
    assert pinned["changed"] is False
    assert pinned["files"] == first["files"]
    assert hub.bodies() == []


def test_check_mode_on_an_empty_cache_lists_everything_and_writes_nothing(start_hub, cache_dir, tiny_model,
                                                                          run_module):
    hub = start_hub()
    result = run_module(hf_model, args_for(hub, cache_dir), check_mode=True)
    assert result["changed"] is True
    assert sorted(result["would_fetch"]) == sorted(tiny_model[1])
    assert result["fetched"] == []
    assert {entry["path"]: entry["size"] for entry in result["files"]} == {
        name: len(data) for name, data in tiny_model[1].items()}
    safetensors = next(entry for entry in result["files"] if entry["path"] == "model.safetensors")
    assert safetensors["sha256"] == hf_snapshot.hashlib.sha256(tiny_model[1]["model.safetensors"]).hexdigest()
    assert not cache_dir.exists()
    assert hub.bodies() == []


def test_check_mode_after_a_download_changes_nothing(start_hub, cache_dir, run_module):
    hub = start_hub()
    run_module(hf_model, args_for(hub, cache_dir))
    before = every_file_under(cache_dir)
    hub.forget()
    result = run_module(hf_model, args_for(hub, cache_dir), check_mode=True)
    assert result["changed"] is False
    assert result["would_fetch"] == []
    assert every_file_under(cache_dir) == before
    assert hub.bodies() == []


def test_interrupted_download_resumes_with_a_range_request(start_hub, cache_dir, tiny_model, run_module,
                                                           monkeypatch):
    # huggingface_hub hands the body to its writer in DOWNLOAD_CHUNK_SIZE pieces (10 MiB) and resumes from the
    # last whole piece; the tiny model is smaller than one, so the test shrinks the piece. The cut is a multiple
    # of it, so the resumed request starts exactly where the aborted one stopped.
    chunk = 64 * 1024
    cut = 15 * chunk
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    hub = start_hub("--fail-after-bytes", cut)
    result = run_module(hf_model, args_for(hub, cache_dir))
    assert result["changed"] is True
    weights = [record for record in hub.bodies() if record["path"].endswith("/model.safetensors")]
    size = len(tiny_model[1]["model.safetensors"])
    assert [(record["range"], record["bytes"], record["aborted"]) for record in weights] == [
        (None, cut, True), ("bytes=%d-" % cut, size - cut, False)]
    assert hub.body_bytes() == result["bytes_total"]  # the remainder only, not the file again
    snapshot = Path(result["snapshot_path"])
    assert (snapshot / "model.safetensors").read_bytes() == tiny_model[1]["model.safetensors"]
    assert not list(cache_dir.rglob("*.incomplete"))


def test_offline_verification_passes_on_a_good_copy_and_names_a_damaged_file(start_hub, cache_dir, run_module):
    hub = start_hub()
    online = run_module(hf_model, args_for(hub, cache_dir))
    hub.stop()  # offline must not need it
    offline_args = {"repo_id": REPO_ID, "revision": "main", "cache_dir": str(cache_dir), "offline": True,
                    "commit_hash": online["commit_hash"], "manifest": online["files"]}
    good = run_module(hf_model, dict(offline_args, verify_checksums=True))
    assert good["changed"] is False
    assert "failed" not in good
    assert good["files"] == online["files"]
    assert good["bytes_total"] == online["bytes_total"]

    weights = Path(online["snapshot_path"]) / "model.safetensors"
    blob = weights.resolve()
    data = blob.read_bytes()
    blob.write_bytes(data[:1000])
    truncated = run_module(hf_model, offline_args)
    assert truncated["failed"] is True
    assert "model.safetensors has 1000 bytes, the manifest says %d" % len(data) in truncated["msg"]

    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert "failed" not in run_module(hf_model, offline_args)  # same size: only a checksum sees it
    altered = run_module(hf_model, dict(offline_args, verify_checksums=True))
    assert altered["failed"] is True
    assert "model.safetensors has sha256" in altered["msg"]
    assert "config.json" not in altered["msg"]


def test_offline_needs_the_snapshot_and_the_ref(start_hub, cache_dir, run_module):
    hub = start_hub()
    online = run_module(hf_model, args_for(hub, cache_dir))
    offline_args = {"repo_id": REPO_ID, "revision": "main", "cache_dir": str(cache_dir), "offline": True,
                    "commit_hash": "0" * 40, "manifest": online["files"]}
    missing = run_module(hf_model, offline_args)
    assert missing["failed"] is True and "No snapshot of acme/tiny-llama at commit 0000000" in missing["msg"]
    (cache_dir / "models--acme--tiny-llama" / "refs" / "main").write_text("1" * 40)
    moved = run_module(hf_model, dict(offline_args, commit_hash=online["commit_hash"]))
    assert moved["failed"] is True and "refs/main" in moved["msg"]
    required = run_module(hf_model, {"repo_id": REPO_ID, "revision": "main", "cache_dir": str(cache_dir),
                                     "offline": True})
    assert required["failed"] is True and "commit_hash" in required["msg"]


def test_online_run_replaces_a_truncated_file(start_hub, cache_dir, tiny_model, run_module):
    hub = start_hub()
    first = run_module(hf_model, args_for(hub, cache_dir))
    blob = (Path(first["snapshot_path"]) / "tokenizer.json").resolve()
    blob.write_bytes(b"{}")
    hub.forget()
    repaired = run_module(hf_model, args_for(hub, cache_dir))
    assert repaired["changed"] is True
    assert repaired["fetched"] == ["tokenizer.json"]
    assert [record["path"].rsplit("/", 1)[-1] for record in hub.bodies()] == ["tokenizer.json"]
    assert (Path(first["snapshot_path"]) / "tokenizer.json").read_bytes() == tiny_model[1]["tokenizer.json"]


def test_token_required_by_the_hub(start_hub, cache_dir, run_module):
    hub = start_hub("--token", "hf_secret")
    missing = run_module(hf_model, args_for(hub, cache_dir))
    assert missing["failed"] is True
    assert "401" in missing["msg"] and "model_hf_token" in missing["msg"]
    wrong = run_module(hf_model, args_for(hub, cache_dir, token="hf_wrong"))
    assert wrong["failed"] is True and "model_hf_token" in wrong["msg"]
    assert "hf_wrong" not in json.dumps(wrong)
    good = run_module(hf_model, args_for(hub, cache_dir, token="hf_secret"))
    assert "failed" not in good and good["changed"] is True
    assert hub.body_bytes() == good["bytes_total"]
    assert "hf_secret" not in json.dumps(good)


def test_unknown_repo_revision_and_endpoint_are_named(start_hub, cache_dir, run_module):
    hub = start_hub()
    repo = run_module(hf_model, args_for(hub, cache_dir, repo_id="acme/nothing-here"))
    assert repo["failed"] is True and "Repository acme/nothing-here not found" in repo["msg"]
    revision = run_module(hf_model, args_for(hub, cache_dir, revision="v9"))
    assert revision["failed"] is True and "Revision v9 not found in acme/tiny-llama" in revision["msg"]
    pinned = run_module(hf_model, args_for(hub, cache_dir, revision="f" * 40))
    assert pinned["failed"] is True and "Revision ffff" in pinned["msg"]
    hub.stop()
    refused = run_module(hf_model, args_for(hub, cache_dir, timeout=5))
    assert refused["failed"] is True
    assert "Cannot connect to the hub at %s" % hub.url in refused["msg"]
    assert not cache_dir.exists()


def test_disk_precheck_fails_before_any_download(start_hub, cache_dir, run_module, monkeypatch):
    hub = start_hub()
    checked = []

    def tiny_disk(path):
        checked.append(path)
        return 3 * hf_snapshot.GB

    monkeypatch.setattr(hf_snapshot, "free_bytes", tiny_disk)
    result = run_module(hf_model, args_for(hub, cache_dir, free_space_margin_gb=5))
    assert result["failed"] is True
    assert "needs 5.01 GB" in result["msg"] and "has 3.00 GB free" in result["msg"]
    assert "model_cache_dir" in result["msg"]
    assert checked == [str(cache_dir)]
    assert hub.bodies() == []
    assert not cache_dir.exists()
    assert "failed" not in run_module(hf_model, args_for(hub, cache_dir, free_space_margin_gb=1))


def test_allow_and_ignore_patterns_filter(start_hub, cache_dir, run_module):
    hub = start_hub()
    result = run_module(hf_model, args_for(hub, cache_dir, allow_patterns=["*.json"],
                                           ignore_patterns=["generation_config.json"]))
    expected = ["config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    assert sorted(result["fetched"]) == expected
    assert sorted(entry["path"] for entry in result["files"]) == expected
    assert hub.body_bytes() == result["bytes_total"]
    assert sorted(os.listdir(result["snapshot_path"])) == expected
    nothing = run_module(hf_model, args_for(hub, cache_dir, allow_patterns=["*.gguf"]))
    assert nothing["failed"] is True and "No file of acme/tiny-llama" in nothing["msg"]


def test_missing_huggingface_hub_only_matters_online(cache_dir, run_module, monkeypatch):
    monkeypatch.setattr(hf_model, "HAS_HUGGINGFACE_HUB", False)
    online = run_module(hf_model, {"repo_id": REPO_ID, "revision": "main", "cache_dir": str(cache_dir)})
    assert online["failed"] is True and "huggingface_hub" in online["msg"]
    offline = run_module(hf_model, {"repo_id": REPO_ID, "revision": "a" * 40, "cache_dir": str(cache_dir),
                                    "offline": True, "commit_hash": "a" * 40, "manifest": []})
    assert "No snapshot of acme/tiny-llama" in offline["msg"]
