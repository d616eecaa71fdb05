#!/usr/bin/env bash
# ansible-test must run from inside ansible_collections/<namespace>/<name>; it refuses symlinked
# trees, so sanity runs on a copy of the files git tracks (plus new, unignored ones).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
tree="$repo/.cache/sanity/ansible_collections/llmfleet/workstation"
rm -rf "$repo/.cache/sanity" && mkdir -p "$tree"
(cd "$repo" && git ls-files --cached --others --exclude-standard -z | xargs -0 cp --parents -t "$tree")
cd "$tree"
git init -q && git add -A >/dev/null
ansible-test sanity --color no --python 3.11 "$@"
