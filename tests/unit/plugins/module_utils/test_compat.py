"""The compatibility table and its verdicts (plugins/module_utils/compat.py)."""

import pytest

from ansible_collections.llmfleet.workstation.plugins.module_utils import compat

RTX_3090 = "NVIDIA GeForce RTX 3090"
RTX_5090 = "NVIDIA GeForce RTX 5090"
H200 = "NVIDIA H200"


def codes(items):
    return [item["code"] for item in items]


# ---- the table itself -----------------------------------------------------------------------------------------


def test_release_rows_are_in_order_and_every_cuda_has_a_branch():
    starts = [compat.version_tuple(row["since"]) for row in compat.VLLM_RELEASES]
    assert starts == sorted(starts)
    for row in compat.VLLM_RELEASES:
        assert row["cuda"] in compat.CUDA_DRIVER_BRANCH, row
        # The venv needs the newer of torch's CUDA and vLLM's own build.
        assert compat.cuda_tuple(row["cuda"]) >= compat.cuda_tuple(row["torch_cuda"]), row


def test_every_family_has_disjoint_pci_ranges():
    ranges = sorted((low, high, family["family"]) for family in compat.GPU_FAMILIES for low, high in family["pci_ids"])
    for before, after in zip(ranges, ranges[1:]):
        assert before[1] < after[0], "%s overlaps %s" % (before[2], after[2])


@pytest.mark.parametrize("version, torch, cuda, branch", [
    ("0.8.5", "2.6.0", "12.4", 550),
    ("0.9.0", "2.7.0", "12.8", 570),
    ("0.10.1", "2.7.1", "12.8", 570),
    ("0.10.2", "2.8.0", "12.8", 570),
    ("0.11.0", "2.8.0", "12.8", 570),  # verified: torch 2.8 with CUDA 12.8 (October 2025)
    ("0.11.2", "2.9.0", "12.9", 575),
    ("0.19.1", "2.10.0", "12.9", 575),
    ("0.20.0", "2.11.0", "13.0", 580),
    ("0.26.0", "2.11.0", "13.0", 580),  # verified on an H200: libcudart.so.13, driver 580.159.04
    ("0.27.1", "2.13.0", "13.0", 580),
    ("0.33.0", "2.14.0", "13.0", 580),
])
def test_release_rows(version, torch, cuda, branch):
    row, found = compat.engine_release(version)
    assert found == "table"
    assert (row["torch"], row["cuda"], row["min_branch"]) == (torch, cuda, branch)


@pytest.mark.parametrize("version, found", [
    ("0.7.3", "older"), ("latest", "unparsable"), ("", "unparsable"), (None, "unparsable"), ("0.40.0", "newer"),
    ("0.8.5.post1", "table"), ("v0.26.0", "table"),
])
def test_release_lookup_edges(version, found):
    assert compat.engine_release(version)[1] == found


@pytest.mark.parametrize("driver, branch", [
    ("580.159.04", 580), (580, 580), ("580", 580), ("560.35.03", 560), ("", None), (None, None), ("abc", None),
])
def test_driver_branch(driver, branch):
    assert compat.driver_branch(driver) == branch


@pytest.mark.parametrize("report, version", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  560.35.03  Thu Aug 22 17:01:53 UTC 2024\nGCC version: 12\n",
     "560.35.03"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U16)  Tue",
     "580.95.05"),
    ("", ""), (None, ""),
])
def test_loaded_driver_version(report, version):
    assert compat.loaded_driver_version(report) == version


@pytest.mark.parametrize("name, family", [
    (RTX_3090, "ampere"), ("NVIDIA GeForce RTX 4090", "ada"), (RTX_5090, "blackwell"), (H200, "hopper"),
    ("NVIDIA H100 80GB HBM3", "hopper"), ("NVIDIA A100-SXM4-80GB", "ampere"), ("NVIDIA RTX A6000", "ampere"),
    ("NVIDIA RTX 6000 Ada Generation", "ada"), ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "blackwell"),
    ("NVIDIA B200", "blackwell"), ("NVIDIA L40S", "ada"), ("Tesla T4", "turing"), ("Tesla V100-SXM2-32GB", "volta"),
    ("NVIDIA GeForce GTX 1080 Ti", "pascal"), ("Matrox G200", None),
])
def test_family_by_name(name, family):
    found = compat.family_by_name(name)
    assert (found["family"] if found else None) == family


