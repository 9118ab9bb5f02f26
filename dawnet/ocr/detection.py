"""Text-line detection around the YOLO model: letterbox, box-preserving augmentation, box coding, the loss,
batched NMS, and the detection :class:`~dawnet.Agent` (mAP in validation through pycocotools).

Pages enter the network letterboxed: resized so the longer side is ``size`` (aspect ratio kept), centred
on a ``size x size`` canvas padded with blank paper, ink bright (``1 - gray / 255``), the same layout as
:class:`dawnet.ocr.data.PageDataset`. Boxes are ``x0, y0, x1, y1`` pixels throughout; ``letterbox_boxes``
and ``unletterbox_boxes`` map them between the page and the canvas.

The model (:mod:`dawnet.ocr.models.yolo`) predicts, at every stride-8 grid point, an objectness logit and
the log distances to the four edges of the line it lies in. A point is a positive for a line when it lies
inside the line's box, or within half a stride of its centre row/column for lines thinner than a stride,
so every line gets at least one row of positives however thin it is (thin lines are never missed for
want of a grid point); where lines overlap, the smaller box wins. Loss: binary cross-entropy on the
objectness of every point plus GIoU on the positives' boxes, both normalized by the number of positives.

    agent = DetectionAgent(create_model("yolo"), torch.optim.AdamW(model.parameters(), 2e-3), size=640)
    agent.fit(loader(train_pages, augment=DetectionAugment()), epochs=30, val=loader(val_pages))
    agent.infer("page.png")   # -> {"boxes": (K, 4) page pixels, top to bottom, "scores": (K,)}
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset

from dawnet import parallel
from dawnet.agent import Agent
from dawnet.inputs import load_image
from dawnet.sampling import eval_loader

__all__ = [
    "Letterbox",
    "letterbox",
    "letterbox_boxes",
    "unletterbox_boxes",
    "DetectionAugment",
    "box_iou",
    "giou_loss",
    "nms",
    "batched_nms",
    "grid_points",
    "encode_ltrb",
    "decode_ltrb",
    "assign_targets",
    "detection_loss",
    "decode_detections",
    "DetectionDataset",
    "collate_detection",
    "detection_loader",
    "DetectionAgent",
    "order_lines",
]

MAX_LOG_DISTANCE = 8.0  # exp(8) * stride 8 = 23,800 px: no line is longer; keeps exp finite early in training


# -- letterbox ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """Where a page went on the canvas: ``canvas = page * scale + offset``; ``page_size``: (width, height)."""

    scale: float
    offset: tuple[float, float]
    page_size: tuple[int, int]
    size: int


def _gray(image) -> Image.Image:
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 3 and a.shape[2] in (3, 4):
            a = a[..., :3] @ np.array([0.299, 0.587, 0.114])
        elif a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if a.ndim != 2:
            raise ValueError(f"a page array must be (H, W) or (H, W, 3), got shape {image.shape}")
        if a.dtype != np.uint8:
            a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255)
        return Image.fromarray(a.astype(np.uint8), mode="L")
    if isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        while t.dim() > 2 and t.shape[0] == 1:
            t = t[0]
        return _gray(t.numpy())
    im = load_image(image)
    return im if im.mode == "L" else im.convert("L")


def letterbox(image, size: int = 640) -> tuple[torch.Tensor, Letterbox]:
    """A page (path, PIL, numpy, tensor; dark ink on light paper) -> ``(1, size, size)`` ink-bright canvas.

    The aspect ratio is kept: the longer side becomes ``size``, the page is centred, the rest is blank
    paper (0). Returns the canvas and the :class:`Letterbox` that maps boxes back.
    """
    if size <= 0 or size % 32:
        raise ValueError(f"size must be a positive multiple of 32, got {size}")
    im = _gray(image)
    if im.width < 1 or im.height < 1:
        raise ValueError(f"the page image is empty ({im.width}x{im.height} px)")
    s = size / max(im.width, im.height)
    w, h = max(1, round(im.width * s)), max(1, round(im.height * s))
    ox, oy = (size - w) // 2, (size - h) // 2
    canvas = torch.zeros(1, size, size)
    a = np.asarray(im.resize((w, h), Image.BILINEAR) if (w, h) != im.size else im, dtype=np.float32)
    canvas[0, oy : oy + h, ox : ox + w] = torch.from_numpy(1.0 - a / 255.0)
    # the scale actually used per axis can differ from s by rounding; boxes use the exact ratio per axis
    return canvas, Letterbox(
        scale=s, offset=(float(ox), float(oy)), page_size=(im.width, im.height), size=size
    )


def letterbox_boxes(boxes, lb: Letterbox) -> torch.Tensor:
    """Page boxes ``(K, 4)`` -> canvas boxes."""
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).clone()
    sx, sy = _axis_scales(lb)
    b[:, 0::2] = b[:, 0::2] * sx + lb.offset[0]
    b[:, 1::2] = b[:, 1::2] * sy + lb.offset[1]
    return b


def unletterbox_boxes(boxes, lb: Letterbox, clip: bool = True) -> torch.Tensor:
    """Canvas boxes ``(K, 4)`` -> page boxes (clipped to the page unless ``clip=False``)."""
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).clone()
    sx, sy = _axis_scales(lb)
    b[:, 0::2] = (b[:, 0::2] - lb.offset[0]) / sx
    b[:, 1::2] = (b[:, 1::2] - lb.offset[1]) / sy
    if clip:
        b[:, 0::2] = b[:, 0::2].clamp(0, lb.page_size[0])
        b[:, 1::2] = b[:, 1::2].clamp(0, lb.page_size[1])
    return b


def _axis_scales(lb: Letterbox) -> tuple[float, float]:
    w, h = lb.page_size
    return max(1, round(w * lb.scale)) / w, max(1, round(h * lb.scale)) / h


# -- augmentation that keeps boxes right -------------------------------------------------------------------


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
        image = _gray(image)
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


# -- boxes: IoU, GIoU, NMS ---------------------------------------------------------------------------------


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box in ``a (..., N, 4)`` with every box in ``b (..., M, 4)`` -> ``(..., N, M)``."""
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return inter / union.clamp(min=1e-9)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise ``1 - GIoU`` of paired boxes ``(K, 4)`` (Rezatofighi et al. 2019), and their IoU."""
    area_p = (pred[:, 2] - pred[:, 0]).clamp(min=0) * (pred[:, 3] - pred[:, 1]).clamp(min=0)
    area_t = (target[:, 2] - target[:, 0]).clamp(min=0) * (target[:, 3] - target[:, 1]).clamp(min=0)
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = (area_p + area_t - inter).clamp(min=1e-9)
    iou = inter / union
    hull_wh = (torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])).clamp(
        min=0
    )
    hull = (hull_wh[:, 0] * hull_wh[:, 1]).clamp(min=1e-9)
    return 1 - (iou - (hull - union) / hull), iou


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float = 0.5,
    labels: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Greedy NMS on a batch at once: ``boxes (B, K, 4)``, ``scores (B, K)`` -> keep mask ``(B, K)``.

    The result is exactly the classic greedy rule's (a box survives when no higher-scoring survivor overlaps
    it by more than ``iou_threshold``; equal scores ranked by index), computed with whole-matrix tensor
    operations: the IoU matrix of each image in score order, then the fixed-point iteration of Cluster-NMS
    (Zheng et al. 2021), ``keep = valid & ~any_j(overlap[j, i] & keep[j])`` over higher ranks ``j``, until
    nothing changes. After iteration ``t`` the first ``t`` ranks are final, and in practice a handful of
    iterations suffice. With ``labels`` only boxes of the same class suppress each other; ``valid`` masks
    padding. Large batches are cut into chunks so the ``(B, K, K)`` matrix stays under ~64 M entries.
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:2]:
        raise ValueError(
            f"batched_nms takes boxes (B, K, 4) and scores (B, K), got {tuple(boxes.shape)} and "
            f"{tuple(scores.shape)}"
        )
    B, K = scores.shape
    valid = torch.ones(B, K, dtype=torch.bool, device=boxes.device) if valid is None else valid.bool()
    if K == 0 or B == 0:
        return valid.clone()
    chunk = max(1, (1 << 26) // (K * K))
    if B > chunk:
        return torch.cat(
            [
                batched_nms(
                    boxes[i : i + chunk],
                    scores[i : i + chunk],
                    iou_threshold,
                    None if labels is None else labels[i : i + chunk],
                    valid[i : i + chunk],
                )
                for i in range(0, B, chunk)
            ]
        )
    order = torch.sort(scores.masked_fill(~valid, -math.inf), dim=1, descending=True, stable=True).indices
    sb = torch.gather(boxes, 1, order[..., None].expand(B, K, 4))
    overlap = box_iou(sb, sb) > iou_threshold  # (B, K, K), rows and columns in rank order
    if labels is not None:
        sl = torch.gather(labels, 1, order)
        overlap &= sl[:, :, None] == sl[:, None, :]
    overlap &= torch.ones(K, K, dtype=torch.bool, device=boxes.device).triu(1)  # j suppresses only i > j
    sv = torch.gather(valid, 1, order)
    overlap &= sv[:, :, None]  # padding suppresses nothing
    keep = sv.clone()
    for _ in range(K):
        new = sv & ~(overlap & keep[:, :, None]).any(1)
        if torch.equal(new, keep):
            break
        keep = new
    out = torch.zeros_like(keep)
    out.scatter_(1, order, keep)
    return out


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """Indices of the boxes ``(K, 4)`` kept by greedy NMS, highest score first (torchvision's contract)."""
    keep = batched_nms(boxes[None], scores[None], iou_threshold)[0]
    idx = keep.nonzero().flatten()
    return idx[torch.argsort(scores[idx], descending=True, stable=True)]


# -- box coding and target assignment ----------------------------------------------------------------------


def grid_points(height: int, width: int, stride: int, device=None) -> torch.Tensor:
    """Centres of the grid cells, ``(height * width, 2)`` as ``(x, y)`` pixels, row-major."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    return (torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * stride


def encode_ltrb(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Distances ``(..., 4)`` from points ``(..., 2)`` to the left, top, right and bottom edges of boxes."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], -1)


def decode_ltrb(points: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Boxes ``(..., 4)`` from points ``(..., 2)`` and their edge distances ``(..., 4)``."""
    return torch.cat([points - distances[..., :2], points + distances[..., 2:]], -1)


def assign_targets(points: torch.Tensor, gt_boxes: Sequence[torch.Tensor], stride: int):
    """Each point's line: ``positive (B, P)`` mask and ``targets (B, P, 4)`` boxes (see the module docstring).

    A point is inside a line when it lies in the box, where the box is first widened to at least one
    stride about its centre (so a line thinner than a stride still owns its nearest row of points).
    """
    B, P = len(gt_boxes), points.shape[0]
    kmax = max([int(g.shape[0]) for g in gt_boxes] + [1])
    gt = points.new_zeros(B, kmax, 4)
    real = torch.zeros(B, kmax, dtype=torch.bool, device=points.device)
    for i, g in enumerate(gt_boxes):
        if g.numel():
            gt[i, : g.shape[0]] = g.to(points)
            real[i, : g.shape[0]] = True
    centre = (gt[..., :2] + gt[..., 2:]) / 2
    half = ((gt[..., 2:] - gt[..., :2]) / 2).clamp(min=stride / 2)  # (B, K, 2)
    delta = (points[None, :, None, :] - centre[:, None]).abs()  # (B, P, K, 2)
    inside = (delta < half[:, None]).all(-1) & real[:, None]  # (B, P, K)
    area = ((gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1]))[:, None].expand(B, P, kmax)
    area = torch.where(inside, area, torch.full_like(area, math.inf))
    best = area.argmin(-1)  # the smallest line containing the point
    positive = inside.any(-1)
    targets = torch.gather(gt, 1, best[..., None].expand(B, P, 4))
    return positive, targets


