"""Device and precision choice shared by the torch stages (teacher, label, student, evaluate)."""

from __future__ import annotations

import os

import torch

from pipeline.errors import PipelineError


def pick_device() -> torch.device:
    """CUDA when present (or DISTILL_DEVICE=cpu to force the CPU), else CPU."""
    forced = os.environ.get("DISTILL_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`; None means plain fp32.

    "auto" is bf16 on GPUs that support it and fp32 elsewhere, so CPU results stay exact
    unless asked otherwise. "bf16" on a CPU with native bf16 instructions (AVX512-BF16, AMX)
    is allowed: on such a CPU it makes BERT inference about 2.5x faster.
    """
    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision == "auto":
            return None
        if precision == "bf16" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return torch.bfloat16
        raise PipelineError(
            f"precision={precision} is not supported on this CPU; use precision: auto or fp32"
        )
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16
