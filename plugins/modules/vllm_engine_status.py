#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vllm_engine_status
short_description: Wait for a vLLM systemd unit to serve, or report why its engine exited, and read its KV capacity
version_added: 0.2.0
description:
  - Polls the engine's C(/health) until it answers, while watching the systemd unit. When the engine process exits
    (the unit failed, waits to restart, or restarted since the wait began), the wait stops at once and the module
    fails with the engine's own reason from the unit's journal - for a context the KV cache cannot hold, the
    longest context the engine says fits.
  - Once the engine serves, reads its KV-cache capacity (C(/metrics), else its start-up log) and its memory
    accounting (weights, activation peak, non-torch and CUDA graph memory) from the journal of the unit's current
    invocation, and compares the capacity with O(planned_kv_tokens) when given.
  - With O(timeout=0) it only reads (one look, no waiting) and never fails on the engine's state, which suits
    read-only audits.
  - Read-only; never changes the host. Runs on the host of the unit (uses C(systemctl) and C(journalctl)).
options:
  unit:
    description: The systemd unit that runs the engine, without C(.service).
    type: str
    required: true
  url:
    description: Base URL of the engine's HTTP server, without C(/v1), as seen from the host.
    type: str
    default: http://127.0.0.1:8000
  api_key:
    description: Bearer token for the engine, sent with every request (vLLM only requires it under C(/v1)).
    type: str
  timeout:
    description: Longest wait for C(/health), in seconds; C(0) looks once and reports.
    type: int
    default: 1200
  interval:
    description: Seconds between two looks.
    type: float
    default: 5
  planned_kv_tokens:
    description:
      - KV-cache tokens the plan expected (the C(kv_cache_tokens) of the C(vllm_plan) filter). When set, the result
        compares plan and engine and warns when they differ by more than O(kv_tolerance).
    type: int
  kv_tolerance:
    description: Largest accepted relative difference between planned and engine KV capacity before a warning.
    type: float
    default: 0.1
author:
  - llmfleet.workstation contributors (@llmfleet)
"""

EXAMPLES = r"""
- name: Wait for the engine, stop at once if it exits
  llmfleet.workstation.vllm_engine_status:
    unit: vllm
    url: http://127.0.0.1:8000
    timeout: 1200
    planned_kv_tokens: "{{ plan.kv_cache_tokens }}"
  register: engine

- name: Read the engine's state without waiting (audit)
  llmfleet.workstation.vllm_engine_status:
    unit: vllm
    timeout: 0
"""

RETURN = r"""
ready:
  description: Whether C(/health) answered 200.
  returned: always
  type: bool
  sample: true
state:
  description: The unit's C(ActiveState)/C(SubState) at the last look, and its C(NRestarts).
  returned: always
  type: dict
  sample: {active: active, sub: running, restarts: 0}
waited_s:
  description: Seconds spent waiting.
  returned: always
  type: float
  sample: 42.1
exit:
  description:
    - Why the engine exited, when it did - C(code) (context_exceeds_kv_cache, context_exceeds_model,
      no_kv_cache_memory, out_of_memory, free_memory_below_budget, no_gpu, engine_error, engine_exited),
      C(engine_message) (the engine's own line) and C(engine_limit) (for the context codes, the longest context the
      engine says fits; else null). Null while the engine runs.
  returned: always
  type: dict
  sample:
    code: context_exceeds_kv_cache
    engine_message: "ValueError: To serve at least one request with the models's max seq len (8192), ... the
      estimated maximum model length is 6064. ..."
    engine_limit: 6064
engine:
  description:
    - What the engine said about itself, where it said it - C(kv_cache_tokens) (C(/metrics) first, else the log),
      C(kv_cache_blocks) and C(block_size) (from C(/metrics)), C(max_model_len) and C(max_concurrency) (sequences
      of that length the KV cache holds), C(weights_gib), C(activation_peak_gib), C(non_torch_gib),
      C(cudagraph_gib), C(available_kv_gib).
  returned: always
  type: dict
  sample: {kv_cache_tokens: 289360, max_model_len: 131072, max_concurrency: 2.21, weights_gib: 37.88}
kv:
  description:
    - Plan against engine - C(planned_kv_tokens), C(engine_kv_tokens), C(ratio) (planned / engine),
      C(within_tolerance), C(tolerance). Values null where one side is unknown.
  returned: always
  type: dict
  sample: {planned_kv_tokens: 280000, engine_kv_tokens: 289360, ratio: 0.9677, within_tolerance: true, tolerance: 0.1}
problems:
  description: Structured problems (C(code), C(value), C(limit), C(message)); empty when the engine serves as planned.
  returned: always
  type: list
  elements: dict
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

from ansible_collections.llmfleet.workstation.plugins.module_utils.vllm_engine import (
    compare_kv,
    exit_reason,
    parse_accounting,
    parse_metrics,
)

ARGUMENT_SPEC = {
    "unit": {"type": "str", "required": True},
    "url": {"type": "str", "default": "http://127.0.0.1:8000"},
    "api_key": {"type": "str", "no_log": True},
    "timeout": {"type": "int", "default": 1200},
    "interval": {"type": "float", "default": 5},
    "planned_kv_tokens": {"type": "int", "no_log": False},
    "kv_tolerance": {"type": "float", "default": 0.1},
}
JOURNAL_TAIL_LINES = 400


