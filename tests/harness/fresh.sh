#!/usr/bin/env bash
# Take this checkout back to the state of a machine that never ran `make setup`, `make run` or `make test`, so the
# next command is timed as a new operator meets it (`make fresh` runs `make run` afterwards).
#
# Removed, and only what this project made:
#   - the test containers of every molecule scenario of this checkout (label llmfleet.checkout=<this directory>,
#     set by tests/harness/create.yml) and the stand-in hub processes this checkout started;
#   - the target images localhost/llmfleet-target:* (an image that containers of another checkout still use is
#     kept, and said so);
#   - .cache (the Open WebUI stand-in's image store, the wheelhouses, ansible-test's venvs, the tiny model),
#     .venv, tests/output, molecule's state of this checkout and the collection copy molecule installs.
# Host packages (podman, chromium, ...) stay: they belong to the machine, and installing them takes about 40 s.
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo" || exit 1
export CONTAINERS_CONF="$repo/tests/harness/containers.conf"
step() { printf '==> %s\n' "$*"; }

if command -v podman >/dev/null; then
  mapfile -t containers < <(podman ps -a --filter "label=llmfleet.checkout=$repo" --format '{{.Names}}')
  if [ ${#containers[@]} -gt 0 ]; then
    step "Removing this checkout's test containers: ${containers[*]}"
    podman rm --force --time 5 "${containers[@]}" >/dev/null
  else
    step "No test containers of this checkout"
  fi

  mapfile -t images < <(podman images --format '{{.Repository}}:{{.Tag}}' --filter reference=localhost/llmfleet-target)
  for image in "${images[@]}"; do
    if podman rmi "$image" >/dev/null 2>&1; then
      step "Removed image $image"
    else
      step "Kept image $image: containers of another checkout use it"
    fi
  done
fi

hub_pid_file=.cache/fleet/hub/pid
if [ -f "$hub_pid_file" ]; then
  pid=$(cat "$hub_pid_file")
  if grep -qs fake_hf_hub.py "/proc/$pid/cmdline"; then
    step "Stopping the stand-in hub (pid $pid)"
    kill "$pid" 2>/dev/null || true
  fi
fi

# The stand-in's image store may hold overlay mounts of its own.
store=.cache/open-webui-store
if [ -d "$store" ]; then
  step "Removing the Open WebUI stand-in's image store"
  podman --root "$repo/$store" --runroot "$repo/.cache/open-webui-store-run" --storage-driver overlay \
    unmount --all >/dev/null 2>&1 || true
  grep -o " ${repo}/${store}[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount 2>/dev/null || true
fi

# Molecule keeps each scenario's state in ~/.ansible/tmp/molecule.<checksum of this directory's name>.<scenario>.
molecule_state=()
if [ -x .venv/bin/python ]; then
  prefix=$(.venv/bin/python -c 'import sys; from molecule.text import checksum; print(checksum(sys.argv[1], 4))' \
    "$(basename "$repo")" 2>/dev/null) || prefix=""
  if [ -n "$prefix" ]; then
    for scenario_dir in molecule/*/; do
      molecule_state+=("$HOME/.ansible/tmp/molecule.$prefix.$(basename "$scenario_dir")")
    done
  fi
fi
step "Removing .cache, .venv, .ansible, tests/output and molecule's state of this checkout"
rm -rf .cache .venv .ansible tests/output "${molecule_state[@]}"
