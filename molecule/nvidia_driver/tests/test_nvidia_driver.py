"""The nvidia_driver role as an operator relies on it, checked from outside the role.

llmfleet-driver was converged by converge.yml: the default branch, 580, installed from the fake NVIDIA repository,
the role stopped for a reboot, the reboot was simulated and the role ran to the end. The tests below read that
state, then run the role again through ansible-playbook with other variables and check what it decides and says.

Tests run in file order. The last ones change the host on purpose (Secure Boot, the 580 -> 560 branch move, then a
560 point release) and each leaves it in a state the next one expects.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import testinfra

REPO = Path(__file__).resolve().parents[3]
SCENARIO = Path(__file__).resolve().parents[1]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
CONVERGED = "llmfleet-driver"
FRESH = "llmfleet-driver-fresh"
LOADED_REPORT = "/run/llmfleet-fake/nvidia-version"
REBOOT_RECORD = "/var/lib/llmfleet/nvidia_driver_reboot_required"
SERVED = "/srv/fake-nvidia-repo"
BRANCH_560 = {"nvidia-driver-560", "nvidia-dkms-560", "nvidia-compute-utils-560"}
BRANCH_580 = {"nvidia-driver-580", "nvidia-dkms-580", "nvidia-compute-utils-580"}
PCI_5090 = "/run/llmfleet-fake/pci/single-5090"
# mokutil on a host with Secure Boot on and the DKMS key not enrolled (the answers of mokutil 0.6).
FAKE_MOKUTIL = """#!/bin/sh
case "$1" in
  --sb-state) echo "SecureBoot enabled" ;;
  --test-key) echo "$2 is not enrolled" ;;
esac
"""
OPEN_MODULE_555 = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  555.42.06  Release Build  "
    "(dvs-builder@U16-I3-B03-4-3)  Tue Jun 11 00:00:00 UTC 2024"
)

# Tests take `converged` (the converged host) or `fresh` (the host the role never touched).
testinfra_hosts = [CONVERGED]


class PlaybookRun:
    """One ansible-playbook run, read from the json callback."""

    def __init__(self, report, host):
        self.stats = report["stats"][host]
        # Role tasks are named "<role> : <task>"; the tests use the task's own name.
        self.tasks = [
            (task["task"]["name"].split(" : ")[-1], task["hosts"][host])
            for play in report["plays"]
            for task in play["tasks"]
            if host in task["hosts"]
        ]

    @property
    def failed(self):
        return self.stats["failures"] > 0

    @property
    def failure(self):
        """(task name, result) of the task that failed."""
        failed = [(name, result) for name, result in self.tasks if result.get("failed") and not result.get("skipped")]
        assert failed, "no task failed"
        return failed[-1]

    def changed(self):
        return [name for name, result in self.tasks if result.get("changed")]

    def ran(self, name):
        return any(task == name and not result.get("skipped") for task, result in self.tasks)

    def result(self, name):
        return [result for task, result in self.tasks if task == name][-1]


def run_playbook(playbook, host, extra_vars=None, check=False, inventory=INVENTORY):
    env = dict(os.environ)
    env.update(
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"),
    )
    command = ["ansible-playbook", "-i", inventory, str(SCENARIO / playbook), "--limit", host]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    if check:
        command.append("--check")
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    try:
        report = json.loads(completed.stdout)
    except ValueError:
        output = "%s %s" % (completed.stdout, completed.stderr)
        pytest.fail("ansible-playbook printed no JSON (rc %s): %s" % (completed.returncode, output))
    return PlaybookRun(report, host)


def packages(host):
    """{package: (dpkg status abbreviation, version)}; 'hi' is installed and held."""
    listing = host.run("dpkg-query --show --showformat '${db:Status-Abbrev}|${Package}|${Version}\\n'")
    assert listing.rc == 0, listing.stderr
    rows = (line.split("|") for line in listing.stdout.splitlines())
    return {name: (status.strip(), version) for status, name, version in rows}


def installed(host):
    return {name for name, (status, _version) in packages(host).items() if status in ("ii", "hi")}


def held(host):
    return {name for name, (status, _version) in packages(host).items() if status.startswith("h")}


def fake_reboot(host):
    result = host.run("python3 /usr/local/sbin/llmfleet-fake-reboot.py %s" % LOADED_REPORT)
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def converged(host):
    return host


@pytest.fixture
def fresh():
    return testinfra.get_host("ansible://%s?ansible_inventory=%s" % (FRESH, INVENTORY))


# ---- check mode on a host the role never touched -------------------------------------------------------


def host_snapshot(host):
    """What a run could change: packages and selections, the files the role writes, apt's indexes, the initramfs."""
    files = host.run(
        "find /etc/apt /etc/modprobe.d /etc/systemd/system /usr/share/keyrings /var/lib/apt/lists /var/lib/llmfleet "
        "/opt/llmfleet -printf '%p %s %T@\\n' 2>/dev/null | sort; cat /var/log/llmfleet-fake-update-initramfs.log "
        "2>/dev/null; true"
    ).stdout
    return packages(host), files


