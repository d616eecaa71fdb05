#!/usr/bin/env bash
# The router role's LiteLLM configuration in front of two real vLLM engines on one GPU machine: spread, the
# router's cost against straight to one engine (time to first token and aggregate tokens/s, as ratios in one
# run), a drained engine, and one engine killed under load. Each engine serves the same model name with its own
# key, as two workstations do; the router holds both keys and its own.
#
# Needs, as the engine check: vLLM's carry assembled in /tmp/vllm-site (or its chunks in /tmp/gpu-carry/part.*),
# the router's chunks in /tmp/gpu-carry/router.* (build_router_carry.sh), ansible-core wheels in $CARRY/wheels, a
# tokenizer in $CARRY/tok. Writes report.md and the load records to $OUT.
#   CARRY=.gpu-carry OUT=/tmp/router-out MODEL=llama-3.1-8b-instruct bash tests/hardware/check_router.sh
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
carry=${CARRY:-$repo/.gpu-carry}
out=${OUT:-/tmp/router-out}
model=${MODEL:-llama-3.1-8b-instruct}
requests=${REQUESTS:-96}
mkdir -p "$out" /tmp/gpu-carry
cp "$carry"/part*/part.* "$carry"/router-part*/router.* /tmp/gpu-carry/ 2>/dev/null
say() { echo "==> $*" | tee -a "$out/report.md"; }
unzstd=zstd; command -v zstd >/dev/null || { cp "$carry/zstd" /tmp/zstd && chmod +x /tmp/zstd && unzstd=/tmp/zstd; }
assemble() {  # folder, chunk prefix
  [ -f "$1/.complete" ] && return 0
  rm -rf "$1" && mkdir -p "$1"
  cat /tmp/gpu-carry/"$2".* | "$unzstd" -d --long=27 | tar -x -C "$1" || { echo "a chunk of $2 is missing"; exit 2; }
  touch "$1/.complete"
}
assemble /tmp/vllm-site part
assemble /tmp/router-site router
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ansible-site \
  "$carry"/wheels/*.whl || exit 2
: > "$out/report.md"
say "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); $(date -u '+%F %H:%M UTC'); engines ${ENGINES:-2}${EAGER:+, eager mode (no torch.compile, no CUDA graphs)}"

# The model directory: its config.json (real shapes, --load-format dummy) and a stand-in tokenizer.
mdir=/tmp/router-model/$model
mkdir -p "$mdir"
python3 - "$repo" "$model" "$mdir" <<'PY'
import json, sys
repo, model, target = sys.argv[1:]
config = json.load(open(f"{repo}/tests/unit/plugins/filter/fixtures/{model}.json"))
json.dump({k: v for k, v in config.items() if not k.startswith("_")}, open(f"{target}/config.json", "w"))
PY
cp "$carry"/tok/* "$mdir"/

start_engine() {  # port key log
  PYTHONPATH=/tmp/vllm-site setsid python3 -m vllm.entrypoints.openai.api_server --model "$mdir" \
    --served-model-name "$model" --load-format dummy --host 127.0.0.1 --port "$1" --api-key "$2" \
    --gpu-memory-utilization 0.40 --max-model-len 4096 --max-num-seqs 64 ${EAGER:+--enforce-eager} >"$3" 2>&1 &
  echo $!
}
wait_engine() {  # port key pid log
  local started=$SECONDS
  until curl -sf -o /dev/null -H "Authorization: Bearer $2" "http://127.0.0.1:$1/v1/models"; do
    sleep 3
    kill -0 "$3" 2>/dev/null || { echo "engine on $1 exited"; tail -20 "$4"; exit 2; }
    (( SECONDS - started > 360 )) && { echo "engine on $1: no answer in 360 s"; tail -20 "$4"; exit 2; }
  done
  say "engine on :$1 answering after $((SECONDS - started)) s"
}
# One after the other: each engine sizes its KV cache from the memory it sees free.
# Engines a previous run of this script left answering on this machine are used again (a start costs minutes).
engine() {  # name port key
  local pid
  pid=$(pgrep -f -- "--port $2 --api-key $3" | head -1)
  if [ -n "$pid" ] && curl -sf -o /dev/null -H "Authorization: Bearer $3" "http://127.0.0.1:$2/v1/models"; then
    say "engine on :$2 already answering (pid $pid)"
    ln -sf "/proc/$pid/fd/1" "$out/engine-$1.log"  # its log, wherever an earlier run wrote it
  else
    pid=$(start_engine "$2" "$3" "/tmp/engine-$1.log"); wait_engine "$2" "$3" "$pid" "/tmp/engine-$1.log"
    ln -sf "/tmp/engine-$1.log" "$out/engine-$1.log"
  fi
  echo "$pid" > "/tmp/engine-$1.pid"
}
# ENGINES=1: engine-b stays drained throughout (a short lease measures the router's cost only).
engines=${ENGINES:-2}
engine a 8001 key-a; [ "$engines" = 2 ] && engine b 8002 key-b
pid_a=$(cat /tmp/engine-a.pid); pid_b=$(cat /tmp/engine-b.pid 2>/dev/null)

# The router as the role runs it: the role's filters and defaults write upstreams.yaml, router_config.py applies the
# drained list, LiteLLM starts with the unit's arguments and environment.
export PYTHONPATH=/tmp/ansible-site PATH=/tmp/ansible-site/bin:$PATH
collections=$(mktemp -d); mkdir -p "$collections/ansible_collections/llmfleet"
ln -s "$repo" "$collections/ansible_collections/llmfleet/workstation"
rdir=/tmp/router-etc; mkdir -p "$rdir"
if [ "$engines" = 2 ]; then echo '[]'; else echo '["engine-b"]'; fi > "$rdir/drained.json"
ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_HOME=$collections/home \
  ansible-playbook -i localhost, -e "out=$rdir model_name=$model router_api_key=router-key ansible_python_interpreter=$(command -v python3)" \
  "$repo/tests/hardware/router_config.yml" >"$out/router_config.log" 2>&1 || { tail -20 "$out/router_config.log"; exit 2; }
export PYTHONPATH=/tmp/router-site PATH=/tmp/router-site/bin:$PATH
# HF_HUB_OFFLINE: LiteLLM counts a llama-3 model's tokens with a tokenizer it downloads from Hugging Face; offline,
# every request would wait out the download's retries.
export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False GRACEFUL_SHUTDOWN_TIMEOUT=60 HOME=$rdir
export HF_HUB_OFFLINE=${ROUTER_HF_HUB_OFFLINE-1}
pkill -f 'proxy_cli import run_server' 2>/dev/null; sleep 1
apply() { python3 "$repo/roles/router/files/router_config.py" apply --base "$rdir/upstreams.yaml" \
  --drained "$rdir/drained.json" --out "$rdir/config.yaml"; }
apply || exit 2
workers=$(sed -n 's/^router_workers: *//p' "$repo/roles/router/defaults/main.yml")
setsid python3 -c 'from litellm.proxy.proxy_cli import run_server; run_server()' --config "$rdir/config.yaml" --host 127.0.0.1 --port 4000 \
  --num_workers "$workers" --run_gunicorn >"$out/router.log" 2>&1 &
