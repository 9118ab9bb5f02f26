"""The receptive field of a layer: analytic where it applies, measured everywhere, cross-checked."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dawnet.diagnose.forward import Forward, eval_mode, param_like, run_forward
from dawnet.diagnose.layout import canonical, check_input_shape, feature_layout
from dawnet.diagnose.probe import probe, resolve_layers
from dawnet.diagnose.receptive_field.analytic import analytic_receptive_field
from dawnet.diagnose.receptive_field.empirical import empirical_receptive_field
from dawnet.diagnose.receptive_field.result import AxisRF, ReceptiveField

__all__ = ["receptive_field"]


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
    shape = check_input_shape(input_shape)
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
        device, dtype = param_like(model)
        with torch.no_grad(), eval_mode(model), probe(model, layer) as p:
            run_forward(model, torch.zeros((1, *shape), device=device, dtype=dtype), forward)
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
