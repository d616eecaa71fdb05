#!/usr/bin/env bash
# Run the P2P bandwidth gate (gpu_p2p_bandwidth) on a machine with real NVIDIA GPUs and torch, and check its
# timing code: the module through ansible, the measurement script alone, a wall-clock copy that does not use CUDA
# events, and the "not measured" path (a torch that does not import). Finishes in under a minute.
#
# Needs: python3 with torch (a CUDA build) and nvidia-ml-py, and ansible-core either installed or as wheels in
# $WHEEL_DIR (default .whl/; nvidia-ml-py may be a wheel there too). Writes three files to $OUT (default
# /tmp/p2p-out): module.json (the module's result), measure.json (the script alone, the wall-clock check and the
# not-measured check) and summary.txt, which it also prints. Exits non-zero when a check fails.
#   OUT=/tmp/p2p-out WHEEL_DIR=.whl PYTHON=/usr/bin/python3 bash tests/hardware/check_p2p_bandwidth.sh
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/p2p-out}
python=${PYTHON:-$(command -v python3 || true)}
size_mib=${SIZE_MIB:-256}
deadline=$((SECONDS + ${TIME_BUDGET:-50}))
export LC_ALL=C.UTF-8 LANG=C.UTF-8

fail() { echo "check_p2p_bandwidth: $*" >&2; exit 2; }
# Seconds a step may take: at most its cap, at most what is left before the deadline, at least 3; so a run where
# every step hangs still ends within about a minute.
left() {
  local cap=$1 remaining=$((deadline - SECONDS))
  remaining=$((remaining < cap ? remaining : cap))
  echo $((remaining > 3 ? remaining : 3))
}

if [ -z "$python" ] || [ ! -x "$python" ]; then fail "no python3 (set PYTHON=/path/to/python3)"; fi
mkdir -p "$out" || fail "cannot create $out"
rm -f "$out/module.json" "$out/measure.json" "$out/summary.txt"
work=$(mktemp -d) || fail "mktemp failed"
trap 'rm -rf "$work"' EXIT

if ! "$python" -c 'import ansible, pynvml' 2>/dev/null; then
  wheels=${WHEEL_DIR:-$repo/.whl}
  site=${ANSIBLE_SITE:-/tmp/llmfleet-site}
  compgen -G "$wheels/*.whl" >/dev/null || fail "ansible-core or nvidia-ml-py missing for $python and no wheels in $wheels"
  echo "==> Installing the wheels of $wheels into $site"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$wheels"/*.whl || fail "pip could not install the wheels of $wheels"
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  export PATH=$site/bin:$PATH
fi
"$python" -c 'import ansible' 2>/dev/null || fail "ansible-core does not import under $python"
"$python" -c 'import pynvml' 2>/dev/null || fail "nvidia-ml-py (pynvml) does not import under $python: add its wheel to WHEEL_DIR"
command -v ansible >/dev/null || fail "the ansible command is not on PATH"
collections="$work/collections"
mkdir -p "$collections/ansible_collections/llmfleet"
ln -s "$repo" "$collections/ansible_collections/llmfleet/workstation"
export ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_HOME=$work/home
export ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false
# oneline is in ansible-core itself (the json callback moved to ansible.posix, which a bare GPU host lacks).
export ANSIBLE_LOAD_CALLBACK_PLUGINS=1 ANSIBLE_STDOUT_CALLBACK=ansible.builtin.oneline
# The environment the engine gets on this fleet (NVLink multicast off) applies here as well.
export NCCL_NVLS_ENABLE=0

gpus=$(timeout 5 nvidia-smi --query-gpu=index,name,pci.bus_id --format=csv,noheader 2>&1) || gpus="nvidia-smi: $gpus"
echo "==> GPUs: $(echo "$gpus" | tr '\n' ';')"
echo "$gpus" >"$work/gpus.txt"

echo "==> The measurement script alone (${size_mib} MiB copies, median of 5)"
timeout "$(left 18)" "$python" - --size-mib "$size_mib" --repetitions 5 \
  <"$repo/plugins/module_utils/p2p_measure.py" >"$work/plain.out" 2>"$work/plain.err"
echo "$?" >"$work/plain.rc"

echo "==> The same copy within GPU 0 timed by the wall clock (synchronize + perf_counter), not by CUDA events"
timeout "$(left 10)" "$python" - "$size_mib" >"$work/wall.json" 2>"$work/wall.err" <<'EOF'
import json, statistics, sys, time
import torch
size = int(sys.argv[1]) * 1024 * 1024
source = torch.empty(size, dtype=torch.uint8, device=0).fill_(7)
target = torch.empty_like(source)
target.copy_(source)
torch.cuda.synchronize(0)
samples = []
for _ in range(5):
    started = time.perf_counter()
    for _ in range(10):  # ten back-to-back copies, so the host's overhead is small beside them
        target.copy_(source)
    torch.cuda.synchronize(0)
    samples.append((time.perf_counter() - started) / 10)
seconds = statistics.median(samples)
print(json.dumps({"copy_gbps": round(size / seconds / 1e9, 3), "samples_seconds": samples,
                  "torch_version": torch.__version__, "cuda_version": torch.version.cuda}))
EOF
echo "$?" >"$work/wall.rc"

echo "==> ansible localhost -m llmfleet.workstation.gpu_p2p_bandwidth -a python=$python"
module_limit=$(left 18)
timeout "$module_limit" ansible localhost -c local -i localhost, -e "ansible_python_interpreter=$python" \
  -m llmfleet.workstation.gpu_p2p_bandwidth -a "python=$python buffer_size_mib=$size_mib timeout=$((module_limit - 2))" \
  >"$work/module.out" 2>"$work/module.err"
echo "$?" >"$work/module.rc"

echo "==> The not-measured path: the same module with a torch that does not import (tests/fake_torch)"
PYTHONPATH=$repo/tests/fake_torch${PYTHONPATH:+:$PYTHONPATH} FAKE_TORCH_IMPORT_ERROR=ImportError \
  timeout "$(left 8)" ansible localhost -c local -i localhost, -e "ansible_python_interpreter=$python" \
  -m llmfleet.workstation.gpu_p2p_bandwidth -a "python=$python" >"$work/missing.out" 2>"$work/missing.err"
echo "$?" >"$work/missing.rc"

"$python" "$repo/tests/hardware/p2p_summary.py" "$work" "$out" "$SECONDS"
