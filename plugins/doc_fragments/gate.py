# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    # What every read-only NVML gate module shares.
    DOCUMENTATION = r"""
requirements:
  - nvidia-ml-py (the C(pynvml) module) on the target; the C(llmfleet.workstation.gpu_gates) role installs it
    in its own venv
  - an NVIDIA driver providing C(libnvidia-ml.so.1)
attributes:
  check_mode:
    support: full
    description: Reads only; check mode runs the same reads and gives the same verdict.
  diff_mode:
    support: none
    description: Nothing on the host changes, so there is no diff.
"""
