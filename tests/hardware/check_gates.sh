#!/usr/bin/env bash
# Run the gate modules on a machine with real NVIDIA GPUs and compare every figure with nvidia-smi.
#
# Needs: python3 with nvidia-ml-py, nvidia-smi, and ansible-core either installed or as wheels in
# $WHEEL_DIR (default .whl/: ansible-core, resolvelib, cryptography, cffi, pycparser, jinja2, MarkupSafe,
# PyYAML, packaging; about 8 MB for Python 3.12). Writes raw outputs and report.md to $OUT
# (default /tmp/hw-out). Exits non-zero when a figure differs.
#   OUT=/tmp/hw-out WHEEL_DIR=.whl BENCH_RUNS=20 bash tests/hardware/check_gates.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/hw-out}
mkdir -p "$out"
export LC_ALL=C.UTF-8 LANG=C.UTF-8
python=${PYTHON:-$(command -v python3)}

if ! "$python" -c 'import ansible' 2>/dev/null; then
  wheels=${WHEEL_DIR:-$repo/.whl}
  site=${ANSIBLE_SITE:-/tmp/llmfleet-site}
  echo "==> Installing ansible-core from $wheels into $site"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$wheels"/*.whl
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  export PATH=$site/bin:$PATH
fi
collections=$(mktemp -d)
mkdir -p "$collections/ansible_collections/llmfleet"
ln -s "$repo" "$collections/ansible_collections/llmfleet/workstation"
export ANSIBLE_COLLECTIONS_PATH=$collections
export ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false ANSIBLE_HOME=$collections/home

echo "==> $(nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | xargs), driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"
echo "==> ansible-playbook tests/hardware/run_gates.yml (gpu_facts, nvlink_status, gpu_junction_temp)"
ansible-playbook -i localhost, -e "ansible_python_interpreter=$python out=$out" "$repo/tests/hardware/run_gates.yml" \
  >"$out/ansible.log" 2>&1 || { tail -n 30 "$out/ansible.log"; exit 1; }
# The same modules ad hoc, as an operator would call them (one line of JSON each, kept for the record).
for module in gpu_facts nvlink_status gpu_junction_temp; do
  ansible localhost -c local -e "ansible_python_interpreter=$python" -m "llmfleet.workstation.$module" -o \
    >"$out/adhoc_$module.txt" 2>&1 || true
done

echo "==> nvidia-smi"
# Column order must match SMI_COLUMNS in compare_with_nvidia_smi.py. Every field here is in
# `nvidia-smi --help-query-gpu` of the 5xx drivers; [N/A] and [Not Supported] read as null.
smi_query=index,name,uuid,pci.bus_id,driver_version,memory.total,temperature.gpu,temperature.memory
smi_query+=,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max
smi_query+=,persistence_mode,power.limit,fan.speed
nvidia-smi --query-gpu="$smi_query" --format=csv,noheader,nounits >"$out/smi_query.csv"
# Moving figures, shown for information: power draw and the clock-event reasons (called throttle
# reasons before driver 535, hence the fallback).
nvidia-smi --query-gpu=index,power.draw --format=csv,noheader,nounits >"$out/smi_power.csv" 2>/dev/null || true
nvidia-smi --query-gpu=index,clocks_event_reasons.active --format=csv,noheader >"$out/smi_reasons.csv" 2>/dev/null \
  || nvidia-smi --query-gpu=index,clocks_throttle_reasons.active --format=csv,noheader >"$out/smi_reasons.csv" \
  2>/dev/null || true
nvidia-smi nvlink --status >"$out/smi_nvlink_status.txt" 2>&1 || true
nvidia-smi nvlink --capabilities >"$out/smi_nvlink_capabilities.txt" 2>&1 || true
nvidia-smi nvlink --errorcounters >"$out/smi_nvlink_errors.txt" 2>&1 || true
nvidia-smi topo -m >"$out/smi_topo.txt" 2>&1 || true
nvidia-smi topo -p2p n >"$out/smi_topo_p2p_nvlink.txt" 2>&1 || true
nvidia-smi >"$out/smi.txt" 2>&1 || true

status=0
"$python" "$repo/tests/hardware/compare_with_nvidia_smi.py" "$out" || status=$?

echo "==> vllm_service facts.yml and plan.yml on these GPUs (tests/hardware/run_plan.yml)"
ansible-playbook -i localhost, -e "ansible_python_interpreter=$python out=$out" "$repo/tests/hardware/run_plan.yml" \
  >"$out/plan.log" 2>&1 || { tail -n 30 "$out/plan.log"; status=1; }
grep -h -A3 '"Show the plan"\|TASK \[llmfleet.workstation.vllm_service : Show the plan' "$out/plan.log" | grep -o 'Fits on[^"]*' || true

echo "==> Timing NVML reads against nvidia-smi"
PYTHONPATH=$collections${PYTHONPATH:+:$PYTHONPATH} "$python" "$repo/tests/hardware/bench_nvml_vs_smi.py" \
  "${BENCH_RUNS:-20}" | tee "$out/bench.txt"
tar -C "$out" --exclude raw.tar.gz -czf "$out.tar.gz" . && mv "$out.tar.gz" "$out/raw.tar.gz"
exit $status
