# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copy bandwidth between GPUs and within each GPU, measured with CUDA through torch.

This file is a script that runs in a child process under the engine venv's interpreter, not inside the gate
module. The gates' venv holds nvidia-ml-py and nothing else, while torch (several GB, tied to the engine's CUDA
build) is already in the engine venv of every serving host; running the copies there measures what the engine
will get, and keeps CUDA contexts and their GPU memory out of the Ansible process, which ends them all when the
child exits. The module (``gpu_p2p_bandwidth``) passes this file's source to ``python -`` on stdin, so nothing is
written on the host and nothing of the collection has to be on the child's ``sys.path``: the script imports only
the standard library and torch, and keeps to Python 3.8.

Output: one line on stdout, ``RESULT_MARKER`` then a JSON object (see ``measure``); progress goes to stderr, so
whoever ends a hung run can say which copy it was in.

Units: decimal GB/s (10**9 bytes per second) of bytes copied. A copy of N bytes in t seconds counts N / t, once,
also within one GPU, where the memory reads N bytes and writes N bytes: the memory traffic of that copy is
2 N / t, which is the figure tools such as nvbandwidth or a STREAM copy often print.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import contextlib
import importlib
import json
import statistics
import sys
import time

RESULT_MARKER = "LLMFLEET_P2P_RESULT"
FORMAT_VERSION = 1
GB = 1000 ** 3
MIB = 1024 * 1024
# Fill pattern period: a prime, so a copy that lands shifted by a power-of-two offset does not match.
PATTERN_PERIOD = 251
# Room left beside the two buffers of each GPU for CUDA's own allocations.
HEADROOM_BYTES = 64 * MIB


def gbps(byte_count, seconds):
    """Decimal GB/s for `byte_count` bytes in `seconds`; None without a positive time."""
    if not seconds or seconds <= 0:
        return None
    return round(byte_count / seconds / GB, 3)


def median_seconds(samples):
    return statistics.median(samples) if samples else None


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="p2p_measure", description="GPU copy bandwidth, within and between GPUs")
    parser.add_argument("--size-mib", type=int, default=256, help="bytes per copy, MiB")
    parser.add_argument("--repetitions", type=int, default=5, help="timed copies per figure (the median is taken)")
    # A few untimed copies first: the first one enables peer access and every one lets idle clocks ramp up.
    parser.add_argument("--warmup", type=int, default=3, help="untimed copies before the timed ones")
    parser.add_argument("--no-pairs", action="store_true", help="measure within each GPU only")
    settings = parser.parse_args(argv)
    if settings.size_mib < 1 or settings.repetitions < 1 or settings.warmup < 0:
        parser.error("--size-mib and --repetitions must be at least 1, --warmup at least 0")
    return settings


def progress(text):
    sys.stderr.write("p2p_measure: %s\n" % text)
    sys.stderr.flush()


def describe_error(error):
    return "%s: %s" % (type(error).__name__, str(error).strip().splitlines()[0] if str(error).strip() else "")


def not_measured(reason, detail, **extra):
    result = {"version": FORMAT_VERSION, "measured": False, "reason": reason, "detail": detail, "gpus": [],
              "pairs": []}
    result.update(extra)
    return result


def pci_bus_id(properties):
    """The GPU's PCI address as NVML writes it ("00000000:18:00.0"), or None where torch does not say."""
    bus = getattr(properties, "pci_bus_id", None)
    if bus is None:
        return None
    return "%08X:%02X:%02X.0" % (getattr(properties, "pci_domain_id", 0) or 0, bus,
                                 getattr(properties, "pci_device_id", 0) or 0)


def device_identity(torch, index):
    properties = torch.cuda.get_device_properties(index)
    uuid = getattr(properties, "uuid", None)
    return {
        "index": index,
        "name": getattr(properties, "name", None),
        "uuid": str(uuid) if uuid is not None else None,
        "pci_bus_id": pci_bus_id(properties),
        "total_bytes": getattr(properties, "total_memory", None),
    }


