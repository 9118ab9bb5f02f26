"""Patch surgery and image edits, and what they change inside a model.

Edits take a ``(C, H, W)`` or ``(N, C, H, W)`` float tensor (a PIL image or numpy array is
converted to ``[0, 1]`` floats) and return a new tensor; the input is never modified. Boxes are
half-open pixel boxes ``(y0, x0, y1, x1)`` and points are ``(y, x)``: the row/column you read
off a matplotlib figure of the image (``imshow`` puts pixel (y, x) at axes (x, y)).

:func:`compare` runs the model on the image before and after an edit and reports the change of
every channel in chosen layers and of the output, with decoded text and per-character
probabilities for recognizers.

Example::

    b2 = paste(line_b, cut(line_a, (0, 40, 32, 72)), at=(0, 10))   # move an "a" into line B
    report = compare(model, line_b, b2, ["cnn.conv3"], decode=ctc_reader(charset))   # dawnet.ocr.decode
    report.text_before, report.text_after; report.top_channels("cnn.conv3"); report.figure()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn

from dawnet.diagnose.forward import eval_mode, param_like, run_forward
from dawnet.diagnose.layout import canonical, feature_layout
from dawnet.diagnose.probe import probe, resolve_layers
from dawnet.images import to_gray

__all__ = [
    "as_image", "cut", "paste", "transplant", "stroke", "erase", "add_noise", "blur", "rotate", "scale", "elastic",
    "contrast", "brightness", "LayerDelta", "EditReport", "compare",
]

Box = tuple[int, int, int, int]


def as_image(img: Any) -> torch.Tensor:
    """A float ``(C, H, W)`` / ``(N, C, H, W)`` tensor from a tensor, PIL image or numpy array."""
    if isinstance(img, torch.Tensor):
        if img.dim() == 2:
            img = img[None]
        if img.dim() not in (3, 4):
            raise ValueError(f"an image must be (H, W), (C, H, W) or (N, C, H, W), got shape {tuple(img.shape)}")
        return img if img.is_floating_point() else img.float() / 255.0
    if isinstance(img, Image.Image):
        img = np.asarray(img if img.mode in ("L", "RGB") else to_gray(img))  # 16-bit scaled, alpha over white
    if isinstance(img, np.ndarray):
        arr = torch.from_numpy(np.array(img, copy=True))
        arr = arr.float() / 255.0 if not arr.is_floating_point() else arr.float()
        return arr[None] if arr.dim() == 2 else arr.permute(2, 0, 1)
    raise TypeError(f"cannot edit a {type(img).__name__}: give a tensor, a PIL image or a numpy array")


def _batched(img: Any) -> tuple[torch.Tensor, bool]:
    x = as_image(img)
    return (x, False) if x.dim() == 4 else (x[None], True)


def _unbatch(x: torch.Tensor, single: bool) -> torch.Tensor:
    return x[0] if single else x


def _check_box(box: Sequence[int], h: int, w: int, what: str = "box") -> Box:
    if len(box) != 4:
        raise ValueError(f"{what} must be (y0, x0, y1, x1), got {box!r}")
    y0, x0, y1, x1 = (int(v) for v in box)
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise ValueError(f"{what} {box!r} is not a non-empty box inside the {h}x{w} image "
                         f"(use half-open (y0, x0, y1, x1) with 0 <= y0 < y1 <= {h} and 0 <= x0 < x1 <= {w})")
    return y0, x0, y1, x1


def cut(img: Any, box: Sequence[int]) -> torch.Tensor:
    """A copy of the ``(y0, x0, y1, x1)`` region of an image."""
    x, single = _batched(img)
    y0, x0, y1, x1 = _check_box(box, *x.shape[-2:])
    return _unbatch(x[..., y0:y1, x0:x1].clone(), single)


def paste(dst: Any, patch: Any, at: Sequence[int], *, mask: torch.Tensor | None = None,
          alpha: float = 1.0) -> torch.Tensor:
    """``dst`` with ``patch`` pasted so that its top-left pixel lands at ``at`` = (y, x).

    The part that falls outside ``dst`` is dropped (``at`` may be negative). ``mask`` (patch
    sized, values in [0, 1]) and ``alpha`` blend instead of replacing, e.g. ink only.
    Channel counts must match (a grey patch is broadcast into an RGB image).
    """
    x, single = _batched(dst)
    p = as_image(patch)
    p = p[None] if p.dim() == 3 else p
    if p.shape[1] != x.shape[1] and p.shape[1] != 1:
        raise ValueError(f"the patch has {p.shape[1]} channels but the image has {x.shape[1]}")
    out = x.clone()
    h, w = x.shape[-2:]
    ph, pw = p.shape[-2:]
    y, xx = int(at[0]), int(at[1])
    ty0, tx0, ty1, tx1 = max(0, y), max(0, xx), min(h, y + ph), min(w, xx + pw)
    if ty0 >= ty1 or tx0 >= tx1:
        raise ValueError(f"pasting a {ph}x{pw} patch at {tuple(at)} misses the {h}x{w} image entirely")
    src = p[..., ty0 - y:ty1 - y, tx0 - xx:tx1 - xx].to(out)
    a = torch.as_tensor(alpha, dtype=out.dtype)
    if mask is not None:
        m = torch.as_tensor(mask, dtype=out.dtype)
        if m.shape[-2:] != (ph, pw):
            raise ValueError(f"mask must be the patch's size {ph}x{pw}, got {tuple(m.shape)}")
        a = a * m[..., ty0 - y:ty1 - y, tx0 - xx:tx1 - xx]
    region = out[..., ty0:ty1, tx0:tx1]
    out[..., ty0:ty1, tx0:tx1] = region * (1 - a) + src * a
    return _unbatch(out, single)


def transplant(src: Any, src_box: Sequence[int], dst: Any, at: Sequence[int], **kwargs: Any) -> torch.Tensor:
    """Cut ``src_box`` of image A and paste it into image B at ``at`` = (y, x)."""
    return paste(dst, cut(src, src_box), at, **kwargs)


def stroke(img: Any, points: Sequence[Sequence[float]], width: float = 2.0, value: float | Sequence[float] = 0.0
           ) -> torch.Tensor:
    """Draw a polyline through ``points`` ((y, x) pairs) with round joints, anti-aliased.

    ``value`` is the ink (0 = black on white paper in [0, 1] images; one value per channel ok).
    """
    x, single = _batched(img)
    if len(points) < 1:
        raise ValueError("a stroke needs at least one (y, x) point")
    h, w = x.shape[-2:]
    scale = 4  # draw at 4x and downsample: anti-aliased edges without a drawing library
    canvas = Image.new("L", (w * scale, h * scale), 0)
    draw = ImageDraw.Draw(canvas)
    pts = [((px + 0.5) * scale, (py + 0.5) * scale) for py, px in points]
    r = max(width * scale / 2, 0.5)
    if len(pts) > 1:
        draw.line(pts, fill=255, width=max(1, round(width * scale)))
    for cx, cy in pts:  # round caps and joints
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    m = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None, None]
    m = F.avg_pool2d(m, scale).to(x)
    ink = torch.as_tensor(value, dtype=x.dtype).reshape(1, -1, 1, 1)
    return _unbatch(x * (1 - m) + ink * m, single)


def erase(img: Any, box: Sequence[int], value: float | None = None) -> torch.Tensor:
    """Fill a box with ``value`` (default: each image's median per channel, i.e. the paper)."""
    x, single = _batched(img)
    y0, x0, y1, x1 = _check_box(box, *x.shape[-2:])
    out = x.clone()
    if value is None:
        fill = x.flatten(2).median(dim=2).values[..., None, None]
        out[..., y0:y1, x0:x1] = fill.expand(-1, -1, y1 - y0, x1 - x0)
    else:
        out[..., y0:y1, x0:x1] = value
    return _unbatch(out, single)


def add_noise(img: Any, std: float = 0.1, *, kind: str = "gaussian", amount: float = 0.05, seed: int = 0,
              clamp: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """Gaussian noise of ``std``, or salt-and-pepper on a fraction ``amount`` of pixels; seeded."""
    x, single = _batched(img)
    g = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        out = x + torch.randn(x.shape, generator=g).to(x) * std
    elif kind == "salt_pepper":
        u = torch.rand((x.shape[0], 1, *x.shape[2:]), generator=g).to(x)
        lo, hi = clamp if clamp else (float(x.min()), float(x.max()))
        out = torch.where(u < amount / 2, torch.full_like(x, lo), torch.where(u > 1 - amount / 2,
                                                                             torch.full_like(x, hi), x))
    else:
        raise ValueError(f"kind must be 'gaussian' or 'salt_pepper', got {kind!r}")
    if clamp is not None:
        out = out.clamp(*clamp)
    return _unbatch(out, single)


def _gauss_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an (N, C, H, W) tensor, edges replicated."""
    k = _gauss_kernel(sigma).to(x)
    r = (k.numel() - 1) // 2
    c = x.shape[1]
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def blur(img: Any, sigma: float = 1.0) -> torch.Tensor:
    """Gaussian blur with standard deviation ``sigma`` pixels."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    x, single = _batched(img)
    return _unbatch(_smooth(x, sigma), single)


def _fill_value(x: torch.Tensor, fill: float | None) -> torch.Tensor:
    if fill is None:
        return x.flatten(2).median(dim=2).values[..., None, None]
    return torch.full((x.shape[0], x.shape[1], 1, 1), float(fill)).to(x)


def _warp(x: torch.Tensor, grid: torch.Tensor, fill: float | None) -> torch.Tensor:
    """Sample ``x`` at ``grid`` (normalised coords); outside pixels take ``fill`` (default: paper)."""
    f = _fill_value(x, fill)  # sample x - fill with zero padding, so outside pixels come back as fill
    return F.grid_sample(x - f, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + f


def rotate(img: Any, degrees: float, *, center: Sequence[float] | None = None, fill: float | None = None
           ) -> torch.Tensor:
    """Rotate counter-clockwise by ``degrees`` about ``center`` (y, x; default the middle)."""
    x, single = _batched(img)
    n, _, h, w = x.shape
    cy, cx = center if center is not None else ((h - 1) / 2, (w - 1) / 2)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    a = math.radians(degrees)
    # output pixel (y, x) reads the input at the point rotated back by -a (y axis points down)
    dx, dy = xs - cx, ys - cy
    sx = cx + dx * math.cos(a) - dy * math.sin(a)
    sy = cy + dx * math.sin(a) + dy * math.cos(a)
    grid = torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], -1)[None].expand(n, -1, -1, -1)
    return _unbatch(_warp(x, grid.to(x), fill), single)


def scale(img: Any, factor: float, *, center: Sequence[float] | None = None, fill: float | None = None
          ) -> torch.Tensor:
    """Zoom by ``factor`` about ``center`` (y, x; default the middle): > 1 enlarges, < 1 shrinks,
    and pixels that come from outside the image take ``fill`` (default: the paper's colour)."""
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    x, single = _batched(img)
    n, _, h, w = x.shape
    cy, cx = center if center is not None else ((h - 1) / 2, (w - 1) / 2)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    sx, sy = cx + (xs - cx) / factor, cy + (ys - cy) / factor  # output pixel reads the input here
    grid = torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], -1)[None].expand(n, -1, -1, -1)
    return _unbatch(_warp(x, grid.to(x), fill), single)


