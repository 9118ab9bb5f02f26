"""The edits a user makes on the working image (strokes, erasing, pasting a region), checked and applied
through :mod:`dawnet.diagnose.edit`. An edit is a dict as the page sends it; :func:`check_op` turns it into the
clean form that :func:`apply_edit` applies and :func:`replay` applies again after an undo."""

from __future__ import annotations

import math
from typing import Any

import torch

from dawnet.diagnose import edit
from dawnet.inspector.errors import InspectorError
from dawnet.inspector.images import INK, PAPER

__all__ = ["OPS", "check_op", "apply_edit", "replay", "clip_box", "finite"]

OPS = ("stroke", "erase", "paste", "undo", "reset")


def finite(v: Any) -> bool:
    """Whether ``v`` is a finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_op(op: dict, shape: tuple[int, int], source: torch.Tensor) -> dict:
    """The clean form of a stroke, erase or paste on an image of ``shape`` (H, W); ``source`` is the image a
    paste cuts from. Anything malformed is refused with what a valid edit looks like."""
    h, w = shape
    kind = op["op"]
    if kind == "stroke":
        pts = op.get("points")
        if (
            not isinstance(pts, list)
            or not 1 <= len(pts) <= 10000
            or not all(isinstance(p, list) and len(p) == 2 and all(finite(v) for v in p) for p in pts)
        ):
            raise InspectorError("stroke.points must be a list of 1..10000 [y, x] pixel pairs")
        width = op.get("width", 2.0)
        if not finite(width) or not 0.5 <= width <= 64:
            raise InspectorError(f"stroke.width must be a number in [0.5, 64] px, got {width!r}")
        mode = op.get("mode", "pen")
        if mode not in ("pen", "eraser"):
            raise InspectorError(f"stroke.mode must be 'pen' or 'eraser', got {mode!r}")
        if not isinstance(op.get("continue", False), bool):
            raise InspectorError("stroke.continue must be true (extend the last stroke) or false")
        segment = {"points": [[float(y), float(x)] for y, x in pts], "width": float(width), "mode": mode}
        return {"op": "stroke", "segments": [segment], "continue": op.get("continue", False)}
    if kind == "erase":
        return {"op": "erase", "box": clip_box(op.get("box"), h, w, "erase.box")}
    if kind == "paste":
        box = clip_box(op.get("box"), *source.shape[-2:], what="paste.box (in the source image)")
        at = op.get("at")
        if not isinstance(at, list) or len(at) != 2 or not all(finite(v) for v in at):
            raise InspectorError("paste.at must be [y, x]: where the patch's top-left pixel lands")
        patch = edit.cut(source, box)
        return {"op": "paste", "box": box, "at": [int(round(at[0])), int(round(at[1]))], "patch": patch}
    raise InspectorError(f"unknown edit op {kind!r}: use {', '.join(OPS[:-1])} or {OPS[-1]}")


def clip_box(box: Any, h: int, w: int, what: str) -> list[int]:
    """``[y0, x0, y1, x1]`` rounded and clipped to an ``h`` x ``w`` image; refused when it covers no pixel."""
    if not isinstance(box, list) or len(box) != 4 or not all(finite(v) for v in box):
        raise InspectorError(f"{what} must be [y0, x0, y1, x1] pixels")
    y0, x0, y1, x1 = (int(round(v)) for v in box)
    y0, y1 = sorted((max(0, min(h, y0)), max(0, min(h, y1))))
    x0, x1 = sorted((max(0, min(w, x0)), max(0, min(w, x1))))
    if y1 <= y0 or x1 <= x0:
        raise InspectorError(f"{what} {box} covers no pixel of the {h}x{w} image")
    return [y0, x0, y1, x1]


def apply_edit(x: torch.Tensor, op: dict) -> torch.Tensor:
    """``x`` with one clean edit applied (a new tensor)."""
    if op["op"] == "stroke":
        for seg in op["segments"]:
            ink = INK if seg["mode"] == "pen" else PAPER
            x = edit.stroke(x, seg["points"], width=seg["width"], value=ink)
        return x
    if op["op"] == "erase":
        return edit.erase(x, op["box"])
    try:
        return edit.paste(x, op["patch"], op["at"])
    except ValueError as e:
        raise InspectorError(str(e)) from None


def replay(base: torch.Tensor, ops: list[dict]) -> torch.Tensor:
    """``base`` with every edit of ``ops`` applied in order."""
    x = base
    for op in ops:
        x = apply_edit(x, op)
    return x