@pytest.mark.parametrize("device, family", [
    # pci.ids: 2204 GA102 [GeForce RTX 3090], 2684 AD102 [GeForce RTX 4090], 2b85 GB202 [GeForce RTX 5090],
    # 2335 GH100 [H200 SXM 141GB], 2901 GB100 [B200], 1db4 GV100GL [Tesla V100 PCIe 16GB], 1b06 GP102, 1e04 TU102.
    (0x2204, "ampere"), ("2684", "ada"), ("0x2b85", "blackwell"), (0x2335, "hopper"), (0x2901, "blackwell"),
    (0x1DB4, "volta"), (0x1B06, "pascal"), (0x1E04, "turing"), (0x20B5, "ampere"), (0x3182, "blackwell"),
    (0x0FC0, None), ("zz", None),
])
def test_family_by_pci_id(device, family):
    found = compat.family_by_pci_id(device)
    assert (found["family"] if found else None) == family


def test_pci_family_takes_only_nvidia_display_functions():
    assert compat.pci_family(0x10DE, 0x2204, 0x030000) == (True, "ampere")
    assert compat.pci_family(0x10DE, 0x2335, 0x030200) == (True, "hopper")  # 3D controller (data-center board)
    assert compat.pci_family(0x10DE, 0x1AEF, 0x040300) == (False, None)  # the card's HDMI audio function
    assert compat.pci_family(0x8086, 0x2204, 0x030000) == (False, None)
    assert compat.pci_family(0x10DE, 0x9999, 0x030000) == (True, None)


# ---- releases that run on a branch ----------------------------------------------------------------------------


def test_releases_that_run_on_each_branch():
    assert compat.releases_that_run(560) == ["0.8.5.post1"]
    assert compat.releases_that_run(570) == ["0.8.5.post1", "0.9.2", "0.10.2"]
    assert compat.releases_that_run(575)[-1] == "0.19.1"
    assert compat.releases_that_run(580)[-3:] == ["0.31.0", "0.32.0", "0.33.0"]
    assert "0.26.0" in compat.releases_that_run(580)
    assert compat.releases_that_run(None) == []
    assert compat.summarize_versions(compat.releases_that_run(575)) == "0.8.5.post1, 0.9.2, ... 0.17.1, 0.18.1, 0.19.1"


def test_releases_that_run_leave_out_wheels_without_kernels_for_the_gpus():
    blackwell = [compat.family_row("blackwell")]
    assert compat.releases_that_run(570, blackwell) == ["0.9.2", "0.10.2"]
    assert compat.releases_that_run(560, blackwell) == []


# ---- engine verdicts ----------------------------------------------------------------------------------------


def test_proven_pair_passes():
    verdict = compat.engine_verdict("0.26.0", "580.159.04", [H200])
    assert verdict["ok"]
    assert verdict["required_branch"] == 580
    assert verdict["problems"] == [] and verdict["notes"] == []
    assert verdict["summary"] == "ok: vLLM 0.26.0 needs 580+"
    assert verdict["gpus"] == [{"name": H200, "family": "hopper", "min_branch": 520}]


def test_cuda13_engine_on_branch_560_refused_with_both_variables_and_the_versions_that_work():
    verdict = compat.engine_verdict("0.26.0", "560.35.03", [RTX_3090, RTX_3090])
    assert not verdict["ok"]
    [found] = verdict["problems"]
    assert found["code"] == "driver_too_old"
    assert (found["value"], found["limit"]) == (560, 580)
    assert "vllm_version 0.26.0" in found["message"] and "CUDA 13.0" in found["message"]
    assert "torch will see no GPU at all" in found["message"]
    assert "nvidia_driver_branch to 580" in found["fix"]
    assert found["fix"].endswith("or set vllm_version to a release driver branch 560 runs: 0.8.5.post1")
    assert verdict["releases_that_run"] == ["0.8.5.post1"]
    assert verdict["summary"] == "fail: vLLM 0.26.0 needs 580+, driver branch 560"
    assert verdict["msg"].startswith("vllm_version 0.26.0 ships torch 2.11.0")


def test_cuda12_engine_below_its_toolkit_branch_says_minor_version_compatibility_is_not_enough():
    verdict = compat.engine_verdict("0.11.0", "575.51.03")
    assert verdict["ok"]
    [found] = compat.engine_verdict("0.11.0", "560.35.03")["problems"]
    assert found["code"] == "driver_too_old"
    assert (found["value"], found["limit"]) == (560, 570)
    assert "minor-version compatibility" in found["message"]