def test_check_mode_on_a_fresh_host_predicts_changes_and_makes_none(fresh):
    before = host_snapshot(fresh)
    run = run_playbook("driver.yml", FRESH, check=True)
    assert not run.failed, run.failure
    changed = run.changed()
    for predicted in (
        "Install cuda-keyring, the repository's signing key",
        "Point the CUDA sources entry at the repository base URL",
        "Predict the installs apt cannot simulate yet (check mode)",
        "Blacklist nouveau so the NVIDIA module can claim the GPUs",
        "Record the pending reboot and why",
        "Reboot to load the NVIDIA driver",
        "Install the NVML Python bindings into their venv",
    ):
        assert predicted in changed, "check mode did not predict: %s (changed: %s)" % (predicted, changed)
    assert host_snapshot(fresh) == before
    assert not installed(fresh) & (BRANCH_580 | {"cuda-keyring", "cuda-toolkit-12-6"})


# ---- the converged host ----------------------------------------------------------------------------------


def test_default_branch_installed_from_the_repository_and_held(converged):
    state = packages(converged)
    for name in BRANCH_580:
        assert state[name] == ("hi", "580.95.05-1"), (name, state.get(name))
    assert state["cuda-toolkit-12-6"][0] == "ii"
    assert state["cuda-keyring"][0] == "ii"
    # Nothing but the branch is held: the toolkit and the keyring may take updates.
    assert held(converged) == BRANCH_580

    sources = converged.file("/etc/apt/sources.list.d/cuda-debian12-x86_64.list").content_string
    assert "deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] http://127.0.0.1:8088/ /" in sources
    policy = converged.run("apt-cache policy nvidia-driver-580").stdout
    assert "Installed: 580.95.05-1" in policy
    assert "600 http://127.0.0.1:8088" in policy


def test_reboot_was_requested_then_cleared(converged):
    # converge.yml kept the message the role stopped with on the fresh host.
    message = converged.file("/var/lib/llmfleet-test/reboot-requested.txt").content_string
    assert "llmfleet-driver needs a reboot to load the NVIDIA driver 580.95.05" in message
    assert "nvidia-driver-580 was installed or upgraded in this run" in message
    assert "Hosts of this play that need a reboot: llmfleet-driver." in message
    # After the (simulated) reboot the module matches the package and nothing is pending.
    assert "Kernel Module  580.95.05 " in converged.file(LOADED_REPORT).content_string
    assert not converged.file(REBOOT_RECORD).exists


def test_nouveau_blacklisted_and_initramfs_rebuilt_once(converged):
    blacklist = converged.file("/etc/modprobe.d/llmfleet-blacklist-nouveau.conf").content_string
    assert "blacklist nouveau" in blacklist
    assert "options nouveau modeset=0" in blacklist
    # Two role runs in converge and one in idempotence; only the first changed the blacklist.
    rebuilds = converged.file("/var/log/llmfleet-fake-update-initramfs.log").content_string.splitlines()
    assert rebuilds == ["-u -k all"]


def test_persistence_mode_daemon_enabled_and_running(converged):
    daemon = converged.service("nvidia-persistenced")
    assert daemon.is_enabled
    assert daemon.is_running
    started_with = converged.file("/run/nvidia-persistenced/cmdline").content_string.split()
    assert "--no-persistence-mode" not in started_with
    assert started_with[:2] == ["--user", "nvidia-persistenced"]


# ---- requests the role refuses before touching a driver package ----------------------------------------


def test_branch_below_550_refused(converged):
    before = packages(converged)
    run = run_playbook("driver.yml", CONVERGED, {"nvidia_driver_branch": 535})
    name, result = run.failure
    assert name == "Refuse driver branches older than 550"
    assert "NVLink on Ampere" in result["msg"]
    assert "550" in result["msg"]
    assert run.stats["changed"] == 0
    assert packages(converged) == before


def test_branch_too_old_for_a_blackwell_gpu_refused_before_touching_packages(converged):
    before = packages(converged)
    run = run_playbook("driver.yml", CONVERGED, {"nvidia_driver_branch": 560, "nvidia_driver_open_kernel_modules": True,
                                                 "nvidia_driver_pci_devices_path": PCI_5090})
    name, result = run.failure
    assert name == "Refuse a branch or kernel-module flavour the GPUs cannot run"
    assert "nvidia_driver_branch 560 is too old for 0000:01:00.0 (10de:2b85, blackwell)" in result["msg"]
    assert "set nvidia_driver_branch to 570 or newer" in result["msg"]
    assert not run.ran("Install cuda-keyring, the repository's signing key")
    assert not run.ran("Install the NVIDIA driver branch")
    assert run.stats["changed"] == 0
    assert packages(converged) == before


def test_blackwell_refuses_the_proprietary_kernel_modules(converged):
    run = run_playbook("driver.yml", CONVERGED, {"nvidia_driver_pci_devices_path": PCI_5090})
    name, result = run.failure
    assert name == "Refuse a branch or kernel-module flavour the GPUs cannot run"
    assert "runs only with NVIDIA's open kernel modules" in result["msg"]
    assert "set nvidia_driver_open_kernel_modules: true" in result["msg"]
    assert run.stats["changed"] == 0


