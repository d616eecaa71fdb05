#!/usr/bin/env bash
# Run a command as a named stage, print its wall time, and append it to .cache/timings.txt.
set -uo pipefail
stage=$1
shift
repo=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$repo/.cache"
printf '\n===== %s =====\n' "$stage"
start=$(date +%s)
"$@"
status=$?
elapsed=$(( $(date +%s) - start ))
verdict=$([ $status -eq 0 ] && echo ok || echo "FAILED ($status)")
printf '===== %s: %s in %dm%02ds =====\n' "$stage" "$verdict" $((elapsed / 60)) $((elapsed % 60))
printf '%-50s %6ss  %s\n' "$stage" "$elapsed" "$verdict" >>"$repo/.cache/timings.txt"
exit $status
