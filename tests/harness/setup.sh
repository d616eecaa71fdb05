#!/usr/bin/env bash
# Idempotent set-up for running and testing the collection on a Debian/Ubuntu machine:
# host packages, the controller venv, the collection path, the fake NVML library, the target
# wheelhouse, the target image and the Open WebUI stand-in image. Each step says what it does and skips work
# already done.
#
# After the host packages, three lanes run side by side, since most of their time is spent waiting on the network or
# on one core: the controller (venv, collection path, fake NVML, wheelhouses), the images (debootstrap, then the Open
# WebUI stand-in) and the stand-in's wheels. Each lane's output is printed, in that order, once it is done.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
cache="$repo/.cache"
venv="$repo/.venv"
mkdir -p "$cache"

step() { printf '==> %s\n' "$*"; }
# Some machines list local file indexes in pip.conf that do not exist; pip warns once per package.
quiet_pip() { "$venv/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# chromium and chromium-driver: the browser test; python3-pip: the stand-in's wheels are resolved by the system Python.
host_packages=(podman runc debootstrap make gcc python3-venv python3-pip rsync shellcheck dpkg-dev gnupg chromium
  chromium-driver)
missing=()
for pkg in "${host_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "Installing host packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  step "Host packages present (${host_packages[*]})"
fi

# promtool and amtool (the monitoring role's rule tests and config checks) from Debian's own packages, unpacked rather
# than installed so that the test machine does not start a Prometheus and an Alertmanager of its own.
prometheus_tools="$cache/prometheus-tools"
if [ ! -x "$prometheus_tools/usr/bin/promtool" ] || [ ! -x "$prometheus_tools/usr/bin/amtool" ]; then
  step "Unpacking promtool and amtool from the prometheus and prometheus-alertmanager packages (.cache/prometheus-tools)"
  debs=$(mktemp -d)
  (cd "$debs" && apt-get download -qq prometheus prometheus-alertmanager 2>/dev/null)
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$prometheus_tools"; done
  rm -rf "$debs"
else
  step "promtool and amtool are unpacked (.cache/prometheus-tools)"
fi

controller_lane() {
  # The venv is rebuilt only when the pinned requirements change.
  requirements_stamp="$venv/.requirements.sha256"
  requirements_hash=$(cat requirements/controller.txt requirements/constraints.txt | sha256sum | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$requirements_stamp" 2>/dev/null)" != "$requirements_hash" ]; then
    step "Creating the controller venv in .venv (pinned: requirements/controller.txt)"
    python3 -m venv "$venv"
    quiet_pip install -q --upgrade pip
    quiet_pip install -q -r requirements/controller.txt -c requirements/constraints.txt
    echo "$requirements_hash" >"$requirements_stamp"
  else
    step "Controller venv is current (.venv)"
  fi

  # Ansible finds the collection under <path>/ansible_collections/llmfleet/workstation.
  collection_link="$cache/collections/ansible_collections/llmfleet/workstation"
  if [ "$(readlink "$collection_link" 2>/dev/null)" != "$repo" ]; then
    step "Linking the collection into .cache/collections"
    mkdir -p "$(dirname "$collection_link")"
    ln -sfn "$repo" "$collection_link"
  else
    step "Collection path is linked (.cache/collections)"
  fi

  step "Building the fake libnvidia-ml.so.1 (tests/fake_nvml)"
  make -s -C tests/fake_nvml PYTHON="$venv/bin/python" OUT="$cache/fake_nvml"

  # Targets install Python packages from this local wheelhouse, as an offline fleet would.
  wheelhouse="$cache/wheelhouse"
  nvml_py_pin=$(grep -E '^nvidia-ml-py==' requirements/controller.txt)
  if ! ls "$wheelhouse"/nvidia_ml_py-"${nvml_py_pin#*==}"-*.whl >/dev/null 2>&1; then
    step "Downloading $nvml_py_pin into the target wheelhouse"
    quiet_pip download -q --no-deps -d "$wheelhouse" "$nvml_py_pin"
  else
    step "Target wheelhouse is current ($nvml_py_pin)"
  fi

  # The engine for the fleet scenario: vLLM's CPU build and everything it needs (about 0.9 GB), mounted
  # read-only into those targets as their offline wheelhouse. Its torch pin (2.13.0+cpu) is a local-version
  # wheel that PyPI does not carry: pip takes it from a find-links directory (LLMFLEET_TORCH_FIND_LINKS,
  # else PIP_FIND_LINKS, else /opt/wheels).
  engine_wheels="$cache/engine-wheels"
  engine_stamp="$engine_wheels/.requirements.sha256"
  engine_hash=$(sha256sum requirements/engine-cpu.txt | cut -d' ' -f1)
  if [ "$(cat "$engine_stamp" 2>/dev/null)" != "$engine_hash" ]; then
    step "Downloading the CPU engine wheelhouse (requirements/engine-cpu.txt) into .cache/engine-wheels"
    torch_links=${LLMFLEET_TORCH_FIND_LINKS:-${PIP_FIND_LINKS:-/opt/wheels}}
    find_links=()
    [ -d "$torch_links" ] && find_links=(--find-links "$torch_links")
    quiet_pip download -q -d "$engine_wheels" "${find_links[@]}" -r requirements/engine-cpu.txt
    echo "$engine_hash" >"$engine_stamp"
  else
    step "CPU engine wheelhouse is current (.cache/engine-wheels)"
  fi

  # The router (role router): LiteLLM's proxy and its pinned dependencies, mounted read-only into the router
  # scenario's frontend as its offline wheelhouse (about 170 MB).
  router_wheels="$cache/router-wheels"
  router_stamp="$router_wheels/.requirements.sha256"
  router_hash=$(sha256sum roles/router/files/requirements.txt | cut -d' ' -f1)
  if [ "$(cat "$router_stamp" 2>/dev/null)" != "$router_hash" ]; then
    step "Downloading the router wheelhouse (roles/router/files/requirements.txt) into .cache/router-wheels"
    quiet_pip download -q -d "$router_wheels" -r roles/router/files/requirements.txt
    echo "$router_hash" >"$router_stamp"
  else
    step "Router wheelhouse is current (.cache/router-wheels)"
  fi
}

# Podman's default runtime (crun) cannot apply its rlimits or drive hybrid cgroups on some hosts; runc
# boots systemd everywhere we have tried. Scoped to this project through CONTAINERS_CONF (the Makefile
# exports it too); the host's own podman configuration is left alone.
images_lane() {
  step "Checking the target image (tests/harness/build_image.sh)"
  as_root env CONTAINERS_CONF="$repo/tests/harness/containers.conf" bash tests/harness/build_image.sh
  step "Checking the Open WebUI stand-in image (molecule/open_webui/build_webui_image.sh)"
  as_root env CONTAINERS_CONF="$repo/tests/harness/containers.conf" \
    bash molecule/open_webui/build_webui_image.sh "${webui_image[@]}" >/dev/null
}

# The image and tag the open_webui role deploys, which the stand-in is built as.
webui_image=(
  "$(awk '$1 == "open_webui_image:" {print $2}' roles/open_webui/defaults/main.yml)"
  "$(awk '$1 == "open_webui_image_tag:" {print $2}' roles/open_webui/defaults/main.yml)"
)
webui_wheels_lane() {
  step "Checking the Open WebUI stand-in's wheels"
  bash molecule/open_webui/build_webui_image.sh --fetch-only "${webui_image[@]}"
}

controller_lane >"$cache/setup-controller.log" 2>&1 &
pids=($!)
webui_wheels_lane >"$cache/setup-webui-wheels.log" 2>&1 &
pids+=($!)
images_lane >"$cache/setup-images.log" 2>&1 &
pids+=($!)
status=0
lanes=(controller webui-wheels images)
for index in "${!lanes[@]}"; do
  lane_status=0
  wait "${pids[$index]}" || lane_status=$?
  cat "$cache/setup-${lanes[$index]}.log"
  if [ "$lane_status" -ne 0 ]; then
    echo "setup: the ${lanes[$index]} lane failed (exit $lane_status)" >&2
    status=1
  fi
done
exit "$status"