@contextlib.contextmanager
def on_streams(torch, streams):
    """Make each stream the current one of its device while the block runs.

    torch copies between two GPUs on the source GPU's current stream, after a barrier with the destination GPU's
    current stream, and makes that stream wait for the copy. Two copies in opposite directions therefore run at
    the same time only when each has current streams of its own on both GPUs.
    """
    with contextlib.ExitStack() as stack:
        for stream in streams:
            stack.enter_context(torch.cuda.stream(stream))
        yield


def timed_copy(torch, destination, source, stream):
    """Queue one copy between two CUDA events on `stream`; returns the events."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record(stream)
    destination.copy_(source, non_blocking=True)
    end.record(stream)
    return start, end


def event_seconds(start, end):
    end.synchronize()
    return start.elapsed_time(end) / 1000.0  # milliseconds


class Buffers:
    """Two buffers per GPU: `source` holds the fill pattern, `target` receives copies.

    Every GPU's source holds the same pattern, so a copy into GPU b's target is checked against GPU b's own
    source, without moving data back.
    """

    def __init__(self, torch, device, size_bytes):
        self.torch = torch
        self.device = device
        pattern = torch.arange(PATTERN_PERIOD, dtype=torch.uint8, device=device)
        self.source = pattern.repeat(size_bytes // PATTERN_PERIOD + 1)[:size_bytes]
        self.target = torch.zeros(size_bytes, dtype=torch.uint8, device=device)

    def clear_target(self):
        self.target.zero_()
        self.torch.cuda.synchronize(self.device)

    def target_matches(self):
        return bool(self.torch.equal(self.target, self.source))


def measure_within(torch, buffers, repetitions, warmup):
    """Copy one buffer into the other on the same GPU, timed with CUDA events on one stream."""
    buffers.clear_target()
    stream = torch.cuda.Stream(device=buffers.device)
    samples = []
    with on_streams(torch, [stream]):
        for repetition in range(warmup + repetitions):
            start, end = timed_copy(torch, buffers.target, buffers.source, stream)
            seconds = event_seconds(start, end)
            if repetition >= warmup:
                samples.append(seconds)
    return samples, buffers.target_matches()


def measure_one_way(torch, source, destination, repetitions, warmup):
    """Copy GPU a's source into GPU b's target, timed with CUDA events on the stream the copy runs on."""
    destination.clear_target()
    copy_stream = torch.cuda.Stream(device=source.device)
    partner_stream = torch.cuda.Stream(device=destination.device)
    samples = []
    with on_streams(torch, [copy_stream, partner_stream]):
        for repetition in range(warmup + repetitions):
            start, end = timed_copy(torch, destination.target, source.source, copy_stream)
            seconds = event_seconds(start, end)
            torch.cuda.synchronize(destination.device)
            if repetition >= warmup:
                samples.append(seconds)
    return samples, destination.target_matches()


def measure_both_ways(torch, first, second, repetitions, warmup, *, clock=time.perf_counter):
    """Copy first -> second and second -> first at once; per-direction event times and the wall time of both."""
    first.clear_target()
    second.clear_target()
    # Four streams: each direction has a current stream of its own on both GPUs (see on_streams).
    forward = (torch.cuda.Stream(device=first.device), torch.cuda.Stream(device=second.device))
    backward = (torch.cuda.Stream(device=first.device), torch.cuda.Stream(device=second.device))
    forward_samples, backward_samples, wall_samples = [], [], []
    for repetition in range(warmup + repetitions):
        torch.cuda.synchronize(first.device)
        torch.cuda.synchronize(second.device)
        started = clock()
        with on_streams(torch, forward):
            forward_events = timed_copy(torch, second.target, first.source, forward[0])
        with on_streams(torch, backward):
            backward_events = timed_copy(torch, first.target, second.source, backward[1])
        forward_seconds = event_seconds(*forward_events)
        backward_seconds = event_seconds(*backward_events)
        torch.cuda.synchronize(first.device)
        torch.cuda.synchronize(second.device)
        wall = clock() - started
        if repetition >= warmup:
            forward_samples.append(forward_seconds)
            backward_samples.append(backward_seconds)
            wall_samples.append(wall)
    return forward_samples, backward_samples, wall_samples, first.target_matches() and second.target_matches()


def gpu_entry(identity, size_bytes, samples=None, data_ok=None, *, reason=None, error=None):
    """One GPU's within-GPU figure: copy GB/s (bytes copied) and memory traffic GB/s (read + write)."""
    copy_seconds = median_seconds(samples or [])
    copy_gbps = gbps(size_bytes, copy_seconds)
    entry = dict(identity)
    entry.update(
        status="measured" if copy_gbps is not None and error is None else ("error" if error else "not_measured"),
        reason=reason,
        error=error,
        samples_seconds=[round(value, 9) for value in samples or []],
        copy_gbps=copy_gbps,
        memory_traffic_gbps=None if copy_gbps is None else round(2 * copy_gbps, 3),
        data_ok=data_ok,
    )
    return entry


