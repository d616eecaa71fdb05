#!/usr/bin/env bash
# Run the GPU exporter on a machine with real NVIDIA GPUs: compare every figure it publishes with nvidia-smi, time
# a scrape against the nvidia-smi calls that give the same figures (as a ratio, in one run), read the power limit
# and its range back through gpu_facts, and try gpu_power_limit (the current value, then min + 10 W, then the
# original again; the machine may refuse, and what NVML answered is recorded). The limit is put back on exit,
# whatever happened. Finishes in about a minute.
#
# Needs: python3 with nvidia-ml-py, nvidia-smi, root for the set-limit steps (without it NVML answers
# NoPermission, which is recorded), and ansible-core either installed or as wheels in $WHEEL_DIR (default .whl/,
# as check_gates.sh). Writes report.md and the raw outputs to $OUT (default /tmp/exporter-out). Exits 1 when a
# figure differs or the limit is not back, 2 when it could not run.
#   OUT=/tmp/exporter-out WHEEL_DIR=.whl SCRAPES=30 bash tests/hardware/check_exporter.sh
# DRY_RUN="<why>" marks the report as not a measurement (tests/hardware/dry_run_exporter.sh sets it).
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/exporter-out}
python=${PYTHON:-$(command -v python3 || true)}
scrapes=${SCRAPES:-30}
export LC_ALL=C.UTF-8 LANG=C.UTF-8

fail() { echo "check_exporter: $*" >&2; exit 2; }
step() { echo "==> $*"; }

