"""``torch.utils.data.Dataset``s for text lines and pages, their collate functions, and width bucketing.

Line batches (``collate_lines``), the contract recognizers consume::

    images          (N, 1, H, Wmax) float32 in [0, 1], INK BRIGHT (1.0) ON DARK (0.0): pixel = 1 - gray/255,
                    so zero padding on the right is blank paper
    widths          (N,) long: the real width of each image before padding (aspect ratio kept)
    mask            (N, Wmax) bool: True on real columns
    texts           list[str]: the NFC-normalized transcriptions
    targets         (sum of lengths,) long: concatenated charset ids 1..n (CTC layout), if a charset is given
    target_lengths  (N,) long, if a charset is given
    sources         list[str]: where each line came from (file:line), for error analysis
    blank           list[bool]: the line's image holds no ink (:func:`dawnet.images.is_blank`, on the image as
                    read, before augmentation): a line read wrongly or an empty crop, to count and report,
                    never to score silently

Page batches (``collate_pages``): ``images (N, 1, S, S)`` (same polarity, letterboxed to S with zero
padding), ``boxes`` list of ``(K_i, 4)`` float ``x0, y0, x1, y1`` in the letterboxed image, ``labels``
list of ``(K_i,)`` long, ``texts`` list of lists, ``scales`` ``(N,)`` and ``offsets`` ``(N, 2)`` to map
boxes back to the original page (``orig = (box - offset) / scale``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import Dataset, Sampler

from dawnet.images import is_blank, to_gray
from dawnet.ocr.charset import Charset, UnknownCharacterError, normalize
from dawnet.ocr.data.formats.records import LineRecord, LineSet, PageRecord

__all__ = ["LineDataset", "SyntheticLineDataset", "PageDataset", "LineAugment", "collate_lines", "collate_pages",
           "WidthBucketSampler", "padding_fraction", "to_tensor"]


def to_tensor(image: Image.Image, height: int, max_width: int | None = None) -> torch.Tensor:
    """Grayscale image -> ``(1, height, W)`` float tensor, ink bright; aspect kept (``W`` capped at ``max_width``).

    Another mode is converted by :func:`dawnet.images.to_gray` (16-bit scaled, transparency over white).
    """
    if image.mode != "L":
        image = to_gray(image)
    w = max(1, round(image.width * height / max(1, image.height)))
    if max_width is not None and w > max_width:
        w = max_width  # squeezed: rare, and better than cutting text off
    if (w, height) != image.size:
        image = image.resize((w, height), Image.BILINEAR)
    a = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(1.0 - a / 255.0).unsqueeze(0)


class LineAugment:
    """On-the-fly augmentation of a line image (PIL, dark ink on light), for training only.

    Each op fires with probability ``p``: shear (slant) +-``shear``, vertical scale +-10%, erosion or
    dilation (stroke width), Gaussian blur, contrast/brightness change, Gaussian noise. Seeded per
    call through the ``rng`` argument, so a dataset index + epoch reproduce the same augmentation.
    """

    def __init__(self, p: float = 0.5, shear: float = 0.3, noise: float = 8.0):
        self.p, self.shear, self.noise = p, shear, noise

    def __call__(self, im: Image.Image, rng: np.random.Generator) -> Image.Image:
        if im.mode != "L":
            im = to_gray(im)
        r = rng.random(6)
        if r[0] < self.p:
            s = rng.uniform(-self.shear, self.shear)
            extra = int(abs(s) * im.height / 2) + 1
            bg = int(np.percentile(np.asarray(im), 90))  # the paper level, to fill what the shear uncovers
            canvas = Image.new("L", (im.width + 2 * extra, im.height), bg)
            canvas.paste(im, (extra, 0))
            im = canvas.transform(canvas.size, Image.AFFINE, (1, s, -s * im.height / 2, 0, 1, 0), Image.BILINEAR,
                                  fillcolor=bg)
        if r[1] < self.p:
            im = im.resize((im.width, max(4, round(im.height * rng.uniform(0.9, 1.1)))), Image.BILINEAR)
        if r[2] < self.p:
            im = im.filter(ImageFilter.MinFilter(3) if rng.random() < 0.5 else ImageFilter.MaxFilter(3))
        if r[3] < self.p:
            im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
        a = np.asarray(im, dtype=np.float32)
        if r[4] < self.p:
            a = (a - 128.0) * rng.uniform(0.6, 1.2) + 128.0 + rng.uniform(-30, 30)
        if r[5] < self.p:
            a = a + rng.normal(0, self.noise, a.shape).astype(np.float32)
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _check_charset(texts: Sequence[str], charset: Charset | None, unknown: str, where: str) -> None:
    if charset is None:
        return
    missing = charset.missing(texts)
    if missing and unknown == "error":
        raise UnknownCharacterError(missing, where=where)


class LineDataset(Dataset):
    """Text-line images at a fixed ``height`` (variable width, aspect kept) with their transcriptions.

    Args:
        records: a :class:`LineSet` / list of :class:`LineRecord` (from ``dawnet.ocr.data.formats``),
            or a path any ``read_lines`` understands (e.g. ``built/test/labels.tsv``).
        height: output height in px.
        charset: when given, items carry encoded targets; characters outside it raise at construction
            listing them (``unknown="map"`` maps them to the charset's unknown token, counted).
        augment: a :class:`LineAugment` (or any ``(PIL image, rng) -> PIL image``) applied before
            resizing; seeded by ``(seed, epoch, index)`` so runs reproduce. Call :meth:`set_epoch`.
        max_width: cap on the output width (wider lines are squeezed, never cut).

    Items are dicts: ``image (1, H, W)`` (see the module docstring for the polarity), ``width``,
    ``text``, ``target`` (list of ids, when a charset is given), ``source``, ``blank`` (the image as read
    holds no ink; :meth:`blank_lines` lists them all).
    """

    def __init__(self, records, height: int = 32, charset: Charset | None = None, augment=None,
                 max_width: int | None = None, unknown: str = "error", seed: int = 0):
        if isinstance(records, (str, bytes)) or hasattr(records, "__fspath__"):
            from dawnet.ocr.data.formats import read_lines

            records = read_lines(records)
        self.records: list[LineRecord] = list(records.records if isinstance(records, LineSet) else records)
        if not self.records:
            raise ValueError("LineDataset got no records: the source is empty")
        if height < 8:
            raise ValueError(f"height must be at least 8 px, got {height}")
        self.height, self.charset, self.augment, self.max_width = height, charset, augment, max_width
        self.unknown, self.seed, self.epoch = unknown, seed, 0
        _check_charset([r.text for r in self.records], charset, unknown, "the dataset's transcriptions")
        self._widths: list[int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.records]

    def widths(self) -> list[int]:
        """Output width of every item (from image headers, without decoding pixels): for bucketing."""
        if self._widths is None:
            ws = []
            for r in self.records:
                w, h = r.size()  # from the header, as load() gives it (EXIF rotation, page crop)
                ow = max(1, round(w * self.height / max(1, h)))
                ws.append(min(ow, self.max_width) if self.max_width else ow)
            self._widths = ws
        return self._widths

    def blank_lines(self) -> list[str]:
        """The sources of the lines whose image holds no ink (:func:`dawnet.images.is_blank`), in order.

        Reads every image: for a count before evaluating or training; each item also carries ``blank``.
        """
        return [r.source or r.path for r in self.records if is_blank(r.load())]

    def __getitem__(self, index: int) -> dict:
        r = self.records[index]
        im = r.load()
        blank = is_blank(im)
        if self.augment is not None:
            im = self.augment(im, np.random.default_rng([self.seed, self.epoch, index]))
        item = {"image": to_tensor(im, self.height, self.max_width), "text": r.text, "source": r.source,
                "blank": blank}
        item["width"] = item["image"].shape[-1]
        if self.charset is not None:
            item["target"] = self.charset.encode(r.text, unknown=self.unknown)
        return item


class SyntheticLineDataset(Dataset):
    """Lines rendered on the fly from a spec's generator (fresh every epoch unless ``fixed``).

    ``SyntheticLineDataset(SpecGenerator(spec("hw-lines-v1")), "train", length=100_000)``: item ``i``
    of epoch ``e`` is rendered from seed ``(spec seed, split, e * length + i)`` (``fixed=True``: from
    ``i`` alone, i.e. the same images as ``dawnet data build``). Items and batches as :class:`LineDataset`.
    """

    def __init__(self, generator, split: str = "train", length: int | None = None, height: int = 32,
                 charset: Charset | None = None, augment=None, max_width: int | None = None,
                 unknown: str = "error", fixed: bool = False):
        self.gen, self.split = generator, split
        self.length = length if length is not None else generator.spec.sizes[split]
        self.height, self.charset, self.augment, self.max_width = height, charset, augment, max_width
        self.unknown, self.fixed, self.epoch = unknown, fixed, 0
        if generator.spec.kind == "lines":
            _check_charset(generator.texts(split), charset, unknown, f"the {split} texts of {generator.spec.name}")
        elif generator.spec.kind == "digits":
            _check_charset(["0123456789"], charset, unknown, "digit strings")
        else:
            raise ValueError("SyntheticLineDataset needs a 'lines' or 'digits' spec; use PageDataset for pages")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        k = index if self.fixed else self.epoch * self.length + index
        line = self.gen.item(self.split, k)
        im = line.image
        if self.augment is not None:
            im = self.augment(im, np.random.default_rng([self.gen.spec.seed, 1 + self.epoch, index]))
        item = {"image": to_tensor(im, self.height, self.max_width), "text": normalize(line.text),
                "source": f"{self.gen.spec.name}/{self.split}/{k}", "blank": is_blank(line.image)}
        item["width"] = item["image"].shape[-1]
        if self.charset is not None:
            item["target"] = self.charset.encode(line.text, unknown=self.unknown)
        return item


def collate_lines(items: list[dict], pad_to_multiple: int = 1) -> dict:
    """Pad a list of line items on the right to one width (see the module docstring for the keys)."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    h = items[0]["image"].shape[1]
    widths = [it["image"].shape[-1] for it in items]
    wmax = max(widths)
    if pad_to_multiple > 1:
        wmax = int(math.ceil(wmax / pad_to_multiple) * pad_to_multiple)
    images = torch.zeros(len(items), 1, h, wmax)
    mask = torch.zeros(len(items), wmax, dtype=torch.bool)
    for i, it in enumerate(items):
        if it["image"].shape[1] != h:
            raise ValueError(f"items differ in height ({it['image'].shape[1]} vs {h}): use one LineDataset height")
        images[i, :, :, :widths[i]] = it["image"]
        mask[i, :widths[i]] = True
    batch = {"images": images, "widths": torch.tensor(widths, dtype=torch.long), "mask": mask,
             "texts": [it["text"] for it in items], "sources": [it.get("source", "") for it in items],
             "blank": [bool(it.get("blank", False)) for it in items]}
    if all("target" in it for it in items):
        batch["targets"] = torch.tensor([t for it in items for t in it["target"]], dtype=torch.long)
        batch["target_lengths"] = torch.tensor([len(it["target"]) for it in items], dtype=torch.long)
    return batch


class WidthBucketSampler(Sampler[list[int]]):
    """Batches of similar widths, to waste little padding ("sortish" batching).

    Indices are shuffled, cut into pools of ``pool_batches`` batches, sorted by width inside a pool,
    cut into batches, and the batches shuffled; seeded by ``(seed, epoch)``. Use as
    ``DataLoader(ds, batch_sampler=WidthBucketSampler(ds.widths(), 32), collate_fn=collate_lines)``.
    """

    def __init__(self, widths: Sequence[int], batch_size: int, shuffle: bool = True, drop_last: bool = False,
                 pool_batches: int = 50, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.widths = np.asarray(widths)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.pool_batches, self.seed, self.epoch = pool_batches, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self) -> list[list[int]]:
        n = len(self.widths)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        pool = self.batch_size * self.pool_batches
        out = []
        for s in range(0, n, pool):
            chunk = order[s:s + pool]
            chunk = chunk[np.argsort(self.widths[chunk], kind="stable")]
            for b in range(0, len(chunk), self.batch_size):
                out.append(chunk[b:b + self.batch_size].tolist())
        if self.drop_last:
            out = [b for b in out if len(b) == self.batch_size]
        if self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        n = len(self.widths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


def padding_fraction(widths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Fraction of padded columns over the batches (0 = no waste)."""
    widths = np.asarray(widths)
    real = padded = 0
    for b in batches:
        w = widths[list(b)]
        real += int(w.sum())
        padded += int(w.max()) * len(w)
    return 1.0 - real / padded if padded else 0.0


class PageDataset(Dataset):
    """Page images letterboxed to ``size x size`` with their line boxes (for detection).

    ``pages``: a list of :class:`PageRecord`, a COCO JSON path, or a YOLO folder. Items are dicts:
    ``image (1, S, S)`` (ink bright), ``boxes (K, 4)``, ``labels (K,)``, ``texts``, ``scale``, ``offset``.
    """

    def __init__(self, pages, size: int = 640):
        if isinstance(pages, (str, bytes)) or hasattr(pages, "__fspath__"):
            from pathlib import Path

            from dawnet.ocr.data.formats import read_coco, read_yolo

            p = Path(pages)
            pages = read_coco(p) if p.suffix == ".json" else read_yolo(p)
        self.pages: list[PageRecord] = list(pages)
        if not self.pages:
            raise ValueError("PageDataset got no pages")
        self.size = size

    def __len__(self) -> int:
        return len(self.pages)

    def __getitem__(self, index: int) -> dict:
        p = self.pages[index]
        im = p.load()
        s = self.size / max(im.width, im.height)
        w, h = max(1, round(im.width * s)), max(1, round(im.height * s))
        ox, oy = (self.size - w) // 2, (self.size - h) // 2
        a = np.zeros((self.size, self.size), dtype=np.float32)
        a[oy:oy + h, ox:ox + w] = 1.0 - np.asarray(im.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
        boxes = torch.tensor(p.boxes, dtype=torch.float32).reshape(-1, 4) * s
        boxes[:, 0::2] += ox
        boxes[:, 1::2] += oy
        return {"image": torch.from_numpy(a).unsqueeze(0), "boxes": boxes,
                "labels": torch.tensor(p.classes or [0] * len(p.boxes), dtype=torch.long),
                "texts": list(p.texts), "scale": s, "offset": (ox, oy), "source": p.source or p.path}


def collate_pages(items: list[dict]) -> dict:
    return {"images": torch.stack([it["image"] for it in items]), "boxes": [it["boxes"] for it in items],
            "labels": [it["labels"] for it in items], "texts": [it["texts"] for it in items],
            "scales": torch.tensor([it["scale"] for it in items]),
            "offsets": torch.tensor([it["offset"] for it in items], dtype=torch.float32),
            "sources": [it["source"] for it in items]}