def test_no_driver_loaded_says_run_nvidia_driver_first():
    verdict = compat.engine_verdict("0.26.0", "", [])
    [found] = verdict["problems"]
    assert found["code"] == "driver_missing"
    assert found["limit"] == 580
    assert "run the nvidia_driver role first" in found["fix"]
    assert "nvidia_driver_branch 580" in found["fix"]
    assert verdict["summary"] == "fail: vLLM 0.26.0 needs 580+, no driver loaded"


def test_blackwell_needs_both_branch_570_and_a_cuda_12_8_wheel():
    old_wheel = compat.engine_verdict("0.8.5", "580.95.05", [RTX_5090])
    assert codes(old_wheel["problems"]) == ["engine_cuda_too_old_for_gpu"]
    assert (old_wheel["problems"][0]["value"], old_wheel["problems"][0]["limit"]) == ("12.4", "12.8")
    assert old_wheel["required_branch"] == 570
    old_driver = compat.engine_verdict("0.8.5", "560.35.03", [RTX_5090])
    assert "driver_too_old_for_gpu" in codes(old_driver["problems"])
    assert "nvidia_driver_open_kernel_modules: true" in old_driver["msg"]


def test_unknown_versions_and_gpus_are_notes_not_refusals():
    newer = compat.engine_verdict("0.40.0", "580.1", [])
    assert newer["ok"] and codes(newer["notes"]) == ["vllm_version_newer_than_table"]
    assert newer["required_branch"] == 580
    older = compat.engine_verdict("0.7.3", "550.1", ["Some Future GPU"])
    assert older["ok"]
    assert codes(older["notes"]) == ["vllm_version_not_in_table", "gpu_family_unknown"]
    assert older["summary"] == "ok: vLLM 0.7.3 (not in the table)"
    assumed = compat.engine_verdict("0.12.0", "575.51.03")
    assert assumed["ok"] and codes(assumed["notes"]) == ["cuda_not_confirmed"]


def test_a_floating_version_is_refused():
    verdict = compat.engine_verdict("latest", "580.95.05")
    assert codes(verdict["problems"]) == ["vllm_version_unparsable"]


# ---- branch verdicts ------------------------------------------------------------------------------------------


def gpu(device_id, family, address="0000:01:00.0"):
    return {"pci_address": address, "device_id": device_id, "family": family}


def test_default_branch_runs_every_supported_family():
    gpus = [gpu("0x2204", "ampere"), gpu("0x2684", "ada"), gpu("0x2335", "hopper"), gpu("0x1db4", "volta")]
    verdict = compat.branch_verdict(580, gpus, open_kernel_modules=False)
    assert verdict["ok"], verdict["msg"]
    assert verdict["families"] == ["ada", "ampere", "hopper", "volta"]
    assert (verdict["lowest_branch"], verdict["highest_branch"]) == (520, 580)


def test_blackwell_refuses_an_old_branch_and_the_proprietary_modules():
    verdict = compat.branch_verdict(560, [gpu("0x2b85", "blackwell")], open_kernel_modules=False)
    assert codes(verdict["problems"]) == ["branch_too_old_for_gpu", "open_modules_required"]
    too_old = verdict["problems"][0]
    assert (too_old["value"], too_old["limit"]) == (560, 570)
    assert "nvidia_driver_branch 560 is too old for 0000:01:00.0 (10de:2b85, blackwell)" in too_old["message"]
    assert too_old["fix"] == "set nvidia_driver_branch to 570 or newer"
    assert verdict["problems"][1]["fix"] == "set nvidia_driver_open_kernel_modules: true"
    assert compat.branch_verdict(580, [gpu("0x2b85", "blackwell")], open_kernel_modules=True)["ok"]


def test_pre_turing_families_end_at_580_and_cannot_run_open_modules():
    verdict = compat.branch_verdict("590", [gpu("0x1b06", "pascal")], open_kernel_modules=True)
    assert codes(verdict["problems"]) == ["branch_too_new_for_gpu", "open_modules_unsupported"]
    assert verdict["problems"][0]["limit"] == 580


def test_unknown_devices_and_no_gpu_are_notes():
    unknown = compat.branch_verdict(580, [gpu("0x0fc0", None)], open_kernel_modules=False)
    assert unknown["ok"] and codes(unknown["notes"]) == ["gpu_family_unknown"]
    empty = compat.branch_verdict(580, [], open_kernel_modules=False)
    assert empty["ok"] and codes(empty["notes"]) == ["no_gpu_found"]
    assert empty["lowest_branch"] is None