def peer_access(torch, source, destination):
    """Whether CUDA can map one GPU's memory into the other (P2P); None where asking fails."""
    try:
        return bool(torch.cuda.can_device_access_peer(source, destination))
    except Exception:  # a CUDA error earlier in this pair leaves nothing to ask: unknown, not false
        return None


def pair_entry(torch, first, second, size_bytes, *, one_way, both_ways, wall, data_ok, error=None, reason=None):
    """One GPU pair: each direction alone and both at once.

    `one_way` and `both_ways` hold the samples of (first -> second, second -> first), timed alone and at once.
    """
    directions = []
    for source, destination, alone, at_once in ((first, second, one_way[0], both_ways[0]),
                                                (second, first, one_way[1], both_ways[1])):
        directions.append({
            "source": source,
            "destination": destination,
            "peer_access": peer_access(torch, source, destination),
            "unidirectional_samples_seconds": [round(value, 9) for value in alone],
            "unidirectional_gbps": gbps(size_bytes, median_seconds(alone)),
            "bidirectional_samples_seconds": [round(value, 9) for value in at_once],
            "bidirectional_gbps": gbps(size_bytes, median_seconds(at_once)),
        })
    measured = error is None and reason is None and all(
        direction["unidirectional_gbps"] is not None and direction["bidirectional_gbps"] is not None
        for direction in directions)
    return {
        "gpus": [first, second],
        "status": "measured" if measured else ("error" if error else "not_measured"),
        "reason": reason,
        "error": error,
        "directions": directions,
        "bidirectional_wall_samples_seconds": [round(value, 9) for value in wall],
        # Both directions' bytes over the wall time they took together (host overhead included, so slightly low).
        "bidirectional_total_gbps": gbps(2 * size_bytes, median_seconds(wall)),
        "data_ok": data_ok,
    }


def measure_pair(torch, first, second, *, size_bytes, repetitions, warmup, clock=time.perf_counter):
    progress("GPU %d <-> GPU %d" % (first.device, second.device))
    try:
        forward_one = measure_one_way(torch, first, second, repetitions, warmup)
        backward_one = measure_one_way(torch, second, first, repetitions, warmup)
        forward_both, backward_both, wall, both_ok = measure_both_ways(torch, first, second, repetitions, warmup,
                                                                       clock=clock)
    except Exception as error:  # a CUDA error on one pair is that pair's result, the others still run
        return pair_entry(torch, first.device, second.device, size_bytes, one_way=([], []), both_ways=([], []),
                          wall=[], data_ok=None, error=describe_error(error))
    return pair_entry(torch, first.device, second.device, size_bytes, one_way=(forward_one[0], backward_one[0]),
                      both_ways=(forward_both, backward_both), wall=wall,
                      data_ok=forward_one[1] and backward_one[1] and both_ok)


