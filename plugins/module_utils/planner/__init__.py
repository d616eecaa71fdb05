# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The vLLM planner (docs/planning.md): will a model fit on a host's GPUs, with which layout and context?

  shape   what the model is: its config.json read as vLLM reads it, the weight format, the bytes per layer
  layout  how the GPUs split it: tensor and pipeline parallel sizes over NVLink or PCIe
  memory  what each GPU holds: the overhead model calibrated on vLLM's own accounting, the KV cache per stage
  plan    the plan itself, and the vllm_service role's settings turned into its arguments

Pure functions, no I/O; a bad input raises PlanError, whose message names the setting and the fix. The filters
llmfleet.workstation.vllm_plan and vllm_service_plan are thin wrappers.
"""

from __future__ import annotations


class PlanError(ValueError):
    """An input the planner cannot use; the message says which and what to do."""
