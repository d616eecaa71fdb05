# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shell every gate module shares: one NVML session, then report the verdict to Ansible."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.llmfleet.workstation.plugins.module_utils.nvml import (
    HAS_PYNVML,
    NVML_MISSING_FIX,
    PYNVML_IMPORT_ERROR,
    NvmlError,
    NvmlSession,
)


def problem(code, message, *, gpu=None, value=None, limit=None, fix=None):
    """One structured problem a gate reports beside its message, so callers judge from data, not text.

    `code` is stable (documented in each module's RETURN), `gpu` the NVML index or None for the host, `value`
    what was seen, `limit` what was required, `fix` what the operator does, `message` the sentence for people.
    """
    return {"code": code, "gpu": gpu, "value": value, "limit": limit, "fix": fix, "message": message}


def run_gate(module, work):
    """Run work(params, session) in one NVML session and end the module with its result.

    `work` returns a plain dict: `changed`, facts, optional `warnings` and `problems` lists (see problem()),
    and `failed`/`msg` when the gate fails. Gates never change the host, so `changed` is always false. A gate that
    cannot read NVML at all reports one problem: `nvml_missing`, `driver_not_loaded`, `nvml_init_failed` or
    `nvml_call_failed`.
    """
    if not HAS_PYNVML:
        message = missing_required_lib("nvidia-ml-py")
        module.fail_json(msg=message, exception=PYNVML_IMPORT_ERROR, changed=False,
                         problems=[problem("nvml_missing", message, fix=NVML_MISSING_FIX)])
    try:
        with NvmlSession() as session:
            result = work(module.params, session)
    except NvmlError as error:
        module.fail_json(msg=str(error), changed=False,
                         problems=[problem(error.code, str(error), fix=error.fix)])
    for warning in result.pop("warnings", []):
        module.warn(warning)
    result["changed"] = False
    if result.get("failed"):
        module.fail_json(**result)
    module.exit_json(**result)
