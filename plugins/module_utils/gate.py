# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shell every gate module shares: one NVML session, then report the verdict to Ansible."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.llmfleet.workstation.plugins.module_utils.nvml import (
    HAS_PYNVML,
    PYNVML_IMPORT_ERROR,
    NvmlError,
    NvmlSession,
)


def run_gate(module, work):
    """Run work(params, session) in one NVML session and end the module with its result.

    `work` returns a plain dict: `changed`, facts, an optional `warnings` list, and `failed`/`msg` when the
    gate fails. Gates never change the host, so `changed` is always false.
    """
    if not HAS_PYNVML:
        module.fail_json(msg=missing_required_lib("nvidia-ml-py"), exception=PYNVML_IMPORT_ERROR)
    try:
        with NvmlSession() as session:
            result = work(module.params, session)
    except NvmlError as error:
        module.fail_json(msg=str(error), changed=False)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    result["changed"] = False
    if result.get("failed"):
        module.fail_json(**result)
    module.exit_json(**result)
