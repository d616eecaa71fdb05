# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a workstation's engine answers for other hosts: the one rule, owned by the vllm_service role's settings.

The address is vllm_service_advertise_address, else ansible_host, else the inventory name (an empty value counts as
unset: an inventory that blanks it means "not this one"); the port is vllm_service_port, else the role's default.
"""

from __future__ import annotations

from typing import Any, Mapping

from ansible_collections.llmfleet.workstation.plugins.plugin_utils.role_defaults import role_default


def _set(value: Any) -> bool:
    return value is not None and str(value).strip() != ""


def advertised_address(host_vars: Mapping[str, Any], name: str) -> str:
    for key in ("vllm_service_advertise_address", "ansible_host"):
        if _set(host_vars.get(key)):
            return str(host_vars[key]).strip()
    return str(name)


def base_url(host_vars: Mapping[str, Any], name: str) -> str:
    """http://ADDRESS:PORT/v1, IPv6 addresses in brackets."""
    port = host_vars.get("vllm_service_port")
    port = port if _set(port) else role_default("vllm_service_port")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError("vllm_service_port of %s is %r, not a port number" % (name, port)) from None
    address = advertised_address(host_vars, name)
    if ":" in address and not address.startswith("["):
        address = "[%s]" % address
    return "http://%s:%d/v1" % (address, port)
