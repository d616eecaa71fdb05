"""The router scenario's load client (molecule/router/files/router_load.py) against its stand-in engine: TTFT and
token counts from the stream, and a failure counted before or after the first token, which is what a router's
retry can and cannot save."""

import importlib.util
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

FILES = Path(__file__).resolve().parents[3] / "molecule" / "router" / "files"
SPEC = importlib.util.spec_from_file_location("router_load", FILES / "router_load.py")
router_load = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(router_load)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(name="engine")
def engine_fixture(tmp_path):
    port = free_port()
    log = tmp_path / "requests.log"
    process = subprocess.Popen([sys.executable, str(FILES / "standin_engine.py"), "--port", str(port), "--model", "m",
                                "--key", "k", "--log", str(log), "--ttft", "0.05", "--interval", "0.005"])
    deadline = time.time() + 10
    while time.time() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield "http://127.0.0.1:%d/v1" % port, log
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_every_request_streams_its_tokens_and_is_counted(engine, api):
    url, log = engine
    before = time.time()
    records, wall_s, started_at = router_load.run_load(url, "k", "m", requests=6, concurrency=3, max_tokens=8,
                                                       timeout=10, api=api)
    summary = router_load.summarize(records, wall_s, started_at)
    assert before - 0.01 <= summary["started_at"] <= before + wall_s
    assert (summary["ok"], summary["failed"], summary["tokens"]) == (6, 0, 48)
    assert 0.05 <= summary["ttft_median_s"] < 1.0
    assert len(log.read_text().splitlines()) == 6


def test_a_refused_key_fails_before_the_first_token(engine):
    url, unused_engine_state = engine
    summary = router_load.summarize(*router_load.run_load(url, "wrong", "m", requests=2, concurrency=1, max_tokens=4,
                                                          timeout=10))
    assert (summary["failed"], summary["failed_before_first_token"]) == (2, 2)
    assert summary["errors"][0].startswith("HTTP 401")


def test_nothing_listening_fails_before_the_first_token():
    summary = router_load.summarize(*router_load.run_load("http://127.0.0.1:%d/v1" % free_port(), "k", "m", requests=2,
                                                          concurrency=2, max_tokens=4, timeout=5))
    assert (summary["failed_before_first_token"], summary["failed_while_streaming"]) == (2, 0)
    assert "ConnectionRefusedError" in summary["errors"][0]


def test_a_refused_connection_is_sent_again_only_as_often_as_asked():
    url = "http://127.0.0.1:%d/v1" % free_port()
    records, wall_s, started_at = router_load.run_load(url, "k", "m", requests=2, concurrency=1, max_tokens=4,
                                                       timeout=5, retries=2)
    summary = router_load.summarize(records, wall_s, started_at)
    assert (summary["failed"], summary["retried"]) == (2, 4)


def test_a_refused_key_is_not_sent_again(engine):
    url, unused_engine_state = engine
    summary = router_load.summarize(*router_load.run_load(url, "wrong", "m", requests=2, concurrency=1, max_tokens=4,
                                                          timeout=10, retries=2))
    assert (summary["failed"], summary["retried"]) == (2, 0)