def elastic(img: Any, alpha: float = 6.0, sigma: float = 4.0, *, seed: int = 0, fill: float | None = None
            ) -> torch.Tensor:
    """Elastic distortion (Simard et al., 2003): a random displacement field of ``alpha`` pixels
    smoothed by a Gaussian of ``sigma`` pixels; the same seed gives the same warp."""
    x, single = _batched(img)
    n, _, h, w = x.shape
    g = torch.Generator().manual_seed(seed)
    d = torch.rand((n, 2, h, w), generator=g) * 2 - 1
    d = _smooth(d, sigma)
    d = d / d.abs().amax(dim=(2, 3), keepdim=True).clamp(min=1e-8) * alpha
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    sx, sy = xs + d[:, 0], ys + d[:, 1]
    grid = torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], -1)
    return _unbatch(_warp(x, grid.to(x), fill), single)


def contrast(img: Any, factor: float, pivot: float | None = None) -> torch.Tensor:
    """Scale contrast by ``factor`` around ``pivot`` (default each image's mean); 0 is flat grey."""
    x, single = _batched(img)
    p = x.mean(dim=(1, 2, 3), keepdim=True) if pivot is None else torch.as_tensor(pivot).to(x)
    return _unbatch(p + (x - p) * factor, single)


def brightness(img: Any, delta: float) -> torch.Tensor:
    """Add ``delta`` to every pixel."""
    x, single = _batched(img)
    return _unbatch(x + delta, single)


