"""Time the gate modules' NVML reads against the nvidia-smi calls that give the same figures.

Usage: bench_nvml_vs_smi.py [RUNS]   (needs nvidia-smi, pynvml, ansible-core importable, and the
collection importable as ansible_collections.llmfleet.workstation, as check_gates.sh arranges)
Times the modules' work functions directly (no Ansible overhead), the nvidia-smi calls, and, for
reference, each module run once through `ansible localhost -m` (ANSIBLE_RUNS times, default 1).
Prints medians and the ratio, and a JSON line for the docs.
"""

import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import pynvml

from ansible_collections.llmfleet.workstation.plugins.module_utils.nvml import NvmlSession
from ansible_collections.llmfleet.workstation.plugins.modules import gpu_facts, gpu_junction_temp, nvlink_status

SMI_COMMANDS = (
    ["nvidia-smi", "--query-gpu=index,name,uuid,pci.bus_id,driver_version,memory.total,temperature.gpu,"
     "temperature.memory,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max,"
     "persistence_mode,power.draw,power.limit,fan.speed", "--format=csv,noheader,nounits"],
    ["nvidia-smi", "nvlink", "--status"],
    ["nvidia-smi", "nvlink", "-e"],
    ["nvidia-smi", "topo", "-m"],
    ["nvidia-smi", "topo", "-p2p", "n"],
)
THERMAL_DEFAULTS = {"max_core_temp_c": 85, "max_memory_temp_c": 100, "memory_temp_unavailable": "ignore",
                    "fail_on_thermal_throttle": True, "wait_for_cooldown": False, "cooldown_timeout": 0,
                    "poll_interval": 1}
NVLINK_DEFAULTS = {"expected_gpu_count": None, "min_active_links": None, "require_nvlink": True,
                   "require_p2p": True, "fail_on_errors": False}


def module_reads():
    """What the three modules read, in one NVML session each, as the gpu_gates role runs them."""
    with NvmlSession() as session:
        gpu_facts.run({"expected_gpu_count": None}, session)
    with NvmlSession() as session:
        nvlink_status.run(NVLINK_DEFAULTS, session)
    with NvmlSession() as session:
        gpu_junction_temp.run(THERMAL_DEFAULTS, session)


def module_reads_one_session():
    """The same reads in a single session: shows how much of the time is NVML's own start-up."""
    with NvmlSession() as session:
        gpu_facts.run({"expected_gpu_count": None}, session)
        nvlink_status.run(NVLINK_DEFAULTS, session)
        gpu_junction_temp.run(THERMAL_DEFAULTS, session)


def smi_reads():
    for command in SMI_COMMANDS:
        subprocess.run(command, capture_output=True, check=False)


def ansible_run(module):
    """One `ansible localhost -m llmfleet.workstation.<module>` run, as an operator would start it."""
    subprocess.run(
        ["ansible", "localhost", "-c", "local", "-o", "-e", "ansible_python_interpreter=%s" % sys.executable,
         "-m", "llmfleet.workstation.%s" % module],
        capture_output=True, check=False,
    )


def timed(function, runs):
    samples = []
    for _run in range(runs):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return samples


def profile_calls():
    """Time every pynvml call one session makes; returns {function: (calls, total ms)}."""
    totals = collections.defaultdict(lambda: [0, 0.0])
    originals = {name: getattr(pynvml, name) for name in dir(pynvml)
                 if name.startswith("nvml") and callable(getattr(pynvml, name))}

    def timed_call(name, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[name][0] += 1
                totals[name][1] += (time.perf_counter() - started) * 1000
        return wrapper

    for name, function in originals.items():
        setattr(pynvml, name, timed_call(name, function))
    try:
        module_reads_one_session()
    finally:
        for name, function in originals.items():
            setattr(pynvml, name, function)
    return {name: (calls, round(total, 2)) for name, (calls, total) in
            sorted(totals.items(), key=lambda item: -item[1][1])}


def main(runs):
    module_reads()  # warm the library load, as a long-running play would have
    nvml = timed(module_reads, runs)
    one_session = timed(module_reads_one_session, runs)
    smi = timed(smi_reads, runs)
    result = {
        "runs": runs,
        "nvml_median_ms": round(statistics.median(nvml) * 1000, 1),
        "nvml_min_ms": round(min(nvml) * 1000, 1),
        "nvml_one_session_median_ms": round(statistics.median(one_session) * 1000, 1),
        "nvidia_smi_median_ms": round(statistics.median(smi) * 1000, 1),
        "nvidia_smi_min_ms": round(min(smi) * 1000, 1),
    }
    result["ratio"] = round(result["nvidia_smi_median_ms"] / result["nvml_median_ms"], 1)
    if shutil.which("ansible") and os.environ.get("ANSIBLE_COLLECTIONS_PATH"):
        ansible_runs = int(os.environ.get("ANSIBLE_RUNS", "1"))
        for module in ("gpu_facts", "nvlink_status", "gpu_junction_temp"):
            samples = timed(lambda module=module: ansible_run(module), ansible_runs)
            result["ansible_%s_ms" % module] = round(statistics.median(samples) * 1000, 1)
    else:
        print("(no ansible on PATH or no ANSIBLE_COLLECTIONS_PATH: the full-module reference run is skipped)")
    print("NVML in one session: median %.1f ms" % result["nvml_one_session_median_ms"])
    print("NVML (three modules' reads): median %.1f ms; nvidia-smi (%d calls, same figures): median %.1f ms; "
          "nvidia-smi takes %.1fx as long" % (result["nvml_median_ms"], len(SMI_COMMANDS),
                                              result["nvidia_smi_median_ms"], result["ratio"]))
    for module in ("gpu_facts", "nvlink_status", "gpu_junction_temp"):
        if "ansible_%s_ms" % module in result:
            print("ansible localhost -m %s (Ansible start-up included): %.0f ms"
                  % (module, result["ansible_%s_ms" % module]))
    print(json.dumps(result))
    print("Where one session's time goes (calls, ms):")
    for name, (calls, total) in list(profile_calls().items())[:12]:
        print("  %-45s %4d calls %8.1f ms" % (name, calls, total))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
