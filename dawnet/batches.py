"""Walking a batch: moving it to a device, its size, a short description for error messages, calling a model.

A batch is a tensor or any nesting of tuples (named tuples kept), lists and mappings of them; the Agent and
the modules that feed models batches the way it does use these, so a batch means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["CPU", "to_device", "run_model", "batch_size", "describe"]

CPU = torch.device("cpu")


def to_device(obj, device: torch.device):
    """``obj`` with every tensor on ``device`` (pinned tensors copied without blocking); the structure kept."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=obj.is_pinned()) if obj.device != device else obj
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(to_device(o, device) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def run_model(module: nn.Module, inputs: tuple):
    """``module(*inputs)``; a failure gets a note naming the inputs' shapes."""
    try:
        return module(*inputs)
    except (RuntimeError, ValueError, TypeError) as e:
        if hasattr(e, "add_note"):
            e.add_note(f"dawnet: the model was called with inputs {describe(inputs)}")
        raise


def batch_size(inputs) -> int:
    """The number of samples in ``inputs``: the first dimension of its first tensor (a 0-d tensor counts 1, a
    sequence without tensors its length; 0 when nothing tells)."""
    if type(inputs) is tuple and inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim():
        return inputs[0].shape[0]  # the usual (x, ...) tuple, without the general walk below
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 1
    if isinstance(inputs, (list, tuple)):
        for item in inputs:
            size = batch_size(item)
            if size:
                return size
        return len(inputs)
    if isinstance(inputs, Mapping):
        return batch_size(list(inputs.values()))
    return 0


def describe(obj) -> str:
    """A short description of a batch for error messages: ``(tensor(8, 1, 28, 28) float32, tensor(8,) int64)``."""
    if isinstance(obj, torch.Tensor):
        return f"tensor{tuple(obj.shape)} {str(obj.dtype).replace('torch.', '')}"
    if isinstance(obj, (list, tuple)):
        inner = ", ".join(describe(o) for o in obj[:4]) + (", ..." if len(obj) > 4 else "")
        return f"({inner})" if isinstance(obj, tuple) else f"[{inner}]"
    if isinstance(obj, Mapping):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in list(obj.items())[:4]) + "}"
    return type(obj).__name__