# ---------------------------------------------------------------------------------------------
# what an edit changes
# ---------------------------------------------------------------------------------------------
@dataclass
class LayerDelta:
    """One layer's activations before/after an edit, canonical ``(N, C, *spatial)``."""

    layer: str
    before: torch.Tensor
    after: torch.Tensor

    @property
    def delta(self) -> torch.Tensor:
        return self.after - self.before

    def per_channel(self, image: int = 0) -> dict[str, torch.Tensor]:
        """Per channel: mean before/after, mean |change|, max |change|, and change relative to
        the channel's mean |activation| before (so quiet channels that wake up stand out)."""
        b = self.before[image].flatten(1)
        a = self.after[image].flatten(1)
        d = (a - b).abs()
        scale = b.abs().mean(dim=1).clamp(min=1e-8)
        return {"mean_before": b.mean(1), "mean_after": a.mean(1), "mean_abs_change": d.mean(1),
                "max_abs_change": d.amax(1), "relative_change": d.mean(1) / scale}


@dataclass
class EditReport:
    """What an edit changed: per-layer channel deltas, the output, and decoded text if any."""

    layers: dict[str, LayerDelta]
    output_before: Any
    output_after: Any
    decoded_before: list[Any] | None = None
    decoded_after: list[Any] | None = None
    image_before: torch.Tensor | None = None
    image_after: torch.Tensor | None = None

    @property
    def output_change(self) -> float:
        """Max absolute change of the model output (first tensor)."""
        from dawnet.diagnose.probe import primary_tensor

        return float((primary_tensor(self.output_after) - primary_tensor(self.output_before)).abs().max())

    @property
    def text_before(self) -> str | None:
        return str(self.decoded_before[0]) if self.decoded_before else None

    @property
    def text_after(self) -> str | None:
        return str(self.decoded_after[0]) if self.decoded_after else None

    def top_channels(self, layer: str, n: int = 10, by: str = "mean_abs_change", image: int = 0
                     ) -> list[tuple[int, float]]:
        """The ``n`` channels that changed most, as (channel, value) pairs, largest first."""
        stats = self.layers[layer].per_channel(image)
        if by not in stats:
            raise ValueError(f"by must be one of {sorted(stats)}, got {by!r}")
        v, i = stats[by].topk(min(n, stats[by].numel()))
        return [(int(c), float(x)) for c, x in zip(i, v)]

    def summary(self, n: int = 5) -> str:
        lines = []
        if self.decoded_before is not None:
            def fmt(d):
                probs = getattr(d, "confidences", None)
                return f"{str(d)!r}" + (f" p={[round(p, 3) for p in probs]}" if probs else "")

            lines.append(f"text: {fmt(self.decoded_before[0])} -> {fmt(self.decoded_after[0])}")
        lines.append(f"output max |change|: {self.output_change:.4g}")
        for name in self.layers:
            top = ", ".join(f"c{c}: {v:.3g}" for c, v in self.top_channels(name, n))
            lines.append(f"{name}: most changed channels (mean |change|) {top}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def figure(self, layer: str | None = None, n: int = 8, image: int = 0):
        """Before, after and difference images, and the most changed channels' maps."""
        from dawnet.diagnose.vis import edit_figure

        return edit_figure(self, layer=layer, n=n, image=image)

    def _repr_png_(self):
        from dawnet.diagnose.vis import figure_png

        return figure_png(self.figure())


def compare(model: nn.Module, before: Any, after: Any, layers: str | Sequence[str] = (), *,
            decode: Callable[[Any], list[Any]] | None = None, forward: Callable | None = None,
            layouts: dict[str, str] | None = None) -> EditReport:
    """Run ``model`` on the image before and after an edit; report activation and output changes.

    ``layers`` are dotted names; ``decode`` turns outputs into one result per image (e.g.
    :func:`dawnet.ocr.decode.ctc_reader` or ``agent.postprocess``) so the report shows the text before/after
    with per-character probabilities. The model runs in eval mode without gradients.
    """
    layers = [layers] if isinstance(layers, str) else list(layers)
    modules = resolve_layers(model, layers) if layers else {}
    device, dtype = param_like(model)
    xb, _ = _batched(before)
    xa, _ = _batched(after)
    if xb.shape != xa.shape:
        raise ValueError(f"before {tuple(xb.shape)} and after {tuple(xa.shape)} must have the same shape")
    acts: list[dict[str, torch.Tensor]] = []
    outs = []
    with eval_mode(model), torch.no_grad():
        for x in (xb, xa):
            with probe(model, layers) as p:
                out = run_forward(model, x.to(device=device, dtype=dtype), forward)
            got = {}
            for name in layers:
                t = p[name]
                got[name] = canonical(t, feature_layout(modules[name], t, (layouts or {}).get(name))).float().cpu()
            acts.append(got)
            outs.append(out.detach().cpu() if isinstance(out, torch.Tensor) else out)
    deltas = {n: LayerDelta(n, acts[0][n], acts[1][n]) for n in layers}
    report = EditReport(deltas, outs[0], outs[1], image_before=xb.cpu(), image_after=xa.cpu())
    if decode is not None:
        report.decoded_before = list(decode(outs[0]))
        report.decoded_after = list(decode(outs[1]))
    return report
