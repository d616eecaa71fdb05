# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A stand-in for the part of torch that p2p_measure uses: CUDA devices, streams, events and copies.

Copies take the time their size and a configured rate give, on a clock of their own, with the stream
semantics of torch's cross-device copy (aten/src/ATen/native/cuda/Copy.cu): a copy between GPUs runs on the
source GPU's current stream after a barrier with the destination GPU's current stream, which then waits for
the copy. So two opposite copies overlap only when each has streams of its own, as on real GPUs.

Configured by a dict (``configure``) or, on import, from the environment, so a process that puts
``tests/fake_torch`` on PYTHONPATH gets it instead of torch:

- ``FAKE_TORCH_IMPORT_ERROR``: ``ImportError`` or another exception name, raised by ``import torch``;
- ``FAKE_TORCH_CONFIG``: JSON with ``gpus`` (list of ``{name, bus_id, uuid, free_mib, total_mib}``),
  ``cuda`` (false: a CPU build), ``within_gbps``, ``pair_gbps`` (GB/s of one copy), ``peer`` (can one GPU map
  the other's memory), ``corrupt_pairs`` (copies between them arrive altered), ``error_pairs`` (copies between
  them raise a CUDA error), ``hang_seconds`` (a copy between
  GPUs blocks the host that long, in real time), ``real_time`` (synchronizing sleeps until the copies are done,
  so a wall clock sees them).
"""

import contextlib
import json
import os
import time

__version__ = "0.0.0+fake"

_IMPORT_ERROR = os.environ.get("FAKE_TORCH_IMPORT_ERROR")
if _IMPORT_ERROR:
    raise (ImportError if _IMPORT_ERROR == "ImportError" else RuntimeError)(
        "fake torch: import fails (%s)" % _IMPORT_ERROR)

uint8 = "uint8"
MIB = 1024 * 1024


class version:  # noqa: N801  (torch.version is a module)
    cuda = "12.8"


class _Properties:
    def __init__(self, description):
        self.name = description.get("name", "NVIDIA Fake GPU")
        self.total_memory = description.get("total_mib", 24576) * MIB
        self.uuid = description.get("uuid")
        bus = description.get("bus_id")
        if bus:
            domain, bus_number, rest = bus.split(":")
            self.pci_domain_id = int(domain, 16)
            self.pci_bus_id = int(bus_number, 16)
            self.pci_device_id = int(rest.split(".")[0], 16)


class _Backend:
    def __init__(self, config):
        self.config = config
        self.gpus = config.get("gpus", [{}])
        self.real_time = bool(config.get("real_time"))
        self.host = time.perf_counter() if self.real_time else 0.0
        self.streams = {index: [] for index in range(len(self.gpus))}
        self.default = {index: Stream(index, backend=self) for index in range(len(self.gpus))}
        self.current = dict(self.default)
        self.copies = []  # (source device, destination device, stream, start, end) of every copy

    def now(self):
        if self.real_time:
            self.host = max(self.host, time.perf_counter())
        return self.host

    def wait_until(self, moment):
        if self.real_time:
            delay = moment - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        self.host = max(self.host, moment)

    def rate(self, source, destination):
        key = "within_gbps" if source == destination else "pair_gbps"
        return float(self.config.get(key, 1000.0 if source == destination else 50.0)) * 1e9

    def copy(self, destination, source):
        source_device, destination_device = source.device, destination.device
        stream = self.current[source_device]
        start = max(self.now(), stream.time)
        pair = sorted((source_device, destination_device))
        if pair in [sorted(item) for item in self.config.get("error_pairs", [])]:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if source_device != destination_device:
            start = max(start, self.current[destination_device].time)
            hang = self.config.get("hang_seconds")
            if hang:
                time.sleep(hang)
        stream.time = start + source.nbytes / self.rate(source_device, destination_device)
        if source_device != destination_device:
            partner = self.current[destination_device]
            partner.time = max(partner.time, stream.time)
        self.copies.append((source_device, destination_device, stream, start, stream.time))
        corrupt = [sorted(item) for item in self.config.get("corrupt_pairs", [])]
        destination.content = "garbage" if pair in corrupt else source.content


class _Current:
    backend = None


def configure(config):
    """Start afresh with `config`; returns the backend, whose `copies` tests can inspect."""
    _Current.backend = _Backend(config)
    return _Current.backend


class Stream:
    def __init__(self, device=None, backend=None):
        self.backend = backend or _Current.backend
        self.device = self.backend.current_device_index() if device is None else device
        self.time = self.backend.host
        self.backend.streams[self.device].append(self)


class Event:
    def __init__(self, enable_timing=False):
        self.enable_timing = enable_timing
        self.time = None

    def record(self, stream=None):
        stream = stream or cuda.current_stream()
        self.time = max(stream.time, _Current.backend.now())

    def synchronize(self):
        _Current.backend.wait_until(self.time)

    def elapsed_time(self, end):
        return (end.time - self.time) * 1000.0


class Tensor:
    def __init__(self, device, nbytes, content):
        self.device = device
        self.nbytes = nbytes
        self.content = content

    def repeat(self, times):
        return Tensor(self.device, self.nbytes * times, self.content)

    def __getitem__(self, item):
        return Tensor(self.device, len(range(self.nbytes)[item]), self.content)

    def zero_(self):
        self.content = "zeros"
        return self

    def fill_(self, value):
        self.content = "filled with %s" % value
        return self

    def copy_(self, source, non_blocking=False):
        _Current.backend.copy(self, source)
        return self


def arange(count, dtype=None, device=None):
    return Tensor(device, count, "pattern")


def zeros(count, dtype=None, device=None):
    return Tensor(device, count, "zeros")


def empty(count, dtype=None, device=None):
    return Tensor(device, count, "undefined")


def empty_like(tensor):
    return Tensor(tensor.device, tensor.nbytes, "undefined")


def equal(first, second):
    return first.nbytes == second.nbytes and first.content == second.content


class _Cuda:
    Stream = Stream
    Event = Event

    @staticmethod
    def is_available():
        return bool(_Current.backend.config.get("cuda", True))

    @staticmethod
    def device_count():
        return len(_Current.backend.gpus) if _Current.backend.config.get("cuda", True) else 0

    @staticmethod
    def get_device_properties(index):
        return _Properties(_Current.backend.gpus[index])

    @staticmethod
    def mem_get_info(index):
        description = _Current.backend.gpus[index]
        total = description.get("total_mib", 24576) * MIB
        return description.get("free_mib", total // MIB - 300) * MIB, total

    @staticmethod
    def current_stream(device=None):
        return _Current.backend.current[0 if device is None else device]

    @staticmethod
    @contextlib.contextmanager
    def stream(stream):
        previous = _Current.backend.current[stream.device]
        _Current.backend.current[stream.device] = stream
        try:
            yield
        finally:
            _Current.backend.current[stream.device] = previous

    @staticmethod
    def synchronize(device=None):
        streams = _Current.backend.streams[0 if device is None else device]
        _Current.backend.wait_until(max([_Current.backend.now()] + [stream.time for stream in streams]))

    @staticmethod
    def can_device_access_peer(source, destination):
        return bool(_Current.backend.config.get("peer", True))


cuda = _Cuda()
_Backend.current_device_index = lambda self: 0
configure(json.loads(os.environ.get("FAKE_TORCH_CONFIG", "{}")))
