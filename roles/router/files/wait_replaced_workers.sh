#!/usr/bin/env bash
# Usage: wait_replaced_workers.sh SERVICE WORKERS DRAIN_TIMEOUT
# Waits until the router's gunicorn master has only WORKERS children left after a reload. LiteLLM's worker cancels
# what is left after DRAIN_TIMEOUT seconds, but a worker can still hang in its own shutdown after that (seen on a
# loaded two-core test machine, where one outlived its replacement by minutes): one still there 15 s past the timeout
# is stopped, as gunicorn itself does with workers that outlive graceful_timeout when the whole service stops.
set -euo pipefail
service=$1 workers=$2 drain_timeout=$3
main=$(systemctl show --property MainPID --value "$service")
test "$main" -gt 0 || { echo "$service is not running"; exit 1; }
children() { cat /proc/"$main"/task/*/children 2>/dev/null || true; }
deadline=$((SECONDS + drain_timeout + 15))
while [ "$(children | wc -w)" -gt "$workers" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 1; done
if [ "$(children | wc -w)" -gt "$workers" ]; then
  # The oldest children are the replaced workers: all but the newest WORKERS (field 22 of stat: start time).
  for pid in $(for child in $(children); do
                 echo "$(sed -E 's/^.*\) //' /proc/"$child"/stat | cut -d' ' -f20) $child"
               done | sort -n | head -n -"$workers" | cut -d' ' -f2); do
    kill -KILL "$pid" && echo "stopped replaced worker $pid, still running $drain_timeout s after the reload"
  done
  sleep 2
fi
test "$(children | wc -w)" -le "$workers"
