"""Running a model for a diagnosis: eval mode that puts everything back, and the forward callable.

Every tool in :mod:`dawnet.diagnose` runs the model the same way: in eval mode for the block
(:func:`eval_mode`, which restores each submodule's own flag, so a model that is half frozen or
mid-training comes back as it was), through an optional ``forward(model, x)`` callable for models
that take more than the image (:func:`forward_with` builds one from a prepared batch's extra
inputs, e.g. a recognizer's line widths), on the device and dtype of its parameters
(:func:`param_like`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from dawnet.parallel import unwrap

__all__ = ["Forward", "eval_mode", "forward_with", "run_forward", "param_like"]

Forward = Callable[[nn.Module, torch.Tensor], Any]


def param_like(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's first floating-point parameter (else buffer); CPU and the default dtype
    for a model without either."""
    plain = unwrap(model)
    for t in [*plain.parameters(), *plain.buffers()]:
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


@contextmanager
def eval_mode(model: nn.Module, *, freeze: bool = False, backprop_rnn: bool = False) -> Iterator[nn.Module]:
    """Eval mode for a block; every submodule's own ``training`` flag is restored after, also on error.

    ``freeze=True`` also turns ``requires_grad`` off on every parameter for the block (an input is
    optimized, not the weights) and restores it after. ``backprop_rnn=True`` keeps recurrent layers
    differentiable on CUDA, where cuDNN's RNN backward needs train mode: they run in train mode with
    dropout 0 (which computes what eval mode computes).
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()] if freeze else []
    rnn_dropout: list[tuple[nn.RNNBase, float]] = []
    try:
        model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        if backprop_rnn and param_like(model)[0].type == "cuda":
            for m in model.modules():
                if isinstance(m, nn.RNNBase):
                    rnn_dropout.append((m, m.dropout))
                    m.dropout = 0.0
                    m.train(True)
        yield model
    finally:
        for m, d in rnn_dropout:
            m.dropout = d
        for m, mode in modes:
            m.training = mode
        for p, g in grads:
            p.requires_grad_(g)


def run_forward(model: nn.Module, x: torch.Tensor, forward: Forward | None = None) -> Any:
    """``forward(model, x)`` when given, else ``model(x)``."""
    return forward(model, x) if forward is not None else model(x)


def forward_with(extra: tuple | list) -> Forward:
    """A ``forward(model, x)`` that calls ``model(x, *extra)``, batch-1 extras repeated to ``x``'s batch.

    ``extra`` is what an agent's ``prepare`` returns after the image batch (a recognizer's line widths):
    the tools that run a batch of probes (random inputs for a receptive field, occluded copies, noisy
    copies) then pass each probe the prepared image's extras.
    """
    rest = tuple(extra)

    def forward(model: nn.Module, x: torch.Tensor) -> Any:
        args = []
        for r in rest:
            if isinstance(r, torch.Tensor) and r.dim() >= 1 and r.shape[0] == 1 and x.shape[0] != 1:
                r = r.expand(x.shape[0], *r.shape[1:])
            args.append(r)
        return model(x, *args)

    return forward
