"""Trace activations back to the input: receptive fields, top-k patches, gradient sensitivity.

* :func:`receptive_field` -- the analytic receptive field (size, jump, start per axis: height and
  width separately) for conv/pool chains, and a gradient-based empirical one for any architecture
  (branches, residuals, recurrence, attention), cross-checked where both apply.
* :func:`top_patches` -- one pass over a DataLoader that keeps, per channel, the k strongest
  activations and the input patches under their receptive fields.
* :func:`sensitivity` / :func:`occlusion` -- how a chosen activation (a neuron, a channel, a
  character logit at one time step, the CTC log-probability of a string) depends on the input.

Feature layouts. A layer output is read in one of these layouts (guessed, or given by ``layout=``):
``"NCHW"`` (conv maps), ``"NCL"`` (1-D conv maps), ``"NTC"`` (sequences, batch first: an LSTM with
``batch_first=True`` or a recognizer's ``(N, T, C)`` logits), ``"TNC"`` (an LSTM without
``batch_first``), ``"NC"`` (vectors). A 1-D feature axis (L or T) maps to the input's width.

Coordinates are pixel indices. Boxes are half-open ``(y0, x0, y1, x1)`` so that
``image[..., y0:y1, x0:x1]`` is the patch; ``start`` is the centre of output position 0's field.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dawnet.diagnose.probe import primary_tensor, probe, resolve_layers, unwrap

__all__ = [
    "AxisRF", "ReceptiveField", "receptive_field", "analytic_receptive_field", "empirical_receptive_field",
    "structural_copy",
    "feature_layout", "canonical", "to_input_space",
    "TopPatches", "top_patches",
    "Target", "neuron", "channel", "logit", "ctc_logprob", "Sensitivity", "sensitivity", "occlusion",
]

Forward = Callable[[nn.Module, torch.Tensor], Any]
LAYOUTS = ("NCHW", "NCL", "NTC", "TNC", "NC")


# ---------------------------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------------------------
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


def _forward(model: nn.Module, x: torch.Tensor, forward: Forward | None) -> Any:
    return forward(model, x) if forward is not None else model(x)


def _param_like(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in unwrap(model).parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


class _eval_mode:
    """Put a model in eval mode for a block and restore every submodule's own mode after."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode


def _input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) not in (2, 3):
        raise ValueError(
            f"input_shape must be (C, H, W), (N, C, H, W) or (C, L), got {input_shape!r}; "
            f"e.g. (1, 32, 128) for a grayscale line 32 px high and 128 px wide"
        )
    return shape


# ---------------------------------------------------------------------------------------------
# receptive fields
# ---------------------------------------------------------------------------------------------
@dataclass
class AxisRF:
    """Receptive field along one input axis.

    size: extent in input pixels (``inf`` when the field spans the whole axis, e.g. an LSTM);
    jump: input pixels between neighbouring feature positions; start: centre of position 0.
    """

    size: float
    jump: float
    start: float

    def span(self, i: float) -> tuple[float, float]:
        """Inclusive (first, last) input pixel of feature position ``i`` (not clipped)."""
        c = self.start + i * self.jump
        half = (self.size - 1) / 2
        return c - half, c + half


