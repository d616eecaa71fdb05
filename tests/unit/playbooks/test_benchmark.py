"""playbooks/benchmark.yml end to end against stand-in engines: a host's endpoint and an extra https endpoint
(benchmark_extra_endpoints, behind its own CA) measured in one run, one report of both; a failing extra endpoint
fails the run after the report. The rendering itself is tested in tests/unit/plugins/filter/test_benchmark_filters.py.
"""

import csv

import pytest
from ansible_run import REPO, needs_ansible, run_playbook
from openai_standin import MODEL, FakeVllm, self_signed_certificate

PLAYBOOK = REPO / "playbooks" / "benchmark.yml"
SMALL = {"benchmark_prompt_tokens": 16, "benchmark_max_tokens": 4, "benchmark_concurrency": [1, 2],
         "benchmark_repeats": 1, "benchmark_model_weight_gb": 0.006, "benchmark_tensor_parallel_size": 1}

pytestmark = needs_ansible


def inventory(tmp_path, server):
    port = server.base_url.rsplit(":", 1)[1].split("/")[0]
    path = tmp_path / "hosts.yml"
    path.write_text(
        "workstations:\n  hosts:\n    ws1:\n      ansible_connection: local\n"
        "      vllm_service_advertise_address: 127.0.0.1\n      vllm_service_port: %s\n"
        "      vllm_service_served_model_name: %s\n      vllm_service_name: llmfleet-test-no-such-unit\n"
        % (port, MODEL))
    return path


@pytest.fixture
def certificate(tmp_path):
    files = self_signed_certificate(tmp_path)
    if files is None:
        pytest.skip("needs openssl")
    return files


def test_hosts_and_an_extra_https_endpoint_in_one_report(tmp_path, certificate):
    with FakeVllm() as host_engine, FakeVllm(tls=certificate, api_key="router-key") as router:
        run = run_playbook(PLAYBOOK, dict(SMALL, benchmark_report_dir=str(tmp_path / "reports"),
                                          benchmark_extra_endpoints=[{
                                              "name": "router", "base_url": router.base_url, "model": MODEL,
                                              "api_key": "router-key", "ca_path": certificate[0]}]),
                           inventory=inventory(tmp_path, host_engine))
    assert run.returncode == 0, run.completed.stdout[-3000:]
    assert [request["authorization"] for request in router.requests] == ["Bearer router-key"] * len(router.requests)
    assert len([request for request in host_engine.requests if request["path"] == "/v1/completions"]) == 1 + 1 + 2
    markdown = (tmp_path / "reports" / "benchmark-latest.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ws1 ") or line.startswith("| router ")]
    assert [line.split(" | ")[0] for line in rows] == ["| ws1", "| router"]
    # The host has a roofline; the router none, and no engine to read.
    assert rows[0].split(" | ")[7] != "-" and rows[1].split(" | ")[7] == "-"
    assert rows[1].split(" | ")[2] == "-"
    with open(tmp_path / "reports" / "benchmark-latest.csv", newline="") as table:
        records = list(csv.DictReader(table))
    assert [record["host"] for record in records] == ["ws1", "router"]
    assert all(float(record["single_tps"]) > 0 for record in records)
    assert "router-key" not in markdown + (tmp_path / "reports" / "benchmark-latest.svg").read_text()
    assert ">router</text>" in (tmp_path / "reports" / "benchmark-latest.svg").read_text()


def test_an_extra_endpoint_that_fails_is_a_row_and_fails_the_run(tmp_path, certificate):
    with FakeVllm() as host_engine, FakeVllm(tls=certificate) as router:
        # No ca_path: the router's private CA is not trusted.
        run = run_playbook(PLAYBOOK, dict(SMALL, benchmark_report_dir=str(tmp_path / "reports"),
                                          benchmark_extra_endpoints=[{
                                              "name": "router", "base_url": router.base_url, "model": MODEL}]),
                           inventory=inventory(tmp_path, host_engine))
    assert run.returncode == 2
    failed = run.tasks("ws1")["Fail the run when an extra endpoint's benchmark failed or missed the envelope"]
    assert failed["msg"].startswith("router: ") and "certificate" in failed["msg"].lower()
    markdown = (tmp_path / "reports" / "benchmark-latest.md").read_text()
    assert "| router | tiny-llama | - | - |" in markdown
    assert "## Failures" in markdown and "- router: " in markdown


def test_extra_endpoints_that_are_not_a_list_of_endpoints_are_refused(tmp_path):
    with FakeVllm() as host_engine:
        run = run_playbook(PLAYBOOK, dict(SMALL, benchmark_report_dir=str(tmp_path / "reports"),
                                          benchmark_extra_endpoints=[{"name": "router"}]),
                           inventory=inventory(tmp_path, host_engine))
    assert run.returncode == 2
    refusal = run.tasks("ws1")["Require benchmark_extra_endpoints to be a list of endpoints"]
    assert "benchmark_extra_endpoints must be a list of dictionaries" in refusal["msg"]
    assert not host_engine.requests
