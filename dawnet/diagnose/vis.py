"""Figures for diagnosis: feature maps, conv weights, biases, activation histograms, patches.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot's global state
(no figure leaks in loops); Jupyter displays it inline when it is a cell's value, and
``fig.savefig(path)`` writes it. Wide text lines get wide panels: sizes follow the aspect ratio.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

__all__ = [
    "figure_png", "show_image", "feature_maps", "conv_weights", "biases", "activation_histograms", "patch_grid",
    "heatmap_overlay", "edit_figure", "save_figure",
]


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a figure (what Jupyter shows for objects with ``_repr_png_``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save_figure(fig: Figure, path: Any, dpi: int = 100) -> None:
    """Write a figure atomically (:mod:`dawnet.atomic`), format from the suffix."""
    from pathlib import Path

    from dawnet.atomic import atomic_write

    path = Path(path)
    with atomic_write(path) as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=dpi)


def _np(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().float().cpu().numpy()
    return np.asarray(t, dtype=np.float32)


def _display(img: Any) -> tuple[np.ndarray, str | None]:
    """An (H, W) or (H, W, 3) array in [0, 1] for imshow, and the colour map to use."""
    a = _np(img)
    if a.ndim == 4:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    lo, hi = float(np.nanmin(a)) if a.size else 0.0, float(np.nanmax(a)) if a.size else 1.0
    if a.ndim == 3 and (lo < 0 or hi > 1):
        a = (a - lo) / (hi - lo + 1e-12)
    return a, ("gray" if a.ndim == 2 else None)


def show_image(ax, img: Any, title: str | None = None, **kwargs: Any) -> None:
    """Draw an image tensor on an axes (grey images in grey, 0..1 kept as is); kwargs go to imshow."""
    a, cmap = _display(img)
    kw = {"vmin": 0.0, "vmax": 1.0} if cmap and a.size and a.min() >= 0 and a.max() <= 1 else {}
    ax.imshow(a, cmap=cmap, interpolation="nearest", **{**kw, **kwargs})
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _grid(n: int, ncols: int | None, aspect: float, width: float = 12.0) -> tuple[int, int, tuple[float, float]]:
    ncols = ncols or max(1, min(n, round(math.sqrt(n / max(aspect, 1e-3) * 1.0)) or 1))
    ncols = min(ncols, n) if n else 1
    nrows = max(1, math.ceil(n / ncols))
    cell_w = width / ncols
    return nrows, ncols, (width, max(1.5, nrows * cell_w * aspect + 0.6))


def _panels(n: int, ncols: int, cell: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    """A figure of ``n`` panels in rows of ``ncols`` (unused cells hidden); returns it and the n axes."""
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    width, height = cell[0] * ncols, cell[1] * nrows + 0.3
    fig = Figure(figsize=(width, height))
    # a fixed layout in inches (room for tick labels and a title per panel, and a suptitle): constrained layout
    # measures every tick label and takes seconds on a model's 20-odd bias panels
    fig.subplots_adjust(left=0.5 / width, right=1 - 0.15 / width, bottom=0.3 / height, top=1 - 0.55 / height,
                        wspace=0.55 / (cell[0] - 0.65), hspace=0.55 / (cell[1] - 0.55))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.axis("off")
    return fig, axes[:n]


def feature_maps(acts: Any, channels: Sequence[int] | None = None, *, layout: str | None = None,
                 shared_scale: bool = True, colorbar: bool = True, ncols: int | None = None,
                 cmap: str = "viridis", title: str | None = None, max_maps: int = 64, width: float = 12.0) -> Figure:
    """A grid of a layer's feature maps for one image.

    ``acts``: ``(C, H, W)`` or ``(1, C, H, W)`` conv maps, or a sequence layer's ``(T, C)`` /
    ``(1, T, C)`` output (``layout="NTC"``), drawn as one units-by-time heatmap. ``channels``
    picks maps (default all, up to ``max_maps``). ``shared_scale`` uses one colour range for
    all maps (compare channels) with one colour bar; otherwise each map has its own range.
    """
    a = _np(acts)
    if a.ndim == 4 or (a.ndim == 3 and layout in ("NTC", "TNC")):
        a = a[0] if layout != "TNC" else a[:, 0]
    if a.ndim == 2 and layout in (None, "NTC", "TNC"):  # (T, C): units x time
        sel = a[:, list(channels)] if channels is not None else a
        fig = Figure(figsize=(width, float(np.clip(1.5 + 0.06 * sel.shape[1], 2.0, 8.0))))
        ax = fig.add_subplot()
        im = ax.imshow(sel.T, aspect="auto", cmap=cmap, interpolation="nearest")
        ax.set_xlabel("time step")
        ax.set_ylabel("unit" if channels is None else "unit (selected)")
        if channels is not None:
            ax.set_yticks(range(len(channels)), [str(c) for c in channels], fontsize=6)
        if colorbar:
            fig.colorbar(im, ax=ax)
        ax.set_title(title or "sequence activations", fontsize=9)
        return fig
    if a.ndim != 3:
        raise ValueError(f"feature_maps expects (C, H, W) maps or a (T, C) sequence, got shape {a.shape}")
    chans = list(channels) if channels is not None else list(range(min(a.shape[0], max_maps)))
    bad = [c for c in chans if not 0 <= c < a.shape[0]]
    if bad:
        raise ValueError(f"channels {bad} out of range: the layer has {a.shape[0]} channels")
    maps = a[chans]
    h, w = maps.shape[1:]
    nrows, ncols, size = _grid(len(chans), ncols, h / max(w, 1), width)
    fig = Figure(figsize=size)  # a manual layout: constrained layout takes seconds on big grids
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    right = 0.9 if colorbar and shared_scale else 0.98
    fig.subplots_adjust(left=0.02, right=right, bottom=0.02, top=0.9 if title else 0.95, wspace=0.15,
                        hspace=0.35)
    vmin, vmax = (float(maps.min()), float(maps.max())) if shared_scale else (None, None)
    im = None
    for ax, c, m in zip(axes, chans, maps):
        im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="equal")
        ax.set_title(f"{c}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        if colorbar and not shared_scale:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    for ax in axes[len(chans):]:
        ax.axis("off")
    if colorbar and shared_scale and im is not None:
        fig.colorbar(im, cax=fig.add_axes((0.92, 0.1, 0.015, 0.8)))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _weight_of(layer: Any) -> torch.Tensor:
    if isinstance(layer, nn.Module):
        w = getattr(layer, "weight", None)
        if not isinstance(w, torch.Tensor):
            raise ValueError(f"{type(layer).__name__} has no weight tensor to draw")
        return w.detach()
    return torch.as_tensor(layer).detach()


def conv_weights(layer: Any, *, max_filters: int = 64, ncols: int | None = None, title: str | None = None,
                 as_images: bool | None = None) -> Figure:
    """Conv filters: as images when they read 1 or 3 channels (a first layer), otherwise as
    per-output-channel L2 norms and a histogram of all weights (deeper layers)."""
    w = _np(_weight_of(layer))
    name = title or (type(layer).__name__ if isinstance(layer, nn.Module) else "weights")
    if as_images is None:
        as_images = w.ndim == 4 and w.shape[1] in (1, 3)
    if as_images:
        if w.ndim != 4:
            raise ValueError(f"filters as images need a (out, in, kh, kw) weight, got shape {w.shape}")
        n = min(w.shape[0], max_filters)
        nrows, ncols, size = _grid(n, ncols, w.shape[2] / w.shape[3], width=min(12.0, 1.2 * max(n, 4)))
        fig = Figure(figsize=size)
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.88, wspace=0.1, hspace=0.3)
        lim = float(np.abs(w[:n]).max()) or 1.0
        for i, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= n:
                ax.axis("off")
                continue
            f = w[i]
            if f.shape[0] == 3:
                ax.imshow(np.moveaxis((f / lim + 1) / 2, 0, -1).clip(0, 1), interpolation="nearest")
            else:
                ax.imshow(f[0], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
            ax.set_title(str(i), fontsize=7)
        fig.suptitle(f"{name}: {w.shape[0]} filters {w.shape[2]}x{w.shape[3]} (shared scale +-{lim:.3g})",
                     fontsize=9)
        return fig
    flat = w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(-1, 1)
    norms = np.linalg.norm(flat, axis=1)
    fig = Figure(figsize=(12, 3.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
    ax1.vlines(np.arange(len(norms)), 0, norms, color="tab:blue", lw=max(0.5, 300 / max(len(norms), 1)))
    ax1.set_ylim(bottom=0)
    ax1.set_xlabel("output channel")
    ax1.set_ylabel("L2 norm")
    ax1.set_title(f"{name}: per-channel weight norm (shape {tuple(w.shape)})", fontsize=9)
    ax2.hist(w.ravel(), bins=60, color="tab:gray")
    ax2.set_title(f"weights: mean {w.mean():.3g}, std {w.std():.3g}", fontsize=9)
    ax2.set_yscale("log")
    return fig


def _named_with(model: nn.Module, attr: str) -> list[tuple[str, torch.Tensor]]:
    from dawnet.diagnose.probe import unwrap

    out = []
    for name, m in unwrap(model).named_modules():
        t = getattr(m, attr, None)
        if isinstance(t, torch.Tensor) and name:
            out.append((name, t.detach()))
        if isinstance(m, nn.RNNBase) and attr == "bias":  # LSTM biases: b_ih + b_hh per layer/direction
            for pname, p in m.named_parameters():
                if pname.startswith("bias_ih"):
                    hh = getattr(m, pname.replace("bias_ih", "bias_hh"))
                    out.append((f"{name}.{pname.replace('bias_ih_', '')}", (p + hh).detach()))
    return out


def biases(model_or_layer: nn.Module, *, layers: Sequence[str] | None = None, ncols: int = 3) -> Figure:
    """Bias values per channel of each layer that has one (LSTM: b_ih + b_hh per gate block)."""
    if hasattr(model_or_layer, "bias") and isinstance(model_or_layer.bias, torch.Tensor) and \
            not list(model_or_layer.children()):
        items = [(type(model_or_layer).__name__, model_or_layer.bias.detach())]
    else:
        items = _named_with(model_or_layer, "bias")
    if layers is not None:
        items = [(n, b) for n, b in items if n in layers or n.split(".l")[0] in layers]
    if not items:
        raise ValueError("no layer with a bias to draw (layers with bias=False have none)")
    fig, axes = _panels(len(items), ncols, (4, 2.4))
    for ax, (name, b) in zip(axes, items):
        v = _np(b).ravel()
        ax.vlines(np.arange(len(v)), 0, v, colors=np.where(v >= 0, "tab:blue", "tab:red"),
                  lw=max(0.5, 150 / max(len(v), 1)))  # one collection, not one patch per bar: fast
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"{name} ({len(v)})", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("biases per channel", fontsize=10)
    return fig


def activation_histograms(acts: Mapping[str, Any], *, bins: int = 60, ncols: int = 3, log: bool = True) -> Figure:
    """One histogram per layer, with the fraction of exact zeros (dead ReLU units) in the title."""
    if not acts:
        raise ValueError("no activations to draw: pass {layer name: tensor}")
    fig, axes = _panels(len(acts), ncols, (4, 2.6))
    for ax, (name, t) in zip(axes, acts.items()):
        v = _np(t).ravel()
        ax.hist(v, bins=bins, color="tab:green")
        if log:
            ax.set_yscale("log")
        zeros = float((v == 0).mean()) if v.size else 0.0
        ax.set_title(f"{name}: mean {v.mean():.3g}, std {v.std():.3g}, zeros {zeros:.0%}", fontsize=8)
        ax.tick_params(labelsize=7)
    return fig


def patch_grid(top: Any, channels: Sequence[int] | None = None, *, max_channels: int = 16,
               cell: float = 1.2, mark_peak: bool = True) -> Figure:
    """Top-activating patches: one row per channel, strongest left; the peak's field centre is
    marked with a red cross and each patch is titled with its activation and image index."""
    chans = list(channels) if channels is not None else list(top.channels[:max_channels])
    rows = []
    for c in chans:
        if c not in top.channels:
            raise ValueError(f"channel {c} was not ranked; ranked channels: {top.channels}")
        rows.append(top.channels.index(c))
    k = top.values.shape[1]
    shapes = [p.shape[-2:] for r in rows for p in top.patches[r] if p is not None and p.dim() >= 2]
    aspect = float(np.median([h / max(w, 1) for h, w in shapes])) if shapes else 1.0
    fig = Figure(figsize=(cell * k / max(min(aspect, 1.0), 0.15) * 0.6 + 1.0, cell * len(rows) * 1.1 + 0.5))
    axes = np.atleast_2d(fig.subplots(len(rows), k, squeeze=False))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.02, top=0.9, wspace=0.15, hspace=0.4)
    for ri, r in enumerate(rows):
        for j in range(k):
            ax = axes[ri, j]
            patch = top.patches[r][j]
            if patch is None or patch.numel() == 0:
                ax.axis("off")
                continue
            box = top.boxes[r][j]
            pos = top.positions[r][j]
            # Draw every patch in the frame of its full (unclipped) field, so that all patches share one
            # scale and a patch cut by the image border sits where it belongs (grey: outside the image).
            fy0 = fx0 = 0
            if top.rf is not None and patch.dim() == 3 and len(box) == 4:
                fy0, fx0, fy1, fx1 = top.rf.box(*pos, clip=False, effective=True)
                ax.set_facecolor("0.85")
                show_image(ax, patch, extent=(box[1] - fx0 - 0.5, box[3] - fx0 - 0.5, box[2] - fy0 - 0.5,
                                              box[0] - fy0 - 0.5))
                ax.set_xlim(-0.5, fx1 - fx0 - 0.5)
                ax.set_ylim(fy1 - fy0 - 0.5, -0.5)
            else:
                show_image(ax, patch if patch.dim() == 3 else patch[None, None])
            ax.set_title(f"{float(top.values[r, j]):.2g} #{int(top.image_index[r, j])}", fontsize=6)
            if mark_peak and top.rf is not None and patch.dim() == 3 and len(box) == 4:
                centre = top.rf.center(*pos) if pos else ()
                if len(centre) == 2:
                    ax.plot(centre[1] - fx0, centre[0] - fy0, "r+", ms=8, mew=1.5)
                elif len(centre) == 1:
                    ax.axvline(centre[0] - fx0, color="r", lw=0.8)
            if j == 0:
                ax.set_ylabel(f"ch {top.channels[r]}", fontsize=8)
    fig.suptitle(f"top-{k} patches of {top.layer} ({top.images_seen} images)", fontsize=9)
    return fig


def heatmap_overlay(image: Any | None, heat: Any, *, title: str | None = None, alpha: float = 0.55,
                    cmap: str = "inferno", signed: bool | None = None, box: Sequence[int] | None = None,
                    width: float = 10.0) -> Figure:
    """The image, and the heatmap over it (signed maps use a diverging colour map around 0).

    ``box`` (y0, x0, y1, x1) outlines a region, e.g. the neuron's receptive field.
    """
    h = _np(heat)
    if h.ndim != 2:
        raise ValueError(f"heat must be (H, W), got shape {h.shape}")
    if signed is None:
        signed = bool(h.min() < 0)
    panels = 2 if image is not None else 1
    aspect = h.shape[0] / max(h.shape[1], 1)
    fig = Figure(figsize=(width, max(1.6, panels * width * aspect + 0.9)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(panels, 1, squeeze=False)).ravel()
    if image is not None:
        show_image(axes[0], image, "image")
    ax = axes[-1]
    if image is not None:
        a, gray = _display(image)
        ax.imshow(a, cmap=gray, interpolation="nearest")
    lim = float(np.abs(h).max()) or 1.0
    kw = {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim} if signed else {"cmap": cmap, "vmin": 0, "vmax": lim}
    im = ax.imshow(h, alpha=alpha if image is not None else 1.0, interpolation="nearest", **kw)
    fig.colorbar(im, ax=ax, shrink=0.8)
    if box is not None:
        from matplotlib.patches import Rectangle

        y0, x0, y1, x1 = box
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="cyan", lw=1.2))
    ax.set_title(title or "sensitivity", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def edit_figure(report: Any, layer: str | None = None, n: int = 8, image: int = 0, width: float = 12.0) -> Figure:
    """Before / after / difference images, the text before and after, and the ``n`` most changed
    channels of ``layer`` (their before and after maps side by side)."""
    xb, xa = report.image_before[image], report.image_after[image]
    layer = layer or (next(iter(report.layers)) if report.layers else None)
    aspect = xb.shape[-2] / max(xb.shape[-1], 1)
    top = report.top_channels(layer, n, image=image) if layer else []
    spatial = layer is not None and report.layers[layer].before.dim() == 4
    rows = 3 + (len(top) if spatial else (1 if layer else 0))
    fig = Figure(figsize=(width, max(3.0, rows * (width / 2) * max(aspect, 0.12) + 1.2)), layout="constrained")
    gs = fig.add_gridspec(rows, 3)
    show_image(fig.add_subplot(gs[0, :]), xb, "before" + (f": {report.text_before!r}" if report.text_before
                                                          is not None else ""))
    show_image(fig.add_subplot(gs[1, :]), xa, "after" + (f": {report.text_after!r}" if report.text_after
                                                         is not None else ""))
    diff = (xa - xb).float().sum(dim=0)
    ax = fig.add_subplot(gs[2, :])
    lim = float(diff.abs().max()) or 1.0
    ax.imshow(diff.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_title("after - before", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    if layer and spatial:
        d = report.layers[layer]
        for i, (c, v) in enumerate(top):
            b, a = d.before[image, c].numpy(), d.after[image, c].numpy()
            lo, hi = min(b.min(), a.min()), max(b.max(), a.max())
            lim = float(np.abs(a - b).max()) or 1.0
            panels = ((b, "before", {"cmap": "viridis", "vmin": lo, "vmax": hi}),
                      (a, "after", {"cmap": "viridis", "vmin": lo, "vmax": hi}),
                      (a - b, f"change (mean |change| {v:.3g})", {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}))
            for j, (m, lab, kw) in enumerate(panels):
                ax = fig.add_subplot(gs[3 + i, j])
                ax.imshow(m, interpolation="nearest", **kw)
                ax.set_title(f"{layer} ch {c} {lab}", fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
    elif layer:
        ax = fig.add_subplot(gs[3, :])
        stats = report.layers[layer].per_channel(image)["mean_abs_change"].numpy()
        ax.vlines(np.arange(len(stats)), 0, stats, lw=max(0.5, 300 / max(len(stats), 1)))
        ax.set_title(f"{layer}: mean |change| per channel", fontsize=8)
    return fig
