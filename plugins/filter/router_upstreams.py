# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The router's upstreams, one per workstation; the logic is plugin_utils/router.py."""

from __future__ import annotations

from typing import Any, Dict, List

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.router import upstreams

DOCUMENTATION = r"""
name: router_upstreams
short_description: One router upstream per workstation, from the vllm_service role's advertised endpoint
version_added: 0.1.0
description:
  - For each host, the model name it serves (C(vllm_service_served_model_name), else C(model_repo_id)), its OpenAI
    base URL as P(llmfleet.workstation.vllm_service_endpoint#filter) gives it, and its key
    (C(vllm_service_api_key), else the vllm_service role's default).
options:
  _input:
    description: Host name to that host's variables (C(hostvars) of the backend group).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: List the router's upstreams
  ansible.builtin.set_fact:
    router__upstreams: "{{ backend_hostvars | llmfleet.workstation.router_upstreams }}"
"""

RETURN = r"""
_value:
  description: One entry per host, sorted by host name.
  type: list
  elements: dict
  contains:
    host:
      description: The inventory name.
      type: str
      sample: ws-3090-a
    model:
      description: The model name the host serves.
      type: str
      sample: llama-3.3-70b-instruct
    api_base:
      description: The host's OpenAI base URL.
      type: str
      sample: http://10.0.0.11:8000/v1
    api_key:
      description: The host's key (empty where it serves without one).
      type: str
      sample: s3cret
"""


def router_upstreams(hosts: Any) -> List[Dict[str, Any]]:
    return upstreams(hosts)


class FilterModule:
    def filters(self):
        return {"router_upstreams": router_upstreams}
