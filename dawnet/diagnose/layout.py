"""How a layer's output is read: its feature layout, and the ``(N, C, *spatial)`` view every tool works on.

A layer output is read in one of these layouts (guessed, or given by ``layout=``): ``"NCHW"`` (conv
maps), ``"NCL"`` (1-D conv maps), ``"NTC"`` (sequences, batch first: an LSTM with ``batch_first=True``
or a recognizer's ``(N, T, C)`` logits), ``"TNC"`` (an LSTM without ``batch_first``), ``"NC"``
(vectors). A 1-D feature axis (L or T) maps to the input's width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["LAYOUTS", "feature_layout", "canonical", "check_input_shape"]

LAYOUTS = ("NCHW", "NCL", "NTC", "TNC", "NC")


def feature_layout(module: nn.Module | None, tensor: torch.Tensor, layout: str | None = None) -> str:
    """The layout of a layer's primary output (see the module docstring); checks a given one."""
    if layout is not None:
        layout = layout.upper()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
        if len(layout) != tensor.dim():
            raise ValueError(f"layout {layout!r} needs a {len(layout)}-D output, got shape {tuple(tensor.shape)}")
        return layout
    if tensor.dim() == 4:
        return "NCHW"
    if tensor.dim() == 2:
        return "NC"
    if tensor.dim() == 3:
        if isinstance(module, nn.RNNBase):
            return "NTC" if module.batch_first else "TNC"
        conv1d = (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)
        if isinstance(module, conv1d):
            return "NCL"
        return "NTC"  # recognizer logits, transformer outputs: (N, T, C); pass layout= otherwise
    raise ValueError(
        f"cannot read a {tensor.dim()}-D layer output of shape {tuple(tensor.shape)}: "
        f"pass layout= one of {', '.join(LAYOUTS)}"
    )


def canonical(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    """View a feature tensor as ``(N, C, *spatial)`` whatever its layout."""
    if layout == "NTC":
        return tensor.permute(0, 2, 1)
    if layout == "TNC":
        return tensor.permute(1, 2, 0)
    return tensor


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """One input's shape ``(C, H, W)`` or ``(C, L)`` from that or a batch shape ``(N, C, H, W)``; refuses others."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) not in (2, 3):
        raise ValueError(
            f"input_shape must be (C, H, W), (N, C, H, W) or (C, L), got {input_shape!r}; "
            f"e.g. (1, 32, 128) for a grayscale line 32 px high and 128 px wide"
        )
    return shape

