"""The vllm role's driver check: a release the host's driver cannot run stops the role before anything is installed
or downloaded, with both variables named and the releases that would run; no driver says to run nvidia_driver
first; the `compat` entry point only reports.

Runs the role for real with ansible-playbook against the local host (connection local); the loaded module's report
is a file the test writes (vllm_driver_version_file) or the gates' fact given as an extra variable. A few seconds.
"""

import ansible_run

REPORT_560 = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  560.35.03  Thu Aug 22 17:01:53 UTC 2024\n"
REPORT_580 = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  "
              "(dvs-builder@U16-I3-B03-4-3)  Thu Aug 22 17:01:53 UTC 2024\n")
REFUSE = "Refuse a release the host's driver cannot run"

pytestmark = ansible_run.needs_ansible


def run_role(tmp_path, extra_vars, tasks_from="main"):
    """Apply the role (or one entry point) to localhost; (failed, {task name: result}) from the json callback."""
    run = ansible_run.run_role(tmp_path, "llmfleet.workstation.vllm", extra_vars, tasks_from=tasks_from)
    return run.failed(), run.tasks()


def ran(tasks, name):
    return name in tasks and not tasks[name].get("skipped")


def test_cuda13_release_on_a_560_driver_stops_before_anything_is_installed(tmp_path):
    (tmp_path / "version").write_text(REPORT_560)
    failed, tasks = run_role(tmp_path, {"vllm_version": "0.26.0", "vllm_driver_version_file": str(tmp_path / "version"),
                                        "vllm_base_dir": str(tmp_path / "opt")})
    assert failed
    message = tasks[REFUSE]["msg"]
    assert "vllm_version 0.26.0 ships torch 2.11.0 with CUDA 13.0" in message
    assert "this host runs driver 560.35.03 (branch 560)" in message
    assert "set nvidia_driver_branch to 580 or newer" in message
    assert "or set vllm_version to a release driver branch 560 runs: 0.8.5.post1" in message
    assert message.endswith("Nothing was installed or downloaded.")
    # The refusal is the last task: no package, user, directory or venv step ran.
    assert list(tasks)[-1] == REFUSE
    assert not (tmp_path / "opt").exists()


def test_no_driver_loaded_says_to_run_nvidia_driver_first(tmp_path):
    failed, tasks = run_role(tmp_path, {"vllm_version": "0.26.0", "vllm_driver_version_file": str(tmp_path / "none")})
    assert failed
    message = tasks[REFUSE]["msg"]
    assert "no NVIDIA driver is loaded, so vllm_version 0.26.0 cannot be judged" in message
    assert "run the nvidia_driver role first" in message
    assert "nvidia_driver_branch 580 or newer" in message


def test_gates_fact_is_judged_with_the_gpu_families(tmp_path):
    gpu = {"driver_version": "570.133.20", "gpus": [{"name": "NVIDIA GeForce RTX 5090"}]}
    failed, tasks = run_role(tmp_path, {"vllm_version": "0.8.5", "llmfleet_gpu": gpu})
    assert failed
    message = tasks[REFUSE]["msg"]
    assert "no kernels for NVIDIA GeForce RTX 5090 (blackwell needs CUDA 12.8 or newer)" in message
    assert "0.9.2, 0.10.2" in message
    assert not ran(tasks, "Read the loaded NVIDIA module's version where the gates have not reported the driver")


def test_compat_entry_point_reports_without_failing(tmp_path):
    (tmp_path / "version").write_text(REPORT_580)
    settings = {"vllm_version": "0.26.0", "vllm_driver_version_file": str(tmp_path / "version")}
    failed, tasks = run_role(tmp_path, settings, tasks_from="compat")
    assert not failed
    verdict = tasks["Judge vllm_version against the host's driver and GPUs"]["ansible_facts"]["vllm_compat"]
    assert verdict["ok"]
    assert verdict["summary"] == "ok: vLLM 0.26.0 needs 580+"
    (tmp_path / "version").write_text(REPORT_560)
    settings = {"vllm_version": "0.26.0", "vllm_driver_version_file": str(tmp_path / "version")}
    failed, tasks = run_role(tmp_path, settings, tasks_from="compat")
    assert not failed
    verdict = tasks["Judge vllm_version against the host's driver and GPUs"]["ansible_facts"]["vllm_compat"]
    assert verdict["summary"] == "fail: vLLM 0.26.0 needs 580+, driver branch 560"


def test_cpu_build_is_not_checked_and_says_so(tmp_path):
    failed, tasks = run_role(tmp_path, {"vllm_version": "0.32.0", "vllm_cpu_only": True,
                                        "vllm_driver_version_file": str(tmp_path / "none")}, tasks_from="compat")
    assert not failed
    verdict = tasks["Note that this host's release is not checked against a driver"]["ansible_facts"]["vllm_compat"]
    assert verdict["ok"] and verdict["summary"] == "not checked (vllm_cpu_only)"
    assert not ran(tasks, "Read the loaded NVIDIA module's version where the gates have not reported the driver")
