#!/usr/bin/env bash
# Run `ansible-test sanity` on the collection.
# - ansible-test must run from inside ansible_collections/<namespace>/<name> and refuses symlinked
#   trees, so it runs on a copy of the files git tracks (plus new, unignored ones).
# - It runs from its own venv (.cache/sanity-venv): its per-test requirements must not mix with the
#   controller tools.
# - Its pip bootstrap script normally comes from a host outside PyPI; tests/harness/get_pip_offline.py
#   stands in for it, cached under a HOME kept inside .cache.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
venv="$repo/.cache/sanity-venv"
core_pin=$(grep -E '^ansible-core==' "$repo/requirements/controller.txt")
if ! "$venv/bin/python" -m pip show ansible-core 2>/dev/null | grep -qx "Version: ${core_pin#*==}"; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q "$core_pin" 2> >(grep -v "is ignored: it is neither" >&2)
fi
export HOME="$repo/.cache/sanity-home"
# The pip release ansible-test pins for its venvs names the cached script it looks for.
pip_version=$(grep -oP "^\s*pip='\K[0-9.]+" "$venv"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)
mkdir -p "$HOME/.ansible/test/cache"
cp "$repo/tests/harness/get_pip_offline.py" "$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"

tree="$repo/.cache/sanity/ansible_collections/llmfleet/workstation"
rm -rf "$repo/.cache/sanity" && mkdir -p "$tree"
(cd "$repo" && git ls-files --cached --others --exclude-standard -z | xargs -0 cp --parents -t "$tree")
cd "$tree"
git init -q && git add -A >/dev/null
"$venv/bin/ansible-test" sanity --color no --requirements --python 3.11 "$@"
