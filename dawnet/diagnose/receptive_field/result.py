"""What a receptive field is: per-axis size, jump and start, input boxes of feature positions, and
activation maps resampled onto the input by it.

Coordinates are pixel indices. Boxes are half-open ``(y0, x0, y1, x1)`` so that
``image[..., y0:y1, x0:x1]`` is the patch; ``start`` is the centre of output position 0's field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

__all__ = ["AxisRF", "ReceptiveField", "to_input_space"]


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
