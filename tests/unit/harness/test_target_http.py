"""target_http.py: the scenarios' one way to make a request inside a target and read its status and body.

A stand-in for testinfra's host runs the commands on this machine; the server is the shared OpenAI stand-in.
"""

import importlib.util
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from openai_standin import API_KEY, FakeVllm

SCRIPT = Path(__file__).resolve().parents[2] / "harness" / "target_http.py"
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def load():
    spec = importlib.util.spec_from_file_location("target_http", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LocalHost:
    """What of testinfra's host the helper uses: run() and file().content_string."""

    def __init__(self):
        self.commands = []

    def run(self, command):
        self.commands.append(command)
        completed = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)  # noqa: S602
        return SimpleNamespace(stdout=completed.stdout, rc=completed.returncode)

    def file(self, path):
        return SimpleNamespace(content_string=Path(path).read_text())


def test_json_api_sends_the_token_and_body_and_reads_status_and_json(tmp_path):
    target_http = load()
    host = LocalHost()
    with FakeVllm(api_key=API_KEY) as server:
        status, body = target_http.json_api(host, "POST", server.base_url + "/completions", token=API_KEY,
                                            body={"model": "no-such-model", "prompt": "x", "max_tokens": 1},
                                            body_path=str(tmp_path / "body"))
        refused, _body = target_http.json_api(host, "POST", server.base_url + "/completions", token="wrong",
                                              body={"model": "tiny-llama"}, body_path=str(tmp_path / "body"))
    assert status == 404 and "does not exist" in body["message"]
    assert refused == 401
    assert server.requests[0]["authorization"] == "Bearer " + API_KEY


def test_nothing_listening_is_status_zero(tmp_path):
    target_http = load()
    (tmp_path / "body").write_text("")
    status, text = target_http.curl_in(LocalHost(), "http://127.0.0.1:9/", body_path=str(tmp_path / "body"))
    assert (status, text) == (0, "")
