"""Shared fixtures: the collection on sys.path, and pynvml mocked function by function.

`fake_nvml` replaces the pynvml functions our code calls with small Python functions that answer
from a description of GPUs and raise pynvml's own NVMLError subclasses where real NVML would
(NotSupported, InvalidArgument past the last link, DriverNotLoaded, ...).
"""

import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINK_PARTS = ("ansible_collections", "llmfleet", "workstation")


def _link_collection(root):
    """Make root/ansible_collections/llmfleet/workstation a symlink to this checkout; False if it can't."""
    link = root.joinpath(*LINK_PARTS)
    if link.is_symlink() and link.resolve() == REPO:
        return True
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()  # stale: points at another checkout, or at nothing
        os.symlink(str(REPO), str(link))
    except FileExistsError:
        pass  # a parallel run made it first, or something that is not our link is there: checked below
    except OSError:
        return False
    return link.is_symlink() and link.resolve() == REPO


def _collection_root():
    """A directory holding ansible_collections/llmfleet/workstation -> this checkout.

    .cache/collections (ignored by git, and the ANSIBLE_COLLECTIONS_PATH the Makefile uses), or a
    temporary directory when .cache is read-only or holds something else there.
    """
    root = REPO / ".cache" / "collections"
    if not _link_collection(root):
        root = Path(tempfile.mkdtemp(prefix="llmfleet-collections-"))
        if not _link_collection(root):
            raise RuntimeError("cannot link %s into %s" % (REPO, root))
    return root


sys.path.insert(0, str(_collection_root()))

import pynvml  # noqa: E402  (after the path set-up, like every import of the collection)
from ansible.module_utils import _internal as module_utils_internal  # noqa: E402
from ansible.module_utils.testing import patch_module_args  # noqa: E402

# The first import of controller code (ansible.errors, which every filter raises) flips ansible-core's process-wide
# is_controller switch, after which module.warn() in the module tests goes to the controller's display instead of
# the module result. Import it once here, before any test module, and put the switch back.
_WAS_CONTROLLER = module_utils_internal.is_controller
importlib.import_module("ansible.errors")
module_utils_internal.is_controller = _WAS_CONTROLLER


def nvml_text(value):
    return value.decode() if isinstance(value, bytes) else value


def nvml_error(code):
    """The exception real pynvml raises for an NVML return code (a subclass chosen by code)."""
    return pynvml.NVMLError(code)


class Field:
    def __init__(self, status, value=0):
        self.nvmlReturn = status
        self.value = type("Value", (), {"uiVal": value})()


class Pci:
    def __init__(self, bus_id):
        self.busId = bus_id


class Memory:
    def __init__(self, total_mib, used_mib):
        self.total = total_mib * 1024 * 1024
        self.used = used_mib * 1024 * 1024
        self.free = self.total - self.used


def gpu(name="NVIDIA GeForce RTX 3090", bus_id="00000000:01:00.0", links=None, **overrides):
    """One GPU description; `links` is a list of dicts (state/version/remote/...) or None for no NVLink."""
    description = {
        "name": name,
        "uuid": "GPU-%s" % bus_id.replace(":", "").replace(".", ""),
        "bus_id": bus_id,
        "memory_mib": (24576, 1),
        "pcie": (4, 4, 16, 16),  # current gen, max gen, current width, max width
        "gpu_max_gen": 4,
        "persistence": 1,
        "power_mw": {"usage": 30000, "enforced": 350000, "default": 350000, "constraints": (100000, 400000)},
        "fan": 30,
        "core_c": 40,
        "memory_c": None,
        "thresholds": {0: 98, 1: 95, 3: 93},
        "reasons": 0x1,
        "links": links,
    }
    description.update(overrides)
    return description


def bridge_links(remote_bus_id, count=4, active=True, version=4, remote_type=0, errors=0):
    return [
        {"active": active, "version": version, "remote": remote_bus_id, "type": remote_type, "p2p": 1 if active else 0,
         "errors": errors}
        for _link in range(count)
    ]


def dual_3090(active=True, **overrides):
    return [
        gpu(bus_id="00000000:01:00.0", links=bridge_links("00000000:21:00.0", active=active), **overrides),
        gpu(bus_id="00000000:21:00.0", links=bridge_links("00000000:01:00.0", active=active), **overrides),
    ]