if [ -z "$python" ] || [ ! -x "$python" ]; then fail "no python3 (set PYTHON=/path/to/python3)"; fi
mkdir -p "$out" || fail "cannot create $out"
rm -f "$out"/*.txt "$out"/*.csv "$out"/*.json "$out"/*.err "$out"/*.log "$out/report.md"
work=$(mktemp -d) || fail "mktemp failed"
exporter_pid=""
restore_args=""

if ! "$python" -c 'import ansible, pynvml' 2>/dev/null; then
  wheels=${WHEEL_DIR:-$repo/.whl}
  site=${ANSIBLE_SITE:-/tmp/llmfleet-site}
  compgen -G "$wheels/*.whl" >/dev/null || fail "ansible-core or nvidia-ml-py missing for $python and no wheels in $wheels"
  step "Installing the wheels of $wheels into $site"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$wheels"/*.whl || fail "pip could not install the wheels of $wheels"
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  export PATH=$site/bin:$PATH
fi
"$python" -c 'import ansible' 2>/dev/null || fail "ansible-core does not import under $python"
"$python" -c 'import pynvml' 2>/dev/null || fail "nvidia-ml-py (pynvml) does not import under $python: add its wheel to WHEEL_DIR"
command -v ansible >/dev/null || fail "the ansible command is not on PATH"
command -v nvidia-smi >/dev/null || fail "nvidia-smi is not on PATH"
collections="$work/collections"
mkdir -p "$collections/ansible_collections/llmfleet"
ln -s "$repo" "$collections/ansible_collections/llmfleet/workstation"
export PYTHONPATH=$collections${PYTHONPATH:+:$PYTHONPATH}
export ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_HOME=$work/home
# Ansible's temporary files under this run's own directory: a user whose passwd home does not exist (or a
# read-only one) otherwise gets UNREACHABLE for a local module.
export ANSIBLE_REMOTE_TMP=$work/remote-tmp ANSIBLE_LOCAL_TEMP=$work/local-tmp
export ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false ANSIBLE_DEPRECATION_WARNINGS=false
# oneline is in ansible-core itself (the json callback moved to ansible.posix, which a bare GPU host lacks).
export ANSIBLE_LOAD_CALLBACK_PLUGINS=1 ANSIBLE_STDOUT_CALLBACK=ansible.builtin.oneline
helper() { "$python" "$repo/tests/hardware/exporter_check.py" "$@"; }
module() {  # module() NAME ARGS OUTFILE: one ad hoc module run on this machine, its oneline result kept
  timeout 120 ansible localhost -c local -e "ansible_python_interpreter=$python" -m "llmfleet.workstation.$1" \
    ${2:+-a "$2"} >"$out/$3" 2>&1
}

# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
  if [ -n "$exporter_pid" ]; then kill "$exporter_pid" 2>/dev/null; wait "$exporter_pid" 2>/dev/null; fi
  if [ -n "$restore_args" ]; then
    module gpu_power_limit "$restore_args" power_restore.txt || echo "check_exporter: restoring the limit failed: see $out/power_restore.txt" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

echo "${DRY_RUN:-}" >"$out/dry_run.txt"
machine=$(timeout 10 nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | sort | uniq -c | xargs)
echo "GPUs: $machine; $(uname -srm); $("$python" --version 2>&1); nvidia-ml-py $("$python" -c 'import importlib.metadata as m; print(m.version("nvidia-ml-py"))' 2>/dev/null)" >"$out/machine.txt"
step "$(cat "$out/machine.txt")"

# The limits the exporter publishes are the gates' defaults (their owner is the gpu_gates role).
read -r core_limit memory_limit < <("$python" -c '
import re, sys
text = open(sys.argv[1]).read()
print(*(re.search(r"^%s: (\d+)" % key, text, re.M).group(1) for key in ("gpu_gates_max_core_temp_c", "gpu_gates_max_memory_temp_c")))
' "$repo/roles/gpu_gates/defaults/main.yml")
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step "Starting the exporter on 127.0.0.1:$port (limits $core_limit C core, $memory_limit C memory)"
"$python" "$repo/roles/gpu_exporter/files/llmfleet_gpu_exporter.py" --listen-address 127.0.0.1 --port "$port" \
  --core-temp-limit "$core_limit" --memory-temp-limit "$memory_limit" --nvlink-expected >"$out/exporter.log" 2>&1 &
exporter_pid=$!
url="http://127.0.0.1:$port/metrics"
for _ in $(seq 60); do
  "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$url" 2>/dev/null && break
  kill -0 "$exporter_pid" 2>/dev/null || break
  sleep 0.5
done

step "One scrape, then nvidia-smi's figures"
"$python" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())' \
  "$url" >"$out/metrics.txt" 2>"$out/metrics.err" || echo "check_exporter: the exporter did not answer: $(tail -n 3 "$out/exporter.log")" >&2
smi_query=$(helper smi-query "$out")
timeout 30 nvidia-smi --query-gpu="$smi_query" --format=csv,noheader,nounits >"$out/smi_query.csv" 2>"$out/smi_query.err"
# Called throttle reasons before driver 535, hence the fallback.
timeout 30 nvidia-smi --query-gpu=index,clocks_event_reasons.active --format=csv,noheader >"$out/smi_reasons.csv" 2>/dev/null \
  || timeout 30 nvidia-smi --query-gpu=index,clocks_throttle_reasons.active --format=csv,noheader >"$out/smi_reasons.csv" 2>&1
timeout 30 nvidia-smi nvlink --status >"$out/smi_nvlink_status.txt" 2>&1
timeout 30 nvidia-smi nvlink --errorcounters >"$out/smi_nvlink_errors.txt" 2>&1
timeout 30 nvidia-smi >"$out/smi.txt" 2>&1

step "Timing $scrapes scrapes against $scrapes rounds of the same nvidia-smi calls"
timeout 600 "$python" "$repo/tests/hardware/exporter_check.py" bench "$out" "$url" "$scrapes" 2>"$out/bench.err" \
  || echo "check_exporter: timing failed: $(tail -n 3 "$out/bench.err")" >&2

step "Power limit: gpu_facts, then gpu_power_limit (current, min + 10 W, back)"
module gpu_facts "" gpu_facts_before.txt
if grep -q '"power_limit_w": [0-9]' "$out/gpu_facts_before.txt"; then
  restore_args=$(helper power-args "$out" original)
  timeout 60 "$python" "$repo/tests/hardware/exporter_check.py" nvml-set-current "$out" >/dev/null 2>"$out/nvml_set_current.err"
  module gpu_power_limit "$(helper power-args "$out" current)" power_current.txt
  module gpu_power_limit "$(helper power-args "$out" low)" power_low.txt
  module gpu_facts "" gpu_facts_low.txt
  module gpu_power_limit "$restore_args" power_restore.txt && restore_args=""
  module gpu_facts "" gpu_facts_after.txt
else
  echo "check_exporter: gpu_facts gave no power limit: see $out/gpu_facts_before.txt" >&2
fi

kill "$exporter_pid" 2>/dev/null; wait "$exporter_pid" 2>/dev/null; exporter_pid=""
status=0
helper report "$out" || status=1
tar -C "$out" --exclude raw.tar.gz -czf "$work/raw.tar.gz" . && mv "$work/raw.tar.gz" "$out/raw.tar.gz"
exit $status
