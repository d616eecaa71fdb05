#!/usr/bin/env bash
# The main job on the embedded default: converge playbooks/site.yml into a simulated workstation
# (a systemd container with the fake NVML library on the healthy dual-3090 scenario) and leave it
# running so it can be explored. `make run-destroy` removes it.
set -euo pipefail
cd "$(dirname "$0")/../.."
molecule create -s site
molecule prepare -s site
molecule converge -s site
cat <<'MSG'

The simulated workstation "llmfleet-ws1" is up and converged.
  Look inside:        podman exec -it llmfleet-ws1 bash
  Converge again:     make run        (a second run changes nothing)
  Remove it:          make run-destroy
MSG