class Host:
    """The calls that touch the host, kept apart so the decisions can be tested without systemd or HTTP."""

    def __init__(self, module):
        self.module = module
        self.headers = {"Authorization": "Bearer %s" % module.params["api_key"]} if module.params["api_key"] else {}

    def get(self, url):
        """(status, body) of a GET; status 0 when nothing answers."""
        try:
            response = open_url(url, headers=self.headers, timeout=10, validate_certs=False)
            return response.getcode(), response.read().decode("utf-8", "replace")
        except Exception as error:  # connection refused, reset, timeout, HTTP errors: all mean "not serving"
            return getattr(error, "code", 0) or 0, ""

    def unit_state(self, unit):
        rc, out, _err = self.module.run_command(
            ["systemctl", "show", unit + ".service", "-p", "ActiveState", "-p", "SubState", "-p", "NRestarts",
             "-p", "InvocationID"])
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        restarts = values.get("NRestarts", "0")
        return {"active": values.get("ActiveState", "unknown"), "sub": values.get("SubState", "unknown"),
                "restarts": int(restarts) if restarts.isdigit() else 0, "invocation": values.get("InvocationID", "")}

    def journal(self, unit, invocation=None):
        argv = ["journalctl", "--no-pager", "-o", "cat"]
        argv += ["_SYSTEMD_INVOCATION_ID=" + invocation] if invocation else ["-u", unit + ".service", "-n",
                                                                             str(JOURNAL_TAIL_LINES)]
        _rc, out, _err = self.module.run_command(argv)
        return out.splitlines()

    @staticmethod
    def sleep(seconds):
        time.sleep(seconds)

    @staticmethod
    def now():
        return time.monotonic()


def exited(state, restarts_at_start):
    """Whether the engine process ended since the wait began (systemd restarts it after RestartSec)."""
    return (state["active"] in ("failed", "inactive")
            or (state["active"] == "activating" and state["sub"] == "auto-restart")
            or state["restarts"] > restarts_at_start)


def read_engine(host, params, state):
    """The engine's own figures: /metrics for the KV capacity, the current invocation's log for the rest."""
    engine = parse_accounting(host.journal(params["unit"], state.get("invocation") or None))
    status, body = host.get(params["url"].rstrip("/") + "/metrics")
    if status == 200:
        engine.update(parse_metrics(body))
    return engine


def run(host, params):
    unit, timeout = params["unit"], max(0, params["timeout"])
    started = host.now()
    state = host.unit_state(unit)
    restarts_at_start = state["restarts"]
    result = {"changed": False, "ready": False, "exit": None, "engine": {}, "problems": [],
              "kv": compare_kv(params.get("planned_kv_tokens"), None, params["kv_tolerance"])}
    while True:
        status, _body = host.get(params["url"].rstrip("/") + "/health")
        if status == 200:
            result["ready"] = True
            break
        state = host.unit_state(unit)
        if exited(state, restarts_at_start):
            result["exit"] = exit_reason(host.journal(unit))
            break
        if host.now() - started >= timeout:
            break
        host.sleep(params["interval"])
    result["waited_s"] = round(host.now() - started, 1)
    result["state"] = {key: state[key] for key in ("active", "sub", "restarts")}
    if result["ready"]:
        # The state of the last look names the invocation that answered.
        result["engine"] = read_engine(host, params, state)
        result["kv"] = compare_kv(params.get("planned_kv_tokens"), result["engine"].get("kv_cache_tokens"),
                                  params["kv_tolerance"])
    judge(result, unit, timeout)
    return result


def judge(result, unit, timeout):
    """Problems and the message, from the data gathered."""
    exit_info, kv = result["exit"], result["kv"]
    if exit_info:
        result["problems"].append({"code": exit_info["code"], "value": None, "limit": exit_info["engine_limit"],
                                   "message": exit_info["engine_message"]})
        result["msg"] = "%s.service exited at start (%s): %s" % (unit, exit_info["code"], exit_info["engine_message"])
    elif not result["ready"]:
        result["problems"].append({"code": "not_ready", "value": result["waited_s"], "limit": timeout,
                                   "message": "no answer on /health"})
        result["msg"] = ("%s.service is %s/%s and its API did not answer /health within %d s"
                         % (unit, result["state"]["active"], result["state"]["sub"], timeout))
    else:
        result["msg"] = "%s.service serves (KV cache %s tokens)" % (
            unit, result["engine"].get("kv_cache_tokens", "unknown"))
    if kv["within_tolerance"] is False:
        result["problems"].append({
            "code": "kv_differs_from_plan", "value": kv["engine_kv_tokens"], "limit": kv["planned_kv_tokens"],
            "message": "the engine holds %d KV-cache tokens, the plan expected %d (%.0f%%, tolerance %.0f%%)"
                       % (kv["engine_kv_tokens"], kv["planned_kv_tokens"], kv["ratio"] * 100, kv["tolerance"] * 100)})


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = run(Host(module), module.params)
    for problem in result["problems"]:
        if problem["code"] == "kv_differs_from_plan":
            module.warn(problem["message"])
    if module.params["timeout"] > 0 and not result["ready"]:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
