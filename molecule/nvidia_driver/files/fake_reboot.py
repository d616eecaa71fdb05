"""Do to a test target what a reboot does to a workstation with the fake NVIDIA packages installed.

At boot the kernel loads the DKMS-built module of the installed driver (/usr/src/nvidia-<version>/dkms.conf), which
then reports itself in /proc/driver/nvidia/version; NVML answers with that driver's version. This writes the report
in the kernel's format to the file the role reads (nvidia_driver_loaded_version_file) and the driver's NVML answers
into the fake NVML scenario. With no driver installed, no module loads and the report is removed.

Run as: python3 llmfleet-fake-reboot.py [LOADED_REPORT]. Prints "changed" or "unchanged", so a playbook can tell.
"""

import glob
import json
import os
import re
import sys

LOADED_REPORT = sys.argv[1] if len(sys.argv) > 1 else "/run/llmfleet-fake/nvidia-version"
NVML_SCENARIO = "/etc/fake-nvml/scenario.json"
NVML_ANSWERS = "/usr/share/llmfleet-fake-nvidia/nvml.json"
REPORTS = {
    "proprietary": "NVRM version: NVIDIA UNIX x86_64 Kernel Module  {version}  Thu Aug 22 17:01:53 UTC 2024\n",
    "open": (
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {version}  Release Build  "
        "(dvs-builder@U16-I3-B03-4-3)  Thu Aug 22 17:01:53 UTC 2024\n"
    ),
}
GCC_LINE = "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"


def installed_module() -> "tuple[str, str] | None":
    """Version and flavour of the DKMS module source the installed driver ships, if any."""
    configs = sorted(glob.glob("/usr/src/nvidia-*/dkms.conf"))
    if not configs:
        return None
    if len(configs) > 1:
        sys.exit("more than one NVIDIA DKMS module installed: %s" % ", ".join(configs))
    with open(configs[0]) as handle:
        text = handle.read()
    version = re.search(r'^PACKAGE_VERSION="([^"]+)"', text, re.MULTILINE).group(1)
    flavor = "open" if 'LLMFLEET_FAKE_FLAVOR="open"' in text else "proprietary"
    return version, flavor


def write_if_different(path: str, text: "str | None") -> bool:
    """Make the file hold text (or not exist for None); True when that changed it."""
    current = None
    if os.path.exists(path):
        with open(path) as handle:
            current = handle.read()
    if current == text:
        return False
    if text is None:
        os.remove(path)
        return True
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    return True


def main() -> None:
    module = installed_module()
    report = REPORTS[module[1]].format(version=module[0]) + GCC_LINE if module else None
    changed = write_if_different(LOADED_REPORT, report)

    if module and os.path.exists(NVML_ANSWERS) and os.path.exists(NVML_SCENARIO):
        with open(NVML_SCENARIO) as handle:
            scenario = json.load(handle)
        with open(NVML_ANSWERS) as handle:
            answers = json.load(handle)
        if any(scenario.get(key) != value for key, value in answers.items()):
            scenario.update(answers)
            changed |= write_if_different(NVML_SCENARIO, json.dumps(scenario, indent=2) + "\n")
    print("changed" if changed else "unchanged")


if __name__ == "__main__":
    main()
