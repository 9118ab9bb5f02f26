"""Gradient sensitivity: how a chosen activation (a neuron, a channel, a character logit at one time
step, the CTC log-probability of a string) depends on each input pixel; and occlusion maps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dawnet.diagnose.forward import Forward, eval_mode, param_like, run_forward
from dawnet.diagnose.layout import canonical, feature_layout
from dawnet.diagnose.probe import probe, resolve_layers

__all__ = ["Target", "neuron", "channel", "logit", "ctc_logprob", "Sensitivity", "sensitivity", "occlusion"]


class Target:
    """A scalar per sample read from one layer's output: what sensitivity maps explain.

    Built with :func:`neuron`, :func:`channel`, :func:`logit` or :func:`ctc_logprob`; ``value``
    maps the layer's primary output to an ``(N,)`` tensor.
    """

    def __init__(self, layer: str, fn: Callable[[torch.Tensor, str], torch.Tensor], description: str,
                 layout: str | None = None):
        self.layer = layer
        self.fn = fn
        self.description = description
        self.layout = layout

    def value(self, output: torch.Tensor, module: nn.Module | None = None) -> torch.Tensor:
        lay = feature_layout(module, output, self.layout)
        return self.fn(output, lay)

    def __repr__(self) -> str:
        return f"Target({self.description})"


def neuron(layer: str, channel: int, *position: int, layout: str | None = None) -> Target:
    """One activation: ``channel`` at feature ``position`` ((y, x), (t,), or none for vectors)."""

    def fn(out, lay):
        f = canonical(out, lay)
        if len(position) != f.dim() - 2:
            raise ValueError(f"layer {layer!r} output {lay} needs {f.dim() - 2} position indices, got {position}")
        return f[(slice(None), channel, *position)]

    return Target(layer, fn, f"{layer}[c={channel}, pos={position}]", layout)


def channel(layer: str, channel: int, reduce: str = "mean", layout: str | None = None) -> Target:
    """A whole channel's map, reduced by ``mean``, ``sum`` or ``max`` over positions."""
    if reduce not in ("mean", "sum", "max"):
        raise ValueError(f"reduce must be mean, sum or max, got {reduce!r}")

    def fn(out, lay):
        f = canonical(out, lay)[:, channel]
        f = f.reshape(f.shape[0], -1)
        return {"mean": f.mean, "sum": f.sum, "max": lambda dim: f.amax(dim=dim)}[reduce](dim=1)

    return Target(layer, fn, f"{reduce} of {layer}[c={channel}]", layout)


def logit(cls: int, t: int, layer: str = "output", log_softmax: bool = False, layout: str = "NTC") -> Target:
    """Character class ``cls``'s logit at time step ``t`` of an ``(N, T, C)`` output: one element.

    Unlike tools that sum over classes, this differentiates exactly ``out[n, t, cls]`` (or its
    log-softmax with ``log_softmax=True``, which also accounts for the competing classes).
    """

    def fn(out, lay):
        f = canonical(out, lay)  # (N, C, T)
        if log_softmax:
            f = f.log_softmax(dim=1)
        if not (0 <= cls < f.shape[1] and -f.shape[2] <= t < f.shape[2]):
            raise IndexError(f"class {cls} / step {t} outside the output's {f.shape[1]} classes x {f.shape[2]} steps")
        return f[:, cls, t]

    return Target(layer, fn, f"{'log p' if log_softmax else 'logit'}(class {cls} at t={t}) of {layer}", layout)


def ctc_logprob(labels: Sequence[int] | str, *, alphabet: str | None = None, blank: int = 0,
                layer: str = "output", layout: str = "NTC") -> Target:
    """log p(labels | image) under CTC for an ``(N, T, C)`` output (log-softmax taken here).

    ``labels`` are class indices, or a string with ``alphabet`` (class of ``alphabet[i]`` is
    ``i + 1`` when ``blank == 0``, else ``i``).
    """
    if isinstance(labels, str):
        if alphabet is None:
            raise ValueError("a text target needs alphabet= (the model's characters in class order)")
        missing = sorted({ch for ch in labels if ch not in alphabet})
        if missing:
            raise ValueError(f"characters {missing} are not in the alphabet; use characters the model knows")
        offset = 1 if blank == 0 else 0
        ids = [alphabet.index(ch) + offset for ch in labels]
        text = labels
    else:
        ids = [int(v) for v in labels]
        text = str(ids)

    def fn(out, lay):
        f = canonical(out, lay).log_softmax(dim=1)  # (N, C, T)
        n, _, t = f.shape
        lp = f.permute(2, 0, 1)  # (T, N, C) for ctc_loss
        tgt = torch.tensor(ids, device=f.device).expand(n, len(ids))
        return -F.ctc_loss(lp, tgt, torch.full((n,), t, dtype=torch.long), torch.full((n,), len(ids), dtype=torch.long),
                           blank=blank, reduction="none", zero_infinity=False)

    return Target(layer, fn, f"CTC log p({text!r}) of {layer}", layout)


@dataclass
class Sensitivity:
    """Input attribution for one target: ``gradient`` ``(N, C, H, W)``, ``heatmap`` ``(N, H, W)``."""

    target: str
    method: str
    value: torch.Tensor
    gradient: torch.Tensor
    heatmap: torch.Tensor

    def figure(self, image: torch.Tensor | None = None, index: int = 0, **kwargs: Any):
        from dawnet.diagnose.vis import heatmap_overlay

        return heatmap_overlay(image, self.heatmap[index], title=f"{self.method}: {self.target}", **kwargs)


