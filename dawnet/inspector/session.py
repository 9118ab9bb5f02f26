"""The inspector's state: one agent, one working image, its edits and augmentations, and the view.

Every update runs :mod:`dawnet.diagnose` underneath: :mod:`~dawnet.diagnose.edit` draws, erases, pastes and
augments, :func:`~dawnet.diagnose.probe.probe` captures the chosen layer,
:class:`~dawnet.diagnose.edit.LayerDelta`
measures the per-channel change against the original image, and :mod:`~dawnet.diagnose.trace` gives receptive
fields and top-k patches. This module holds no web code: :mod:`dawnet.inspector.app` turns its results
into JSON.

Coordinates are pixels of the *working image*, which is the image at the size the model reads it (a text line
resized to the recognizer's height), dark ink (0) on light paper (1), so what the user draws is what the model
sees and a receptive-field box lands on the pixels it covers.
"""

from __future__ import annotations

import base64
import io
import math
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

from dawnet.diagnose import edit
from dawnet.diagnose.probe import layer_names, primary_tensor, probe, resolve_layers
from dawnet.diagnose.trace import canonical, feature_layout, receptive_field, top_patches

__all__ = ["InspectorError", "Augment", "Session", "Sample", "decode_image", "open_samples", "MAX_PIXELS"]

MAX_PIXELS = 16_000_000  # largest upload or data image decoded (16 MP: a 300 dpi A4 scan is ~8.7 MP)
MAX_CHANNELS = 64  # feature maps drawn at once
PAPER, INK = 1.0, 0.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
RANKS = ("active", "changed", "list")


class InspectorError(ValueError):
    """A request the inspector refuses; ``status`` is the HTTP status the app answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# -- images ----------------------------------------------------------------------------------------------


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, name: str = "the upload") -> Image.Image:
    """Decode image bytes, refusing non-images and images over ``max_pixels`` before their pixels are read."""
    if not data:
        raise InspectorError(f"{name} is empty: send the bytes of a PNG, JPEG or other image file")
    try:
        im = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        raise InspectorError(
            f"{name} is not an image Pillow can read ({len(data)} bytes, starting "
            f"{data[:8]!r}); send a PNG, JPEG, BMP, TIFF or WebP file"
        ) from None
    return _checked_load(im, max_pixels, name)


def _checked_load(im: Image.Image, max_pixels: int, name: str) -> Image.Image:
    w, h = im.size
    if w < 1 or h < 1:
        raise InspectorError(f"{name} is empty ({w}x{h} px)")
    if w * h > max_pixels:
        raise InspectorError(
            f"{name} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}; crop or "
            "downscale it (or start the inspector with a larger --max-pixels)",
            status=413,
        )
    try:
        im.load()
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise InspectorError(f"{name} could not be decoded: {e}") from None
    return im


def png_data_url(img: torch.Tensor | np.ndarray) -> str:
    """A ``data:image/png`` URL of a ``(C, H, W)`` float image in [0, 1] (or an ``(H, W)`` array)."""
    a = (
        img.detach().float().cpu().numpy()
        if isinstance(img, torch.Tensor)
        else np.asarray(img, dtype=np.float32)
    )
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.transpose(a[:3], (1, 2, 0))
    a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _to_float(im: Image.Image, channels: int) -> torch.Tensor:
    """PIL -> (C, H, W) float in [0, 1], grey for 1 channel, RGB for 3."""
    im = im.convert("L" if channels == 1 else "RGB")
    return edit.as_image(np.asarray(im))


def _as_raw(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) float -> the numpy image agents' ``prepare`` reads ((H, W) grey or (H, W, 3))."""
    a = x.detach().float().cpu().clamp(0, 1).numpy()
    return a[0] if a.shape[0] == 1 else np.ascontiguousarray(np.transpose(a, (1, 2, 0)))