def _flatten_outputs(outputs: torch.Tensor, stride: int):
    n, c, h, w = outputs.shape
    if c != 5:
        raise ValueError(
            f"detector outputs must be (N, 5, H, W) (objectness + 4 distances), got {tuple(outputs.shape)}"
        )
    flat = outputs.permute(0, 2, 3, 1).reshape(n, h * w, 5)
    points = grid_points(h, w, stride, outputs.device)
    distances = torch.exp(flat[..., 1:].float().clamp(max=MAX_LOG_DISTANCE)) * stride
    return flat[..., 0].float(), decode_ltrb(points[None], distances), points


def detection_loss(
    outputs: torch.Tensor,
    gt_boxes: Sequence[torch.Tensor],
    stride: int = 8,
    box_weight: float = 2.0,
    iou_aware: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Objectness BCE (all points) + ``box_weight`` x GIoU (positives), normalized by the positives.

    With ``iou_aware`` a positive point's objectness target is the IoU of its own box with its line
    (detached; the soft targets of quality focal loss, Li et al. 2020, GFL) instead of 1: a point near a
    line's end that sees only part of the line, and so predicts a short box, learns a low score, and
    NMS keeps the boxes that cover the whole line.
    Returns the scalar loss and its parts (``obj``, ``box``, ``positives``) as floats for logging.
    """
    logits, boxes, points = _flatten_outputs(outputs, stride)
    positive, targets = assign_targets(points, gt_boxes, stride)
    n_pos = positive.sum().clamp(min=1).float()
    obj_target = positive.float()
    if positive.any():
        box, iou = giou_loss(boxes[positive], targets[positive])
        box = box.sum() / n_pos
        if iou_aware:
            obj_target = obj_target.masked_scatter(positive, iou.detach().clamp(0, 1).to(obj_target.dtype))
    else:
        box = boxes.sum() * 0.0
    obj = F.binary_cross_entropy_with_logits(logits, obj_target, reduction="sum") / n_pos
    loss = obj + box_weight * box
    return loss, {"obj": float(obj.detach()), "box": float(box.detach()), "positives": int(positive.sum())}


@torch.no_grad()
def decode_detections(
    outputs: torch.Tensor,
    stride: int = 8,
    score_threshold: float = 0.3,
    iou_threshold: float = 0.3,
    max_det: int = 100,
    pre_nms: int = 3000,
    vote_threshold: float | None = 0.5,
) -> list[dict]:
    """Raw outputs ``(N, 5, H, W)`` -> per image ``{"boxes" (K, 4), "scores" (K,)}`` in canvas pixels.

    Points scoring at least ``score_threshold`` (at most ``pre_nms`` per image) go through batched NMS;
    the best ``max_det`` survivors are kept, highest score first. With ``vote_threshold`` each survivor's
    box becomes the score-weighted mean of every candidate overlapping it by more than that IoU (box
    voting, Gidaris & Komodakis 2015): a line is predicted by every point along it, points near either end
    see that end best, and the mean corrects the narrowed boxes single points give. On the cpu benchmark's
    detector it raised mAP@0.5:0.95 from 0.26 to 0.34 (and NMS at IoU 0.3 instead of 0.5 mAP@0.5 from 0.69
    to 0.73): lines on a page barely overlap, while fragments of one line do.
    """
    logits, boxes, _ = _flatten_outputs(outputs, stride)
    scores = logits.sigmoid()
    k = min(pre_nms, scores.shape[1])
    top, idx = scores.topk(k, dim=1)
    tb = torch.gather(boxes, 1, idx[..., None].expand(-1, k, 4))
    keep = batched_nms(tb, top, iou_threshold, valid=top >= score_threshold)
    out = []
    for i in range(scores.shape[0]):
        sel = keep[i].nonzero().flatten()
        sel = sel[torch.argsort(top[i, sel], descending=True, stable=True)][:max_det]
        kept = tb[i, sel]
        if vote_threshold is not None and len(sel):
            cand = (top[i] >= score_threshold).nonzero().flatten()
            weights = (box_iou(kept, tb[i, cand]) > vote_threshold).float() * top[i, cand][None]
            kept = (weights @ tb[i, cand]) / weights.sum(1, keepdim=True)  # each survivor votes for itself
        out.append({"boxes": kept.cpu(), "scores": top[i, sel].cpu()})
    return out


def order_lines(boxes: torch.Tensor) -> torch.Tensor:
    """Reading order of line boxes ``(K, 4)``: top to bottom; lines sharing a row (vertical overlap of more
    than half the lower height) left to right. Returns the permutation."""
    k = boxes.shape[0]
    if k == 0:
        return torch.zeros(0, dtype=torch.long)
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    order = torch.argsort(cy, stable=True).tolist()
    rows: list[list[int]] = []
    for i in order:
        if rows:
            j = rows[-1][0]
            overlap = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
            if overlap > 0.5 * min(boxes[i, 3] - boxes[i, 1], boxes[j, 3] - boxes[j, 1]):
                rows[-1].append(i)
                continue
        rows.append([i])
    return torch.tensor([i for row in rows for i in sorted(row, key=lambda t: float(boxes[t, 0]))])


# -- data ---------------------------------------------------------------------------------------------------


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


# -- the agent ----------------------------------------------------------------------------------------------


class DetectionAgent(Agent):
    """Trains and runs a text-line detector (the ``yolo`` models): loss, decoding + NMS, mAP in validation.

    Batches are dicts from :func:`collate_detection` (or ``PageDataset`` + ``collate_pages``): ``images``
    ``(N, 1, S, S)`` and ``boxes``, a list of ``(K_i, 4)`` canvas boxes. ``evaluate`` adds COCO ``map``
    (mAP@[.5:.95]), ``map50``, ``map75`` and ``mar100`` over the whole set (pycocotools), from detections
    above ``eval_threshold``. ``infer(page)`` letterboxes a raw page and returns its lines in page pixels,
    in reading order.

    Args (beyond :class:`dawnet.Agent`'s):
        size (640): letterbox size of ``infer``.
        score_threshold (0.3): minimum score of a line ``infer`` returns.
        iou_threshold (0.3): NMS overlap (lines on a page barely overlap; fragments of one line do).
        vote_threshold (0.5): box-voting IoU (see :func:`decode_detections`; None: plain NMS boxes).
        max_det (100): most lines per page.
        eval_threshold (0.01): minimum score of the detections mAP ranks (COCO evaluates low scores too).
        box_weight (2.0): weight of the GIoU term of the loss.
        iou_aware (True): objectness learns each point's box IoU, not 1 (see :func:`detection_loss`; on the
            cpu benchmark's detector after 300 steps it raised mAP@0.5 from 0.80 to 0.91, mAP from 0.42 to 0.53).
    """

    def __init__(
        self,
        model,
        optimizer,
        loss=None,
        schedule=None,
        metrics=None,
        device="auto",
        callbacks=(),
        *,
        size: int = 640,
        score_threshold: float = 0.3,
        iou_threshold: float = 0.3,
        max_det: int = 100,
        eval_threshold: float = 0.01,
        box_weight: float = 2.0,
        vote_threshold: float | None = 0.5,
        iou_aware: bool = True,
        **kwargs,
    ):
        super().__init__(
            model,
            optimizer,
            loss=loss,
            schedule=schedule,
            metrics=metrics,
            device=device,
            callbacks=callbacks,
            **kwargs,
        )
        if size % 32:
            raise ValueError(f"size must be a multiple of 32, got {size}")
        if not 0 <= score_threshold <= 1 or not 0 < iou_threshold <= 1:
            raise ValueError(
                f"score_threshold must be in [0, 1] and iou_threshold in (0, 1], got {score_threshold} "
                f"and {iou_threshold}"
            )
        self.size, self.score_threshold, self.iou_threshold = size, score_threshold, iou_threshold
        self.max_det, self.eval_threshold, self.box_weight = max_det, eval_threshold, box_weight
        self.vote_threshold, self.iou_aware = vote_threshold, bool(iou_aware)
        self.last_parts: dict = {}
        self._letterbox: Letterbox | None = None

    @property
    def stride(self) -> int:
        return int(getattr(self.model, "stride", 8))

    def config(self) -> dict:
        return {
            **super().config(),
            "size": self.size,
            "score_threshold": self.score_threshold,
            "iou_threshold": self.iou_threshold,
            "max_det": self.max_det,
            "eval_threshold": self.eval_threshold,
            "box_weight": self.box_weight,
            "vote_threshold": self.vote_threshold,
            "iou_aware": self.iou_aware,
        }

    def unpack(self, batch):
        if isinstance(batch, Mapping):
            try:
                return (batch["images"],), [b.reshape(-1, 4).float() for b in batch["boxes"]]
            except KeyError as e:
                raise TypeError(f"a page batch dict needs keys 'images' and 'boxes'; missing {e}") from None
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return (batch[0],), [torch.as_tensor(b).reshape(-1, 4).float() for b in batch[1]]
        raise TypeError(
            "a page batch is a dict with 'images' (N, 1, S, S) and 'boxes' (a list of (K, 4)), or "
            f"(images, boxes); got {type(batch).__name__}"
        )

    def compute_loss(self, outputs, targets) -> torch.Tensor:
        loss, self.last_parts = detection_loss(outputs, targets, self.stride, self.box_weight, self.iou_aware)
        return loss

    def predict(self, outputs) -> list[dict]:
        return decode_detections(outputs, self.stride, self.eval_threshold, self.iou_threshold, self.max_det,
                                 vote_threshold=self.vote_threshold)

    def evaluate(self, data) -> dict:
        """Loss and COCO mAP over ``data`` (no gradients, eval mode; the mode is restored)."""
        from dawnet.agent import _run_model, _to_device
        from dawnet.ocr.metrics import detection_map

        was_training = self.model.training
        self.model.eval()
        loss_sum, count, gts, preds = 0.0, 0, [], []
        try:
            with torch.no_grad(), self._autocast():
                for batch in eval_loader(data, parallel.rank(), parallel.world_size()):
                    inputs, targets = self.unpack(_to_device(batch, self.device))
                    outputs = _run_model(self._forward_module, inputs)
                    n = inputs[0].shape[0]
                    loss_sum += float(self._loss(outputs, targets)) * n
                    count += n
                    gts += [t.cpu() for t in targets]
                    preds += self.predict(outputs)
        finally:
            self.model.train(was_training)
        if count == 0:
            raise ValueError("the evaluation data is empty (0 batches)")
        if parallel.world_size() > 1:  # mAP is not a sum over batches: gather every rank's pages
            import torch.distributed as dist

            gathered: list = [None] * parallel.world_size()
            dist.all_gather_object(gathered, (loss_sum, count, gts, preds))
            loss_sum = sum(g[0] for g in gathered)
            count = sum(g[1] for g in gathered)
            gts = [x for g in gathered for x in g[2]]
            preds = [x for g in gathered for x in g[3]]
        result = {"loss": loss_sum / count}
        result.update(detection_map([g.numpy() for g in gts], preds))
        return result

    def prepare(self, raw) -> tuple:
        canvas, self._letterbox = letterbox(raw, self.size)
        return (canvas[None],)

    def postprocess(self, outputs) -> dict:
        det = decode_detections(outputs, self.stride, self.score_threshold, self.iou_threshold, self.max_det,
                                vote_threshold=self.vote_threshold)[0]
        boxes = det["boxes"]
        if self._letterbox is not None:
            boxes = unletterbox_boxes(boxes, self._letterbox)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        boxes, scores = boxes[keep], det["scores"][keep]
        order = order_lines(boxes)
        return {"boxes": boxes[order], "scores": scores[order]}

    def detect(self, page) -> dict:
        """Lines of one raw page: ``{"boxes": (K, 4) page pixels in reading order, "scores": (K,)}``."""
        return self.infer(page)


def load_detector(path: str | os.PathLike, map_location=None) -> DetectionAgent:
    """A :class:`DetectionAgent` from a checkpoint, with a clear error when the file holds something else."""
    from dawnet.checkpoint import CheckpointError, load_checkpoint

    state = load_checkpoint(path, map_location="cpu")
    cls = (state.get("agent") or {}).get("class", "?") if isinstance(state, dict) else "?"
    if cls != f"{DetectionAgent.__module__}.{DetectionAgent.__qualname__}":
        raise ValueError(
            f"{path} holds a {cls.rsplit('.', 1)[-1]}, not a text-line detector: pass a checkpoint "
            "trained with DetectionAgent (e.g. DIR/models/yolo.pt from 'dawnet bench')"
        )
    del state
    try:
        return DetectionAgent.load(path, map_location=map_location or "cpu")
    except CheckpointError as e:
        raise ValueError(str(e)) from None
