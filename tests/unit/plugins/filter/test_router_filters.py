"""The router's filters: one upstream per workstation from the vllm_service role's advertised endpoint and key, and
LiteLLM's configuration listing each model once; bad input gets an error naming the variable."""

from pathlib import Path

import pytest
import yaml
from ansible.module_utils import _internal as module_utils_internal

_WAS_CONTROLLER = module_utils_internal.is_controller
from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.llmfleet.workstation.plugins.filter.router_proxy_config import (  # noqa: E402
    router_proxy_config,
)
from ansible_collections.llmfleet.workstation.plugins.filter.router_upstreams import router_upstreams  # noqa: E402

module_utils_internal.is_controller = _WAS_CONTROLLER

REPO = Path(__file__).resolve().parents[4]
ENGINE = yaml.safe_load((REPO / "roles/vllm_service/defaults/main.yml").read_text())
ROUTER = yaml.safe_load((REPO / "roles/router/defaults/main.yml").read_text())
SETTINGS = {"api_key": "router-key", "routing_strategy": ROUTER["router_routing_strategy"],
            "num_retries": ROUTER["router_num_retries"], "allowed_fails": ROUTER["router_allowed_fails"],
            "cooldown_time": ROUTER["router_cooldown_time"], "request_timeout": ROUTER["router_request_timeout"],
            "health_check_interval": ROUTER["router_health_check_interval"]}


def test_each_workstation_is_one_upstream_at_its_advertised_endpoint_with_its_own_key():
    hosts = {
        "ws-b": {"ansible_host": "192.0.2.12", "vllm_service_served_model_name": "llama", "vllm_service_api_key": "kb"},
        "ws-a": {"ansible_host": "192.0.2.11", "vllm_service_advertise_address": "10.0.0.11",
                 "vllm_service_port": 8100, "vllm_service_served_model_name": "llama", "vllm_service_api_key": "ka"},
        "ws-6": {"ansible_host": "fd00::6", "model_repo_id": "org/coder"},
    }
    assert router_upstreams(hosts) == [
        {"host": "ws-6", "model": "org/coder", "api_base": "http://[fd00::6]:%d/v1" % ENGINE["vllm_service_port"],
         "api_key": ENGINE["vllm_service_api_key"]},
        {"host": "ws-a", "model": "llama", "api_base": "http://10.0.0.11:8100/v1", "api_key": "ka"},
        {"host": "ws-b", "model": "llama", "api_base": "http://192.0.2.12:%d/v1" % ENGINE["vllm_service_port"],
         "api_key": "kb"},
    ]


@pytest.mark.parametrize("host_vars, named", [
    ({"ansible_host": "192.0.2.1"}, "vllm_service_served_model_name"),
    ({"vllm_service_served_model_name": "m", "vllm_service_port": "http"}, "vllm_service_port"),
])
def test_a_workstation_without_a_model_name_or_port_is_refused_by_name(host_vars, named):
    with pytest.raises(AnsibleFilterError, match=named) as error:
        router_upstreams({"ws-x": host_vars})
    assert "ws-x" in str(error.value)


def upstream(host, model, key="k"):
    return {"host": host, "model": model, "api_base": "http://%s:8000/v1" % host, "api_key": key}


def test_config_lists_one_deployment_per_workstation_grouped_by_model_with_the_routers_key():
    config = router_proxy_config([upstream("ws-a", "llama"), upstream("ws-b", "llama"), upstream("ws-c", "coder", "")],
                                 SETTINGS)
    assert [(d["model_name"], d["model_info"]["id"], d["litellm_params"]["api_base"], d["litellm_params"]["api_key"])
            for d in config["model_list"]] == [
        ("llama", "ws-a", "http://ws-a:8000/v1", "k"), ("llama", "ws-b", "http://ws-b:8000/v1", "k"),
        ("coder", "ws-c", "http://ws-c:8000/v1", "none")]
    assert {d["litellm_params"]["model"] for d in config["model_list"]} == {"hosted_vllm/llama", "hosted_vllm/coder"}
    assert config["general_settings"] == {"master_key": "router-key", "background_health_checks": True,
                                          "health_check_interval": ROUTER["router_health_check_interval"]}
    assert config["router_settings"] == {
        "routing_strategy": ROUTER["router_routing_strategy"], "num_retries": ROUTER["router_num_retries"],
        "allowed_fails": ROUTER["router_allowed_fails"], "cooldown_time": ROUTER["router_cooldown_time"],
        "timeout": ROUTER["router_request_timeout"], "enable_weighted_failover": True}


def test_health_checks_off_leaves_them_out():
    config = router_proxy_config([upstream("ws-a", "llama")], dict(SETTINGS, health_check_interval="0"))
    assert config["general_settings"] == {"master_key": "router-key"}


@pytest.mark.parametrize("upstreams, overrides, named", [
    ([], {}, "router_backend_group"),
    ([upstream("ws-a", "m")], {"api_key": ""}, "router_api_key"),
    ([upstream("ws-a", "m")], {"api_key": "{{ vault_router_api_key }}"}, "router_api_key"),
    ([upstream("ws-a", "m")], {"routing_strategy": "usage-based-routing-v2"}, "router_routing_strategy"),
    ([upstream("ws-a", "m")], {"cooldown_time": 0}, "router_cooldown_time"),
    ([upstream("ws-a", "m")], {"num_retries": "two"}, "router_num_retries"),
    ([upstream("ws-a", "m")], {"request_timeout": True}, "router_request_timeout"),
])
def test_bad_settings_are_refused_naming_the_variable(upstreams, overrides, named):
    with pytest.raises(AnsibleFilterError, match=named):
        router_proxy_config(upstreams, dict(SETTINGS, **overrides))
