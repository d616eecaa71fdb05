#!/usr/bin/env bash
# The main job on the embedded default: converge playbooks/site.yml into a simulated fleet (the `fleet` scenario)
# and leave it running so it can be explored. `make run-destroy` removes it.
#
# The fleet has a healthy workstation, a workstation whose NVLink bridge is misseated and a frontend. site.yml
# stops the bad workstation at the gates and converges the rest, so ansible-playbook exits 2 by design; the
# scenario's converge step checks exactly that outcome (and nothing else failing) and succeeds.
set -euo pipefail
cd "$(dirname "$0")/../.."
molecule create -s fleet
molecule prepare -s fleet
molecule converge -s fleet
cat <<'MSG'

The simulated fleet is up, converged by playbooks/site.yml:
  llmfleet-fleet-ws1   RTX 5090 workstation: vLLM serves "tiny-llama" on port 8000
  llmfleet-fleet-ws2   RTX 3090 pair with a misseated NVLink bridge: stopped at the gates on purpose
                       ("NVLink gate failed: ... reseat the NVLink bridge ..."), nothing installed after them
  llmfleet-fleet-web1  Open WebUI on port 3000, connected to ws1 only
site.yml's own report (exit status 2 because of ws2): .cache/fleet/site-latest.json
  Look inside:        podman exec -it llmfleet-fleet-ws1 bash
  Converge again:     make run        (a second run changes nothing)
  Remove it:          make run-destroy
MSG
