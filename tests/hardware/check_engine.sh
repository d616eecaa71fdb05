#!/usr/bin/env bash
# Plan against engine on a machine with an NVIDIA GPU: the vllm_service role plans every case of
# engine_cases.yml and renders its unit (run_engine_plan.yml), then check_engine.py runs vLLM's CUDA build with each
# unit's own arguments and records the engine's accounting beside the plan.
#
#   CARRY=.gpu-carry OUT=/tmp/hw-out bash tests/hardware/check_engine.sh [check_engine.py options]
#
# Needs: python3 with torch (CUDA) and nvidia-ml-py; vLLM either importable or as a zstd-compressed tar of its
# site-packages split into /tmp/gpu-carry/part.*; ansible-core importable or as wheels in
# CARRY/wheels; a stand-in tokenizer in CARRY/tok (tests/harness/make_tiny_model.py writes one). Re-running on the
# same machine skips the cases it already ran.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
carry=${CARRY:-$repo/.gpu-carry}
out=${OUT:-/tmp/hw-out}
work=${WORK:-/tmp/llmfleet-engine}
mkdir -p "$out" "$work"
export LC_ALL=C.UTF-8 LANG=C.UTF-8 NCCL_NVLS_ENABLE=0

if ! python3 -c 'import vllm' 2>/dev/null; then
  if [ ! -f /tmp/vllm-site/.complete ]; then
    unzstd=zstd; command -v zstd >/dev/null || { cp "$carry/zstd" /tmp/zstd && chmod +x /tmp/zstd && unzstd=/tmp/zstd; }
    rm -rf /tmp/vllm-site && mkdir -p /tmp/vllm-site
    cat /tmp/gpu-carry/part.* | "$unzstd" -d --long=27 | tar -x -C /tmp/vllm-site
    touch /tmp/vllm-site/.complete
  fi
  export PYTHONPATH=/tmp/vllm-site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! python3 -c 'import ansible' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ansible-site \
    "$carry"/wheels/*.whl
  export PYTHONPATH=/tmp/ansible-site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/ansible-site/bin:$PATH
fi
python3 -c 'import vllm; print("vllm", vllm.__version__)'
collections=$(mktemp -d)
mkdir -p "$collections/ansible_collections/llmfleet"
ln -s "$repo" "$collections/ansible_collections/llmfleet/workstation"
export ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_HOME=$collections/home
export ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false

if [ ! -d "$work/cases" ]; then
  echo "==> planning every case with the vllm_service role (run_engine_plan.yml)"
  ansible-playbook -i localhost, -e "ansible_python_interpreter=$(command -v python3) work=$work" \
    "$repo/tests/hardware/run_engine_plan.yml" >"$work/plan.log" 2>&1 || { tail -n 30 "$work/plan.log"; exit 1; }
fi
echo "==> $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
python3 "$repo/tests/hardware/check_engine.py" "$work" "$out" --tokenizer "$carry/tok" "$@"
