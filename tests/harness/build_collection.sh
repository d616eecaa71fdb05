#!/usr/bin/env bash
# Build the collection tarball and check it carries no test build output, caches or venvs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out="$repo/.cache/dist"
rm -rf "$out" && mkdir -p "$out"
ansible-galaxy collection build --force --output-path "$out" "$repo" >/dev/null
tarball=$(ls "$out"/llmfleet-workstation-*.tar.gz)
listing=$(tar -tzf "$tarball")
unwanted=$(grep -E '(^|/)(\.cache|\.venv|\.git|\.ansible|\.ruff_cache|\.pytest_cache|\.whl|__pycache__|build|molecule)(/|$)|\.so(\.[0-9]+)*$' <<<"$listing" || true)
if [ -n "$unwanted" ]; then
  echo "The collection tarball carries files it must not:" >&2
  echo "$unwanted" >&2
  exit 1
fi
echo "$(basename "$tarball"): $(wc -l <<<"$listing") files, $(du -k "$tarball" | cut -f1) KiB"
for required in MANIFEST.json FILES.json README.md meta/runtime.yml plugins/module_utils/nvml.py \
                plugins/modules/nvlink_status.py plugins/modules/gpu_junction_temp.py plugins/modules/gpu_facts.py; do
  grep -qx "$required" <<<"$listing" || { echo "missing from tarball: $required" >&2; exit 1; }
done