def _scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom about the image centre by ``factor``; uncovered pixels take the paper's value.

    dawnet.diagnose.edit has no scale edit yet; this builds the affine sampling grid and reuses edit's own
    paper-filling sampler so the result matches its rotate/elastic edits.
    """
    if hasattr(edit, "scale"):
        return edit.scale(x, factor)
    xb = x[None] if x.dim() == 3 else x
    theta = torch.tensor([[1.0 / factor, 0.0, 0.0], [0.0, 1.0 / factor, 0.0]], dtype=xb.dtype)
    grid = F.affine_grid(theta[None].expand(xb.shape[0], -1, -1), list(xb.shape), align_corners=False)
    out = edit._warp(xb, grid, None)
    return out[0] if x.dim() == 3 else out


@dataclass
class Augment:
    """Slider values; the neutral value of each means "off". Geometry first, then photometry."""

    rotation: float = 0.0  # degrees, counter-clockwise
    scale: float = 1.0  # zoom about the centre
    elastic: float = 0.0  # displacement in px (Simard et al. 2003), smoothed by sigma 4
    contrast: float = 1.0  # factor around the image mean
    blur: float = 0.0  # Gaussian sigma in px
    noise: float = 0.0  # Gaussian std in [0, 1] pixel units
    seed: int = 0  # noise and elastic fields; the same seed gives the same image

    RANGES = {  # (min, max, step) for the page's sliders; values outside are refused
        "rotation": (-30.0, 30.0, 0.5),
        "scale": (0.5, 2.0, 0.01),
        "elastic": (0.0, 20.0, 0.5),
        "contrast": (0.0, 3.0, 0.05),
        "blur": (0.0, 5.0, 0.1),
        "noise": (0.0, 0.5, 0.01),
        "seed": (0, 9999, 1),
    }

    @classmethod
    def from_dict(cls, d: Any, base: Augment | None = None) -> Augment:
        if not isinstance(d, dict):
            raise InspectorError(f'augment must be an object like {{"blur": 1.5}}, got {type(d).__name__}')
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InspectorError(f"unknown augmentation(s) {unknown}; known: {sorted(names)}")
        values = asdict(base or cls())
        for k, v in d.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InspectorError(f"augment.{k} must be a finite number, got {v!r}")
            lo, hi, _ = cls.RANGES[k]
            if not lo <= v <= hi:
                raise InspectorError(f"augment.{k} = {v} is outside [{lo}, {hi}]")
            values[k] = int(v) if k == "seed" else float(v)
        return cls(**values)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The augmented copy of a (C, H, W) image in [0, 1], through dawnet.diagnose.edit."""
        if self.rotation:
            x = edit.rotate(x, self.rotation)
        if self.scale != 1.0:
            x = _scale(x, self.scale)
        if self.elastic:
            x = edit.elastic(x, alpha=self.elastic, sigma=4.0, seed=self.seed)
        if self.contrast != 1.0:
            x = edit.contrast(x, self.contrast).clamp(0.0, 1.0)
        if self.blur:
            x = edit.blur(x, self.blur)
        if self.noise:
            x = edit.add_noise(x, self.noise, seed=self.seed)
        return x


# -- data -------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One data set item: a name to show, its label (text or class) and how to load its pixels."""

    name: str
    label: str
    loader: Any  # () -> PIL image

    def load(self) -> Image.Image:
        return self.loader()


def _image_files(root: Path, limit: int) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            out.append(p)
            if len(out) >= limit:
                break
    return out


def open_samples(
    data: str | Path, recognizer: bool, limit: int = 5000, split: str | None = None
) -> list[Sample]:
    """The samples of a data folder: line data (any format ``dawnet.ocr.data.formats.read_lines`` reads, or
    a built data set's ``split``) for recognizers, image files (label: their folder) for other models."""
    root = Path(data)
    if not root.is_dir():
        raise InspectorError(f"the data folder {root} does not exist or is not a folder")
    if recognizer:
        from dawnet.ocr.data.formats import read_lines

        source = root
        if not (root / "labels.tsv").is_file() and not any(root.glob("*.gt.txt")):
            splits = [split] if split else ["val", "test", "train"]
            for s in splits:
                if (root / s / "labels.tsv").is_file():
                    source = root / s
                    break
        try:
            lines = read_lines(source, on_error="skip")
        except (ValueError, OSError) as e:
            raise InspectorError(f"cannot read line data from {source}: {e}") from None
        records = lines.records[:limit]
        if records:
            return [
                Sample(Path(r.path).name + (f"[{r.lmdb_key}]" if r.lmdb_key else ""), r.text, r.load)
                for r in records
            ]
    files = _image_files(root, limit)
    if not files:
        raise InspectorError(
            f"no images found in {root}: give a folder of line data (png + gt.txt, labels.tsv, "
            "PAGE XML, ALTO, LMDB) or of image files"
        )
    return [
        Sample(
            str(p.relative_to(root)), p.parent.name if p.parent != root else "", (lambda p=p: Image.open(p))
        )
        for p in files
    ]


