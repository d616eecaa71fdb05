# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gateway's client keys, checked, as the patterns nginx matches; the logic is plugin_utils/gateway.py."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.gateway import gateway_client_key_table as build

DOCUMENTATION = r"""
name: gateway_client_key_table
short_description: Check the gateway's client keys and turn them into the patterns nginx matches
version_added: 0.1.0
description:
  - Checks a list of client keys (each with C(name), C(key) and C(state)) as the gateway role takes them from the
    vault - a list of mappings, names unique and plain (they are logged), keys at least O(min_key_length)
    characters of a bearer token's alphabet, no key in two entries or among O(reserved_keys), states C(present)
    or C(revoked).
  - Returns the present and the revoked entries apart, each as its name and a case-sensitive nginx map regex that
    matches exactly C(Authorization) C(Bearer KEY) (the scheme in any case). nginx lowercases a map's plain string
    keys, which would accept a key in any case; the regex does not.
  - Errors name the variable and the entry (by position and name, never by key) and say how to fix it.
positional: min_key_length, reserved_keys
options:
  _input:
    description: The client keys.
    type: list
    elements: dict
    required: true
  min_key_length:
    description: Shortest key accepted (16 at least).
    type: int
    default: 32
  reserved_keys:
    description: Keys no client may have (the router's own).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Write nginx's map of client keys
  ansible.builtin.template:
    src: client-keys.map.j2
    dest: /etc/nginx/llmfleet-gateway/secrets/client-keys.map
    mode: "0600"
  vars:
    client_table: "{{ gateway_client_keys | llmfleet.workstation.gateway_client_key_table(32, [router_api_key]) }}"
  no_log: true
"""

RETURN = r"""
_value:
  description: The present and the revoked entries, each a name and an nginx map regex.
  type: dict
  sample:
    present: [{name: alice, pattern: "~^(?i:bearer) +alice-key-5d1c8e7f2a9b4c6d8e0f1a2b3c4d5e6f$"}]
    revoked: []
"""


def gateway_client_key_table(entries: Any, min_key_length: int = 32,
                             reserved_keys: Optional[List[str]] = None) -> Dict[str, List[Dict[str, str]]]:
    try:
        return build(entries, min_key_length, reserved_keys)
    except ValueError as error:
        raise AnsibleFilterError(str(error)) from None


class FilterModule:
    def filters(self):
        return {"gateway_client_key_table": gateway_client_key_table}
