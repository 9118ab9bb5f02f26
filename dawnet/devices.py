"""Choosing the device and the mixed-precision mode an Agent runs on."""

from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["resolve_device", "resolve_amp", "autocast"]


def resolve_device(device) -> torch.device:
    """``"auto"``/None: this process's CUDA device (``LOCAL_RANK`` under torchrun) when CUDA is available, else the
    CPU; anything else as ``torch.device`` takes it. Raises ValueError for CUDA on a machine without it."""
    if device == "auto" or device is None:
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device("cuda", local % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but CUDA is not available; use device='cpu' or 'auto'")
    return device


def resolve_amp(amp, device: torch.device) -> str | None:
    """The autocast dtype name for an ``amp`` argument: None (off), ``"fp16"`` (CUDA) or ``"bf16"``;
    ``True`` picks fp16 on CUDA and bf16 elsewhere. Raises ValueError for other values and fp16 off CUDA."""
    if amp in (False, None):
        return None
    if amp is True:
        return "fp16" if device.type == "cuda" else "bf16"
    if amp not in ("fp16", "bf16"):
        raise ValueError(f"amp must be False, True, 'fp16' or 'bf16', got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs CUDA; on the CPU use amp='bf16'")
    return amp


def autocast(amp: str | None, device: torch.device):
    """The autocast context for a :func:`resolve_amp` result on ``device`` (a null context when ``amp`` is None)."""
    if not amp:
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)
