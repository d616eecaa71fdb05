# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A workstation's OpenAI-compatible base URL as other hosts reach it; the logic is plugin_utils/endpoint.py."""

from __future__ import annotations

from typing import Any, Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.endpoint import base_url

DOCUMENTATION = r"""
name: vllm_service_endpoint
short_description: A workstation's vLLM base URL as the frontend, the benchmark and a router reach it
version_added: 0.1.0
description:
  - C(http://ADDRESS:PORT/v1), ADDRESS being the host's C(vllm_service_advertise_address), else its C(ansible_host),
    else its inventory name (an empty value counts as unset), PORT its C(vllm_service_port), else the
    C(vllm_service) role's default. An IPv6 address is put in brackets.
  - The one place this rule lives, so every caller builds the same URL.
  - Pure function, no I/O beyond reading the role's default port.
positional: name
options:
  _input:
    description: The host's variables (C(hostvars[name])).
    type: dict
    required: true
  name:
    description: The host's inventory name.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Show where ws-3090-a's engine answers
  ansible.builtin.debug:
    msg: "{{ hostvars['ws-3090-a'] | llmfleet.workstation.vllm_service_endpoint('ws-3090-a') }}"
"""

RETURN = r"""
_value:
  description: The base URL.
  type: str
  sample: http://192.0.2.11:8000/v1
"""


def vllm_service_endpoint(host_vars: Mapping[str, Any], name: str) -> str:
    if not isinstance(host_vars, Mapping):
        raise AnsibleFilterError("vllm_service_endpoint: give the host's variables (hostvars[name]), got %s"
                                 % type(host_vars).__name__)
    try:
        return base_url(host_vars, str(name))
    except ValueError as error:
        raise AnsibleFilterError("vllm_service_endpoint: %s" % error) from error


class FilterModule:
    """llmfleet.workstation's endpoint filter."""

    def filters(self):
        return {"vllm_service_endpoint": vllm_service_endpoint}