def measure(torch, settings, clock=time.perf_counter):
    """Every GPU's within-GPU copy, then every pair; a dict ready for JSON. `clock` times both directions at once."""
    size_bytes = settings.size_mib * MIB
    count = torch.cuda.device_count()
    base = {
        "torch_version": getattr(torch, "__version__", None),
        "cuda_version": getattr(getattr(torch, "version", None), "cuda", None),
        "device_count": count,
        "size_bytes": size_bytes,
        "repetitions": settings.repetitions,
        "warmup": settings.warmup,
    }
    if not count:
        return not_measured("no_gpu", "torch sees no CUDA device (CUDA_VISIBLE_DEVICES?)", **base)
    gpus, buffers = [], {}
    for index in range(count):
        identity = device_identity(torch, index)
        progress("GPU %d within-GPU copy" % index)
        try:
            free_bytes = torch.cuda.mem_get_info(index)[0]
            needed = 2 * size_bytes + HEADROOM_BYTES
            if free_bytes < needed:
                gpus.append(gpu_entry(identity, size_bytes, reason="insufficient_memory", error=None))
                gpus[-1]["detail"] = ("%d MiB free, %d MiB needed (is the engine running on it?)"
                                      % (free_bytes // MIB, needed // MIB))
                continue
            buffers[index] = Buffers(torch, index, size_bytes)
            samples, data_ok = measure_within(torch, buffers[index], settings.repetitions, settings.warmup)
        except Exception as error:  # one GPU's failure is its own result; the others still run
            gpus.append(gpu_entry(identity, size_bytes, error=describe_error(error)))
            buffers.pop(index, None)
            continue
        gpus.append(gpu_entry(identity, size_bytes, samples, data_ok))
    pairs = []
    for first in range(count):
        for second in range(first + 1, count):
            if settings.no_pairs:
                continue
            if first not in buffers or second not in buffers:
                pairs.append(pair_entry(torch, first, second, size_bytes, one_way=([], []), both_ways=([], []),
                                        wall=[], data_ok=None, reason="gpu_not_measured"))
                continue
            pairs.append(measure_pair(torch, buffers[first], buffers[second], size_bytes=size_bytes,
                                      repetitions=settings.repetitions, warmup=settings.warmup, clock=clock))
    result = {"version": FORMAT_VERSION, "measured": True, "reason": None, "detail": None, "gpus": gpus,
              "pairs": pairs}
    result.update(base)
    return result


def import_torch():
    # The engine venv's torch; absent from the gates venv, hence the child process.
    return importlib.import_module("torch")


def run(argv, importer=import_torch, clock=time.perf_counter):
    """Measure, or say why not; never raises for a missing torch or CUDA."""
    settings = parse_args(argv)
    started = clock()
    try:
        torch = importer()
    except ImportError as error:
        detail = "torch is not installed for %s (%s)" % (sys.executable, describe_error(error))
        return not_measured("torch_missing", detail)
    except Exception as error:  # a torch that is there but does not load (a broken CUDA library, say)
        detail = "torch does not load under %s: %s" % (sys.executable, describe_error(error))
        return not_measured("torch_unusable", detail)
    try:
        available = torch.cuda.is_available()
    except Exception as error:
        available, reason = False, describe_error(error)
    else:
        reason = "torch.cuda.is_available() is false"
    if not available:
        return not_measured("cuda_unavailable", "%s (torch %s, built for CUDA %s)"
                            % (reason, getattr(torch, "__version__", "?"),
                               getattr(getattr(torch, "version", None), "cuda", None) or "none: a CPU build"))
    result = measure(torch, settings, clock)
    result["elapsed_seconds"] = round(clock() - started, 3)
    return result


def main(argv=None):
    """Print the one result line; the exit status is 0 whatever was measured (the result says what)."""
    result = run(sys.argv[1:] if argv is None else argv)
    sys.stdout.write("%s %s\n" % (RESULT_MARKER, json.dumps(result, sort_keys=True)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
