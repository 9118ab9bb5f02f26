"""Synthetic pages for text-line detection: handwriting lines and digit strings on paper, with tight boxes.

A page has paper proportions (1 : sqrt 2), plain or ruled paper (with a margin rule), margins, 1-N
lines placed top to bottom, a small global skew, texture, blur and noise. Each line's box is the
axis-aligned box of its ink pixels *after* the skew (tight), and its transcription is kept so page
OCR (detect, then read) can be scored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageFilter

from dawnet.ocr.data.digits import DigitStringSynthesizer
from dawnet.ocr.data.synth import LineSynthesizer

__all__ = ["PageConfig", "SynthPage", "PageSynthesizer"]


@dataclass(frozen=True)
class PageConfig:
    width: int = 640  # px; height = width * sqrt(2)
    lines: tuple[int, int] = (1, 12)  # lines per page (inclusive)
    digit_prob: float = 0.25  # chance a line is a digit string
    margin: tuple[float, float] = (0.04, 0.12)  # page margin, fraction of the width
    gap: tuple[float, float] = (0.1, 0.8)  # vertical gap between lines, fraction of the line height
    indent: float = 0.15  # max extra left indent, fraction of the width
    ruled_prob: float = 0.5
    ruling_step: tuple[float, float] = (44.0, 60.0)  # px between rulings
    line_scale: tuple[float, float] = (1.0, 1.5)  # lines on pages are written this much larger than line data
    skew_deg: float = 2.0  # page rotation (+-)
    ink_level: tuple[int, int] = (0, 80)
    paper_level: tuple[int, int] = (205, 250)
    texture: float = 6.0
    noise_sigma: tuple[float, float] = (0.0, 6.0)
    blur_prob: float = 0.4
    min_ink: float = 0.25  # an ink pixel (for tight boxes) has coverage above this

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SynthPage:
    image: Image.Image
    boxes: list[tuple[float, float, float, float]]  # x0, y0, x1, y1 (tight around the ink)
    texts: list[str]
    kinds: list[str] = field(default_factory=list)  # "hw" or "digits" per line


class PageSynthesizer:
    """Compose pages from a line synthesizer (and optionally a digit-string synthesizer).

    ``texts`` is the pool line texts are drawn from (e.g. the held-out lines of a split).
    """

    def __init__(self, lines: LineSynthesizer, texts: list[str], digits: DigitStringSynthesizer | None = None,
                 config: PageConfig | None = None):
        if not texts:
            raise ValueError("PageSynthesizer needs a non-empty pool of line texts")
        self.lines, self.texts, self.digits = lines, texts, digits
        self.config = config or PageConfig()

    def render(self, seed: int | np.random.Generator | None = None) -> SynthPage:
        c = self.config
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        W = c.width
        H = int(round(W * math.sqrt(2)))
        margin = int(W * rng.uniform(*c.margin))
        n_lines = int(rng.integers(c.lines[0], c.lines[1] + 1))
        ruled = rng.random() < c.ruled_prob
        step = rng.uniform(*c.ruling_step)
        first_rule = margin + step
        alpha = np.zeros((H, W), dtype=np.float32)
        placed = []  # (ink ys, ink xs in page coords, text, kind)
        y, rule = margin, first_rule
        for _ in range(n_lines):
            if self.digits is not None and rng.random() < c.digit_prob:
                a, text, _ = self.digits.render_ink(rng)
                kind = "digits"
            else:
                text = self.texts[int(rng.integers(len(self.texts)))]
                a, _ = self.lines.render_ink(text, rng)
                kind = "hw"
            k = rng.uniform(*c.line_scale)
            avail = W - 2 * margin
            k = min(k, avail / a.shape[1])  # too long for the page: written smaller, as a writer would
            if abs(k - 1) > 0.02 or a.shape[1] > avail:
                size = (min(avail, max(1, int(a.shape[1] * k))), max(4, int(a.shape[0] * k)))
                a = np.asarray(Image.fromarray(a).resize(size, Image.BILINEAR))
            if ruled:  # sit on a ruling: the ink's lower part (descenders) hangs below it
                y = int(rule - a.shape[0] * rng.uniform(0.7, 0.85))
            if y < margin // 2 or y + a.shape[0] > H - margin:
                break
            x = margin + int(rng.uniform(0, max(0.0, min(c.indent * W, avail - a.shape[1])) + 1e-9))
            region = alpha[y:y + a.shape[0], x:x + a.shape[1]]
            np.maximum(region, a, out=region)
            ys, xs = np.nonzero(a > c.min_ink)
            if ys.size:
                placed.append((ys + y, xs + x, text, kind))
            y += a.shape[0] + int(a.shape[0] * rng.uniform(*c.gap))
            if ruled:  # the next free ruling below this line, sometimes one more skipped
                rule = first_rule + step * (math.floor((y - first_rule) / step) + 1 + int(rng.random() < 0.25))

        # paper, rulings and a margin rule (drawn before the skew: they turn with the page)
        paper = rng.uniform(*c.paper_level)
        tex = rng.standard_normal((H // 8, W // 8), dtype=np.float32)
        background = paper + c.texture * np.asarray(Image.fromarray(tex).resize((W, H), Image.BILINEAR))
        if ruled:
            darkness = rng.uniform(25, 70)
            for ry in np.arange(first_rule, H - margin // 2, step):
                background[int(ry), :] -= darkness
            mx = int(margin * rng.uniform(0.6, 0.9))
            background[:, mx:mx + 2] -= darkness * 0.8
        ink = rng.uniform(*c.ink_level)
        img = background * (1 - alpha) + ink * alpha

        # global skew about the page centre; boxes follow the ink pixels exactly
        angle = rng.uniform(-c.skew_deg, c.skew_deg)
        page = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        page = page.rotate(angle, resample=Image.BILINEAR, fillcolor=int(paper))
        t = math.radians(angle)
        cx, cy = W / 2, H / 2
        boxes, texts, kinds = [], [], []
        for ys, xs, text, kind in placed:
            # PIL rotates counter-clockwise on screen (y down): x' = cx + (x-cx)cos + (y-cy)sin, y' = cy - ...
            px = cx + (xs + 0.5 - cx) * math.cos(t) + (ys + 0.5 - cy) * math.sin(t)
            py = cy - (xs + 0.5 - cx) * math.sin(t) + (ys + 0.5 - cy) * math.cos(t)
            x0, x1 = max(float(px.min()) - 0.5, 0.0), min(float(px.max()) + 0.5, float(W))
            y0, y1 = max(float(py.min()) - 0.5, 0.0), min(float(py.max()) + 0.5, float(H))
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                boxes.append((round(x0, 1), round(y0, 1), round(x1, 1), round(y1, 1)))
                texts.append(text)
                kinds.append(kind)
        a = np.asarray(page, dtype=np.float32)
        sigma = rng.uniform(*c.noise_sigma)
        if sigma > 0.5:
            a = a + sigma * rng.standard_normal(a.shape, dtype=np.float32)
        page = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        if rng.random() < c.blur_prob:
            page = page.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
        return SynthPage(image=page, boxes=boxes, texts=texts, kinds=kinds)