def sensitivity(model: nn.Module, x: torch.Tensor, target: Target, method: str = "gradient", *,
                forward: Forward | None = None, baseline: float | torch.Tensor = 0.0,
                samples: int = 16, noise: float = 0.1, seed: int = 0) -> Sensitivity:
    """How ``target`` depends on each input pixel, as a heatmap over the image.

    Methods: ``gradient`` (d target / d input; Simonyan et al., 2014), ``grad_x_input``
    (gradient times ``input - baseline``), ``smoothgrad`` (gradient averaged over ``samples``
    noisy copies, noise ``noise * (max - min)``; Smilkov et al., 2017). The heatmap is the
    magnitude summed over input channels (signed for ``grad_x_input``). The model runs in
    eval mode; its mode is restored.
    """
    if method not in ("gradient", "grad_x_input", "smoothgrad"):
        raise ValueError(f"method must be gradient, grad_x_input or smoothgrad, got {method!r}")
    module = resolve_layers(model, target.layer)[target.layer]
    device, dtype = param_like(model)
    x = x.to(device=device, dtype=dtype)
    if x.dim() == 3:  # one (C, H, W) image
        x = x[None]

    def grad_of(inp):
        inp = inp.detach().clone().requires_grad_(True)
        with probe(model, target.layer, detach=False) as p:
            run_forward(model, inp, forward)
            val = target.value(p[target.layer], module)
        (g,) = torch.autograd.grad(val.sum(), inp, allow_unused=True)
        return val.detach(), torch.zeros_like(inp) if g is None else g.detach()

    with eval_mode(model):
        if method == "smoothgrad":
            gen = torch.Generator(device="cpu").manual_seed(seed)
            scale = noise * float(x.max() - x.min())
            val, _ = grad_of(x)
            grads = torch.zeros_like(x)
            for _ in range(samples):
                eps = torch.randn(x.shape, generator=gen).to(x) * scale
                grads += grad_of(x + eps)[1]
            g = grads / samples
        else:
            val, g = grad_of(x)
    if method == "grad_x_input":
        heat = (g * (x - baseline)).sum(dim=1)
    else:
        heat = g.abs().sum(dim=1)
    return Sensitivity(target=target.description, method=method, value=val.cpu(), gradient=g.cpu(),
                       heatmap=heat.cpu())


def occlusion(model: nn.Module, x: torch.Tensor, target: Target, window: int | tuple[int, int] = 8,
              stride: int | tuple[int, int] | None = None, *, fill: float | str = "mean",
              region: tuple[int, int, int, int] | None = None, forward: Forward | None = None,
              batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """Drop in ``target`` when a ``window`` square is covered, for every window position.

    Returns an ``(N, H, W)`` map: each pixel holds the mean drop over the windows that covered
    it (positive: covering it lowers the target, so the pattern there matters). ``region``
    ``(y0, x0, y1, x1)`` restricts the sweep to a patch, e.g. a neuron's receptive field box.
    ``fill`` is a value or ``"mean"`` (each image's mean: blank paper for a text line).
    """
    module = resolve_layers(model, target.layer)[target.layer]
    device, dtype = param_like(model)
    x = x.to(device=device, dtype=dtype)
    if x.dim() == 3:
        x = x[None]
    wy, wx = _pair(window)
    sy, sx = _pair(stride if stride is not None else (max(1, wy // 2), max(1, wx // 2)))
    n, c, h, w = x.shape
    y0, x0, y1, x1 = region if region is not None else (0, 0, h, w)
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise ValueError(f"region {region} is not inside the {h}x{w} image")
    fill_v = x.mean(dim=(1, 2, 3), keepdim=True) if fill == "mean" else torch.full((n, 1, 1, 1), float(fill)).to(x)
    ys = list(range(y0, max(y0 + 1, y1 - wy + 1), sy)) or [y0]
    xs = list(range(x0, max(x0 + 1, x1 - wx + 1), sx)) or [x0]
    boxes = [(yy, xx, min(yy + wy, y1), min(xx + wx, x1)) for yy in ys for xx in xs]

    def values(batch):
        with probe(model, target.layer) as p:
            run_forward(model, batch, forward)
            return target.value(p[target.layer], module).float()

    drop = torch.zeros(n, h, w)
    count = torch.zeros(n, h, w)
    with eval_mode(model), torch.no_grad():
        base = values(x).cpu()
        for i in tqdm(range(0, len(boxes), max(1, batch_size // n)), disable=not progress, desc="occlusion"):
            chunk = boxes[i:i + max(1, batch_size // n)]
            batch = x.repeat(len(chunk), 1, 1, 1)
            for j, (a, b, cc, d) in enumerate(chunk):
                batch[j * n:(j + 1) * n, :, a:cc, b:d] = fill_v
            v = values(batch).cpu().reshape(len(chunk), n)
            for j, (a, b, cc, d) in enumerate(chunk):
                drop[:, a:cc, b:d] += (base - v[j])[:, None, None]
                count[:, a:cc, b:d] += 1
    return torch.where(count > 0, drop / count.clamp(min=1), torch.zeros_like(drop))


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    """``(v, v)`` for one number; a given pair as a tuple."""
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))