@dataclass
class ReceptiveField:
    """Where a layer's feature positions look in the input; see :func:`receptive_field`.

    ``axes`` maps input axis names ("height", "width"; "length" for 1-D inputs) to :class:`AxisRF`,
    from the analytic computation when it applies, else from the empirical one. ``feature_axes``
    lists the input axis each feature axis runs along (a sequence axis runs along "width").
    """

    layer: str
    input_shape: tuple[int, ...]
    feature_shape: tuple[int, ...]
    layout: str
    feature_axes: tuple[str, ...]
    axes: dict[str, AxisRF]
    method: str
    analytic: dict[str, AxisRF] | None = None
    analytic_reason: str | None = None
    empirical: dict[str, dict] | None = None
    agree: bool | None = None
    checks: list[dict] = field(default_factory=list)
    spans: dict[str, list[tuple[int, int] | None]] | None = field(default=None, repr=False)

    @property
    def input_size(self) -> dict[str, int]:
        names = ("height", "width") if len(self.input_shape) == 3 else ("length",)
        return dict(zip(names, self.input_shape[1:]))

    def _pos(self, position: Sequence[int] | int) -> dict[str, float | None]:
        if isinstance(position, int):
            position = (position,)
        position = tuple(position)
        if len(position) != len(self.feature_axes):
            raise ValueError(
                f"layer {self.layer!r} has {len(self.feature_axes)} feature axes "
                f"({', '.join(self.feature_axes) or 'none'}); got position {position}"
            )
        pos: dict[str, float | None] = {a: None for a in self.axes}
        for axis, i in zip(self.feature_axes, position):
            pos[axis] = i
        return pos

    def box(self, *position: int, clip: bool = True, effective: bool = False) -> tuple[int, ...]:
        """Half-open input box of a feature position: ``(y0, x0, y1, x1)`` (``(l0, l1)`` for 1-D).

        An axis the feature does not run along (height, for a sequence) gets the span of the
        whole feature column. ``effective=True`` uses the effective (gradient-mass) size where
        the theoretical field spans the whole axis, which is what a patch of an LSTM unit shows.
        """
        if len(position) == 1 and isinstance(position[0], (tuple, list)):
            position = tuple(position[0])
        pos = self._pos(position)
        lows, highs = [], []
        for axis, rf in self.axes.items():
            n = self.input_size[axis]
            if clip and self.spans is not None:  # exact analytic spans (padding-only positions are empty)
                table = self.spans[axis]
                i = 0 if pos[axis] is None else pos[axis]
                if not -len(table) <= i < len(table):
                    raise IndexError(f"position {i} is outside the layer's {axis} of {len(table)}")
                span = table[i]
                lows.append(span[0] if span else 0)
                highs.append(span[1] + 1 if span else 0)
                continue
            size = rf.size
            if effective and not math.isfinite(size) and self.empirical and pos[axis] is not None:
                size = float(self.empirical[axis].get("effective_size") or size)
            if not math.isfinite(size):
                lo, hi = 0.0, n - 1.0
            elif pos[axis] is None:  # an axis the layer folded away: its field already spans the column
                lo, hi = rf.span(0)
            else:
                lo, hi = AxisRF(size, rf.jump, rf.start).span(pos[axis])
            lo, hi = math.floor(lo + 1e-6), math.ceil(hi - 1e-6) + 1
            if clip:
                lo, hi = max(0, lo), min(n, hi)
            lows.append(lo)
            highs.append(hi)
        return (*lows, *highs)

    def center(self, *position: int) -> tuple[float, ...]:
        """Input coordinates of the centre of a feature position's field (per feature axis)."""
        pos = self._pos(position)
        return tuple(self.axes[a].start + pos[a] * self.axes[a].jump for a in self.feature_axes)

    def to_dict(self) -> dict:
        """JSON-able summary (``inf`` becomes ``None``)."""

        def clean(obj):
            if isinstance(obj, float) and not math.isfinite(obj):
                return None
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [clean(v) for v in obj]
            return obj

        return clean({
            "layer": self.layer,
            "input_shape": list(self.input_shape),
            "feature_shape": list(self.feature_shape),
            "layout": self.layout,
            "feature_axes": list(self.feature_axes),
            "method": self.method,
            "axes": {k: asdict(v) for k, v in self.axes.items()},
            "analytic": {k: asdict(v) for k, v in self.analytic.items()} if self.analytic else None,
            "analytic_reason": self.analytic_reason,
            "empirical": self.empirical,
            "agree": self.agree,
            "checks": self.checks,
        })

    def __str__(self) -> str:
        parts = []
        for axis, rf in self.axes.items():
            size = "whole axis" if not math.isfinite(rf.size) else f"{rf.size:g}"
            parts.append(f"{axis}: size {size}, jump {rf.jump:g}, start {rf.start:g}")
        check = {True: "analytic and empirical agree", False: "analytic and empirical DISAGREE",
                 None: self.analytic_reason or "not cross-checked"}[self.agree]
        return f"receptive field of {self.layer!r} ({self.method}; {check}): " + "; ".join(parts)


_POINTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign,
    nn.LogSigmoid, nn.Tanhshrink, nn.Threshold, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.BatchNorm1d, nn.BatchNorm2d,
    nn.BatchNorm3d, nn.SyncBatchNorm,
)
_CONV = {nn.Conv1d: 1, nn.Conv2d: 2}
_POOL = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.AvgPool1d: 1, nn.AvgPool2d: 2}
_PAD = {nn.ZeroPad1d: 1, nn.ZeroPad2d: 2, nn.ConstantPad1d: 1, nn.ConstantPad2d: 2,
        nn.ReflectionPad1d: 1, nn.ReflectionPad2d: 2, nn.ReplicationPad1d: 1, nn.ReplicationPad2d: 2}


def _tup(v: Any, n: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _spatial_params(m: nn.Module, dims: int) -> list[tuple[int, int, int, int, bool]] | None:
    """(kernel, stride, pad_before, dilation, ceil_mode) per axis for a conv/pool/pad layer."""
    if type(m) in _CONV or isinstance(m, (nn.Conv1d, nn.Conv2d)):
        k, s, d = _tup(m.kernel_size, dims), _tup(m.stride, dims), _tup(m.dilation, dims)
        if m.padding == "same":
            p = tuple(di * (ki - 1) // 2 for ki, di in zip(k, d))
        elif m.padding == "valid":
            p = (0,) * dims
        else:
            p = _tup(m.padding, dims)
        return [(k[i], s[i], p[i], d[i], False) for i in range(dims)]
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)):
        k = _tup(m.kernel_size, dims)
        s = _tup(m.stride if m.stride is not None else m.kernel_size, dims)
        p = _tup(m.padding, dims)
        d = _tup(getattr(m, "dilation", 1), dims)
        return [(k[i], s[i], p[i], d[i], bool(m.ceil_mode)) for i in range(dims)]
    if type(m) in _PAD:
        pad = _tup(m.padding, 2 * dims)  # (left, right[, top, bottom]): last axis first
        before = [pad[2 * (dims - 1 - i)] for i in range(dims)]
        return [(1, 1, -before[i], 1, False) for i in range(dims)]
    return None


