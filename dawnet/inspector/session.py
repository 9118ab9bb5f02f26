"""The inspector's state: one agent, one working image, its edits and augmentations, and the view.

Every update runs :mod:`dawnet.diagnose` underneath: :mod:`~dawnet.diagnose.edit` draws, erases, pastes and
augments, :func:`~dawnet.diagnose.probe.probe` captures the chosen layer, :class:`~dawnet.diagnose.edit.LayerDelta`
measures the per-channel change against the original image, and :mod:`~dawnet.diagnose.receptive_field` and
:mod:`~dawnet.diagnose.patches` give receptive fields and top-k patches. This module holds no web code:
:mod:`dawnet.inspector.app` turns its results into JSON. Its parts, one module each: ``images`` (decoding and
encoding), ``augment`` (the sliders), ``samples`` (the data set), ``edits``, ``view`` (channels and maps) and
``outputs`` (what the model's answer says).

Coordinates are pixels of the *working image*, which is the image at the size the model reads it (a text line
resized to the recognizer's height), dark ink (0) on light paper (1), so what the user draws is what the model
sees and a receptive-field box lands on the pixels it covers.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dawnet.diagnose import edit
from dawnet.diagnose.forward import eval_mode, forward_with
from dawnet.diagnose.layout import canonical, feature_layout
from dawnet.diagnose.patches import top_patches
from dawnet.diagnose.probe import probe, resolve_layers
from dawnet.diagnose.receptive_field import receptive_field
from dawnet.images import GRAY_MODES, to_gray, to_rgb
from dawnet.inspector.augment import Augment
from dawnet.inspector.edits import apply_edit, check_op, replay
from dawnet.inspector.errors import InspectorError
from dawnet.inspector.images import (
    MAX_PIXELS,
    PAPER,
    as_raw,
    checked_pixels,
    decode_image,
    open_image,
    png_data_url,
    to_float,
)
from dawnet.inspector.outputs import RECOGNIZERS, agent_kind, short, summarize_output
from dawnet.inspector.samples import Sample, open_samples
from dawnet.inspector.view import MAX_CHANNELS, View, default_layer, encode_maps, map_layers, updated_view

__all__ = ["InspectorError", "Augment", "Session", "Sample", "View", "decode_image", "open_samples", "MAX_PIXELS"]


class Session:
    """One model and one working image; thread-safe (one lock around everything that runs the model).

    Args:
        agent: a :class:`dawnet.Agent` (recognizers: ``CTCAgent``/``AttentionAgent``; classifiers: a plain
            Agent
            whose model returns ``(N, K)`` scores; detectors: an agent whose ``postprocess`` returns boxes).
        samples: data set items to pick from and to rank top-k patches over.
        image: the first image (a path or PIL image); default: the first sample, or a rendered line.
        layer: the layer to show first (default: a middle conv layer).
        max_pixels: the largest image decoded.
        top_images: how many data set images the top-k patches are ranked over.
    """

    def __init__(
        self,
        agent,
        samples: list[Sample] | None = None,
        image: Any = None,
        layer: str | None = None,
        max_pixels: int = MAX_PIXELS,
        top_images: int = 256,
        name: str = "",
    ):
        self.agent = agent
        self.model: nn.Module = agent.model
        self.kind = agent_kind(agent)
        self.samples = list(samples or [])
        self.max_pixels = max_pixels
        self.top_images = top_images
        self.name = name or type(self.model).__name__
        self.lock = threading.RLock()
        self.augment = Augment()
        self.ops: list[dict] = []
        self.source: torch.Tensor | None = None
        self.source_name = ""
        self._rf_cache: dict[tuple, Any] = {}
        self._top_cache: dict[tuple, Any] = {}
        self._before: dict[str, dict] = {}  # layer -> activations and output on the original image
        self.last_timing: dict[str, float] = {}
        if image is not None:
            pil = image if isinstance(image, Image.Image) else self._open_path(Path(image))
            first, first_name = pil, Path(str(image)).name if not isinstance(image, Image.Image) else "image"
        elif self.samples:
            first, first_name = self.samples[0].load(), self.samples[0].name
        else:
            first, first_name = self._default_image(), "blank"
        self._channels = 1 if self.kind in RECOGNIZERS else self._model_channels(first)
        self.set_base(first, first_name)
        try:
            self.layers = map_layers(self.model, self._prepare(self.edited))
        except _PrepareError as e:
            raise InspectorError(f"the first image ({first_name}) cannot be read by the model: {e}; start from "
                                 "another image") from None
        if not self.layers:
            raise InspectorError(f"{self.name} has no layer with a feature map or sequence output to show")
        names = [entry["name"] for entry in self.layers]
        if layer is not None and layer not in names:
            resolve_layers(self.model, layer)  # unknown names: the probe's error with close matches
            raise InspectorError(
                f"layer {layer!r} does not give a feature map (its output is not (N, C, H, W), "
                f"(N, C, L) or a sequence); choose one of {names}"
            )
        self.view = View(layer=layer or default_layer(self.layers))

    # -- images in --------------------------------------------------------------------------------------
    def _open_path(self, path: Path) -> Image.Image:
        return open_image(path, self.max_pixels)

    def _default_image(self) -> Image.Image:
        if self.kind in RECOGNIZERS:
            try:
                from dawnet.ocr.data.fonts import find_fonts
                from dawnet.ocr.data.synth import LineSynthesizer

                text = "".join(
                    c for c in "dawnet inspector" if c in self.agent.charset.chars or c == " "
                ).strip()
                fonts = [f for f in find_fonts() if f.covers(text)][:1]
                if fonts and text:
                    return LineSynthesizer(fonts).render(text, seed=0).image
            except Exception:  # no fonts installed: fall back to blank paper to draw on
                pass
            return Image.new("L", (8 * int(self.model.height), int(self.model.height)), 255)
        size = getattr(getattr(self.agent, "input", None), "height", None) or 64
        return Image.new("L", (getattr(self.agent.input, "width", None) or size, size), 255)

    def _model_channels(self, im: Image.Image) -> int:
        converter = getattr(self.agent, "input", None)
        if converter is not None and converter.channels in (1, 3):
            return converter.channels
        first = next((m for m in self.model.modules() if isinstance(m, (nn.Conv2d, nn.Conv1d))), None)
        if first is not None and first.in_channels in (1, 3):
            return first.in_channels
        return 1 if im.mode in GRAY_MODES else 3

    def _working(self, im: Image.Image) -> torch.Tensor:
        """The working image: at the size the model reads it (recognizers: the line height), paper = 1."""
        if self.kind in RECOGNIZERS:
            h = int(self.model.height)
            w = max(int(self.model.min_width), round(im.width * h / max(1, im.height)))
            if w / h > 200:
                raise InspectorError(f"the image is {im.width}x{im.height} px: too wide for one text line")
            im = to_gray(im).resize((w, h), Image.BILINEAR) if (w, h) != im.size else im
        else:
            converter = getattr(self.agent, "input", None)
            if converter is not None and (converter.height or converter.width):
                h = converter.height or round(im.height * converter.width / im.width)
                w = converter.width or max(1, round(im.width * converter.height / im.height))
                im = (to_gray(im) if self._channels == 1 else to_rgb(im)).resize((w, h), Image.BILINEAR)
        return to_float(im, self._channels)

    def set_base(self, im: Image.Image, name: str) -> None:
        """Start over from a new image: edits are dropped, sliders kept."""
        with self.lock:
            self.base = self._working(im)
            self.base_name = name
            self.ops = []
            self.edited = self.base
            self._before = {}

    def load_sample(self, index: int) -> None:
        if not self.samples:
            raise InspectorError(
                "no data set: start the inspector with --data DIR to pick samples", status=404
            )
        if not 0 <= index < len(self.samples):
            raise InspectorError(
                f"sample {index} does not exist: the data set has {len(self.samples)} samples "
                f"(0..{len(self.samples) - 1})",
                status=404,
            )
        s = self.samples[index]
        self.set_base(self.sample_image(index), s.name)

    def sample_image(self, index: int) -> Image.Image:
        """The pixels of data set sample ``index``, checked against ``max_pixels``."""
        s = self.samples[index]
        try:
            im = s.load()
        except (OSError, ValueError) as e:
            raise InspectorError(f"sample {index} ({s.name}) cannot be read: {e}") from None
        checked_pixels(im.size, self.max_pixels, s.name)
        return im

    def set_source(self, im: Image.Image | None, name: str) -> dict:
        """The image regions are cut from (None: the current image itself)."""
        with self.lock:
            self.source = None if im is None else self._working(im)
            self.source_name = name if im is not None else "current image"
            src = self.source if self.source is not None else self.edited
            return {
                "name": self.source_name,
                "png": png_data_url(src),
                "height": int(src.shape[-2]),
                "width": int(src.shape[-1]),
            }

    # -- edits -----------------------------------------------------------------------------------------
    def apply_op(self, op: dict) -> None:
        """Apply one edit (stroke, erase, paste, undo, reset) to the working image."""
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise InspectorError('an edit is an object with "op": one of stroke, erase, paste, undo, reset')
        with self.lock:
            kind = op["op"]
            if kind == "undo":
                if self.ops:
                    self.ops.pop()
                    self.edited = replay(self.base, self.ops)
                return
            if kind == "reset":
                self.ops = []
                self.edited = self.base
                return
            src = self.source if self.source is not None else self.edited
            clean = check_op(op, tuple(self.base.shape[-2:]), src)
            last = self.ops[-1] if self.ops else None
            if clean.get("continue") and last is not None and last["op"] == "stroke":
                # the next piece of the stroke being drawn (the page sends it live): one edit for undo
                self.edited = apply_edit(self.edited, clean)
                last["segments"].extend(clean["segments"])
                return
            self.edited = apply_edit(self.edited, clean)
            self.ops.append(clean)

    # -- view ------------------------------------------------------------------------------------------
    def set_view(self, body: dict) -> None:
        """Change the layer, channels, ranking, colour scale or sliders (checked; nothing changes on an error)."""
        with self.lock:
            view = updated_view(self.view, body, self.layers)
            self.augment = Augment.from_dict(body["augment"], self.augment) if "augment" in body else self.augment
            self.view = view

    def _layer(self, name: str) -> dict:
        for e in self.layers:
            if e["name"] == name:
                return e
        raise InspectorError(f"unknown layer {name!r}", status=404)

    # -- running the model -----------------------------------------------------------------------------
    def _prepare(self, x: torch.Tensor) -> tuple:
        try:
            inputs = self.agent.prepare(as_raw(x))
        except (ValueError, TypeError) as e:
            raise _PrepareError(str(e)) from None
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs)

    def _run(self, x: torch.Tensor, layer: str) -> tuple[tuple, Any, torch.Tensor]:
        inputs = self._prepare(x)
        module = resolve_layers(self.model, layer)[layer]
        with torch.no_grad(), eval_mode(self.model), probe(self.model, layer) as p:
            out = self.model(*inputs)
        act = p[layer]
        lay = feature_layout(module if layer != "output" else None, act)
        return inputs, out, canonical(act, lay)[0].float().cpu()

    def current_image(self) -> torch.Tensor:
        return self.augment.apply(self.edited)

    def update(self) -> dict:
        """Run the model on the edited, augmented image: maps, output, per-channel change, timings."""
        with self.lock:
            t0 = time.perf_counter()
            x = self.current_image()
            t1 = time.perf_counter()
            layer = self.view.layer
            result: dict[str, Any] = {
                "image": {"png": png_data_url(x), "height": int(x.shape[-2]), "width": int(x.shape[-1])},
                "base": self.base_name,
                "ops": len(self.ops),
                "augment": asdict(self.augment),
                "view": {**asdict(self.view), "channels": list(self.view.channels)},
            }
            try:
                inputs, out, act = self._run(x, layer)
            except _PrepareError as e:
                result.update(output={"kind": "error", "error": str(e)}, maps=None, delta=None)
                result["timing"] = self._timing(t0, t1, time.perf_counter(), time.perf_counter())
                return result
            t2 = time.perf_counter()
            before = self._original(layer)
            delta = None
            if before is not None and before["act"].shape == act.shape:
                d = edit.LayerDelta(layer, before["act"][None], act[None]).per_channel()
                delta = {
                    k: [round(float(v), 6) for v in d[k]] for k in ("mean_abs_change", "relative_change")
                }
            result["delta"] = delta
            result["maps"] = encode_maps(act, self.view, delta)
            result["output"] = summarize_output(self.agent, self.kind, out, inputs)
            if before is not None:
                result["output"]["original"] = before["output"]
            t3 = time.perf_counter()
            result["timing"] = self._timing(t0, t1, t2, t3)
            return result

    def _timing(self, t0, t1, t2, t3) -> dict:
        self.last_timing = {
            "edit_ms": (t1 - t0) * 1e3,
            "forward_ms": (t2 - t1) * 1e3,
            "encode_ms": (t3 - t2) * 1e3,
            "total_ms": (t3 - t0) * 1e3,
        }
        return {k: round(v, 2) for k, v in self.last_timing.items()}

    def _original(self, layer: str) -> dict | None:
        """Activations and output on the original image (no edits, no augmentation), cached."""
        if layer not in self._before:  # emptied when the base image changes; one entry per layer visited
            try:
                inputs, out, act = self._run(self.base, layer)
            except _PrepareError:
                return None
            self._before[layer] = {"act": act, "output": short(summarize_output(self.agent, self.kind, out, inputs))}
        return self._before[layer]

    # -- receptive fields and top-k patches -------------------------------------------------------------
    def _field(self, layer: str, x: torch.Tensor):
        inputs = self._prepare(x)
        shape = tuple(int(s) for s in inputs[0].shape[1:])
        key = (layer, shape)
        if key not in self._rf_cache:
            forward = forward_with(inputs[1:])
            with eval_mode(self.model):
                try:  # the chain rule is instant for conv/pool stacks; gradients measure everything else
                    rf = receptive_field(self.model, layer, shape, forward=forward, method="analytic")
                except ValueError:
                    rf = receptive_field(self.model, layer, shape, forward=forward, method="empirical")
            self._rf_cache[key] = rf
        return self._rf_cache[key], shape

    def receptive_field(self, layer: str, position: list) -> dict:
        """Input box of one feature position of ``layer`` (the clicked cell), in working-image pixels."""
        self._layer(layer)
        if not isinstance(position, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in position
        ):
            raise InspectorError(
                "position must be a list of integers: [row, column] of a map, [step] of a sequence"
            )
        with self.lock:
            x = self.current_image()
            try:
                rf, shape = self._field(layer, x)
            except _PrepareError as e:
                raise InspectorError(f"the current image cannot be read by the model: {e}") from None
            if len(position) != len(rf.feature_axes) or not all(
                0 <= p < n for p, n in zip(position, rf.feature_shape)
            ):
                raise InspectorError(
                    f"position {position} is outside the layer's feature shape {list(rf.feature_shape)}"
                )
            sy, sx = x.shape[-2] / shape[-2], x.shape[-1] / shape[-1]

            def scaled(b):
                return [round(b[0] * sy), round(b[1] * sx), round(b[2] * sy), round(b[3] * sx)]

            return {
                "layer": layer,
                "position": position,
                "box": scaled(rf.box(*position)),
                "effective_box": scaled(rf.box(*position, effective=True)),
                "axes": {
                    a: {"size": (r.size if math.isfinite(r.size) else None), "jump": r.jump, "start": r.start}
                    for a, r in rf.axes.items()
                },
                "method": rf.method,
                "agree": rf.agree,
            }

    def top_patches(self, layer: str, channel: int, k: int = 9) -> dict:
        """The ``k`` data set patches that drive ``channel`` of ``layer`` hardest (ranked once per layer)."""
        info = self._layer(layer)
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < info["channels"]:
            raise InspectorError(f"channel must be an integer in 0..{info['channels'] - 1}, got {channel!r}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 32:
            raise InspectorError(f"k must be an integer in 1..32, got {k!r}")
        if not self.samples:
            raise InspectorError(
                "top-k patches need a data set: start the inspector with --data DIR", status=404
            )
        with self.lock:
            key = (layer, k)
            if key not in self._top_cache:
                self._top_cache[key] = self._rank(layer, k)
            top, displays = self._top_cache[key]
            row = top.channels.index(channel)
            items = []
            for j in range(top.values.shape[1]):
                i = int(top.image_index[row, j])
                y0, x0, y1, x1 = top.boxes[row][j]
                crop = displays[i][..., y0:y1, x0:x1]
                if crop.numel() == 0:
                    continue
                items.append(
                    {
                        "png": png_data_url(crop),
                        "value": float(top.values[row, j]),
                        "sample": i,
                        "name": self.samples[i].name,
                        "box": [int(y0), int(x0), int(y1), int(x1)],
                    }
                )
            return {"layer": layer, "channel": channel, "images": top.images_seen, "patches": items}

    def _rank(self, layer: str, k: int):
        n = min(len(self.samples), self.top_images)
        prepared, displays = [], []
        for i in range(n):
            try:
                disp = self._working(self.sample_image(i))
                inputs = self._prepare(disp)
            except (InspectorError, _PrepareError):
                continue
            prepared.append(inputs[0].cpu())
            displays.append(disp)
        if not prepared:
            raise InspectorError("no data set image could be prepared for this model")
        h = max(t.shape[-2] for t in prepared)
        w = max(t.shape[-1] for t in prepared)
        if any(t.shape[-2] != h for t in prepared):
            raise InspectorError(
                "the data set images differ in height after preparation; top-k patches need one height"
            )
        # pad to one width: zero is blank paper for recognizers (ink = 1); displays pad with paper
        batch = torch.cat([F.pad(t, (0, w - t.shape[-1])) for t in prepared])
        displays = [F.pad(d, (0, w - d.shape[-1]), value=PAPER) for d in displays]
        loader = [batch[i : i + 16] for i in range(0, len(batch), 16)]
        with eval_mode(self.model):
            top = top_patches(self.model, layer, loader, k=k, progress=False)
        return top, displays

    def info(self) -> dict:
        from matplotlib import colormaps

        def lut(name):
            rgb = (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(int)
            return rgb.flatten().tolist()

        return {
            "name": self.name,
            "kind": self.kind,
            "layers": self.layers,
            "layer": self.view.layer,
            "samples": len(self.samples),
            "augment": asdict(Augment()),
            "ranges": {k: list(v) for k, v in Augment.RANGES.items()},
            "max_pixels": self.max_pixels,
            "max_channels": MAX_CHANNELS,
            "colormaps": {"viridis": lut("viridis"), "magma": lut("magma")},
            "target_ms": 150,
        }

    def samples_page(self, offset: int, limit: int) -> dict:
        items = [
            {"index": i, "name": s.name, "label": s.label}
            for i, s in enumerate(self.samples[offset : offset + limit], start=offset)
        ]
        return {"total": len(self.samples), "offset": offset, "items": items}


class _PrepareError(Exception):
    """The agent's prepare() refused the current image (e.g. a blank line): shown as the output."""
