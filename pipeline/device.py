"""Device and precision choice shared by the torch stages (teacher, label, student, evaluate)."""

from __future__ import annotations

import logging
import os

import torch

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def pick_device() -> torch.device:
    """CUDA when present (or DISTILL_DEVICE=cpu to force the CPU), else CPU."""
    forced = os.environ.get("DISTILL_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: a GPU with bf16 units (Ampere and later),
    or a CPU with AVX512-BF16 or AMX. Emulation does not count: oneDNN also runs bf16 on any
    AVX512 CPU, and torch on older GPUs, but slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`; None means plain fp32.

    "fp32" is exact everywhere. "auto" is bf16 on GPUs with bf16 units (fp16 on older ones)
    and fp32 on every CPU, so CPU results stay exact unless asked otherwise. "bf16" is bf16 wherever the
    hardware computes it natively (GPUs with bf16, CPUs with AVX512-BF16 or AMX: about 2.5x
    faster BERT inference there) and fp32 elsewhere, with a warning: emulated bf16 would be
    slower than fp32, so the shipped params.yaml runs on any machine. The dtype actually used
    is what each stage records in its outputs. "fp16" needs a GPU.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        if native_bf16(device):
            return torch.bfloat16
        log.warning(
            "precision=bf16: this %s has no native bf16; computing in fp32 (recorded in the outputs)",
            device.type.upper(),
        )
        return None
    if device.type != "cuda":
        if precision == "auto":
            return None
        raise PipelineError(
            f"precision={precision} needs a GPU; use precision: bf16, auto or fp32 on a CPU"
        )
    if precision == "fp16":
        return torch.float16
    return torch.bfloat16 if native_bf16(device) else torch.float16