# -- the session -------------------------------------------------------------------------------------------


@dataclass
class View:
    """What the page shows: a layer, which of its channels, and how the colours are scaled."""

    layer: str
    rank: str = "active"  # "active": strongest mean activation; "changed": largest change; "list": `channels`
    count: int = 16
    channels: tuple[int, ...] = ()
    scale: str = "shared"  # "shared": one colour scale for the grid; "channel": one per map


def _kind(agent) -> str:
    from dawnet.ocr.agents import AttentionAgent, CTCAgent

    if isinstance(agent, CTCAgent):
        return "ctc"
    if isinstance(agent, AttentionAgent):
        return "attn"
    if type(agent.model).__name__ in ("YOLO",) or hasattr(agent, "detect"):
        return "detector"
    return "generic"


def _forward_with(rest: tuple):
    """``model(x, *rest)``, batch-1 extras (line widths) repeated to x's batch: for dawnet.diagnose.trace."""

    def forward(model, x):
        extra = []
        for r in rest:
            if isinstance(r, torch.Tensor) and r.dim() >= 1 and r.shape[0] == 1:
                r = (
                    torch.full_like(r.expand(x.shape[0], *r.shape[1:]), x.shape[-1])
                    if r.dim() == 1
                    else r.expand(x.shape[0], *r.shape[1:])
                )
            extra.append(r)
        return model(x, *extra)

    return forward


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
        self.kind = _kind(agent)
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
        self._channels = 1 if self.kind in ("ctc", "attn") else self._model_channels(first)
        self.set_base(first, first_name)
        self.layers = self._discover_layers()
        if not self.layers:
            raise InspectorError(f"{self.name} has no layer with a feature map or sequence output to show")
        names = [entry["name"] for entry in self.layers]
        if layer is not None and layer not in names:
            resolve_layers(self.model, layer)  # unknown names: the probe's error with close matches
            raise InspectorError(
                f"layer {layer!r} does not give a feature map (its output is not (N, C, H, W), "
                f"(N, C, L) or a sequence); choose one of {names}"
            )
        self.view = View(layer=layer or self._default_layer())

    # -- images in --------------------------------------------------------------------------------------
    def _open_path(self, path: Path) -> Image.Image:
        if not path.is_file():
            raise InspectorError(f"image {path} does not exist", status=404)
        try:
            im = Image.open(path)
        except (UnidentifiedImageError, OSError):
            raise InspectorError(f"{path.name} is not an image Pillow can read") from None
        return _checked_load(im, self.max_pixels, path.name)

    def _default_image(self) -> Image.Image:
        if self.kind in ("ctc", "attn"):
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
        return 1 if im.mode in ("L", "1", "I", "F", "I;16") else 3

    def _working(self, im: Image.Image) -> torch.Tensor:
        """The working image: at the size the model reads it (recognizers: the line height), paper = 1."""
        if self.kind in ("ctc", "attn"):
            h = int(self.model.height)
            w = max(int(self.model.min_width), round(im.width * h / max(1, im.height)))
            if w / h > 200:
                raise InspectorError(f"the image is {im.width}x{im.height} px: too wide for one text line")
            im = im.convert("L").resize((w, h), Image.BILINEAR) if (w, h) != im.size else im
        else:
            converter = getattr(self.agent, "input", None)
            if converter is not None and (converter.height or converter.width):
                h = converter.height or round(im.height * converter.width / im.width)
                w = converter.width or max(1, round(im.width * converter.height / im.height))
                im = im.convert("L" if self._channels == 1 else "RGB").resize((w, h), Image.BILINEAR)
        return _to_float(im, self._channels)

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
        self.set_base(self._sample_image(index), s.name)

    def _sample_image(self, index: int) -> Image.Image:
        try:
            im = self.samples[index].load()
        except (OSError, ValueError) as e:
            raise InspectorError(f"sample {index} ({self.samples[index].name}) cannot be read: {e}") from None
        return _checked_load(im, self.max_pixels, self.samples[index].name)

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
                    self.edited = self._replay(self.ops)
                return
            if kind == "reset":
                self.ops = []
                self.edited = self.base
                return
            clean = self._check_op(op)
            last = self.ops[-1] if self.ops else None
            if clean.get("continue") and last is not None and last["op"] == "stroke":
                # the next piece of the stroke being drawn (the page sends it live): one edit for undo
                self.edited = self._apply(self.edited, clean)
                last["segments"].extend(clean["segments"])
                return
            self.edited = self._apply(self.edited, clean)
            self.ops.append(clean)

    def _replay(self, ops: list[dict]) -> torch.Tensor:
        x = self.base
        for op in ops:
            x = self._apply(x, op)
        return x

    def _check_op(self, op: dict) -> dict:
        h, w = self.base.shape[-2:]
        kind = op["op"]
        if kind == "stroke":
            pts = op.get("points")
            if (
                not isinstance(pts, list)
                or not 1 <= len(pts) <= 10000
                or not all(isinstance(p, list) and len(p) == 2 and all(_finite(v) for v in p) for p in pts)
            ):
                raise InspectorError("stroke.points must be a list of 1..10000 [y, x] pixel pairs")
            width = op.get("width", 2.0)
            if not _finite(width) or not 0.5 <= width <= 64:
                raise InspectorError(f"stroke.width must be a number in [0.5, 64] px, got {width!r}")
            mode = op.get("mode", "pen")
            if mode not in ("pen", "eraser"):
                raise InspectorError(f"stroke.mode must be 'pen' or 'eraser', got {mode!r}")
            if not isinstance(op.get("continue", False), bool):
                raise InspectorError("stroke.continue must be true (extend the last stroke) or false")
            segment = {"points": [[float(y), float(x)] for y, x in pts], "width": float(width), "mode": mode}
            return {"op": "stroke", "segments": [segment], "continue": op.get("continue", False)}
        if kind == "erase":
            return {"op": "erase", "box": self._box(op.get("box"), h, w, "erase.box")}
        if kind == "paste":
            src = self.source if self.source is not None else self.edited
            box = self._box(op.get("box"), *src.shape[-2:], what="paste.box (in the source image)")
            at = op.get("at")
            if not isinstance(at, list) or len(at) != 2 or not all(_finite(v) for v in at):
                raise InspectorError("paste.at must be [y, x]: where the patch's top-left pixel lands")
            patch = edit.cut(src, box)
            return {"op": "paste", "box": box, "at": [int(round(at[0])), int(round(at[1]))], "patch": patch}
        raise InspectorError(f"unknown edit op {kind!r}: use stroke, erase, paste, undo or reset")

    @staticmethod
    def _box(box: Any, h: int, w: int, what: str) -> list[int]:
        if not isinstance(box, list) or len(box) != 4 or not all(_finite(v) for v in box):
            raise InspectorError(f"{what} must be [y0, x0, y1, x1] pixels")
        y0, x0, y1, x1 = (int(round(v)) for v in box)
        y0, y1 = sorted((max(0, min(h, y0)), max(0, min(h, y1))))
        x0, x1 = sorted((max(0, min(w, x0)), max(0, min(w, x1))))
        if y1 <= y0 or x1 <= x0:
            raise InspectorError(f"{what} {box} covers no pixel of the {h}x{w} image")
        return [y0, x0, y1, x1]

    @staticmethod
    def _apply(x: torch.Tensor, op: dict) -> torch.Tensor:
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

    # -- view ------------------------------------------------------------------------------------------
    def set_view(self, body: dict) -> None:
        with self.lock:
            v = self.view
            layer = body.get("layer", v.layer)
            if layer != v.layer and layer not in {e["name"] for e in self.layers}:
                raise InspectorError(f"unknown layer {layer!r}; see /api/info for the layers", status=404)
            rank = body.get("rank", v.rank)
            if rank not in RANKS:
                raise InspectorError(f"rank must be one of {RANKS}, got {rank!r}")
            count = body.get("count", v.count)
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CHANNELS:
                raise InspectorError(f"count must be an integer in 1..{MAX_CHANNELS}, got {count!r}")
            n = self._layer(layer)["channels"]
            if "channels" in body:
                channels = body["channels"]
            else:  # kept across a layer switch where they exist; none left falls back to the strongest
                channels = [c for c in v.channels if c < n]
                if rank == "list" and not channels and "rank" not in body:
                    rank = "active"
            if (
                not isinstance(channels, list)
                or len(channels) > MAX_CHANNELS
                or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < n for c in channels)
            ):
                raise InspectorError(
                    f"channels must be a list of at most {MAX_CHANNELS} integers in 0..{n - 1}"
                )
            scale = body.get("scale", v.scale)
            if scale not in ("shared", "channel"):
                raise InspectorError(f"scale must be 'shared' or 'channel', got {scale!r}")
            augment = Augment.from_dict(body["augment"], self.augment) if "augment" in body else self.augment
            self.view = View(layer=layer, rank=rank, count=count, channels=tuple(channels), scale=scale)
            self.augment = augment

    def _layer(self, name: str) -> dict:
        for e in self.layers:
            if e["name"] == name:
                return e
        raise InspectorError(f"unknown layer {name!r}", status=404)

    def _discover_layers(self) -> list[dict]:
        """Every layer whose output reads as feature maps or a sequence, with its shape on this image."""
        names = ["output", *layer_names(self.model)]
        modules = resolve_layers(self.model, names)
        inputs = self._prepare(self.edited)
        found = []
        with torch.no_grad(), _eval(self.model), probe(self.model, names) as p:
            self.model(*inputs)
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

    def _default_layer(self) -> str:
        maps = [e["name"] for e in self.layers if e["layout"] == "NCHW" and e["type"] not in ("BatchNorm2d",)]
        if not maps:
            return self.layers[0]["name"]
        return maps[len(maps) // 2]

    # -- running the model -----------------------------------------------------------------------------
    def _prepare(self, x: torch.Tensor) -> tuple:
        try:
            inputs = self.agent.prepare(_as_raw(x))
        except (ValueError, TypeError) as e:
            raise _PrepareError(str(e)) from None
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs)

    def _run(self, x: torch.Tensor, layer: str) -> tuple[tuple, Any, torch.Tensor]:
        inputs = self._prepare(x)
        module = resolve_layers(self.model, layer)[layer]
        with torch.no_grad(), _eval(self.model), probe(self.model, layer) as p:
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
            result["maps"] = self._maps(act, delta)
            result["output"] = self._output(out, inputs, x)
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
            self._before[layer] = {"act": act, "output": _short(self._output(out, inputs, self.base))}
        return self._before[layer]

    def _maps(self, act: torch.Tensor, delta: dict | None) -> dict:
        v = self.view
        c = act.shape[0]
        spatial = act.shape[1:]
        flat = act.reshape(c, -1)
        if v.rank == "list" and v.channels:
            chans = list(v.channels)
        elif v.rank == "changed" and delta is not None:
            chans = torch.tensor(delta["mean_abs_change"]).topk(min(v.count, c)).indices.tolist()
        else:
            chans = flat.mean(1).topk(min(v.count, c)).indices.tolist()
        sel = flat[chans]
        if v.scale == "shared":
            lo = sel.min().expand(len(chans)) if sel.numel() else torch.zeros(len(chans))
            hi = sel.max().expand(len(chans)) if sel.numel() else torch.ones(len(chans))
        else:
            lo, hi = sel.min(1).values, sel.max(1).values
        span = (hi - lo).clamp(min=1e-12)
        q = ((sel - lo[:, None]) / span[:, None] * 255.0).round().clamp(0, 255).to(torch.uint8)
        h, w = (1, int(spatial[0])) if len(spatial) == 1 else (int(spatial[0]), int(spatial[1]))
        return {
            "layer": v.layer,
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

    # -- outputs ---------------------------------------------------------------------------------------
    def _output(self, out: Any, inputs: tuple, x: torch.Tensor) -> dict:
        if self.kind == "ctc":
            log_probs = out[0]
            chars = self.agent.charset.chars
            greedy = edit.ctc_greedy(chars, blank=self.agent.charset.blank)(log_probs.float().cpu())[0]
            text = self.agent.decode(out, (*inputs[:2], True))[0]
            return {
                "kind": "text",
                "text": text,
                "chars": _chars(greedy.text, greedy.probs),
                "greedy": greedy.text,
            }
        if self.kind == "attn":
            logits, lengths = out
            probs = logits[0, : int(lengths[0])].float().softmax(-1)
            p, ids = probs.max(-1)
            cs = self.agent.charset
            pairs = [(i, q) for i, q in zip(ids.tolist(), p.tolist()) if i != cs.end]
            greedy = cs.decode([i for i, _ in pairs])
            text = self.agent.decode(out, (*inputs[:2], True))[0]
            probs_list = [q for _, q in pairs] if len(greedy) == len(pairs) else []
            return {"kind": "text", "text": text, "chars": _chars(greedy, probs_list), "greedy": greedy}
        answer = self.agent.postprocess(out)
        boxes = _boxes(answer)
        if boxes is not None:
            return {"kind": "boxes", "boxes": boxes, "count": len(boxes)}
        scores = primary_tensor(out)
        if scores.dim() == 2 and scores.shape[0] == 1:
            p = scores[0].float().softmax(-1)
            k = min(5, p.numel())
            v, i = p.topk(k)
            names = getattr(self.agent, "classes", None)
            return {
                "kind": "topk",
                "items": [
                    {
                        "label": str(names[c]) if names and c < len(names) else f"class {c}",
                        "index": int(c),
                        "p": float(q),
                    }
                    for q, c in zip(v, i)
                ],
            }
        return {
            "kind": "tensor",
            "shape": list(scores.shape),
            "mean": float(scores.float().mean()),
            "std": float(scores.float().std()) if scores.numel() > 1 else 0.0,
        }

    # -- receptive fields and top-k patches -------------------------------------------------------------
    def _field(self, layer: str, x: torch.Tensor):
        inputs = self._prepare(x)
        shape = tuple(int(s) for s in inputs[0].shape[1:])
        key = (layer, shape)
        if key not in self._rf_cache:
            forward = _forward_with(inputs[1:])
            with _eval(self.model):
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
                disp = self._working(self._sample_image(i))
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
        with _eval(self.model):
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


class _eval:
    """Eval mode for the block, each submodule's own mode restored after (the agent may be training)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _chars(text: str, probs: list[float]) -> list[dict]:
    if len(probs) != len(text):
        return [{"c": c, "p": None} for c in text]
    return [{"c": c, "p": round(float(p), 4)} for c, p in zip(text, probs)]


def _short(summary: dict) -> dict:
    """What of the original image's output the page shows beside the current one."""
    if summary["kind"] == "text":
        return {"text": summary["text"]}
    if summary["kind"] == "topk":
        return {"top": summary["items"][0]}
    if summary["kind"] == "boxes":
        return {"count": summary["count"]}
    return {}


def _boxes(answer: Any) -> list[dict] | None:
    """Boxes from a detector agent's answer: ``{"boxes": (K, 4), "scores"?: (K,)}``, a list of such dicts per
    image or of ``{"box": [...], "score": ...}``, or a ``(K, 5|6)`` tensor ``x0, y0, x1, y1, score[, cls]``.
    """
    if isinstance(answer, list) and answer and isinstance(answer[0], dict) and "boxes" in answer[0]:
        answer = answer[0]
    if isinstance(answer, dict) and "boxes" in answer:
        b = torch.as_tensor(answer["boxes"], dtype=torch.float32).reshape(-1, 4)
        s = answer.get("scores")
        s = torch.as_tensor(s, dtype=torch.float32).reshape(-1) if s is not None else None
        return [
            {"box": [round(float(v), 1) for v in b[i]], "score": None if s is None else float(s[i])}
            for i in range(b.shape[0])
        ]
    if isinstance(answer, list) and all(isinstance(a, dict) and "box" in a for a in answer):
        return [{"box": [round(float(v), 1) for v in a["box"]], "score": a.get("score")} for a in answer]
    if isinstance(answer, torch.Tensor) and answer.dim() == 2 and answer.shape[1] in (5, 6):
        return [{"box": [round(float(v), 1) for v in row[:4]], "score": float(row[4])} for row in answer]
    return None
