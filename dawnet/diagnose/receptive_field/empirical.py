"""The receptive field measured with gradients: which input pixels a feature position depends on.

Works for any differentiable architecture; :func:`structural_copy` gives weights under which every
architectural connection carries gradient, so the measured support is the architecture's field.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from dawnet.diagnose.forward import Forward, eval_mode, param_like, run_forward
from dawnet.diagnose.layout import canonical, check_input_shape, feature_layout
from dawnet.diagnose.probe import probe, resolve_layers, unwrap

__all__ = ["empirical_receptive_field", "structural_copy"]


def _support_box(g: torch.Tensor, axes: list[str]) -> dict[str, tuple[int, int]]:
    """Per-axis inclusive (lo, hi) of the nonzero region of a gradient map."""
    out = {}
    for i, a in enumerate(axes):
        other = [d for d in range(g.dim()) if d != i]
        line = g.amax(dim=other) if other else g
        nz = torch.nonzero(line > 0).flatten()
        out[a] = (int(nz.min()), int(nz.max())) if nz.numel() else (-1, -1)
    return out


def _effective(g: torch.Tensor, axes: list[str], mass: float) -> dict[str, tuple[int, int]]:
    out = {}
    tail = (1 - mass) / 2
    for i, a in enumerate(axes):
        other = [d for d in range(g.dim()) if d != i]
        line = g.sum(dim=other) if other else g
        cum = torch.cumsum(line.double(), 0)
        total = float(cum[-1])
        if total <= 0:
            out[a] = (-1, -1)
            continue
        lo = int(torch.searchsorted(cum, torch.tensor(tail * total, dtype=cum.dtype)))
        hi = int(torch.searchsorted(cum, torch.tensor((1 - tail) * total, dtype=cum.dtype)))
        out[a] = (lo, min(hi, line.numel() - 1))
    return out


def _input_gradients(model: nn.Module, layer: str, x: torch.Tensor, positions: list[tuple[int, ...]],
                     layout: str | None, forward: Forward | None, seed: int
                     ) -> tuple[list[torch.Tensor], str, tuple[int, ...], nn.Module]:
    """|d f[:, :, pos] / d x| summed over samples and input channels, one map per position."""
    target = resolve_layers(model, layer)[layer]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = x.detach().clone().requires_grad_(True)
    with eval_mode(model), probe(model, layer, detach=False) as p:
        run_forward(model, x, forward)
        out = p[layer]
        lay = feature_layout(target, out, layout)
        f = canonical(out, lay)
        feat_shape = tuple(f.shape[2:])
        maps = []
        for pos in positions:
            sel = f[(slice(None), slice(None), *pos)]  # (N, C)
            w = torch.randn(sel.shape, generator=gen).to(sel)  # random channel mix: no cancellation
            (g,) = torch.autograd.grad((sel * w).sum(), x, retain_graph=True, allow_unused=True)
            g = torch.zeros_like(x) if g is None else g
            maps.append(g.detach().abs().sum(dim=(0, 1)).float().cpu())
    return maps, lay, feat_shape, target


def structural_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose weights make every architectural connection carry gradient.

    Trained or freshly initialised weights can hide paths: a residual branch whose last norm
    starts at zero, dead ReLUs, pruned channels. The copy gets positive weights scaled by
    1/fan-in, unit norm scales, small positive biases and neutral running statistics, so with
    positive inputs every unit is active and the gradient support equals the architecture's
    receptive field. The original model is not touched.
    """
    copy_ = copy.deepcopy(unwrap(model))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in copy_.named_parameters():
            if not p.is_floating_point():
                continue
            if p.dim() > 1:
                fan_in = max(1, p[0].numel())
                p.copy_((torch.rand(p.shape, generator=gen) + 0.5).to(p) / fan_in)
            else:
                p.fill_(0.01 if name.rsplit(".", 1)[-1].startswith("bias") else 1.0)
        for m in copy_.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats and m.running_var is not None:
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    return copy_


