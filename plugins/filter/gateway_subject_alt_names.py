# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host names and addresses as X.509 subjectAltName entries; the logic is plugin_utils/gateway.py."""

from __future__ import annotations

from typing import Any, List

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.gateway import gateway_subject_alt_names as build

DOCUMENTATION = r"""
name: gateway_subject_alt_names
short_description: Host names and addresses as X.509 subjectAltName entries
version_added: 0.1.0
description:
  - Turns each IP address (v4 or v6) into C(IP:ADDRESS) and each DNS name (a leading C(*.) allowed) into
    C(DNS:name) in lower case, in order, once each; empty entries are skipped.
  - Fails on anything that is neither, or when nothing is left.
options:
  _input:
    description: Names and addresses clients use to reach the host.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Describe the frontend's certificate
  community.crypto.openssl_csr:
    path: /srv/ca/hosts/webui-a/server.csr
    privatekey_path: /srv/ca/hosts/webui-a/server.key
    subject_alt_name: "{{ ['webui-a', '192.0.2.41'] | llmfleet.workstation.gateway_subject_alt_names }}"
    # [DNS:webui-a, IP:192.0.2.41]
"""

RETURN = r"""
_value:
  description: The subjectAltName entries.
  type: list
  elements: str
  sample: ["DNS:webui-a", "IP:192.0.2.41"]
"""


def gateway_subject_alt_names(names: Any) -> List[str]:
    try:
        return build(names)
    except ValueError as error:
        raise AnsibleFilterError(str(error)) from None


class FilterModule:
    def filters(self):
        return {"gateway_subject_alt_names": gateway_subject_alt_names}