router_pid=$!
started=$SECONDS
until curl -sf -o /dev/null -H 'Authorization: Bearer router-key' http://127.0.0.1:4000/v1/models; do
  sleep 2; kill -0 $router_pid 2>/dev/null || { echo "router exited"; tail -30 "$out/router.log"; exit 2; }
  (( SECONDS - started > 120 )) && { echo "router: no answer"; tail -30 "$out/router.log"; exit 2; }
done
say "router answering after $((SECONDS - started)) s ($workers workers)"
curl -s -H 'Authorization: Bearer router-key' http://127.0.0.1:4000/v1/models > "$out/router_models.json"

load() {  # name url key concurrency [requests]
  python3 "$repo/molecule/router/files/router_load.py" --url "$2" --key "$3" --model "$model" --api chat \
    --requests "${5:-$requests}" --concurrency "$4" --max-tokens 128 --timeout 120 --prefix "$1" --out "$out/$1.json" \
    > /dev/null 2>"$out/$1.err"
  python3 - "$out/$1.json" "$1" <<'PY' | tee -a "$out/report.md"
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
print(f"- {sys.argv[2]}: {s['ok']}/{s['requests']} ok, failed before first token {s['failed_before_first_token']}, "
      f"while streaming {s['failed_while_streaming']}; TTFT median {s['ttft_median_s']*1000:.1f} ms p95 "
      f"{s['ttft_p95_s']*1000:.1f} ms; {s['tokens_per_s']} tokens/s aggregate")
PY
}
# Warm both engines and the router's workers.
load warmup http://127.0.0.1:4000/v1 router-key 8 32 >/dev/null

