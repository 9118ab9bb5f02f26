"""The receptive field from layer arithmetic (kernel, stride, padding, dilation) along a conv/pool chain.

The chain is read from the autograd graph of one forward pass, so only the layers between the input
and the layer count; where the chain rule does not apply (branches that merge, recurrence, attention,
unknown layers) the reason is returned instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from dawnet.diagnose.forward import Forward, eval_mode, param_like, run_forward
from dawnet.diagnose.layout import canonical, check_input_shape, feature_layout
from dawnet.diagnose.probe import primary_tensor, probe, resolve_layers, unwrap
from dawnet.diagnose.receptive_field.result import AxisRF

__all__ = ["analytic_receptive_field"]


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
    shape = check_input_shape(input_shape)
    device, dtype = param_like(model)
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
        with eval_mode(model), probe(model, layer, detach=False) as p:
            run_forward(model, x, forward)
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