# pynvml's NVLink error-counter field ids -> (link, nvmlNvLinkErrorCounter_t), written out from nvml.h's names.
NVLINK_ERROR_FIELDS = {
    getattr(pynvml, "NVML_FI_DEV_NVLINK_%s_ERROR_COUNT_L%d" % (name, link)): (link, counter)
    for name, counter in (("REPLAY", 0), ("RECOVERY", 1), ("CRC_FLIT", 2), ("CRC_DATA", 3))
    for link in range(12)
}


class FakeNvml:
    """Installs function-level replacements for pynvml's API on the real pynvml module."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.gpus = []
        self.p2p = {}  # (i, j) -> status code for the NVLink caps index
        self.topology = {}
        self.init_error = None
        self.driver = "560.35.03"
        self.cuda = 12060
        self.calls = []
        self.link_calls = []  # (function, GPU index, link) for every NVLink call
        self.field_calls = []  # (GPU index, field ids) for every nvmlDeviceGetFieldValues call
        self.shutdowns = 0

    def handle(self, index):
        return ("handle", index)

    def _gpu(self, handle):
        return self.gpus[handle[1]]

    def install(self, gpus, **settings):
        self.gpus = gpus
        self.link_calls = []
        self.field_calls = []
        for key, value in settings.items():
            setattr(self, key, value)
        patch = self.monkeypatch.setattr
        patch(pynvml, "nvmlInit", self.init)
        patch(pynvml, "nvmlShutdown", self.shutdown)
        patch(pynvml, "nvmlSystemGetDriverVersion", self.system_reader(lambda: self.driver))
        patch(pynvml, "nvmlSystemGetCudaDriverVersion", self.system_reader(lambda: self.cuda))
        patch(pynvml, "nvmlSystemGetNVMLVersion", self.system_reader(lambda: "12.%s" % nvml_text(self.driver)))
        patch(pynvml, "nvmlDeviceGetCount", lambda: len(self.gpus))
        patch(pynvml, "nvmlDeviceGetHandleByIndex", self.get_handle)
        for name, reader in {
            "nvmlDeviceGetName": lambda g: g["name"],
            "nvmlDeviceGetUUID": lambda g: g["uuid"],
            "nvmlDeviceGetPciInfo": lambda g: Pci(g["bus_id"]),
            "nvmlDeviceGetMemoryInfo": lambda g: Memory(*g["memory_mib"]),
            "nvmlDeviceGetPersistenceMode": lambda g: g["persistence"],
            "nvmlDeviceGetCurrPcieLinkGeneration": lambda g: g["pcie"][0],
            "nvmlDeviceGetMaxPcieLinkGeneration": lambda g: g["pcie"][1],
            "nvmlDeviceGetCurrPcieLinkWidth": lambda g: g["pcie"][2],
            "nvmlDeviceGetMaxPcieLinkWidth": lambda g: g["pcie"][3],
            "nvmlDeviceGetGpuMaxPcieLinkGeneration": lambda g: g["gpu_max_gen"],
            "nvmlDeviceGetPowerUsage": lambda g: g["power_mw"]["usage"],
            "nvmlDeviceGetEnforcedPowerLimit": lambda g: g["power_mw"]["enforced"],
            "nvmlDeviceGetPowerManagementDefaultLimit": lambda g: g["power_mw"]["default"],
            "nvmlDeviceGetPowerManagementLimitConstraints": lambda g: g["power_mw"]["constraints"],
            "nvmlDeviceGetFanSpeed": lambda g: g["fan"],
            "nvmlDeviceGetCurrentClocksEventReasons": lambda g: g["reasons"],
        }.items():
            patch(pynvml, name, self.device_reader(name, reader))
        patch(pynvml, "nvmlDeviceGetTemperature", self.device_reader("temp", lambda g: g["core_c"]))
        patch(pynvml, "nvmlDeviceGetTemperatureThreshold", self.threshold)
        patch(pynvml, "nvmlDeviceGetFieldValues", self.field_values)
        for name, reader in {
            "nvmlDeviceGetNvLinkState": lambda link, *_: 1 if link["active"] else 0,
            "nvmlDeviceGetNvLinkVersion": lambda link, *_: link["version"],
            "nvmlDeviceGetNvLinkRemotePciInfo": lambda link, *_: Pci(link["remote"]),
            "nvmlDeviceGetNvLinkRemoteDeviceType": lambda link, *_: link["type"],
            "nvmlDeviceGetNvLinkCapability": lambda link, *_: link["p2p"],
            "nvmlDeviceGetNvLinkErrorCounter": self.error_counter,
        }.items():
            patch(pynvml, name, self.link_reader(name, reader))
        patch(pynvml, "nvmlDeviceGetP2PStatus", self.p2p_status)
        patch(pynvml, "nvmlDeviceGetTopologyCommonAncestor", self.common_ancestor)
        return self

    # ---- replacements ----
    def init(self):
        self.calls.append("init")
        if self.init_error is not None:
            raise nvml_error(self.init_error)

    def shutdown(self):
        self.shutdowns += 1

    @staticmethod
    def system_reader(reader):
        def read():
            value = reader()
            if value is None:
                raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return value
        return read

    def get_handle(self, index):
        if index >= len(self.gpus):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.handle(index)

    def device_reader(self, name, reader):
        def read(handle, *args):
            value = reader(self._gpu(handle))
            if callable(value):  # a reading that changes over time (see the cooldown tests)
                value = value()
            if isinstance(value, Exception):
                raise value
            if value is None:
                raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return value
        return read

    def threshold(self, handle, kind):
        value = self._gpu(handle)["thresholds"].get(kind)
        if value is None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return value

    def field_values(self, handle, field_ids):
        """Memory temperature, and the NVLink error-counter fields of links 0-11 (from each link's "errors",
        unless the GPU description says "error_fields": False, as on a driver that does not serve them)."""
        self.field_calls.append((handle[1], list(field_ids)))
        return [self.field(self._gpu(handle), field_id) for field_id in field_ids]

    @staticmethod
    def field(card, field_id):
        # Real NVML: the call succeeds and reports NotSupported inside each field it cannot read.
        if field_id == pynvml.NVML_FI_DEV_MEMORY_TEMP:
            value = card["memory_c"]
            if value is None:
                return Field(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return Field(pynvml.NVML_SUCCESS, value() if callable(value) else value)
        link, counter = NVLINK_ERROR_FIELDS[field_id]
        links = card["links"]
        if not card.get("error_fields", True) or links is None:
            return Field(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if link >= len(links):
            return Field(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        value = FakeNvml.error_counter(links[link], counter)
        if value is None:
            return Field(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return Field(pynvml.NVML_SUCCESS, value)

    def link_reader(self, name, reader):
        def read(handle, link, *args):
            self.link_calls.append((name, handle[1], link))
            links = self._gpu(handle)["links"]
            if links is None:
                raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
            if link >= len(links):
                raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            value = reader(links[link], *args)
            if value is None:
                raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return value
        return read

    @staticmethod
    def error_counter(link, counter=0):
        return link["errors"] if link["errors"] is None or isinstance(link["errors"], int) else link["errors"][counter]

    def p2p_status(self, first, second, index):
        assert index == pynvml.NVML_P2P_CAPS_INDEX_NVLINK
        pair = tuple(sorted((first[1], second[1])))
        default = 0 if all(self.gpus[i]["links"] and self.gpus[i]["links"][0]["active"] for i in pair) else 5
        return self.p2p.get(pair, default)

    def common_ancestor(self, first, second):
        return self.topology.get(tuple(sorted((first[1], second[1]))), pynvml.NVML_TOPOLOGY_HOSTBRIDGE)


@pytest.fixture
def fake_nvml(monkeypatch):
    return FakeNvml(monkeypatch)


class ModuleExit(Exception):
    """exit_json/fail_json ended the module; .result holds what it returned."""

    def __init__(self, result):
        super().__init__(result)
        self.result = result


@pytest.fixture
def run_module(capsys):
    """Run a module's main() with args; return its JSON result (exit_json or fail_json)."""

    def run(module, args=None, check_mode=False):
        arguments = dict(args or {})
        if check_mode:
            arguments["_ansible_check_mode"] = True
        with patch_module_args(arguments), pytest.raises(SystemExit):
            module.main()
        return json.loads(capsys.readouterr().out)

    return run


# ---- the fake torch (tests/fake_torch): the CUDA copies of the P2P check without a GPU ------------------------

FAKE_TORCH_DIR = REPO / "tests" / "fake_torch"


def load_fake_torch():
    """A fresh instance of the fake torch module, loaded from its file (never `import torch`, which may be real)."""
    spec = importlib.util.spec_from_file_location("llmfleet_fake_torch", FAKE_TORCH_DIR / "torch" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
