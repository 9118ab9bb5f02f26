"""Synthetic handwriting lines: glyph-by-glyph jitter, then line-level distortion; deterministic in a seed.

Per glyph: scale, rotation, baseline shift, spacing and stroke width are drawn afresh. Per line: slant
(shear) and elastic distortion in one mesh warp, pen-pressure variation, ink colour and contrast,
paper texture, optional ruling lines, blur and noise. Output: a grayscale PIL image, dark ink on light
paper (like a scan), cropped to the ink with a random margin. The same seed gives byte-identical
images on the same machine (numpy ``Generator`` + Pillow only).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from dawnet.ocr.data.fonts import FontInfo, font_info

__all__ = ["SynthConfig", "SynthLine", "LineSynthesizer", "on_paper"]

_EM = 28  # glyphs are rasterized once at this pixel size (near the output size: little aliasing) and reused


@dataclass(frozen=True)
class SynthConfig:
    """Ranges of every random choice (uniform unless said). Defaults look like a scanned notebook page."""

    x_height_px: tuple[float, float] = (10.0, 16.0)  # height of an 'x' in the output, px, per line
    glyph_scale: float = 0.08  # per-glyph relative size jitter (+-)
    glyph_rotation: float = 4.0  # per-glyph rotation, degrees (+-)
    baseline_jitter: float = 0.05  # per-glyph baseline shift, fraction of the font size (+-)
    spacing_jitter: float = 0.06  # per-glyph advance jitter, fraction of the font size (+-)
    word_spacing: tuple[float, float] = (0.8, 1.6)  # space advance multiplier, per line
    bold_prob: float = 0.25  # chance a line is written with a thicker pen
    stroke_swap_prob: float = 0.06  # chance one glyph flips to the other stroke width
    glyph_x_height: float = 0.0  # > 0: rasterize each font at the size that gives its 'x' this height in px (so
    # small-x-height scripts are not drawn tiny and upscaled into blur); 0: every font at _EM px
    slant: float = 0.25  # shear, tan(angle) (+-), per line
    elastic_px: float = 1.0  # elastic displacement amplitude, output px
    elastic_cell: int = 48  # elastic grid cell width, output px (one cell tall)
    ink_level: tuple[int, int] = (0, 90)  # ink gray level (0 = black)
    paper_level: tuple[int, int] = (200, 252)  # paper gray level
    pressure: float = 0.3  # pen pressure variation along the line (fraction of ink contrast)
    texture: float = 12.0  # paper texture amplitude, gray levels
    ruling_prob: float = 0.2  # chance of a ruled line under the text
    blur_prob: float = 0.5
    blur_radius: tuple[float, float] = (0.3, 1.0)
    noise_sigma: tuple[float, float] = (0.0, 7.0)
    margin_px: tuple[int, int] = (2, 8)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SynthLine:
    image: Image.Image
    text: str
    font: str  # path of the font used


class _Glyphs:
    """Jittered glyph masks of one font at ``_EM`` px: ``variants`` per (character, stroke width), made lazily.

    Each variant is drawn with its own scale and rotation from a seed derived from (font checksum,
    character, stroke, variant), so the pool is the same whatever order lines ask for it: that keeps
    rendering reproducible and lets one line cost numpy pastes instead of per-glyph Pillow calls.
    """

    def __init__(self, font: FontInfo, config: SynthConfig, variants: int):
        self.info = font
        self.font = ImageFont.truetype(font.path, _EM)
        self.em = _EM
        if config.glyph_x_height > 0 and "x" in font.chars:  # the 'x' measured at 4x the em, for precision
            l, t, r, b = ImageFont.truetype(font.path, 4 * _EM).getbbox("x", anchor="ls")
            em = 4 * _EM * config.glyph_x_height / max(16, b - t)
            self.em = int(np.clip(round(em), _EM // 2, _EM * 5 // 2))
            self.font = ImageFont.truetype(font.path, self.em)
        self.config = config
        self.variants = variants
        self.key = int(font.sha256[:8], 16)
        self.cache: dict[tuple[str, int, int], tuple[np.ndarray, int, int, float]] = {}
        self.bases: dict[tuple[str, int], tuple[Image.Image, int, int]] = {}
        self.advance: dict[str, float] = {}
        l, t, r, b = self.font.getbbox("x", anchor="ls") if "x" in font.chars else (0, -self.em // 2, 0, 0)
        self.x_height = max(4, b - t)

    def adv(self, char: str) -> float:
        a = self.advance.get(char)
        if a is None:
            a = self.advance[char] = self.font.getlength(char)
        return a

    def base(self, char: str, stroke: int) -> tuple[Image.Image, int, int]:
        """The glyph rasterized once by FreeType: mask and its offset from the pen position."""
        key = (char, stroke)
        hit = self.bases.get(key)
        if hit is None:
            left, top, right, bottom = self.font.getbbox(char, anchor="ls", stroke_width=stroke)
            im = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
            ImageDraw.Draw(im).text((-left, -top), char, font=self.font, fill=255, anchor="ls",
                                    stroke_width=stroke, stroke_fill=255)
            hit = self.bases[key] = (im, left, top)
        return hit

    def get(self, char: str, stroke: int, k: int) -> tuple[np.ndarray, int, int, float]:
        """Variant ``k`` of a glyph: the base mask scaled and rotated by amounts seeded by the variant key."""
        key = (char, stroke, k)
        hit = self.cache.get(key)
        if hit is None:
            c = self.config
            rng = np.random.default_rng([self.key, ord(char), stroke, k])
            im, left, top = self.base(char, stroke)
            w, h = im.size
            scale = 1 + c.glyph_scale * rng.uniform(-1, 1)
            sw, sh = max(1, round(w * scale)), max(1, round(h * scale * (1 + 0.04 * rng.uniform(-1, 1))))
            im = im.resize((sw, sh), Image.BILINEAR)
            angle = c.glyph_rotation * rng.uniform(-1, 1)
            im = im.rotate(angle, resample=Image.BILINEAR, expand=True)
            ox = round(left * scale - (im.width - sw) / 2)
            oy = round(top * scale - (im.height - sh) / 2)
            hit = (np.asarray(im), ox, oy, self.adv(char) * scale)
            self.cache[key] = hit
        return hit


class LineSynthesizer:
    """Render text lines in handwriting fonts.

    Args:
        fonts: font paths or :class:`FontInfo` (from ``fonts.find_fonts``); a line's font must draw every
            character of its text (checked glyph by glyph; otherwise a clear error).
        config: the ranges of the random choices.
        variants (8): jittered copies (scale, rotation) kept per character and stroke width; a line picks
            one per glyph at random, then shifts, spaces and warps it afresh.

    Example:
        >>> synth = LineSynthesizer(find_fonts(families=["Kristi"]))
        >>> line = synth.render("Hello world", seed=0)
        >>> line.image.mode, line.text
        ('L', 'Hello world')
    """

    def __init__(self, fonts: list[FontInfo | str], config: SynthConfig | None = None, variants: int = 8):
        if not fonts:
            raise ValueError("LineSynthesizer needs at least one font; see dawnet.ocr.data.fonts.find_fonts")
        self.fonts = [f if isinstance(f, FontInfo) else font_info(str(f)) for f in fonts]
        self.config = config or SynthConfig()
        self.variants = variants
        self._glyphs: dict[str, _Glyphs] = {}

    def _g(self, font: FontInfo) -> _Glyphs:
        g = self._glyphs.get(font.path)
        if g is None:
            g = self._glyphs[font.path] = _Glyphs(font, self.config, self.variants)
        return g

    def prefill(self, alphabet: str | None = None) -> int:
        """Render every glyph variant of ``alphabet`` (default: all covered characters) for every font now,
        so later lines cost no rasterization (a long build or training run reaches this state anyway).
        Returns the number of variants in the caches."""
        for font in self.fonts:
            g = self._g(font)
            for ch in sorted(set(alphabet) & font.chars if alphabet is not None else font.chars):
                if ch.isspace():
                    continue
                for stroke in (0, 1):
                    for k in range(self.variants):
                        g.get(ch, stroke, k)
        return sum(len(g.cache) for g in self._glyphs.values())

    def fonts_for(self, text: str) -> list[FontInfo]:
        return [f for f in self.fonts if f.covers(text)]

    def render(self, text: str, seed: int | np.random.Generator | None = None,
               font: FontInfo | str | None = None) -> SynthLine:
        """One line image of ``text``; ``font`` defaults to a random font (among those that draw ``text``)."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        alpha, font_path = self.render_ink(text, rng, font)
        return SynthLine(image=on_paper(alpha, rng, self.config), text=text, font=font_path)

    def render_ink(self, text: str, seed: int | np.random.Generator | None = None,
                   font: FontInfo | str | None = None) -> tuple[np.ndarray, str]:
        """The line's ink coverage ``(H, W) float32`` in [0, 1] (no paper yet) and the font path: pages use it."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        if not text or not text.strip():
            raise ValueError("cannot render an empty line: give text with at least one visible character")
        if font is None:
            candidates = self.fonts_for(text)
            if not candidates:
                missing = sorted(set(text) - set().union(*(f.chars for f in self.fonts)))
                raise ValueError(f"no font draws every character of {text!r} (missing: {missing!r}); "
                                 "remove them from the text or add a font that has them")
            font = candidates[int(rng.integers(len(candidates)))]
        elif isinstance(font, str):
            font = font_info(font)
        if not font.covers(text):
            raise ValueError(f"font {font.path} has no glyph for {sorted(font.missing(text))!r}")
        g = self._g(font)
        ink = self._draw_glyphs(text, g, rng)
        return self._ink(ink, g.x_height, rng), font.path

    # ------------------------------------------------------------------ glyph level
    def _draw_glyphs(self, text: str, g: _Glyphs, rng: np.random.Generator) -> np.ndarray:
        """The line's ink at the font's glyph size (``g.em`` px), glyph by glyph: jittered variant, baseline
        shift, spacing, stroke."""
        c = self.config
        bold = int(rng.random() < c.bold_prob)
        space_mult = rng.uniform(*c.word_spacing)
        # a fixed number of draws per character keeps the random stream aligned, hence reproducible
        r = rng.random((len(text), 4))
        em = g.em
        pad = em // 2
        height = int(em * 1.7) + 2 * pad
        baseline = pad + int(em * 1.2)
        est = int(sum(g.adv(ch) for ch in text) * 1.3 + 2 * pad + em)
        canvas = np.zeros((height, est), dtype=np.uint8)
        x = float(pad)
        nv = self.variants
        for ch, ri in zip(text, r):
            if ch == " ":
                x += g.adv(" ") * space_mult * (1 + c.spacing_jitter * (2 * ri[2] - 1))
                continue
            a, ox, oy, adv = g.get(ch, bold ^ int(ri[3] < c.stroke_swap_prob), int(ri[0] * nv))
            gx = int(x + ox)
            gy = int(baseline + oy + c.baseline_jitter * em * (2 * ri[1] - 1))
            y0, x0 = max(gy, 0), max(gx, 0)
            y1, x1 = min(gy + a.shape[0], height), min(gx + a.shape[1], est)
            if y1 > y0 and x1 > x0:
                region = canvas[y0:y1, x0:x1]
                np.maximum(region, a[y0 - gy:y1 - gy, x0 - gx:x1 - gx], out=region)
            x += adv + c.spacing_jitter * em * (2 * ri[2] - 1)
        return canvas[:, :min(est, int(x + pad))]

    # ------------------------------------------------------------------ line level
    def _ink(self, ink: np.ndarray, x_height: float, rng: np.random.Generator) -> np.ndarray:
        """Scale to the line's x-height, slant + elastic (one mesh warp), crop, pen pressure."""
        c = self.config
        s = rng.uniform(*c.x_height_px) / x_height  # output px per glyph px
        shear = rng.uniform(-c.slant, c.slant)
        h = ink.shape[0]
        extra = int(abs(shear) * h / 2) + 2  # widen the canvas so the slant does not cut letters off
        wide = np.zeros((h, ink.shape[1] + 2 * extra), dtype=np.uint8)
        wide[:, extra:extra + ink.shape[1]] = ink
        w_out, h_out = max(1, int(wide.shape[1] * s)), max(1, int(h * s))
        nx, ny = max(1, w_out // c.elastic_cell), 1
        xs, ys = np.linspace(0, w_out, nx + 1), np.linspace(0, h_out, ny + 1)
        dx = rng.normal(0, c.elastic_px, (ny + 1, nx + 1))
        dy = rng.normal(0, c.elastic_px, (ny + 1, nx + 1))
        # source (the glyph-size canvas) position of each output grid node
        src_x = (xs[None, :] + dx) / s + shear * (ys[:, None] / s - h / 2)
        src_y = (ys[:, None] + dy) / s
        xi, yi = xs.astype(int), ys.astype(int)
        mesh = []
        for j in range(ny):
            for i in range(nx):
                quad = (src_x[j, i], src_y[j, i], src_x[j + 1, i], src_y[j + 1, i],
                        src_x[j + 1, i + 1], src_y[j + 1, i + 1], src_x[j, i + 1], src_y[j, i + 1])
                mesh.append(((xi[i], yi[j], xi[i + 1], yi[j + 1]), tuple(float(q) for q in quad)))
        warped = np.asarray(Image.fromarray(wide).transform((w_out, h_out), Image.MESH, mesh, Image.BILINEAR))

        # crop to the ink with a random margin
        rows, cols = np.nonzero(warped.max(axis=1) > 25)[0], np.nonzero(warped.max(axis=0) > 25)[0]
        if rows.size == 0:
            raise RuntimeError("rendered line has no ink: a font drew nothing (please report the font)")
        m = rng.integers(c.margin_px[0], c.margin_px[1] + 1, size=4)
        y0, y1 = max(rows[0] - m[0], 0), min(rows[-1] + 1 + m[1], h_out)
        x0, x1 = max(cols[0] - m[2], 0), min(cols[-1] + 1 + m[3], w_out)
        a = warped[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255.0)
        a *= 2.0 - a  # 1 - (1 - a)^2: strokes thinned below a pixel by the downscale keep a pen's darkness
        h, w = a.shape

        # pen pressure along x
        knots = rng.uniform(1 - c.pressure, 1.0, size=max(2, w // 40 + 2)).astype(np.float32)
        pressure = np.interp(np.arange(w), np.linspace(0, w - 1, knots.size), knots).astype(np.float32)
        return a * pressure[None, :]


_NOISE_TILE: np.ndarray | None = None


def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Standard-normal noise (h, w) cut at a random offset from one fixed tile: as random for a scan's
    grain as fresh draws, several times cheaper, and still a function of ``rng`` alone."""
    global _NOISE_TILE
    if _NOISE_TILE is None:
        _NOISE_TILE = np.random.default_rng(20240601).standard_normal((512, 4096), dtype=np.float32)
    th, tw = _NOISE_TILE.shape
    if h > th or w > tw:
        return rng.standard_normal((h, w), dtype=np.float32)
    y, x = int(rng.integers(th - h + 1)), int(rng.integers(tw - w + 1))
    return _NOISE_TILE[y:y + h, x:x + w]


def on_paper(alpha: np.ndarray, rng: np.random.Generator, c: SynthConfig) -> Image.Image:
    """Put ink coverage ``alpha`` on textured paper (optionally ruled), then blur and noise: a scan."""
    h, w = alpha.shape
    ink_level, paper = rng.uniform(*c.ink_level), rng.uniform(*c.paper_level)
    tex = rng.standard_normal((max(2, h // 6), max(2, w // 6)), dtype=np.float32)
    tex_im = Image.fromarray(tex).resize((w, h), Image.BILINEAR)
    background = np.asarray(tex_im) * np.float32(c.texture * rng.uniform(0.2, 1.0)) + np.float32(paper)
    if rng.random() < c.ruling_prob:
        yline = int(h * rng.uniform(0.75, 0.95))
        background[yline:yline + 1 + int(rng.integers(2)), :] -= rng.uniform(30, 90)
    # paper * (1 - alpha) + ink * alpha
    img = background - alpha * (background - np.float32(ink_level))
    blur = rng.uniform(*c.blur_radius) if rng.random() < c.blur_prob else 0.0
    sigma = rng.uniform(*c.noise_sigma)
    if sigma > 0.5:
        img += np.float32(sigma) * _noise(rng, h, w)
    out = Image.fromarray(np.clip(img, 0, 255, out=img).astype(np.uint8))
    if blur:
        out = out.filter(ImageFilter.GaussianBlur(blur))
    return out
