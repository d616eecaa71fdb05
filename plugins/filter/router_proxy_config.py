# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""LiteLLM's proxy configuration for the router; the logic is plugin_utils/router.py."""

from __future__ import annotations

from typing import Any, Dict

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.router import proxy_config

DOCUMENTATION = r"""
name: router_proxy_config
short_description: LiteLLM proxy configuration from the router's upstreams and settings
version_added: 0.1.0
description:
  - One deployment per upstream of P(llmfleet.workstation.router_upstreams#filter), grouped by model name, so each
    model is listed once; the deployment id is the workstation's name. The router's service leaves drained hosts out
    when it loads the file.
  - Fails with the variable to fix on no upstream, an empty router key, an unknown routing strategy or a setting
    that is not a whole number.
  - Pure function, no I/O.
positional: settings
options:
  _input:
    description: The upstreams.
    type: list
    elements: dict
    required: true
  settings:
    description:
      - C(api_key), C(routing_strategy), C(num_retries), C(allowed_fails), C(cooldown_time), C(request_timeout),
        C(health_check_interval) (the role's C(router_*) variables of those names).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Render the proxy's configuration
  ansible.builtin.copy:
    content: "{{ router__upstreams | llmfleet.workstation.router_proxy_config(router__settings) | to_nice_yaml }}"
    dest: /etc/llmfleet/router/config.yaml
    mode: "0600"
"""

RETURN = r"""
_value:
  description: LiteLLM's proxy configuration (model_list, router_settings, litellm_settings, general_settings).
  type: dict
"""


def router_proxy_config(upstream_list: Any, settings: Any) -> Dict[str, Any]:
    return proxy_config(upstream_list, settings)


class FilterModule:
    def filters(self):
        return {"router_proxy_config": router_proxy_config}
