#!/usr/bin/env bash
# Print a command's wall time against its budget:  budget.sh NAME START_EPOCH BUDGET_SECONDS [WHAT]
# Over budget is reported, not failed: the budgets are for the 2-core CI machine, and a busy one is slower.
set -euo pipefail
name=$1 start=$2 budget=$3
elapsed=$(( $(date +%s) - start ))
mmss() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
verdict=$([ "$elapsed" -le "$budget" ] && echo "within" || echo "OVER")
printf '===== %s took %s: %s its budget of %s (2-core machine; load now %s) =====\n' \
  "$name" "$(mmss "$elapsed")" "$verdict" "$(mmss "$budget")" "$(cut -d' ' -f1-3 /proc/loadavg)"
