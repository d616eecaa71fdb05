#!/usr/bin/env bash
# Build what tests/hardware/check_router.sh needs on a GPU machine that cannot download: the router role's pinned
# LiteLLM venv (roles/router/files/requirements.txt) installed for that machine's Python into one folder, as a
# zstd-compressed tar split into 50 MB parts: .gpu-carry/router-part1..N/part.*. vLLM's own parts come from the
# engine carry (.gpu-carry/part1..N, see the engine check).
#   PYTHON_VERSION=3.12 bash tests/hardware/build_router_carry.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
carry=${CARRY:-$repo/.gpu-carry}
version=${PYTHON_VERSION:-3.12}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$repo/.venv/bin/python" -m pip install -q --no-compile --no-deps --only-binary=:all: --python-version "$version" \
  --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform any --target "$work/site" -r "$repo/roles/router/files/requirements.txt"
echo "router site: $(du -sh "$work/site" | cut -f1)"
rm -rf "$carry"/router-part*
mkdir -p "$carry/router-split"
tar -C "$work/site" -c . | zstd -q -T2 -12 --long=27 | split -b 50M -d - "$carry/router-split/part."
n=0
for chunk in "$carry"/router-split/part.*; do
  n=$((n + 1)); mkdir -p "$carry/router-part$n"; mv "$chunk" "$carry/router-part$n/router.$(basename "$chunk" | cut -d. -f2)"
done
rmdir "$carry/router-split"
du -sh "$carry"/router-part*
