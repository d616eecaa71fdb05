"""gpu_exporter's input checks and its endpoint entry point, run for real with ansible-playbook on the local host."""

import ansible_run
import pytest

PORT_CHECK = "Require a usable port and temperature limits"
LIMIT_CHECK = "Require the gates' temperature limits to be numbers (or null to publish none)"
ENDPOINT = "Set the exporter's URL (gpu_exporter_url)"

pytestmark = ansible_run.needs_ansible


def run(tmp_path, tasks_from, **variables):
    return ansible_run.run_role(tmp_path, "llmfleet.workstation.gpu_exporter", variables, tasks_from=tasks_from,
                                check=True)


def test_defaults_pass(tmp_path):
    result = run(tmp_path, "validate")
    assert not result.failed(), result.tasks()


@pytest.mark.parametrize("port", [0, 70000])
def test_a_port_outside_tcp_is_refused(tmp_path, port):
    result = run(tmp_path, "validate", gpu_exporter_port=port)
    check = result.tasks()[PORT_CHECK]
    assert result.failed() and check["failed"]
    assert check["msg"] == "gpu_exporter_port is %d: set a TCP port from 1 to 65535 (default 9477)." % port


def test_a_gate_limit_that_is_not_a_number_is_refused_by_name(tmp_path):
    result = run(tmp_path, "validate", gpu_gates_max_memory_temp_c="hot")
    check = result.tasks()[LIMIT_CHECK]
    assert result.failed()
    failed = [item for item in check["results"] if item.get("failed")]
    assert [item["item"]["key"] for item in failed] == ["gpu_gates_max_memory_temp_c"]
    assert failed[0]["msg"].startswith("gpu_gates_max_memory_temp_c is hot: the exporter publishes it as "
                                       "llmfleet_gpu_temperature_limit_celsius")


@pytest.mark.parametrize("variables, url", [
    ({}, "http://localhost:9477/metrics"),
    ({"ansible_host": "10.0.0.5"}, "http://10.0.0.5:9477/metrics"),
    ({"ansible_host": "10.0.0.5", "vllm_service_advertise_address": "10.1.0.6"}, "http://10.1.0.6:9477/metrics"),
    ({"gpu_exporter_listen_address": "192.0.2.7", "gpu_exporter_port": 9500}, "http://192.0.2.7:9500/metrics"),
    ({"gpu_exporter_advertise_address": "fd00::5", "ansible_host": "10.0.0.5"}, "http://[fd00::5]:9477/metrics"),
])
def test_endpoint_sets_only_the_url(tmp_path, variables, url):
    result = run(tmp_path, "endpoint", **variables)
    assert not result.failed()
    endpoint = result.tasks()[ENDPOINT]
    assert endpoint["ansible_facts"] == {"gpu_exporter_url": url}
    assert endpoint["changed"] is False
