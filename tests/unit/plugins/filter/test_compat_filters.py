"""The vllm_compat and nvidia_branch_compat filters: thin shells over module_utils/compat.py."""

import pytest
from ansible.module_utils import _internal as module_utils_internal

# Importing controller code flips ansible-core's process-wide is_controller switch, after which module.warn() in the
# module tests collected later would go to the controller's display (as test_vllm_plan.py explains): restore it.
_WAS_CONTROLLER = module_utils_internal.is_controller
from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.llmfleet.workstation.plugins.filter import nvidia_branch_compat, vllm_compat  # noqa: E402

module_utils_internal.is_controller = _WAS_CONTROLLER


def test_vllm_compat_is_registered_and_judges():
    judge = vllm_compat.FilterModule().filters()["vllm_compat"]
    verdict = judge("0.26.0", "560.35.03", ["NVIDIA GeForce RTX 3090"])
    assert not verdict["ok"]
    assert [problem["code"] for problem in verdict["problems"]] == ["driver_too_old"]
    assert judge("0.26.0", "580.159.04")["ok"]


def test_vllm_compat_reads_the_loaded_modules_report():
    report = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U16)\n"
    verdict = vllm_compat.vllm_compat("0.26.0", report, [])
    assert verdict["ok"] and verdict["driver_version"] == "580.95.05"


def test_vllm_compat_refuses_a_string_of_gpu_names():
    with pytest.raises(AnsibleFilterError, match="gpu_names must be a list"):
        vllm_compat.vllm_compat("0.26.0", "580.1", "NVIDIA H200")


def test_nvidia_branch_compat_is_registered_and_judges():
    judge = nvidia_branch_compat.FilterModule().filters()["nvidia_branch_compat"]
    gpus = [{"pci_address": "0000:01:00.0", "device_id": "2b85", "family": "blackwell"}]
    verdict = judge(560, gpus, False)
    assert [problem["code"] for problem in verdict["problems"]] == ["branch_too_old_for_gpu", "open_modules_required"]
    assert judge("580", gpus, True)["ok"]


def test_nvidia_branch_compat_refuses_what_is_not_the_modules_list():
    with pytest.raises(AnsibleFilterError, match="gpus must be a list of dicts"):
        nvidia_branch_compat.nvidia_branch_compat(580, {"gpus": []})
