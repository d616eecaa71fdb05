"""vllm_service_endpoint: one rule for where a workstation's engine answers (the benchmark, the frontend, a router)."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.filter.vllm_plan_limit import vllm_plan_limit
from ansible_collections.llmfleet.workstation.plugins.filter.vllm_service_endpoint import vllm_service_endpoint
from ansible_collections.llmfleet.workstation.plugins.module_utils.planner import memory


@pytest.mark.parametrize("host_vars, url", [
    ({"vllm_service_advertise_address": "10.0.0.5", "ansible_host": "192.0.2.1"}, "http://10.0.0.5:8000/v1"),
    # An empty advertise address is unset, as the frontend has always read it.
    ({"vllm_service_advertise_address": "", "ansible_host": "192.0.2.1"}, "http://192.0.2.1:8000/v1"),
    ({"vllm_service_advertise_address": None}, "http://ws1:8000/v1"),
    ({"ansible_host": "fd00::11", "vllm_service_port": 8100}, "http://[fd00::11]:8100/v1"),
    ({"vllm_service_port": "9000"}, "http://ws1:9000/v1"),
])
def test_address_then_host_then_name_and_the_roles_port(host_vars, url):
    assert vllm_service_endpoint(host_vars, "ws1") == url


def test_a_port_that_is_not_a_number_is_named():
    with pytest.raises(AnsibleFilterError, match="vllm_service_port of ws1 is 'http', not a port number"):
        vllm_service_endpoint({"vllm_service_port": "http"}, "ws1")


def test_the_planner_limits_are_the_planners_own():
    assert vllm_plan_limit("max_gpu_memory_utilization") == memory.MAX_GPU_MEMORY_UTILIZATION == 0.95
    with pytest.raises(AnsibleFilterError, match="not one of the planner's limits"):
        vllm_plan_limit("max_temperature")
