"""The open_webui role's filters: one connection per workstation at its advertised endpoint, and the container's
environment in Open WebUI's names, as the role's Jinja computed them before."""

import json
from pathlib import Path

import pytest
import yaml
from ansible.module_utils import _internal as module_utils_internal

_WAS_CONTROLLER = module_utils_internal.is_controller
from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.llmfleet.workstation.plugins.filter.open_webui_endpoints import (  # noqa: E402
    open_webui_endpoints,
)
from ansible_collections.llmfleet.workstation.plugins.filter.open_webui_environment import (  # noqa: E402
    open_webui_environment,
)

module_utils_internal.is_controller = _WAS_CONTROLLER

REPO = Path(__file__).resolve().parents[4]
ENGINE_PORT = yaml.safe_load((REPO / "roles/vllm_service/defaults/main.yml").read_text())["vllm_service_port"]


def test_one_connection_per_workstation_in_group_order_with_none_for_a_missing_key():
    hosts = {"ws-b": {"ansible_host": "192.0.2.12", "vllm_service_api_key": "kb"},
             "ws-a": {"vllm_service_advertise_address": "10.0.0.1", "vllm_service_port": 8100,
                      "vllm_service_api_key": ""},
             "ws-c": {}}
    assert open_webui_endpoints(hosts) == [
        {"host": "ws-b", "url": "http://192.0.2.12:%d/v1" % ENGINE_PORT, "api_key": "kb"},
        {"host": "ws-a", "url": "http://10.0.0.1:8100/v1", "api_key": "none"},
        {"host": "ws-c", "url": "http://ws-c:%d/v1" % ENGINE_PORT, "api_key": "none"}]


def test_a_port_that_is_no_number_is_refused_by_name():
    with pytest.raises(AnsibleFilterError, match="vllm_service_port"):
        open_webui_endpoints({"ws-a": {"vllm_service_port": "http"}})


SETTINGS = {"secret_key": "s", "auth": True, "enable_signup": False, "enable_ollama_api": False,
            "persistent_config": False, "function_calling": "legacy",
            "connections": [{"url": "http://a/v1", "api_key": "ka"}, {"url": "http://b/v1"}], "listen": {}, "extra": {}}


def test_environment_in_open_webuis_names():
    assert open_webui_environment(SETTINGS) == {
        "WEBUI_SECRET_KEY": "s", "WEBUI_AUTH": "True", "ENABLE_SIGNUP": "False", "ENABLE_OLLAMA_API": "False",
        "ENABLE_OPENAI_API": "True", "OPENAI_API_BASE_URLS": "http://a/v1;http://b/v1",
        "OPENAI_API_KEYS": "ka;none", "ENABLE_PERSISTENT_CONFIG": "False",
        "DEFAULT_MODEL_PARAMS": json.dumps({"function_calling": "legacy"})}


def test_listen_address_then_the_operators_variables_win():
    environment = open_webui_environment(dict(SETTINGS, listen={"HOST": "0.0.0.0", "PORT": "3000"},
                                              extra={"PORT": "3100", "WEBUI_URL": "https://chat"}))
    assert (environment["HOST"], environment["PORT"], environment["WEBUI_URL"]) == ("0.0.0.0", "3100", "https://chat")


def test_a_flag_that_is_no_boolean_is_refused_by_name():
    with pytest.raises(AnsibleFilterError, match="open_webui_auth"):
        open_webui_environment(dict(SETTINGS, auth="maybe"))
