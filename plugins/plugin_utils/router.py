# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The router's upstreams and its LiteLLM proxy configuration, from the inventory; pure functions."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.endpoint import base_url
from ansible_collections.llmfleet.workstation.plugins.plugin_utils.role_defaults import role_default

# LiteLLM's routing strategies that need no Redis or database (router_settings.routing_strategy).
ROUTING_STRATEGIES = ("simple-shuffle", "least-busy", "latency-based-routing")


def upstreams(hosts: Mapping[str, Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """One upstream per workstation: its model name, the endpoint and key the vllm_service role advertises.

    The endpoint is the one rule of plugin_utils/endpoint.py (the vllm_service role's advertised address and port);
    the key is the host's vllm_service_api_key, else that role's default.
    """
    if not isinstance(hosts, Mapping):
        raise AnsibleFilterError("router_upstreams expects a mapping of host name to host variables, got %s"
                                 % type(hosts).__name__)
    result = []
    for host in sorted(hosts):
        host_vars = hosts[host] or {}
        model = host_vars.get("vllm_service_served_model_name") or host_vars.get("model_repo_id")
        if not model or "{{" in str(model):
            raise AnsibleFilterError(
                "%s serves no model name the router can list: set vllm_service_served_model_name (or model_repo_id) "
                "for it, or take it out of the router's backend group (router_backend_group)" % host)
        try:
            api_base = base_url(host_vars, host)
        except ValueError as error:
            raise AnsibleFilterError("%s: give the engine's port (role vllm_service)" % error) from None
        api_key = host_vars.get("vllm_service_api_key")
        if api_key is None:
            api_key = role_default("vllm_service_api_key")
        result.append({"host": host, "model": str(model), "api_base": api_base, "api_key": str(api_key or "")})
    return result


def _positive(settings: Mapping[str, Any], name: str, allow_zero: bool = False) -> int:
    value = settings.get(name)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or number < 0 or (number == 0 and not allow_zero):
        raise AnsibleFilterError("router_%s is %r: give a whole number of at least %d"
                                 % (name, value, 0 if allow_zero else 1))
    return number


def proxy_config(upstream_list: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> Dict[str, Any]:
    """LiteLLM's proxy configuration: one deployment per upstream, grouped by model name.

    settings: api_key (the router's own key), routing_strategy, num_retries, allowed_fails, cooldown_time,
    request_timeout, health_check_interval (0: no background checks). The router's service leaves drained hosts
    out when it loads this file (files/router_config.py), so a drain needs no secret and no re-render here.
    """
    if not isinstance(upstream_list, Sequence) or isinstance(upstream_list, (str, bytes)):
        raise AnsibleFilterError("router_proxy_config expects the list of router_upstreams")
    if not upstream_list:
        raise AnsibleFilterError("the router has no upstream: add the workstations to router_backend_group")
    api_key = settings.get("api_key")
    if not api_key or "{{" in str(api_key):
        raise AnsibleFilterError("router_api_key is empty: set the key clients (Open WebUI, the gateway) present to "
                                 "the router, from the vault")
    strategy = settings.get("routing_strategy")
    if strategy not in ROUTING_STRATEGIES:
        raise AnsibleFilterError("router_routing_strategy is %r: choose one of %s"
                                 % (strategy, ", ".join(ROUTING_STRATEGIES)))
    model_list = []
    for upstream in upstream_list:
        model_list.append({
            "model_name": upstream["model"],
            # hosted_vllm: LiteLLM's provider for vLLM's OpenAI server, sent as is (no provider-specific rewriting).
            "litellm_params": {"model": "hosted_vllm/%s" % upstream["model"], "api_base": upstream["api_base"],
                               "api_key": upstream["api_key"] or "none"},
            # The deployment id is the workstation's name: drains name it, and it appears in the router's errors.
            "model_info": {"id": upstream["host"]},
        })
    interval = _positive(settings, "health_check_interval", allow_zero=True)
    general = {"master_key": str(api_key)}
    if interval:
        general.update({"background_health_checks": True, "health_check_interval": interval})
    timeout = _positive(settings, "request_timeout")
    return {
        "model_list": model_list,
        "router_settings": {
            "routing_strategy": strategy,
            "num_retries": _positive(settings, "num_retries", allow_zero=True),
            "allowed_fails": _positive(settings, "allowed_fails", allow_zero=True),
            "cooldown_time": _positive(settings, "cooldown_time"),
            "timeout": timeout,
            # A retry after a retryable failure (a refused connection, a 5xx) otherwise draws again from every
            # deployment, the failed one included: with one of two workstations down, 5 of 200 requests failed with
            # three draws on it; with failover to the others, none (docs/router.md). simple-shuffle only.
            "enable_weighted_failover": True,
        },
        "litellm_settings": {"request_timeout": timeout, "telemetry": False},
        "general_settings": general,
    }
