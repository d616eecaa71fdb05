# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run vLLM's CUDA build with each unit run_engine_plan.yml rendered, and record plan against engine.

    python3 tests/hardware/check_engine.py WORK OUT --tokenizer DIR [--deadline SECONDS] [--benchmark CASE]

For each case (in engine_cases.yml's priority order, skipping cases this machine already ran) the unit's own
ExecStart arguments start the engine, with three changes: the model directory holds the same config.json and a
stand-in tokenizer (weights come from --load-format dummy: random values of the checkpoint's exact shapes), the
server listens on 127.0.0.1, and a smaller card's budget is given as --gpu-memory-utilization = the plan's budget
for that card / this GPU's CUDA total. The engine's own accounting (its log, parsed by the collection's
module_utils/vllm_engine.py, the same code the role uses) is saved beside the plan as one JSON line per case in
OUT/engine_results.jsonl, with its key log lines in OUT/engine_logs.txt. Stops starting cases when fewer than
--case-seconds remain before --deadline.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
spec = importlib.util.spec_from_file_location("vllm_engine", REPO / "plugins/module_utils/vllm_engine.py")
vllm_engine = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vllm_engine)

PORT = 8000
KEY_LINES = ("Model loading took", "Available KV cache memory", "KV cache size", "Maximum concurrency",
             "Actual usage is", "max_num_batched_tokens", "Error", "error:", "Graph capturing", "Memory profiling",
             "non-torch", "torch.compile takes", "Loading weights took", "gpu_memory_utilization")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def cuda_total_bytes():
    """The GPU's total as CUDA reports it (vLLM's budget is a share of this), read in a short-lived process."""
    out = subprocess.check_output([sys.executable, "-c", "import torch; print(torch.cuda.mem_get_info()[1])"])
    return int(out.decode().strip().splitlines()[-1])


def gpu_memory_used_mib():
    out = subprocess.check_output(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"])
    return int(out.decode().split()[0])


def exec_start(unit_path):
    """The unit's ExecStart arguments as a list."""
    lines, collecting = [], False
    for unit_line in Path(unit_path).read_text().splitlines():
        line = unit_line
        if line.startswith("ExecStart="):
            collecting, line = True, line[len("ExecStart="):]
        if collecting:
            lines.append(line.rstrip("\\").strip())
            if not line.rstrip().endswith("\\"):
                break
    return shlex.split(" ".join(lines))


def set_flag(argv, flag, value):
    if flag in argv:
        argv[argv.index(flag) + 1] = str(value)
    else:
        argv.extend([flag, str(value)])


def engine_model_dir(work, model, tokenizer):
    """config.json of the case (without the fixtures' _source notes) and the stand-in tokenizer."""
    target = Path(work) / "engine" / model
    target.mkdir(parents=True, exist_ok=True)
    config = json.loads((REPO / "tests/unit/plugins/filter/fixtures" / (model + ".json")).read_text())
    (target / "config.json").write_text(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))
    for name in TOKENIZER_FILES:
        source = Path(tokenizer) / name
        if source.exists():
            (target / name).write_bytes(source.read_bytes())
    return target


def http_status(path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (PORT, path), timeout=5) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except Exception:
        return 0, ""


def stop(process):
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # The next case's memory profile must not see this engine's memory leave.
    for _second in range(60):
        if gpu_memory_used_mib() < 1024:
            return
        time.sleep(1)


def run_case(case, work, tokenizer, total, timeout, benchmark):
    argv = exec_start(case["unit"])
    argv[0] = sys.executable
    set_flag(argv, "--model", engine_model_dir(work, case["model"], tokenizer))
    set_flag(argv, "--host", "127.0.0.1")
    set_flag(argv, "--port", PORT)
    plan = case["plan"]
    emulated = case["card"] != "whole"
    if emulated:
        # The card's budget, in this GPU's terms (rounded down so the engine never gets more than the card).
        set_flag(argv, "--gpu-memory-utilization", int(plan["budget_bytes_per_gpu"] / total * 10000) / 10000.0)
    argv += ["--load-format", "dummy"]
    log_path = Path(work) / "logs" / (case["case"].replace("/", "-") + ".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=dict(os.environ, NCCL_NVLS_ENABLE="0", VLLM_NO_USAGE_STATS="1"))
    ready, metrics, bench = False, {}, None
    while time.monotonic() - started < timeout:
        if http_status("/health")[0] == 200:
            ready = True
            break
        if process.poll() is not None:
            break
        time.sleep(2)
    seconds = round(time.monotonic() - started, 1)
    if ready:
        metrics = vllm_engine.parse_metrics(http_status("/metrics")[1])
        if benchmark == case["case"]:
            bench = run_benchmark(case)
    still_running = process.poll() is None
    stop(process)
    lines = log_path.read_text(errors="replace").splitlines()
    engine = vllm_engine.parse_accounting(lines)
    engine.update(metrics)
    return {
        "case": case["case"], "model": case["model"], "card": case["card"], "gpu": case["gpu"].get("name"),
        "memory_total_mib": case["gpu"].get("memory_total_mib"), "max_model_len": case["max_model_len"],
        "argv": [str(arg) for arg in argv[1:]], "emulated": emulated, "cuda_total_bytes": total,
        "plan": {key: plan.get(key) for key in (
            "fits", "reason", "weight_bytes", "budget_bytes_per_gpu", "kv_cache_tokens", "kv_cache_bytes",
            "kv_bytes_per_token", "max_num_batched_tokens", "max_num_seqs", "max_model_len", "per_gpu")},
        "plan_refusal": case["refusal"],
        "engine_started": ready, "start_seconds": seconds,
        "timed_out": not ready and still_running,
        "engine": engine,
        "exit": None if ready else vllm_engine.exit_reason(lines),
        "benchmark": bench,
    }, [line for line in lines if any(key in line for key in KEY_LINES)][-40:]


def run_benchmark(case):
    """Decode speed through the engine with the collection's own benchmark code (prompts sized by /tokenize)."""
    spec_bench = importlib.util.spec_from_file_location("openai_bench", REPO / "plugins/module_utils/openai_bench.py")
    bench = importlib.util.module_from_spec(spec_bench)
    spec_bench.loader.exec_module(bench)
    params = {"base_url": "http://127.0.0.1:%d/v1" % PORT, "api_key": None, "model": case["model"],
              "prompt_tokens": 1024, "max_tokens": 128, "ignore_eos": True, "concurrency": [1, 4, 16],
              "repeats": 2, "warmup_requests": 1, "timeout": 300, "validate_certs": False,
              "min_decode_tokens_per_second": None, "max_ttft_ms": None, "min_aggregate_tokens_per_second": None}
    try:
        return bench.run_benchmark(params)
    except Exception as error:  # a failed benchmark must not lose the memory figures of the case
        return {"error": str(error)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work")
    parser.add_argument("out")
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--deadline", type=float, default=540, help="seconds from now to stop starting cases")
    parser.add_argument("--case-seconds", type=float, default=200, help="time a case needs at most")
    parser.add_argument("--timeout", type=float, default=420, help="longest wait for one engine to answer")
    parser.add_argument("--benchmark", help="case to benchmark once it serves, e.g. llama-3.3-70b-instruct-awq/whole")
    parser.add_argument("--only", help="comma-separated cases to run (default: every case, by priority)")
    args = parser.parse_args()
    began = time.monotonic()
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    priority = yaml.safe_load((HERE / "engine_cases.yml").read_text())["engine_priority"]
    cases = {}
    for path in (work / "cases").glob("*.json"):
        case = json.loads(path.read_text())
        cases[case["case"]] = case
    order = args.only.split(",") if args.only else priority + sorted(set(cases) - set(priority))
    done_path = work / "engine_results.jsonl"
    done = {json.loads(line)["case"] for line in done_path.read_text().splitlines()} if done_path.exists() else set()
    total = cuda_total_bytes()
    print("CUDA total %.2f GiB; %d cases, %d done on this machine" % (total / 2**30, len(cases), len(done)))
    for name in order:
        if name in done or name not in cases:
            continue
        left = args.deadline - (time.monotonic() - began)
        if left < args.case_seconds:
            print("stopping: %.0f s left, a case needs up to %.0f s" % (left, args.case_seconds))
            break
        result, key_lines = run_case(cases[name], work, args.tokenizer, total, min(args.timeout, left),
                                     args.benchmark)
        with open(done_path, "a") as handle:
            handle.write(json.dumps(result) + "\n")
        with open(work / "engine_logs.txt", "a") as handle:
            handle.write("=== %s (%s)\n%s\n" % (name, " ".join(result["argv"]), "\n".join(key_lines)))
        engine, plan = result["engine"], result["plan"]
        print("%-45s plan %-5s %8s tokens | engine %-7s %8s tokens  weights %s act %s non-torch %s graphs %s  %s s%s"
              % (name, plan["fits"], plan["kv_cache_tokens"], "started" if result["engine_started"] else "refused",
                 engine.get("kv_cache_tokens"), engine.get("weights_gib"), engine.get("activation_peak_gib"),
                 engine.get("non_torch_gib"), engine.get("cudagraph_gib"), result["start_seconds"],
                 "" if result["engine_started"] else "  " + (result["exit"] or {}).get("engine_message", "")[:200]))
    for name in ("engine_results.jsonl", "engine_logs.txt"):
        if (work / name).exists():
            (out / name).write_bytes((work / name).read_bytes())


if __name__ == "__main__":
    main()
