"""Transformation robustness: random pad / jitter / scale / rotate applied before each step.

Lucid (``lucid/optvis/transform.py``) applies small random transforms to the image before the
model sees it, so the optimizer cannot exploit pixel-exact patterns. Here every transform is a
factory ``(config) -> transform`` and a transform is a callable ``(x, generator=None) -> x`` on
``(N, C, H, W)`` tensors, built from torch ops only (``F.pad``, slicing, ``affine_grid`` /
``grid_sample``). Random draws are per batch, as in Lucid.

Sizes follow Lucid: ``pad(p)`` grows the canvas by ``2p`` with a constant, ``jitter(d)`` crops ``d``
pixels at a random offset, ``random_scale`` and ``random_rotate`` zoom and turn the content
*inside* the same canvas (they never change the tensor size: nothing is ever resized).
``compose(..., keep_size=True)`` (the default, and :func:`standard_transforms`) ends with a
centre crop back to the input ``H x W``, so the model always sees the size of the parameterized
image: fixed-height recognizers keep working.

Speed: :class:`Compose` fuses a run of geometric transforms into ONE resampling (an integer
shift becomes slicing; anything else one ``grid_sample`` with the composed affine matrix),
instead of a pad, two resamplings and three crops. The result equals applying them one by one
up to interpolation (exactly, when at most one of them resamples).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Transform",
    "Geometric",
    "Pad",
    "Jitter",
    "RandomScale",
    "RandomRotate",
    "CenterCrop",
    "Compose",
    "pad",
    "jitter",
    "random_scale",
    "random_rotate",
    "center_crop",
    "compose",
    "standard_transforms",
    "STANDARD_SCALES",
    "STANDARD_ANGLES",
]

# Lucid's standard_transforms lists: scales 0.90, 0.92, ..., 1.10; angles -10..10 degrees with 0 weighted 6x.
STANDARD_SCALES = tuple(1 + (i - 5) / 50.0 for i in range(11))
STANDARD_ANGLES = tuple(list(range(-10, 11)) + 5 * [0])
DEFAULT_FILL = 0.5  # grey, Lucid's pad constant: uncovered area looks like "no signal" in [0, 1]


def _choice(values, generator: torch.Generator | None) -> float:
    """One value: from a list/tuple of choices, or uniform in a ``(lo, hi)`` range given as a dict/range."""
    if isinstance(values, dict):  # {"low": a, "high": b}
        u = float(torch.rand((), generator=generator))
        return values["low"] + u * (values["high"] - values["low"])
    i = int(torch.randint(len(values), (), generator=generator))
    return float(values[i])


def _translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


class Transform:
    """A random transform ``(x, generator=None) -> x``; subclasses implement ``__call__``."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover


class Geometric(Transform):
    """A transform that moves pixels: it can be fused with its neighbours into one resampling.

    ``sample(generator)`` draws its random parameters; ``plan(params, h, w)`` returns the output
    canvas size and a 3x3 matrix mapping output pixel coordinates to input pixel coordinates
    (pixel ``i`` spans ``[i, i+1]``); ``apply(x, params, fill)`` performs it alone.
    """

    fill: float | None = None

    def sample(self, generator: torch.Generator | None):
        return None

    def plan(self, params, h: int, w: int) -> tuple[int, int, np.ndarray]:
        raise NotImplementedError  # pragma: no cover

    def apply(self, x: torch.Tensor, params, fill: float) -> torch.Tensor:
        h, w = x.shape[-2:]
        oh, ow, m = self.plan(params, h, w)
        return _warp(x, m, oh, ow, fill)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, self.sample(generator), DEFAULT_FILL if self.fill is None else self.fill)


class Pad(Geometric):
    """Grow the canvas by ``p`` pixels on every side, filled with ``value`` (Lucid ``pad``)."""

    def __init__(self, p: int, value: float = DEFAULT_FILL):
        if p < 0:
            raise ValueError(f"pad must be >= 0 pixels, got {p}")
        self.p, self.fill = int(p), float(value)

    def plan(self, params, h, w):
        return h + 2 * self.p, w + 2 * self.p, _translate(-self.p, -self.p)

    def apply(self, x, params, fill):
        return F.pad(x, (self.p,) * 4, value=self.fill)

    def __repr__(self) -> str:
        return f"pad({self.p}, value={self.fill})"


class Jitter(Geometric):
    """Crop ``d`` pixels at a random offset in ``0..d`` on each axis (Lucid ``jitter``)."""

    def __init__(self, d: int):
        if d < 0:
            raise ValueError(f"jitter must be >= 0 pixels, got {d}")
        self.d = int(d)

    def sample(self, generator):
        oy, ox = torch.randint(self.d + 1, (2,), generator=generator).tolist()
        return oy, ox

    def plan(self, params, h, w):
        if self.d >= min(h, w):
            raise ValueError(
                f"jitter({self.d}) needs an image larger than {self.d} pixels, got {h}x{w}: "
                f"use a smaller jitter or a pad() before it"
            )
        oy, ox = params
        return h - self.d, w - self.d, _translate(ox, oy)

    def apply(self, x, params, fill):
        h, w = x.shape[-2:]
        self.plan(params, h, w)
        oy, ox = params
        return x[..., oy : oy + h - self.d, ox : ox + w - self.d]

    def __repr__(self) -> str:
        return f"jitter({self.d})"