def test_branch_missing_from_the_repository_fails_before_touching_packages(converged):
    before = packages(converged)
    run = run_playbook("driver.yml", CONVERGED, {"nvidia_driver_branch": 575})
    name, result = run.failure
    assert name == "Require the branch to be offered"
    assert "nvidia-driver-575 is not offered by http://127.0.0.1:8088/" in result["msg"]
    assert "Branches it offers: 550, 560, 570, 580;" in result["msg"]
    assert "with open kernel modules: 550, 560, 570, 580" in result["msg"]
    assert not run.ran("Install the NVIDIA driver branch")
    assert run.stats["changed"] == 0
    assert packages(converged) == before


def test_connection_local_asks_the_operator_to_reboot(converged):
    # On the controller itself; ansible.builtin.reboot refuses local connections, so this cannot reboot anything.
    run = run_playbook("local_reboot.yml", "localhost", inventory="localhost,")
    name, result = run.failure
    assert name == "Stop where the host must not or cannot be rebooted by Ansible"
    assert "reboot this machine, then run again" in result["msg"]
    assert not run.ran("Reboot to load the NVIDIA driver")


# ---- the reboot decision on a host whose module and package disagree --------------------------------------


@pytest.fixture
def secure_boot_without_enrolled_key(converged):
    """Secure Boot on, a DKMS key present but not enrolled, and an older open module loaded than installed."""
    setup = converged.run(
        "cat >/usr/local/bin/mokutil <<'EOF'\n%sEOF\n"
        "chmod 0755 /usr/local/bin/mokutil && mkdir -p /var/lib/dkms && echo certificate >/var/lib/dkms/mok.pub"
        " && echo '%s' >%s" % (FAKE_MOKUTIL, OPEN_MODULE_555, LOADED_REPORT)
    )
    assert setup.rc == 0, setup.stderr
    yield converged
    converged.run("rm -f /usr/local/bin/mokutil /var/lib/dkms/mok.pub")
    fake_reboot(converged)


def test_module_mismatch_under_secure_boot_stops_with_enrolment_steps(secure_boot_without_enrolled_key):
    host = secure_boot_without_enrolled_key
    before = packages(host)
    run = run_playbook("driver.yml", CONVERGED, {"nvidia_driver_reboot": True})
    name, result = run.failure
    assert name == "Stop where the host must not or cannot be rebooted by Ansible"
    message = result["msg"]
    # The decision: nothing was installed, but the loaded module differs from the package.
    assert "the loaded kernel module is 555.42.06, the installed driver is 580.95.05" in message
    # The stop: rebooting would bring the host up without a driver.
    assert "/var/lib/dkms/mok.pub is not enrolled" in message
    assert "sudo mokutil --import /var/lib/dkms/mok.pub" in message
    assert not run.ran("Reboot to load the NVIDIA driver")
    assert packages(host) == before
    assert "the loaded kernel module is 555.42.06" in host.file(REBOOT_RECORD).content_string


# ---- moving the branch on purpose, and what unattended upgrades see then ---------------------------------


def test_branch_change_moves_the_driver_and_the_hold(converged):
    run = run_playbook("driver.yml", CONVERGED, {"nvidia_driver_branch": 560})
    name, result = run.failure
    assert name == "Stop where the host must not or cannot be rebooted by Ansible"
    assert "needs a reboot to load the NVIDIA driver 560.35.03" in result["msg"]
    assert "nvidia-driver-560 was installed or upgraded in this run" in result["msg"]
    assert "the loaded kernel module is 580.95.05, the installed driver is 560.35.03" in result["msg"]

    now_installed = installed(converged)
    assert now_installed >= BRANCH_560
    assert not BRANCH_580 & now_installed
    assert held(converged) == BRANCH_560
    assert "560.35.03" in converged.file(REBOOT_RECORD).content_string

    # The reboot loads the 560 module; the role then finishes, and NVML answers with the new driver.
    assert fake_reboot(converged) == "changed"
    run = run_playbook("driver.yml", CONVERGED, {"nvidia_driver_branch": 560})
    assert not run.failed, run.failure
    gpu = run.result("Read the GPUs and the driver they answer with, requiring the expected GPU count")
    assert gpu["ansible_facts"]["llmfleet_gpu"]["driver_version"] == "560.35.03"
    assert gpu["ansible_facts"]["llmfleet_gpu"]["gpu_count"] == 2
    assert not converged.file(REBOOT_RECORD).exists


def test_hold_keeps_a_newer_point_release_out(converged):
    switched = converged.run("ln -sfn %s/channels/point-release %s/current && apt-get update -qq" % (SERVED, SERVED))
    assert switched.rc == 0, switched.stderr
    assert "Candidate: 560.35.05-1" in converged.run("apt-cache policy nvidia-driver-560").stdout
    # What unattended-upgrades does with the archive's updates.
    upgrade = converged.run("DEBIAN_FRONTEND=noninteractive apt-get -y upgrade")
    assert upgrade.rc == 0, upgrade.stderr
    state = packages(converged)
    for name in BRANCH_560:
        assert state[name] == ("hi", "560.35.03-1"), (name, state[name])
