# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Open WebUI container's environment, in Open WebUI's own variable names."""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: open_webui_environment
short_description: The Open WebUI container's environment from the open_webui role's settings
version_added: 0.1.0
description:
  - Open WebUI's variable names (backend/open_webui/env.py, config.py) - C(WEBUI_SECRET_KEY), C(WEBUI_AUTH),
    C(ENABLE_SIGNUP), C(ENABLE_OLLAMA_API), C(ENABLE_OPENAI_API), C(OPENAI_API_BASE_URLS) and C(OPENAI_API_KEYS)
    (the connections joined by C(;)), C(ENABLE_PERSISTENT_CONFIG), C(DEFAULT_MODEL_PARAMS) - booleans as C(True) or
    C(False); then C(listen) (HOST and PORT on the host's network) and C(extra) (C(open_webui_env)) on top.
  - Pure function, no I/O.
options:
  _input:
    description:
      - C(secret_key), C(auth), C(enable_signup), C(enable_ollama_api), C(persistent_config) (booleans),
        C(connections) (list of C(url), C(api_key)), C(function_calling), C(listen) and C(extra) (dicts).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: The container's environment
  ansible.builtin.set_fact:
    environment: "{{ settings | llmfleet.workstation.open_webui_environment }}"
"""

RETURN = r"""
_value:
  description: Variable name to value, every value a string except where C(extra) gives another type.
  type: dict
"""


def _flag(settings: Mapping[str, Any], name: str) -> str:
    value = settings.get(name)
    if not isinstance(value, bool):
        if str(value).lower() not in ("true", "false"):
            raise AnsibleFilterError("open_webui_%s is %r: give true or false" % (name, value))
        value = str(value).lower() == "true"
    return "True" if value else "False"


def open_webui_environment(settings: Any) -> Dict[str, Any]:
    if not isinstance(settings, Mapping):
        raise AnsibleFilterError("open_webui_environment expects a mapping of settings")
    connections = settings.get("connections") or []
    environment = {
        "WEBUI_SECRET_KEY": str(settings["secret_key"]),
        "WEBUI_AUTH": _flag(settings, "auth"),
        "ENABLE_SIGNUP": _flag(settings, "enable_signup"),
        "ENABLE_OLLAMA_API": _flag(settings, "enable_ollama_api"),
        "ENABLE_OPENAI_API": "True",
        "OPENAI_API_BASE_URLS": ";".join(str(connection["url"]) for connection in connections),
        "OPENAI_API_KEYS": ";".join(str(connection.get("api_key", "none")) for connection in connections),
        "ENABLE_PERSISTENT_CONFIG": _flag(settings, "persistent_config"),
        "DEFAULT_MODEL_PARAMS": json.dumps({"function_calling": settings.get("function_calling")}),
    }
    environment.update(settings.get("listen") or {})
    environment.update(settings.get("extra") or {})
    return environment


class FilterModule:
    def filters(self):
        return {"open_webui_environment": open_webui_environment}