class RandomScale(Geometric):
    """Zoom the content by a random factor about the centre, inside the same canvas (no resize)."""

    def __init__(
        self, scales: Sequence[float] | tuple[float, float] = STANDARD_SCALES, fill: float | None = None
    ):
        self.scales = _values(scales, "scales")
        if min(self.scales if not isinstance(self.scales, dict) else self.scales.values()) <= 0:
            raise ValueError(f"scales must be > 0, got {scales}")
        self.fill = fill

    def sample(self, generator):
        return _choice(self.scales, generator)

    def plan(self, s, h, w):
        cx, cy = w / 2.0, h / 2.0
        m = _translate(cx, cy) @ np.diag([1.0 / s, 1.0 / s, 1.0]) @ _translate(-cx, -cy)
        return h, w, m

    def __repr__(self) -> str:
        return f"random_scale({_fmt(self.scales)})"


class RandomRotate(Geometric):
    """Rotate the content by a random angle (degrees) about the centre, inside the same canvas."""

    def __init__(
        self, angles: Sequence[float] | tuple[float, float] = STANDARD_ANGLES, fill: float | None = None
    ):
        self.angles = _values(angles, "angles")
        self.fill = fill

    def sample(self, generator):
        return _choice(self.angles, generator)

    def plan(self, deg, h, w):
        a = math.radians(deg)
        cx, cy = w / 2.0, h / 2.0
        # output -> input: rotate back by -a about the centre (pixel coordinates, so no aspect distortion).
        r = np.array([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
        return h, w, _translate(cx, cy) @ r @ _translate(-cx, -cy)

    def __repr__(self) -> str:
        return f"random_rotate({_fmt(self.angles)})"


class CenterCrop(Geometric):
    """Crop (or pad with the fill) to exactly ``h x w`` about the centre."""

    def __init__(self, h: int, w: int, fill: float | None = None):
        self.h, self.w, self.fill = int(h), int(w), fill

    def plan(self, params, h, w):
        return self.h, self.w, _translate((w - self.w) // 2, (h - self.h) // 2)

    def apply(self, x, params, fill):
        h, w = x.shape[-2:]
        return _shift_crop(x, (h - self.h) // 2, (w - self.w) // 2, self.h, self.w, fill)

    def __repr__(self) -> str:
        return f"center_crop({self.h}, {self.w})"


def _values(values, what: str):
    if isinstance(values, (int, float)):
        raise TypeError(
            f"{what} must be a list of choices or a (low, high) range given as a dict, got {values!r}"
        )
    if isinstance(values, dict):
        if set(values) != {"low", "high"}:
            raise ValueError(f"a {what} range must be {{'low': a, 'high': b}}, got {values}")
        return {"low": float(values["low"]), "high": float(values["high"])}
    values = tuple(float(v) for v in values)
    if not values:
        raise ValueError(f"{what} must not be empty")
    return values


def _fmt(values) -> str:
    if isinstance(values, dict):
        return f"{values['low']:g}..{values['high']:g}"
    lo, hi = min(values), max(values)
    return f"{lo:g}..{hi:g}" if len(values) > 3 else ", ".join(f"{v:g}" for v in values)


def _shift_crop(x: torch.Tensor, oy: int, ox: int, oh: int, ow: int, fill: float) -> torch.Tensor:
    """Output pixel (i, j) = x[oy + i, ox + j], with ``fill`` outside x: slicing plus a constant pad."""
    h, w = x.shape[-2:]
    top, left = max(0, -oy), max(0, -ox)
    bottom, right = max(0, oy + oh - h), max(0, ox + ow - w)
    y0, x0 = max(0, oy), max(0, ox)
    y1, x1 = min(h, oy + oh), min(w, ox + ow)
    if y1 <= y0 or x1 <= x0:
        return x.new_full((*x.shape[:-2], oh, ow), fill)
    out = x[..., y0:y1, x0:x1]
    if top or left or bottom or right:
        out = F.pad(out, (left, right, top, bottom), value=fill)
    return out


def _warp(x: torch.Tensor, m: np.ndarray, oh: int, ow: int, fill: float) -> torch.Tensor:
    """Resample ``x`` so output pixel coordinates ``p`` read input coordinates ``m @ p``; ``fill`` outside."""
    h, w = x.shape[-2:]
    if np.allclose(m[:2, :2], np.eye(2), atol=1e-9) and np.allclose(m[:2, 2], np.round(m[:2, 2]), atol=1e-9):
        return _shift_crop(x, int(round(m[1, 2])), int(round(m[0, 2])), oh, ow, fill)  # integer shift: exact
    to_norm_in = np.array([[2.0 / w, 0.0, -1.0], [0.0, 2.0 / h, -1.0], [0.0, 0.0, 1.0]])
    from_norm_out = np.array([[ow / 2.0, 0.0, ow / 2.0], [0.0, oh / 2.0, oh / 2.0], [0.0, 0.0, 1.0]])
    theta = torch.as_tensor((to_norm_in @ m @ from_norm_out)[:2], dtype=x.dtype).to(
        x.device, non_blocking=True
    )
    grid = F.affine_grid(
        theta.expand(x.shape[0], 2, 3), [x.shape[0], x.shape[1], oh, ow], align_corners=False
    )
    # grid_sample fills with zeros outside; shifting by the fill makes the outside equal `fill` exactly.
    if fill == 0:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


class Compose(Transform):
    """Apply transforms in order; consecutive geometric ones are fused into one resampling.

    Args:
        transforms: transforms, or any callables ``(x) -> x`` / ``(x, generator) -> x``.
        keep_size: end with a centre crop back to the input ``H x W`` (default True).
        fuse: fuse geometric runs (default True); False applies them one by one (same result up
            to interpolation, slower: kept for checking and for debugging).
    """

    def __init__(self, transforms: Sequence[Callable], keep_size: bool = True, fuse: bool = True):
        self.transforms = list(transforms)
        self.keep_size = keep_size
        self.fuse = fuse

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"transforms take (N, C, H, W) images, got shape {tuple(x.shape)}")
        h0, w0 = x.shape[-2:]
        steps = list(self.transforms)
        if self.keep_size:
            steps.append(CenterCrop(h0, w0))
        fill = DEFAULT_FILL
        run: list[tuple[Geometric, object]] = []
        for t in steps:
            if isinstance(t, Geometric):
                params = t.sample(generator)
                if self.fuse:
                    run.append((t, params))
                else:
                    x = t.apply(x, params, fill if t.fill is None or isinstance(t, Pad) else t.fill)
                if isinstance(t, Pad):
                    fill = t.fill
                continue
            if run:
                x, run = self._flush(x, run), []
            x = _call(t, x, generator)
        return self._flush(x, run) if run else x

    @staticmethod
    def _flush(x: torch.Tensor, run: list) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = np.eye(3)
        fill = next((t.fill for t, _ in run if t.fill is not None), DEFAULT_FILL)
        for t, params in run:  # output coordinates of t map to its input: compose input-side first
            h, w, mt = t.plan(params, h, w)
            m = m @ mt
        return _warp(x, m, h, w, fill)

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"compose([{inner}], keep_size={self.keep_size})"


def _call(t: Callable, x: torch.Tensor, generator) -> torch.Tensor:
    if isinstance(t, Transform):
        return t(x, generator)
    try:
        return t(x, generator)
    except TypeError:
        return t(x)


# -- factories (Lucid's spelling) ---------------------------------------------------------------
def pad(p: int, value: float = DEFAULT_FILL) -> Pad:
    """Grow the canvas by ``p`` pixels per side with a constant ``value``."""
    return Pad(p, value)


def jitter(d: int) -> Jitter:
    """Randomly crop ``d`` pixels (a random translation by ``0..d``)."""
    return Jitter(d)


def random_scale(scales: Sequence[float] | dict = STANDARD_SCALES, fill: float | None = None) -> RandomScale:
    """Random zoom, one of ``scales`` (or uniform in ``{"low": a, "high": b}``), size kept."""
    return RandomScale(scales, fill)


def random_rotate(
    angles: Sequence[float] | dict = STANDARD_ANGLES, fill: float | None = None
) -> RandomRotate:
    """Random rotation by one of ``angles`` degrees (or uniform in a range), size kept."""
    return RandomRotate(angles, fill)


def center_crop(h: int, w: int, fill: float | None = None) -> CenterCrop:
    """Crop or pad to exactly ``h x w`` about the centre."""
    return CenterCrop(h, w, fill)


def compose(transforms: Sequence[Callable], keep_size: bool = True, fuse: bool = True) -> Compose:
    """See :class:`Compose`."""
    return Compose(transforms, keep_size=keep_size, fuse=fuse)


def standard_transforms(
    pad_px: int = 12,
    jitter_px: int = 8,
    scales: Sequence[float] | dict | None = STANDARD_SCALES,
    angles: Sequence[float] | dict | None = STANDARD_ANGLES,
    jitter2_px: int = 4,
    fill: float = DEFAULT_FILL,
) -> Compose:
    """Lucid's ``standard_transforms``: pad 12, jitter 8, scale 0.9-1.1, rotate +-10 degrees, jitter 4.

    Each part is configurable (0 or None leaves it out). The result keeps the input size.
    """
    ts: list[Transform] = []
    if pad_px:
        ts.append(Pad(pad_px, fill))
    if jitter_px:
        ts.append(Jitter(jitter_px))
    if scales:
        ts.append(RandomScale(scales))
    if angles:
        ts.append(RandomRotate(angles))
    if jitter2_px:
        ts.append(Jitter(jitter2_px))
    return Compose(ts, keep_size=True)
