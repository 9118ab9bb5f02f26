"""Detection training data: page augmentation that moves the boxes with the pixels, the letterboxed page
dataset, and its collate function and loader."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset

from dawnet.ocr.boxes import gray_page, letterbox, letterbox_boxes

__all__ = ["DetectionAugment", "DetectionDataset", "collate_detection", "detection_loader"]


class DetectionAugment:
    """Random page augmentation that moves the boxes with the pixels (for training only).

    Geometric (applied to image and boxes together): zoom ``scale`` and shift ``translate`` (a fraction
    of the page), horizontal flip with probability ``flip`` (a mirrored line is still a line), each box
    clipped to the page and dropped when less than ``min_visible`` of its area stays on it. Photometric
    (boxes unchanged): contrast and brightness, blur, Gaussian noise, each with probability ``p``.
    No rotation: the axis-aligned box of a rotated line is no longer tight. Seeded per call by ``rng``.

    Call: ``augment(page PIL "L", boxes (K, 4) array, rng) -> (page, boxes (K', 4), kept indices (K',))``.
    """

    def __init__(
        self,
        scale=(0.75, 1.25),
        translate: float = 0.1,
        flip: float = 0.5,
        p: float = 0.5,
        noise: float = 8.0,
        min_visible: float = 0.6,
    ):
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
        self.scale, self.translate, self.flip, self.p = tuple(scale), translate, flip, p
        self.noise, self.min_visible = noise, min_visible

    def __call__(self, image: Image.Image, boxes, rng: np.random.Generator):
        image = gray_page(image)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        W, H = image.size
        r = rng.random(5)
        s = rng.uniform(*self.scale)
        tx = rng.uniform(-self.translate, self.translate) * W + (1 - s) * W / 2  # zoom about the centre
        ty = rng.uniform(-self.translate, self.translate) * H + (1 - s) * H / 2
        flip = r[0] < self.flip
        # forward map: x' = s*x + tx (then x'' = W - x' when flipped); PIL wants the inverse map
        a, c = (-1.0 / s, (W - tx) / s) if flip else (1.0 / s, -tx / s)
        paper = int(np.percentile(np.asarray(image), 90))
        image = image.transform(
            image.size, Image.AFFINE, (a, 0, c, 0, 1.0 / s, -ty / s), Image.BILINEAR, fillcolor=paper
        )
        out = boxes * s
        out[:, 0::2] += tx
        out[:, 1::2] += ty
        if flip:
            out[:, [0, 2]] = W - out[:, [2, 0]]
        area = (out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1])
        out[:, 0::2] = out[:, 0::2].clip(0, W)
        out[:, 1::2] = out[:, 1::2].clip(0, H)
        visible = (out[:, 2] - out[:, 0]).clip(0) * (out[:, 3] - out[:, 1]).clip(0)
        keep = np.nonzero((visible >= self.min_visible * np.maximum(area, 1e-9)) & (visible > 0))[0]
        if r[1] < self.p:
            arr = np.asarray(image, dtype=np.float32)
            arr = (arr - 128.0) * rng.uniform(0.6, 1.2) + 128.0 + rng.uniform(-30, 30)
            image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        if r[2] < self.p:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
        if r[3] < self.p:
            arr = np.asarray(image, dtype=np.float32) + rng.normal(0, self.noise, (H, W)).astype(np.float32)
            image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        return image, out[keep].astype(np.float32), keep


class DetectionDataset(Dataset):
    """Pages letterboxed to ``size`` with their boxes, optionally augmented first (:class:`DetectionAugment`).

    ``pages``: a list of :class:`~dawnet.ocr.data.PageRecord`, a COCO JSON or a YOLO folder (as
    :class:`~dawnet.ocr.data.PageDataset`). Augmentation of item ``i`` in epoch ``e`` is seeded by
    ``(seed, e, i)``, so runs reproduce; call :meth:`set_epoch`. Items have the keys of ``PageDataset``
    (``image, boxes, labels, texts, scale, offset, source``) plus ``page_size``.
    """

    def __init__(self, pages, size: int = 640, augment: DetectionAugment | None = None, seed: int = 0):
        if isinstance(pages, (str, bytes)) or hasattr(pages, "__fspath__"):
            from pathlib import Path

            from dawnet.ocr.data.formats import read_coco, read_yolo

            p = Path(pages)
            pages = read_coco(p) if p.suffix == ".json" else read_yolo(p)
        self.pages = list(pages)
        if not self.pages:
            raise ValueError("DetectionDataset got no pages")
        if size % 32:
            raise ValueError(f"size must be a multiple of 32, got {size}")
        self.size, self.augment, self.seed, self.epoch = size, augment, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pages)

    def __getitem__(self, index: int) -> dict:
        p = self.pages[index]
        im = p.load()
        boxes = np.asarray(p.boxes, dtype=np.float32).reshape(-1, 4)
        texts = list(p.texts) if p.texts else [""] * len(boxes)
        labels = list(p.classes) if p.classes else [0] * len(boxes)
        if self.augment is not None:
            im, boxes, keep = self.augment(im, boxes, np.random.default_rng([self.seed, self.epoch, index]))
            texts, labels = [texts[k] for k in keep], [labels[k] for k in keep]
        canvas, lb = letterbox(im, self.size)
        return {
            "image": canvas,
            "boxes": letterbox_boxes(boxes, lb),
            "labels": torch.tensor(labels, dtype=torch.long),
            "texts": texts,
            "scale": lb.scale,
            "offset": lb.offset,
            "page_size": lb.page_size,
            "source": p.source or p.path,
        }


def collate_detection(items: list[dict]) -> dict:
    """Stack pages; boxes, labels and texts stay per-page lists (pages differ in their number of lines)."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    return {
        "images": torch.stack([it["image"] for it in items]),
        "boxes": [it["boxes"] for it in items],
        "labels": [it["labels"] for it in items],
        "texts": [it["texts"] for it in items],
        "scales": torch.tensor([it["scale"] for it in items]),
        "offsets": torch.tensor([it["offset"] for it in items], dtype=torch.float32),
        "page_sizes": [it.get("page_size") for it in items],
        "sources": [it["source"] for it in items],
    }


def detection_loader(
    dataset: Dataset, batch_size: int = 8, shuffle: bool = False, workers: int = 0
) -> DataLoader:
    """A DataLoader of page batches (:func:`collate_detection`)."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, collate_fn=collate_detection
    )
