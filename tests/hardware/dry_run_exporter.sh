#!/usr/bin/env bash
# Dry run of check_exporter.sh on a machine without a GPU: the fake NVML (tests/fake_nvml) stands in for the
# driver and tests/hardware/dry_run/nvidia-smi for nvidia-smi, reading the same fake library. It proves the script
# runs end to end (exporter start, parsing, comparison, timing, power-limit trial, restore, report), never that the
# exporter's figures are right: the report says so at the top.
#   OUT=/tmp/exporter-dry SCENARIO=dual_h200_nvswitch bash tests/hardware/dry_run_exporter.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
scenario=${SCENARIO:-dual_h200_nvswitch}
python=${PYTHON:-$repo/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
make -s -C "$repo/tests/fake_nvml" PYTHON="$python" OUT="$work/lib" >/dev/null
export LD_LIBRARY_PATH=$work/lib FAKE_NVML_SCENARIO=$repo/tests/fake_nvml/scenarios/$scenario.json
# The set limit lives in this run's own state file, not in the machine's /run.
export FAKE_NVML_STATE=$work/power_limits
python_dir=$(dirname "$python")
export PATH=$repo/tests/hardware/dry_run:$python_dir:$PATH PYTHON=$python
DRY_RUN="fake NVML scenario $scenario and a stub nvidia-smi reading the same fake library" \
  SCRAPES=${SCRAPES:-10} bash "$repo/tests/hardware/check_exporter.sh"
