# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Open WebUI's connection to each workstation, where no router stands in front of the fleet."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.endpoint import base_url

DOCUMENTATION = r"""
name: open_webui_endpoints
short_description: One Open WebUI connection per workstation, at the endpoint the vllm_service role advertises
version_added: 0.1.0
description:
  - For each host, in the order given, C(host), C(url) (P(llmfleet.workstation.vllm_service_endpoint#filter)'s base
    URL) and C(api_key) (C(vllm_service_api_key), or C(none) where it is unset or empty, as Open WebUI needs a value).
  - Pure function, no I/O beyond reading the vllm_service role's default port.
options:
  _input:
    description: Host name to that host's variables, in the order of the backend group.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: One connection per workstation
  ansible.builtin.set_fact:
    endpoints: "{{ dict(names | zip(names | map('extract', hostvars))) | llmfleet.workstation.open_webui_endpoints }}"
"""

RETURN = r"""
_value:
  description: One connection per host.
  type: list
  elements: dict
  sample: [{host: ws-3090-a, url: "http://192.0.2.11:8000/v1", api_key: s3cret}]
"""


def open_webui_endpoints(hosts: Any) -> List[Dict[str, str]]:
    if not isinstance(hosts, Mapping):
        raise AnsibleFilterError("open_webui_endpoints expects a mapping of host name to host variables, got %s"
                                 % type(hosts).__name__)
    endpoints = []
    for host, given in hosts.items():
        host_vars = given or {}
        try:
            url = base_url(host_vars, host)
        except ValueError as error:
            raise AnsibleFilterError("%s: give the engine's port (role vllm_service)" % error) from None
        endpoints.append({"host": host, "url": url, "api_key": str(host_vars.get("vllm_service_api_key") or "none")})
    return endpoints


class FilterModule:
    def filters(self):
        return {"open_webui_endpoints": open_webui_endpoints}