def empirical_receptive_field(model: nn.Module, layer: str, input_shape: Sequence[int], *,
                              forward: Forward | None = None, layout: str | None = None,
                              samples: int = 4, seed: int = 0, mass: float = 0.9,
                              positions: Sequence[Sequence[int]] | None = None, structural: bool = True) -> dict:
    """Receptive field measured with gradients: which input pixels a feature position depends on.

    Backpropagates a random channel mix of the feature at each position (eval mode, ``samples``
    random inputs) and keeps where the input gradient is nonzero. Works for any differentiable
    architecture. With ``structural=True`` (default) the support is measured on
    :func:`structural_copy` (the architecture's field, comparable with the analytic one); the
    model's own weights then give ``functional_size`` (where the model, as trained, really
    looks; smaller when paths are dead or zero-initialised) and ``effective_size``: the span
    holding ``mass`` of the gradient's magnitude (Luo et al., 2016, "Understanding the
    Effective Receptive Field in Deep Convolutional Neural Networks").

    Returns a dict with per-axis ``size``/``jump``/``start``/``bounded``/``functional_size``/
    ``effective_size`` and the measured boxes at the probed positions (``checks``).
    """
    shape = check_input_shape(input_shape)
    device, dtype = param_like(model)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn((samples, *shape), generator=gen).to(device=device, dtype=dtype)
    in_axes = ["height", "width"] if len(shape) == 3 else ["length"]
    lengths = dict(zip(in_axes, shape[1:]))
    # One forward to learn the feature shape, then the probed positions.
    _, lay, feat_shape, _ = _input_gradients(model, layer, x[:1], [], layout, forward, seed)
    if positions is None:
        centre = tuple(n // 2 for n in feat_shape)
        nxt = tuple(min(c + 1, n - 1) for c, n in zip(centre, feat_shape))
        positions = [centre, nxt, tuple(0 for _ in feat_shape), tuple(n - 1 for n in feat_shape)]
    positions = [tuple(int(v) for v in p) for p in positions]
    func_maps, lay, feat_shape, _ = _input_gradients(model, layer, x, positions[:1], layout, forward, seed)
    if structural:
        positive = torch.rand((samples, *shape), generator=gen).to(device=device, dtype=dtype) + 0.1
        maps, _, _, _ = _input_gradients(structural_copy(model, seed), layer, positive, positions, layout, forward,
                                         seed)
    else:
        maps, _, _, _ = _input_gradients(model, layer, x, positions, layout, forward, seed)
    feat_axes = in_axes[len(in_axes) - len(feat_shape):] if feat_shape else []
    boxes = [_support_box(m, in_axes) for m in maps]
    func_box = _support_box(func_maps[0], in_axes)
    eff = _effective(func_maps[0], in_axes, mass)
    result: dict[str, Any] = {"layout": lay, "feature_shape": list(feat_shape), "feature_axes": feat_axes,
                              "axes": {}, "checks": []}
    for pos, b in zip(positions, boxes):
        result["checks"].append({"position": list(pos), "box": {a: list(v) for a, v in b.items()}})
    for a in in_axes:
        n = lengths[a]
        lo, hi = boxes[0][a]
        touches_lo, touches_hi = lo <= 0, hi >= n - 1
        bounded = not (touches_lo or touches_hi)
        size = float(hi - lo + 1) if lo >= 0 else 0.0
        if touches_lo and touches_hi:
            size = float("inf")
        jump = float("nan")
        if a in feat_axes:
            k = feat_axes.index(a)
            if feat_shape[k] > 1 and positions[1][k] != positions[0][k]:
                lo1, hi1 = boxes[1][a]
                step = positions[1][k] - positions[0][k]
                if lo > 0 and lo1 > 0:
                    jump = (lo1 - lo) / step
                elif hi < n - 1 and hi1 < n - 1:
                    jump = (hi1 - hi) / step
            if not math.isfinite(jump):
                jump = n / feat_shape[k]
            centre = (lo + hi) / 2 if bounded else (positions[0][k] + 0.5) * jump - 0.5
            start = centre - positions[0][k] * jump
        else:  # an axis folded away by the layer: the whole column's span
            jump, start = 1.0, (lo + hi) / 2
        e_lo, e_hi = eff[a]
        f_lo, f_hi = func_box[a]
        result["axes"][a] = {"size": size, "jump": jump, "start": start, "bounded": bounded,
                             "functional_size": float(f_hi - f_lo + 1) if f_lo >= 0 else 0.0,
                             "effective_size": float(e_hi - e_lo + 1) if e_lo >= 0 else 0.0}
    return result
