"""nvidia_pci_gpus: NVIDIA display controllers from a sysfs PCI tree, with their families."""

import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.llmfleet.workstation.plugins.modules import nvidia_pci_gpus


def pci_function(root, address, vendor, device, device_class):
    function = root / address
    function.mkdir()
    for name, value in (("vendor", vendor), ("device", device), ("class", device_class)):
        (function / name).write_text("0x%s\n" % value)


@pytest.fixture
def workstation(tmp_path):
    """Two RTX 3090s with their HDMI audio functions, an Intel NIC, and a function whose registers are unreadable."""
    pci_function(tmp_path, "0000:01:00.0", "10de", "2204", "030000")
    pci_function(tmp_path, "0000:01:00.1", "10de", "1aef", "040300")
    pci_function(tmp_path, "0000:21:00.0", "10de", "2204", "030000")
    pci_function(tmp_path, "0000:03:00.0", "8086", "1533", "020000")
    (tmp_path / "0000:04:00.0").mkdir()
    return tmp_path


def test_finds_the_gpus_and_their_family(workstation):
    result = nvidia_pci_gpus.scan(str(workstation))
    assert result == {
        "changed": False,
        "gpu_count": 2,
        "families": ["ampere"],
        "gpus": [
            {"pci_address": "0000:01:00.0", "device_id": "2204", "pci_class": "030000", "family": "ampere"},
            {"pci_address": "0000:21:00.0", "device_id": "2204", "pci_class": "030000", "family": "ampere"},
        ],
    }


def test_data_center_boards_and_unknown_devices(tmp_path):
    pci_function(tmp_path, "0000:18:00.0", "10de", "2335", "030200")  # H200 SXM, a 3D controller
    pci_function(tmp_path, "0000:2a:00.0", "10de", "3340", "030200")  # GB120: not in the table
    result = nvidia_pci_gpus.scan(str(tmp_path))
    assert [(gpu["device_id"], gpu["family"]) for gpu in result["gpus"]] == [("2335", "hopper"), ("3340", None)]
    assert result["families"] == ["hopper"]


def run_module(capsys, **params):
    with patch_module_args(params), pytest.raises(SystemExit):
        nvidia_pci_gpus.main()
    return json.loads(capsys.readouterr().out)


def test_module_reports_without_changing(workstation, capsys):
    result = run_module(capsys, devices_path=str(workstation))
    assert result["changed"] is False
    assert result["gpu_count"] == 2


def test_module_fails_without_a_pci_tree(tmp_path, capsys):
    result = run_module(capsys, devices_path=str(tmp_path / "missing"))
    assert result["failed"]
    assert "no sysfs PCI tree" in result["msg"]
