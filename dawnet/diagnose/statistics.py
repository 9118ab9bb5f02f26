"""Model statistics per layer: parameters, MACs, output shape, activation statistics (dead units),
weight and gradient norms -- as a table, a dict and a figure.

``model_stats(model, x)`` runs the model on a batch (or every batch of a loader) without changing
it, and summarises what each layer produced. A layer whose outputs are mostly exact zeros after a
ReLU is a dead layer: ``zero_fraction`` shows it at a glance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import torch
from matplotlib.figure import Figure
from torch import nn

from dawnet.cost import count
from dawnet.cost.counter import preserve_state
from dawnet.cost.report import format_count

__all__ = ["LayerStats", "ModelStats", "model_stats"]


@dataclass
class LayerStats:
    """Statistics of one module; activation fields describe its (first tensor) output."""

    name: str
    type: str
    params: int
    macs: int
    output_shape: list[int] | None = None
    mean: float = math.nan
    std: float = math.nan
    min: float = math.nan
    max: float = math.nan
    zero_fraction: float = math.nan  # exact zeros among all output elements (dead ReLUs)
    weight_norm: float | None = None  # L2 norm of the module's own parameters
    grad_norm: float | None = None  # L2 norm of their .grad, where present


@dataclass
class ModelStats:
    """Per-layer statistics of a model over ``batches`` batches (``samples`` samples)."""

    model: str
    batches: int
    samples: int
    layers: list[LayerStats] = field(default_factory=list)

    def layer(self, name: str) -> LayerStats:
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(f"no layer named {name!r}; layers: {', '.join(r.name for r in self.layers)}")

    def to_dict(self) -> dict:
        return {"model": self.model, "batches": self.batches, "samples": self.samples,
                "layers": [asdict(r) for r in self.layers]}

    def table(self) -> str:
        headers = ["Layer", "Type", "Params", "MACs", "Output", "Mean", "Std", "Min", "Max", "Zeros",
                   "|W|", "|dW|"]

        def num(v):
            return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"

        rows = [[r.name, r.type, format_count(r.params), format_count(r.macs),
                 "x".join(map(str, r.output_shape)) if r.output_shape else "-", num(r.mean), num(r.std),
                 num(r.min), num(r.max), "-" if math.isnan(r.zero_fraction) else f"{100 * r.zero_fraction:.1f}%",
                 num(r.weight_norm), num(r.grad_norm)] for r in self.layers]
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]

        def line(cells):
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        title = f"Layer statistics of {self.model} over {self.batches} batch(es), {self.samples} sample(s)"
        return "\n".join([title, line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])

    def __str__(self) -> str:
        return self.table()

    def figure(self) -> Figure:
        """Three panels per layer: params and MACs (log scale), activation mean/std/range, zero fraction."""
        rows = [r for r in self.layers if r.output_shape is not None]
        fig = Figure(figsize=(max(6.0, 0.45 * len(rows) + 2), 8), layout="constrained")
        ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True)
        xs = list(range(len(rows)))
        width = 0.4
        ax1.bar([x - width / 2 for x in xs], [max(r.params, 1) for r in rows], width, label="params")
        ax1.bar([x + width / 2 for x in xs], [max(r.macs, 1) for r in rows], width, label="MACs")
        ax1.set_yscale("log")
        ax1.legend()
        ax1.set_title(f"{self.model}: cost per layer")
        ax2.errorbar(xs, [r.mean for r in rows], yerr=[r.std for r in rows], fmt="o", capsize=3, label="mean ± std")
        ax2.scatter(xs, [r.min for r in rows], marker="v", s=12, label="min")
        ax2.scatter(xs, [r.max for r in rows], marker="^", s=12, label="max")
        ax2.legend()
        ax2.set_title("activations")
        ax3.bar(xs, [100 * r.zero_fraction for r in rows], color="tab:red")
        ax3.set_ylim(0, 100)
        ax3.set_ylabel("% exact zeros")
        ax3.set_title("dead units")
        ax3.set_xticks(xs, [r.name for r in rows], rotation=60, ha="right", fontsize=8)
        return fig


class _Acc:
    __slots__ = ("n", "s", "s2", "lo", "hi", "zeros", "shape")

    def __init__(self):
        self.n, self.s, self.s2, self.zeros = 0, 0.0, 0.0, 0
        self.lo, self.hi, self.shape = math.inf, -math.inf, None

    def add(self, t: torch.Tensor) -> None:
        t = t.detach()
        self.shape = list(t.shape)
        if t.numel() == 0:
            return
        f = t.double()
        self.n += t.numel()
        self.s += float(f.sum())
        self.s2 += float((f * f).sum())
        self.lo, self.hi = min(self.lo, float(f.min())), max(self.hi, float(f.max()))
        self.zeros += int((t == 0).sum())


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    if hasattr(value, "data") and isinstance(value.data, torch.Tensor):  # PackedSequence
        return value.data
    return None


def _batches(inputs_or_loader) -> Iterable[tuple]:
    if isinstance(inputs_or_loader, torch.Tensor):
        return [(inputs_or_loader,)]
    if isinstance(inputs_or_loader, tuple) and all(isinstance(t, torch.Tensor) for t in inputs_or_loader):
        return [inputs_or_loader]
    if isinstance(inputs_or_loader, Iterable):
        return ((b,) if isinstance(b, torch.Tensor) else (b[0],) for b in inputs_or_loader)
    raise TypeError(f"model_stats needs a tensor, a tuple of tensors or an iterable of batches, got "
                    f"{type(inputs_or_loader).__name__}")


def model_stats(model: nn.Module, inputs_or_loader, max_batches: int | None = None,
                leaves_only: bool = True) -> ModelStats:
    """Run ``model`` on a batch (tensor or tuple of tensors) or on a loader's batches (a batch that is a
    tuple/list gives its first element as input) and collect per-layer statistics.

    MACs come from ``dawnet.cost.count`` on the first batch; activation statistics accumulate over
    all batches (up to ``max_batches``). Gradient norms are those already in ``.grad`` (run a
    backward first to see them). Layers are the leaf modules (``leaves_only=False``: every module).
    The model's mode, buffers, parameters, gradients and the RNG state are unchanged afterwards.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_stats needs an nn.Module, got {type(model).__name__}")
    named = [(n, m) for n, m in model.named_modules()
             if n and (not leaves_only or not any(True for _ in m.children()))]
    accs = {n: _Acc() for n, _ in named}
    handles = []

    def hook_for(name):
        def hook(module, args, output):
            t = _first_tensor(output)
            if t is not None and t.is_floating_point():
                accs[name].add(t)

        return hook

    batches = samples = 0
    first = None
    try:
        for n, m in named:
            handles.append(m.register_forward_hook(hook_for(n)))
        with preserve_state(model), torch.no_grad():
            for batch in _batches(inputs_or_loader):
                if max_batches is not None and batches >= max_batches:
                    break
                if first is None:
                    first = batch
                model(*batch)
                batches += 1
                samples += int(batch[0].shape[0]) if batch[0].dim() else 1
    finally:
        for h in handles:
            h.remove()
    if first is None:
        raise ValueError("model_stats got no batch: pass a tensor or a non-empty loader")
    with torch.no_grad():
        cost = count(model, *first, warn_unknown=False)
    macs = {m.name: m.macs for m in cost.modules}
    layers = []
    for name, module in named:
        a = accs[name]
        own = list(module.parameters(recurse=False))
        grads = [p.grad for p in own if p.grad is not None]
        row = LayerStats(
            name=name, type=type(module).__name__, params=sum(p.numel() for p in module.parameters()),
            macs=macs.get(name, 0), output_shape=a.shape,
            weight_norm=float(torch.linalg.vector_norm(torch.cat([p.detach().flatten() for p in own])))
            if own else None,
            grad_norm=float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))) if grads else None,
        )
        if a.n:
            mean = a.s / a.n
            row.mean, row.min, row.max = mean, a.lo, a.hi
            row.std = math.sqrt(max(a.s2 / a.n - mean * mean, 0.0))
            row.zero_fraction = a.zeros / a.n
        layers.append(row)
    return ModelStats(model=type(model).__name__, batches=batches, samples=samples, layers=layers)
