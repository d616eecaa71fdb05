# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply the GPUs' power limits from a JSON file ({"limit_w": 280} or {"limit_w": {"0": 280}}) at boot.

The same checks and calls as the gpu_power_limit module (module_utils gpu_power): a value outside a card's range is
refused with the range, and nothing is set then. The driver may still be starting when this runs, so NVML is tried
for up to START_TIMEOUT seconds.
"""

import json
import sys
import time

from ansible_collections.llmfleet.workstation.plugins.module_utils.gpu_power import LimitError, apply_limits
from ansible_collections.llmfleet.workstation.plugins.module_utils.nvml import NvmlError, NvmlSession

START_TIMEOUT = 60
NOT_READY = ("driver_not_loaded", "nvml_init_failed")


def log(line):
    sys.stderr.write("llmfleet-gpu-power-limit: %s\n" % line)


def main(argv):
    with open(argv[1]) as config_file:
        limit_w = json.load(config_file)["limit_w"]
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with NvmlSession() as session:
                result = apply_limits(session, limit_w, check_mode=False)
            break
        except LimitError as error:
            log(str(error))
            return 1
        except NvmlError as error:
            if error.code not in NOT_READY or time.monotonic() > deadline:
                log(str(error))
                return 1
            time.sleep(2)
    log(result["msg"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