say "Straight to one engine against the router with that engine alone (the other drained): the router's own cost"
echo '["engine-b"]' > "$rdir/drained.json"; apply && kill -HUP $router_pid; sleep 8
posts() { grep -c 'POST /v1/chat/completions' "$1" 2>/dev/null || echo 0; }
b_before=$(posts "$out/engine-b.log"); a_before=$(posts "$out/engine-a.log")
for c in 1 8 32; do
  load "direct-c$c" http://127.0.0.1:8001/v1 key-a "$c" $((c * 8 > 16 ? c * 4 : 16))
  load "router1-c$c" http://127.0.0.1:4000/v1 router-key "$c" $((c * 8 > 16 ? c * 4 : 16))
done
say "completions during those runs: engine-a $(( $(posts "$out/engine-a.log") - a_before )), drained engine-b $(( $(posts "$out/engine-b.log") - b_before ))"

if [ "$engines" = 2 ]; then
say "Both engines behind the router"
echo '[]' > "$rdir/drained.json"; apply && kill -HUP $router_pid; sleep 8
a_two=$(posts "$out/engine-a.log"); b_two=$(posts "$out/engine-b.log")
load spread40 http://127.0.0.1:4000/v1 router-key 4 40
load router2-c32 http://127.0.0.1:4000/v1 router-key 32 128
say "completions with both in (spread40 and two loads): engine-a $(( $(posts "$out/engine-a.log") - a_two )), engine-b $(( $(posts "$out/engine-b.log") - b_two ))"

say "engine-b killed 5 s into 160 requests at 8 concurrent, through the router"
( sleep 5; kill -9 "$pid_b"; date +%s.%N > "$out/killed_at" ) &
load kill160 http://127.0.0.1:4000/v1 router-key 8 160
python3 - "$out/kill160.json" "$(cat "$out/killed_at")" <<'PY' | tee -a "$out/report.md"
import json, sys
data = json.load(open(sys.argv[1]))
failed = [r for r in data["records"] if r["error"]]
print(f"- failures: {len(failed)} ({sum(r['ttft_s'] is None for r in failed)} before first token); "
      f"errors: {sorted({r['error'][:120] for r in failed})[:3]}")
PY
fi
python3 - "$out" <<'PY' | tee -a "$out/report.md"
import json, sys
out = sys.argv[1]
rows = {}
for name in ("direct", "router1"):
    for c in (1, 8, 32):
        rows[(name, c)] = json.load(open(f"{out}/{name}-c{c}.json"))["summary"]
print("\n| concurrency | TTFT median direct / router (ratio) | tokens/s direct / router (ratio) |\n| --- | --- | --- |")
for c in (1, 8, 32):
    d, r = rows[("direct", c)], rows[("router1", c)]
    print(f"| {c} | {d['ttft_median_s']*1000:.1f} / {r['ttft_median_s']*1000:.1f} ms ({r['ttft_median_s']/d['ttft_median_s']:.2f}) "
          f"| {d['tokens_per_s']} / {r['tokens_per_s']} ({r['tokens_per_s']/d['tokens_per_s']:.2f}) |")
PY
kill $router_pid "$pid_a" 2>/dev/null
exit 0
