"""What the page shows of a layer: which channels, ranked how, on which colour scale; and the feature maps
encoded for it (8-bit per map, base64, with each map's range)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import torch
from torch import nn

from dawnet.diagnose.forward import eval_mode
from dawnet.diagnose.layout import canonical, feature_layout
from dawnet.diagnose.probe import layer_names, probe, resolve_layers
from dawnet.inspector.errors import InspectorError

__all__ = ["View", "RANKS", "SCALES", "MAX_CHANNELS", "map_layers", "default_layer", "updated_view", "encode_maps"]

MAX_CHANNELS = 64  # feature maps drawn at once
RANKS = ("active", "changed", "list")
SCALES = ("shared", "channel")


@dataclass
class View:
    """What the page shows: a layer, which of its channels, and how the colours are scaled."""

    layer: str
    rank: str = "active"  # "active": strongest mean activation; "changed": largest change; "list": `channels`
    count: int = 16
    channels: tuple[int, ...] = ()
    scale: str = "shared"  # "shared": one colour scale for the grid; "channel": one per map


def map_layers(model: nn.Module, inputs: tuple) -> list[dict]:
    """Every layer whose output reads as feature maps or a sequence (name, type, layout, channels, shape), from
    one pass of ``model`` on the prepared ``inputs``; the model's own output last."""
    names = ["output", *layer_names(model)]
    modules = resolve_layers(model, names)
    found = []
    with torch.no_grad(), eval_mode(model), probe(model, names) as p:
        model(*inputs)
    for name in [*names[1:], "output"]:
        if name not in p:
            continue
        try:
            t = p[name]
            lay = feature_layout(modules[name] if name != "output" else None, t)
        except (TypeError, ValueError):
            continue
        if lay == "NC":
            continue
        c = canonical(t, lay)
        found.append(
            {
                "name": name,
                "type": type(modules[name]).__name__,
                "layout": lay,
                "channels": int(c.shape[1]),
                "shape": [int(s) for s in c.shape[1:]],
            }
        )
    return found


def default_layer(layers: list[dict]) -> str:
    """The layer shown first: the middle conv map (not a norm layer), else the first layer."""
    maps = [e["name"] for e in layers if e["layout"] == "NCHW" and e["type"] not in ("BatchNorm2d",)]
    if not maps:
        return layers[0]["name"]
    return maps[len(maps) // 2]


def updated_view(view: View, body: dict, layers: list[dict]) -> View:
    """``view`` changed by the page's request ``body``; ``layers`` are the session's layer entries (name,
    channels). Every value is checked; channels chosen on one layer are kept on the next where they exist."""
    by_name = {e["name"]: e for e in layers}
    layer = body.get("layer", view.layer)
    if layer not in by_name:
        raise InspectorError(f"unknown layer {layer!r}; see /api/info for the layers", status=404)
    rank = body.get("rank", view.rank)
    if rank not in RANKS:
        raise InspectorError(f"rank must be one of {RANKS}, got {rank!r}")
    count = body.get("count", view.count)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CHANNELS:
        raise InspectorError(f"count must be an integer in 1..{MAX_CHANNELS}, got {count!r}")
    n = by_name[layer]["channels"]
    if "channels" in body:
        channels = body["channels"]
    else:  # kept across a layer switch where they exist; none left falls back to the strongest
        channels = [c for c in view.channels if c < n]
        if rank == "list" and not channels and "rank" not in body:
            rank = "active"
    if (
        not isinstance(channels, list)
        or len(channels) > MAX_CHANNELS
        or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < n for c in channels)
    ):
        raise InspectorError(f"channels must be a list of at most {MAX_CHANNELS} integers in 0..{n - 1}")
    scale = body.get("scale", view.scale)
    if scale not in SCALES:
        raise InspectorError(f"scale must be 'shared' or 'channel', got {scale!r}")
    return View(layer=layer, rank=rank, count=count, channels=tuple(channels), scale=scale)


def encode_maps(act: torch.Tensor, view: View, delta: dict | None) -> dict:
    """The maps of ``act`` (C, *spatial) that ``view`` picks, as 8-bit grids in one base64 block, with each
    map's min/max/mean; ``delta`` (per-channel change) ranks them for ``rank="changed"``."""
    c = act.shape[0]
    spatial = act.shape[1:]
    flat = act.reshape(c, -1)
    if view.rank == "list" and view.channels:
        chans = list(view.channels)
    elif view.rank == "changed" and delta is not None:
        chans = torch.tensor(delta["mean_abs_change"]).topk(min(view.count, c)).indices.tolist()
    else:
        chans = flat.mean(1).topk(min(view.count, c)).indices.tolist()
    sel = flat[chans]
    if view.scale == "shared":
        lo = sel.min().expand(len(chans)) if sel.numel() else torch.zeros(len(chans))
        hi = sel.max().expand(len(chans)) if sel.numel() else torch.ones(len(chans))
    else:
        lo, hi = sel.min(1).values, sel.max(1).values
    span = (hi - lo).clamp(min=1e-12)
    q = ((sel - lo[:, None]) / span[:, None] * 255.0).round().clamp(0, 255).to(torch.uint8)
    h, w = (1, int(spatial[0])) if len(spatial) == 1 else (int(spatial[0]), int(spatial[1]))
    return {
        "layer": view.layer,
        "channels": chans,
        "height": h,
        "width": w,
        "sequence": len(spatial) == 1,
        "data": base64.b64encode(q.numpy().tobytes()).decode("ascii"),
        "min": [float(a) for a in lo],
        "max": [float(a) for a in hi],
        "mean": [float(a) for a in sel.mean(1)],
        "total_channels": c,
    }
