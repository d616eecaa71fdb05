#!/usr/bin/env bash
# The main job on the embedded default: converge playbooks/site.yml into a simulated fleet (the `fleet` scenario)
# and leave it running so it can be explored: Open WebUI and the healthy workstation's OpenAI API are published on
# this machine's loopback. `make run-destroy` removes it.
#
# The fleet has a healthy workstation, a workstation whose NVLink bridge is misseated and a frontend. site.yml
# stops the bad workstation at the gates and converges the rest, so ansible-playbook exits 2 by design; the
# scenario's converge step checks exactly that outcome (and nothing else failing) and succeeds.
#
#   run_site.sh            create, prepare and converge the fleet, check the demo's endpoints, say where they are
#   run_site.sh --budget   print this run's time budget in seconds: 120 when the fleet is up and converged (a second
#                          run changes nothing), else 720 (from nothing, set-up included)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
fleet=(llmfleet-fleet-ws1 llmfleet-fleet-ws2 llmfleet-fleet-web1)

if [ "${1:-}" = "--budget" ]; then
  running=$(podman ps --filter "label=llmfleet.checkout=$repo" --format '{{.Names}}' 2>/dev/null || true)
  for name in "${fleet[@]}"; do
    grep -qx "$name" <<<"$running" || { echo 720; exit 0; }
  done
  [ -f .cache/fleet/site-latest.json ] && echo 120 || echo 720
  exit 0
fi

molecule create -s fleet
molecule prepare -s fleet
molecule converge -s fleet

# The demo's addresses and key come from the scenario's inventory, so what is printed is what was deployed.
{ read -r api_url; read -r webui_url; read -r api_key; read -r model; } < <(python3 - <<'PY'
import yaml
scenario = yaml.safe_load(open("molecule/fleet/molecule.yml"))
workstations = scenario["provisioner"]["inventory"]["group_vars"]["workstations"]
platforms = {platform["name"]: platform for platform in scenario["platforms"]}
for name in ("llmfleet-fleet-ws1", "llmfleet-fleet-web1"):
    address, host_port, _container_port = platforms[name]["published_ports"][0].split(":")
    print("http://%s:%s" % (address, host_port))
print(workstations["vllm_service_api_key"])
print(workstations["vllm_service_served_model_name"])
PY
)
request="{\"model\": \"$model\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}], \"max_tokens\": 16}"
curl_line="curl -s $api_url/v1/chat/completions -H 'Authorization: Bearer $api_key' -H 'Content-Type: application/json' -d '$request'"

# Run the printed command exactly as printed, and ask Open WebUI whether its first account exists yet.
answer=$(bash -c "$curl_line")
tokens=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["usage"]["completion_tokens"])' <<<"$answer") || {
  echo "The engine's API did not answer as expected on $api_url: $answer" >&2
  exit 1
}
onboarding=$(curl -s "$webui_url/api/config" | python3 -c 'import json, sys; print(json.load(sys.stdin).get("onboarding", False))') || {
  echo "Open WebUI did not answer on $webui_url" >&2
  exit 1
}
if [ "$onboarding" = "True" ]; then
  sign_in="no account exists yet: create one there (the first account is the admin; sign-up then closes)"
else
  sign_in="sign in with the account created there first (the admin; sign-up is closed to others)"
fi

cat <<MSG

The simulated fleet is up, converged by playbooks/site.yml:
  llmfleet-fleet-ws1   RTX 5090 workstation: vLLM serves "$model" on port 8000
  llmfleet-fleet-ws2   RTX 3090 pair with a misseated NVLink bridge: stopped at the gates on purpose
                       ("NVLink gate failed: ... reseat the NVLink bridge ..."), nothing installed after them
  llmfleet-fleet-web1  Open WebUI on port 3000, connected to ws1 only
site.yml's own report (exit status 2 because of ws2): .cache/fleet/site-latest.json
  Look inside:        podman exec -it llmfleet-fleet-ws1 bash
  Converge again:     make run        (a second run changes nothing)
  Remove it:          make run-destroy

Open WebUI:   $webui_url
              $sign_in, then pick "$model" in the model selector
OpenAI API of llmfleet-fleet-ws1 (key $api_key), answered just now with $tokens tokens:
  $curl_line
MSG