def _out_len(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    span = n + 2 * p - d * (k - 1) - 1
    if ceil:
        out = -(-span // s) + 1
        if (out - 1) * s >= n + p:  # the last window must start inside the input or left padding
            out -= 1
        return out
    return span // s + 1


def _input_dependent(root_fn, x: torch.Tensor) -> set:
    """Autograd nodes reachable from ``root_fn`` that depend on ``x`` (iterative post-order)."""
    memo: dict[Any, bool] = {}
    stack = [(root_fn, False)]
    while stack:
        node, expanded = stack.pop()
        if node is None or (node in memo and not expanded):
            continue
        if getattr(node, "variable", None) is x:
            memo[node] = True
            continue
        children = [c for c, _ in getattr(node, "next_functions", ()) if c is not None]
        if not expanded:
            stack.append((node, True))
            stack.extend((c, False) for c in children if c not in memo)
        else:
            memo[node] = any(memo.get(c, False) for c in children)
    return {n for n, dep in memo.items() if dep}


def analytic_receptive_field(model: nn.Module, layer: str, input_shape: Sequence[int], *,
                             forward: Forward | None = None, layout: str | None = None
                             ) -> tuple[dict[str, AxisRF] | None, str | None, dict]:
    """Receptive field from layer arithmetic, per axis, when the path to ``layer`` is a chain.

    Returns ``(axes, None, info)`` or ``(None, reason, info)`` when it does not apply (branches
    that merge, recurrence, attention, unknown layers, sizes changed by functional calls).
    The path is read from the autograd graph of one forward pass, so only layers that lie
    between the input and ``layer`` count; parallel heads elsewhere in the model are ignored.
    """
    shape = _input_shape(input_shape)
    device, dtype = _param_like(model)
    target = resolve_layers(model, layer)[layer]
    x = torch.randn((2, *shape), device=device, dtype=dtype, requires_grad=True)
    calls: list[tuple[str, nn.Module, Any, tuple, tuple]] = []
    hooks = []
    plain = unwrap(model)

    def make_hook(name):
        def hook(mod, args, out):
            t = primary_tensor(out, mod)
            inp = next((a for a in args if isinstance(a, torch.Tensor)), None)
            in_shape = tuple(inp.shape) if inp is not None else ()
            calls.append((name, mod, t.grad_fn, in_shape, tuple(t.shape)))

        return hook

    leaves = [(n, m) for n, m in plain.named_modules()
              if n and (not list(m.children()) or isinstance(m, (nn.RNNBase, nn.MultiheadAttention)))]
    try:
        for n, m in leaves:
            hooks.append(m.register_forward_hook(make_hook(n)))
        with _eval_mode(model), probe(model, layer, detach=False) as p:
            _forward(model, x, forward)
            out = p[layer]
    finally:
        for h in hooks:
            h.remove()
    info = {"layers": []}
    lay = feature_layout(target, out, layout)
    if out.grad_fn is None:
        return None, f"layer {layer!r} does not depend on the input", info
    dep = _input_dependent(out.grad_fn, x)
    for name, mod, fn, _, _ in calls:
        if fn in dep and isinstance(mod, nn.RNNBase):
            return None, f"recurrent layer {name!r} mixes the whole sequence", info
        if fn in dep and isinstance(mod, (nn.MultiheadAttention, nn.TransformerEncoderLayer)):
            return None, f"attention layer {name!r} mixes all positions", info
    for node in dep:
        parents = {c for c, _ in node.next_functions if c is not None and c in dep}
        if len(parents) > 1:
            return None, f"branches merge at {type(node).__name__.replace('Backward0', '')} (residual/concat)", info
    chain = [c for c in calls if c[2] in dep]
    in_axes = ["height", "width"] if len(shape) == 3 else ["length"]
    state = {a: AxisRF(1.0, 1.0, 0.0) for a in in_axes}
    sizes = {a: n for a, n in zip(in_axes, shape[1:])}
    axes = list(in_axes)  # input axes the current feature axes run along
    collapsed: dict[str, int] = {}
    # Exact per-position input spans: a position that only reads padding reads no pixel at all,
    # which the closed-form (size, jump, start) cannot say, so the table is carried alongside.
    table: dict[str, list[tuple[int, int] | None]] = {a: [(u, u) for u in range(n)] for a, n in sizes.items()}
    for name, mod, _fn, in_shape, out_shape in chain:
        if isinstance(mod, nn.RNNBase):
            return None, f"recurrent layer {name!r} mixes the whole sequence", info
        if isinstance(mod, (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            return None, f"attention layer {name!r} mixes all positions", info
        params = None
        dims = _CONV.get(type(mod)) or _POOL.get(type(mod)) or _PAD.get(type(mod))
        if dims is None and isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            dims = 1 if isinstance(mod, nn.Conv1d) else 2
        if dims is not None:
            if isinstance(mod, nn.Conv2d) and in_shape and len(in_shape) != 4:
                return None, f"layer {name!r} got a {len(in_shape)}-D input", info
            if dims < len(axes):  # (N, C, H, W) became (N, C, W): the height was folded away
                for a in axes[:len(axes) - dims]:
                    collapsed[a] = sizes[a]
                    table[a] = [_union(table[a])]
                axes = axes[len(axes) - dims:]
            if dims != len(axes):
                return None, f"layer {name!r} is {dims}-D but the features have {len(axes)} spatial axes", info
            params = _spatial_params(mod, dims)
            for i, a in enumerate(axes):
                if in_shape[2 + i] != sizes[a]:
                    return None, (f"the {a} entering {name!r} is {in_shape[2 + i]}, not {sizes[a]}: a functional "
                                  f"call (pooling, padding, resize) changes sizes outside modules"), info
                k, s, pad, d, ceil = params[i]
                rf = state[a]
                if type(mod) in _PAD:
                    pad_all = _tup(mod.padding, 2 * dims)
                    after = pad_all[2 * (dims - 1 - i) + 1]
                    sizes[a] = sizes[a] - pad + after
                    state[a] = AxisRF(rf.size, rf.jump, rf.start + pad * rf.jump)
                    table[a] = _compose(table[a], sizes[a], 1, 1, -pad, 1)
                else:
                    sizes[a] = _out_len(sizes[a], k, s, pad, d, ceil)
                    table[a] = _compose(table[a], sizes[a], k, s, pad, d)
                    state[a] = AxisRF(rf.size + (k - 1) * d * rf.jump, rf.jump * s,
                                      rf.start + ((k - 1) / 2 * d - pad) * rf.jump)
                if sizes[a] != out_shape[2 + i]:
                    return None, f"layer {name!r}: computed {a} {sizes[a]} but it produced {out_shape[2 + i]}", info
            info["layers"].append({"name": name, "type": type(mod).__name__,
                                   **{a: asdict(state[a]) for a in axes}})
            continue
        if isinstance(mod, _POINTWISE):
            continue
        if isinstance(mod, nn.Linear):
            if in_shape and len(in_shape) < len(shape) + 1:
                continue  # after the spatial axes were folded: applied per position over channels
            return None, f"linear layer {name!r} mixes positions along the last axis", info
        if isinstance(mod, (nn.Flatten, nn.Unflatten)):
            return None, f"layer {name!r} reshapes the features", info
        return None, f"layer {name!r} ({type(mod).__name__}) is not a conv/pool/pointwise layer", info
    feat = canonical(out, lay).shape[2:]
    n_feat = len(feat)
    if n_feat < len(axes):
        for a in axes[:len(axes) - n_feat]:
            collapsed[a] = sizes[a]
            table[a] = [_union(table[a])]
        axes = axes[len(axes) - n_feat:]
    for i, a in enumerate(axes):
        if feat[i] != sizes[a]:
            return None, f"the layer's {a} is {feat[i]} but the conv/pool chain gives {sizes[a]}", info
    for a, n in collapsed.items():  # a folded axis sees the union of its column
        rf = state[a]
        state[a] = AxisRF(rf.size + (n - 1) * rf.jump, rf.jump, rf.start + (n - 1) * rf.jump / 2)
    info["feature_axes"] = axes
    info["table"] = table
    return state, None, info


def _compose(prev: list[tuple[int, int] | None], n_out: int, k: int, s: int, p: int, d: int
             ) -> list[tuple[int, int] | None]:
    """Input spans of a layer's outputs from its inputs' spans (padding taps read nothing)."""
    out: list[tuple[int, int] | None] = []
    n_prev = len(prev)
    for i in range(n_out):
        spans = [prev[t] for t in (i * s - p + m * d for m in range(k)) if 0 <= t < n_prev and prev[t] is not None]
        out.append((min(lo for lo, _ in spans), max(hi for _, hi in spans)) if spans else None)
    return out


def _union(spans: list[tuple[int, int] | None]) -> tuple[int, int] | None:
    real = [s for s in spans if s is not None]
    return (min(lo for lo, _ in real), max(hi for _, hi in real)) if real else None


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
    with _eval_mode(model), probe(model, layer, detach=False) as p:
        _forward(model, x, forward)
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
    shape = _input_shape(input_shape)
    device, dtype = _param_like(model)
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


def receptive_field(model: nn.Module, layer: str, input_shape: Sequence[int], *, forward: Forward | None = None,
                    layout: str | None = None, method: str = "auto", samples: int = 4, seed: int = 0
                    ) -> ReceptiveField:
    """The receptive field of ``layer`` for inputs of ``input_shape`` (``(C, H, W)``).

    ``method="auto"`` computes both the analytic field (conv/pool chains) and the empirical one
    (any architecture) and cross-checks them at the centre, the next position and both corners:
    ``agree`` is True when the analytic boxes equal the measured nonzero-gradient boxes. The
    returned ``axes`` are analytic when that applies, else empirical. ``method="analytic"``
    raises when the chain rule does not apply; ``method="empirical"`` skips the analytic part.

    Example::

        rf = receptive_field(crnn, "cnn.conv4", (1, 32, 128))
        rf.axes["height"].size, rf.axes["width"].jump   # per axis: (2, 1) pooling shows here
        rf.box(0, 5)                                    # (y0, x0, y1, x1) of feature (y=0, x=5)
    """
    if method not in ("auto", "analytic", "empirical"):
        raise ValueError(f"method must be 'auto', 'analytic' or 'empirical', got {method!r}")
    shape = _input_shape(input_shape)
    an, reason, info = (None, "skipped (method='empirical')", {})
    if method in ("auto", "analytic"):
        an, reason, info = analytic_receptive_field(model, layer, shape, forward=forward, layout=layout)
        if an is None and method == "analytic":
            raise ValueError(f"the analytic receptive field does not apply to {layer!r}: {reason}. "
                             f"Use method='empirical' (gradient-based), which works for any architecture.")
    emp = None
    if method in ("auto", "empirical"):
        emp = empirical_receptive_field(model, layer, shape, forward=forward, layout=layout,
                                        samples=samples, seed=seed)
    if emp is not None:
        lay, feat_shape, feat_axes = emp["layout"], tuple(emp["feature_shape"]), tuple(emp["feature_axes"])
    else:
        lay = layout or "NCHW"
        feat_axes = tuple(info.get("feature_axes", ()))
        feat_shape = ()
    if emp is None:  # analytic only: still need the layout and feature shape
        target = resolve_layers(model, layer)[layer]
        device, dtype = _param_like(model)
        with torch.no_grad(), _eval_mode(model), probe(model, layer) as p:
            _forward(model, torch.zeros((1, *shape), device=device, dtype=dtype), forward)
            out = p[layer]
        lay = feature_layout(target, out, layout)
        feat_shape = tuple(canonical(out, lay).shape[2:])
        in_axes = ["height", "width"] if len(shape) == 3 else ["length"]
        feat_axes = tuple(in_axes[len(in_axes) - len(feat_shape):]) if feat_shape else ()
    emp_axes = None
    if emp is not None:
        emp_axes = {a: AxisRF(v["size"], v["jump"], v["start"]) for a, v in emp["axes"].items()}
    rf = ReceptiveField(layer=layer, input_shape=shape, feature_shape=feat_shape, layout=lay,
                        feature_axes=feat_axes, axes=an if an is not None else emp_axes, method="analytic"
                        if an is not None else "empirical", analytic=an, analytic_reason=reason,
                        empirical=emp["axes"] if emp else None, spans=info.get("table") if an else None)
    if an is not None and emp is not None:
        agree = True
        for chk in emp["checks"]:
            pos = tuple(chk["position"])
            box = rf.box(*pos)
            half = len(box) // 2
            empty = any(box[half + i] <= box[i] for i in range(half))
            want = {a: [-1, -1] if empty else [box[i], box[half + i] - 1] for i, a in enumerate(rf.axes)}
            ok = want == chk["box"]
            agree &= ok
            rf.checks.append({"position": list(pos), "analytic": want, "empirical": chk["box"], "agree": ok})
        rf.agree = agree
    return rf


def to_input_space(act_map: torch.Tensor, rf: ReceptiveField, mode: str = "bilinear") -> torch.Tensor:
    """Resample a channel's activation map onto the input grid, aligned by the receptive field.

    Input pixel u reads feature coordinate ``(u - start) / jump`` (per axis), so each value lands
    at the centre of its field, not where a plain resize would put it. ``act_map`` is ``(h, w)``
    (or ``(t,)`` for a sequence layer, spread over the input height); returns ``(H, W)``.
    """
    if act_map.dim() != len(rf.feature_axes):
        raise ValueError(f"expected a {len(rf.feature_axes)}-D map for layer {rf.layer!r}, got {tuple(act_map.shape)}")
    sizes = rf.input_size
    grids = []
    for axis in sizes:
        coords = torch.arange(sizes[axis], dtype=torch.float32)
        if axis in rf.feature_axes:
            i = rf.feature_axes.index(axis)
            a = rf.axes[axis]
            jump = a.jump if a.jump and math.isfinite(a.jump) else 1.0
            f = (coords - a.start) / jump
            n = act_map.shape[i]
            grids.append(2 * f / max(n - 1, 1) - 1 if n > 1 else torch.zeros_like(f))
        else:
            grids.append(None)
    m = act_map.detach().float().cpu()
    if len(sizes) == 2:
        gy, gx = grids
        if gy is None:  # sequence feature: same value down the column
            m2 = m.reshape(1, 1, 1, -1)
            grid = torch.stack([gx, torch.zeros_like(gx)], -1).reshape(1, 1, -1, 2)
            row = F.grid_sample(m2, grid, mode=mode, padding_mode="border", align_corners=True)[0, 0, 0]
            return row.expand(sizes["height"], -1).clone()
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
        return F.grid_sample(m[None, None], grid, mode=mode, padding_mode="border", align_corners=True)[0, 0]
    (gl,) = grids
    grid = torch.stack([gl, torch.zeros_like(gl)], -1).reshape(1, 1, -1, 2)
    return F.grid_sample(m.reshape(1, 1, 1, -1), grid, mode=mode, padding_mode="border", align_corners=True)[0, 0, 0]


# ---------------------------------------------------------------------------------------------
# top-k patches
# ---------------------------------------------------------------------------------------------
def _default_inputs(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        for key in ("image", "images", "input", "inputs", "x"):
            if key in batch:
                return batch[key]
        raise TypeError(f"batch dict has no image key (tried image/images/input/inputs/x): {list(batch)}; "
                        f"pass inputs=lambda batch: ... to pick the model input")
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(f"cannot find the model input in a batch of type {type(batch).__name__}; "
                    f"pass inputs=lambda batch: ... to pick it")


@dataclass
class TopPatches:
    """The k strongest activations of each channel over a data set, with their input patches.

    ``values[i, j]`` is the j-th strongest activation of ``channels[i]`` (descending),
    ``image_index[i, j]`` the index of its image in the stream, ``positions[i][j]`` its feature
    position, ``boxes[i][j]`` its input box ``(y0, x0, y1, x1)`` and ``patches[i][j]`` the crop.
    """

    layer: str
    channels: list[int]
    values: torch.Tensor
    image_index: torch.Tensor
    positions: list[list[tuple[int, ...]]]
    boxes: list[list[tuple[int, ...]]]
    patches: list[list[torch.Tensor | None]]
    rf: ReceptiveField
    images_seen: int = 0

    def figure(self, channels: Sequence[int] | None = None, **kwargs: Any):
        """A grid: one row per channel, its top patches left to right (see ``vis.patch_grid``)."""
        from dawnet.diagnose.vis import patch_grid

        return patch_grid(self, channels=channels, **kwargs)

    def _repr_png_(self):  # inline display in Jupyter
        from dawnet.diagnose.vis import figure_png

        return figure_png(self.figure())


def top_patches(model: nn.Module, layer: str, data: Iterable[Any], channels: Sequence[int] | None = None,
                k: int = 9, *, rf: ReceptiveField | None = None, inputs: Callable[[Any], torch.Tensor] | None = None,
                forward: Forward | None = None, layout: str | None = None, distinct: bool = True,
                effective: bool = True, progress: bool = True, max_batches: int | None = None) -> TopPatches:
    """Stream ``data`` once and keep the ``k`` strongest activations of every requested channel.

    ``data`` is a DataLoader or any iterable of batches (``inputs`` picks the image tensor from a
    batch; default: the tensor itself, the first item of a tuple, or the ``image(s)`` key); a
    Dataset of single ``(C, H, W)`` images works too, one image at a time.

    Memory is bounded by ``len(channels) * k`` patches whatever the data set size. For each kept
    activation the input patch under its receptive field is cropped (``rf`` defaults to
    :func:`receptive_field` on the first batch's shape). ``distinct=True`` keeps at most one
    activation per image and channel (each image's peak); ``False`` ranks every position.

    It works on conv maps and on sequences: for a BiLSTM layer (``layout`` ``NTC``/``TNC``) the
    channels are the units and the patch is the input window under the time step; with
    ``layer="output"`` on an ``(N, T, C)`` recognizer, channel c is character class c's logit.
    Where a field spans the whole width (recurrence), ``effective=True`` crops the effective
    field (90% of gradient mass) instead of the whole line.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    target = resolve_layers(model, layer)[layer]
    device, dtype = _param_like(model)
    pick = inputs or _default_inputs
    best_v = best_i = best_p = None
    crops: dict[tuple[int, int], tuple[torch.Tensor, tuple[int, ...]]] = {}
    seen = 0
    chans: list[int] | None = list(channels) if channels is not None else None
    it = tqdm(data, desc=f"top patches {layer}", disable=not progress, leave=False)
    with _eval_mode(model), torch.no_grad(), probe(model, layer) as p:
        for b, batch in enumerate(it):
            if max_batches is not None and b >= max_batches:
                break
            x = pick(batch)
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"the model input must be a tensor, got {type(x).__name__}")
            if x.dim() == 3:  # a Dataset yields single (C, H, W) images: batch them one by one
                x = x[None]
            x = x.to(device=device, dtype=dtype if x.is_floating_point() else None)
            if rf is None:
                with torch.enable_grad():
                    rf = receptive_field(model, layer, tuple(x.shape[1:]), forward=forward, layout=layout)
            _forward(model, x, forward)
            f = canonical(p[layer], feature_layout(target, p[layer], layout))
            if chans is None:
                chans = list(range(f.shape[1]))
            bad = [c for c in chans if not 0 <= c < f.shape[1]]
            if bad:
                raise ValueError(f"channels {bad} out of range: layer {layer!r} has {f.shape[1]} channels")
            n = f.shape[0]
            flat = f[:, chans].reshape(n, len(chans), -1).float()  # (N, C, S)
            if distinct:
                v, pos = flat.max(dim=2)  # (N, C)
                cand_v, cand_i, cand_p = v.T, torch.arange(n).expand(len(chans), n) + seen, pos.T
            else:
                s = flat.shape[2]
                allv = flat.permute(1, 0, 2).reshape(len(chans), n * s)
                kk = min(k, allv.shape[1])
                cand_v, idx = allv.topk(kk, dim=1)
                cand_i, cand_p = idx // s + seen, idx % s
            cand_v, cand_i, cand_p = cand_v.cpu(), cand_i.cpu(), cand_p.cpu()
            if best_v is not None:
                cand_v = torch.cat([best_v, cand_v], 1)
                cand_i = torch.cat([best_i, cand_i], 1)
                cand_p = torch.cat([best_p, cand_p], 1)
            kk = min(k, cand_v.shape[1])
            best_v, order = cand_v.topk(kk, dim=1)
            best_i, best_p = cand_i.gather(1, order), cand_p.gather(1, order)
            feat_shape = tuple(f.shape[2:])
            keep = set()
            for ci in range(len(chans)):
                for j in range(kk):
                    img, flat_pos = int(best_i[ci, j]), int(best_p[ci, j])
                    keep.add((img, flat_pos))
                    if seen <= img < seen + n and (img, flat_pos) not in crops:
                        pos = tuple(int(v) for v in _unravel(flat_pos, feat_shape))
                        box = rf.box(*pos, effective=effective) if feat_shape else rf.box(effective=effective)
                        crops[(img, flat_pos)] = (_crop(x[img - seen], box).cpu(), box)
            crops = {key: val for key, val in crops.items() if key in keep}  # memory bound
            seen += n
    if best_v is None:
        raise ValueError("the data yielded no batch: nothing to rank")
    positions, boxes, patches = [], [], []
    for ci in range(len(chans)):
        row_p, row_b, row_c = [], [], []
        for j in range(best_v.shape[1]):
            key = (int(best_i[ci, j]), int(best_p[ci, j]))
            crop, box = crops[key]
            row_p.append(tuple(int(v) for v in _unravel(key[1], feat_shape)))
            row_b.append(box)
            row_c.append(crop)
        positions.append(row_p)
        boxes.append(row_b)
        patches.append(row_c)
    return TopPatches(layer=layer, channels=chans, values=best_v, image_index=best_i, positions=positions,
                      boxes=boxes, patches=patches, rf=rf, images_seen=seen)


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for n in reversed(shape):
        out.append(flat % n)
        flat //= n
    return tuple(reversed(out))


def _crop(img: torch.Tensor, box: tuple[int, ...]) -> torch.Tensor:
    half = len(box) // 2
    idx = tuple(slice(box[i], box[half + i]) for i in range(half))
    return img[(slice(None), *idx)].detach().clone()


# ---------------------------------------------------------------------------------------------
# gradient sensitivity
# ---------------------------------------------------------------------------------------------
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
    device, dtype = _param_like(model)
    x = x.to(device=device, dtype=dtype)
    if x.dim() == 3:  # one (C, H, W) image
        x = x[None]

    def grad_of(inp):
        inp = inp.detach().clone().requires_grad_(True)
        with probe(model, target.layer, detach=False) as p:
            _forward(model, inp, forward)
            val = target.value(p[target.layer], module)
        (g,) = torch.autograd.grad(val.sum(), inp, allow_unused=True)
        return val.detach(), torch.zeros_like(inp) if g is None else g.detach()

    with _eval_mode(model):
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
    device, dtype = _param_like(model)
    x = x.to(device=device, dtype=dtype)
    if x.dim() == 3:
        x = x[None]
    wy, wx = _tup(window, 2)
    sy, sx = _tup(stride if stride is not None else (max(1, wy // 2), max(1, wx // 2)), 2)
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
            _forward(model, batch, forward)
            return target.value(p[target.layer], module).float()

    drop = torch.zeros(n, h, w)
    count = torch.zeros(n, h, w)
    with _eval_mode(model), torch.no_grad():
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
