"""Box geometry for text-line detection: the letterbox that puts a page on the detector's square canvas,
IoU, batched greedy NMS, point-to-edge box coding, and the reading order of line boxes.

Boxes are ``x0, y0, x1, y1`` pixels throughout. Pages enter the network letterboxed: resized so the longer
side is ``size`` (aspect ratio kept), centred on a ``size x size`` canvas padded with blank paper, ink bright
(``1 - gray / 255``), the same layout as :class:`dawnet.ocr.data.PageDataset`; ``letterbox_boxes`` and
``unletterbox_boxes`` map boxes between the page and the canvas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from dawnet.images import load_image

__all__ = [
    "Letterbox",
    "gray_page",
    "letterbox",
    "letterbox_boxes",
    "unletterbox_boxes",
    "box_iou",
    "nms",
    "batched_nms",
    "grid_points",
    "encode_ltrb",
    "decode_ltrb",
    "order_lines",
]


# -- letterbox ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """Where a page went on the canvas: ``canvas = page * scale + offset``; ``page_size``: (width, height)."""

    scale: float
    offset: tuple[float, float]
    page_size: tuple[int, int]
    size: int


def gray_page(image) -> Image.Image:
    """A page as an 8-bit grey PIL image: a path, PIL image or integer array through :func:`dawnet.images.load_image`
    (16-bit grey scaled by its range, alpha composited over white); a float array or tensor (H, W) / (H, W, 3)
    in 0..1 (or 0..255)."""
    if isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        while t.dim() > 2 and t.shape[0] == 1:
            t = t[0]
        return gray_page(t.numpy())
    if isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating):
        a = image
        if a.ndim == 3 and a.shape[2] in (3, 4):
            a = a[..., :3] @ np.array([0.299, 0.587, 0.114])
        elif a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if a.ndim != 2:
            raise ValueError(f"a page array must be (H, W) or (H, W, 3), got shape {image.shape}")
        a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255)
        return Image.fromarray(a.astype(np.uint8), mode="L")
    return load_image(image, mode="L")


def letterbox(image, size: int = 640) -> tuple[torch.Tensor, Letterbox]:
    """A page (path, PIL, numpy, tensor; dark ink on light paper) -> ``(1, size, size)`` ink-bright canvas.

    The aspect ratio is kept: the longer side becomes ``size``, the page is centred, the rest is blank
    paper (0). Returns the canvas and the :class:`Letterbox` that maps boxes back.
    """
    if size <= 0 or size % 32:
        raise ValueError(f"size must be a positive multiple of 32, got {size}")
    im = gray_page(image)
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


# -- IoU and NMS -------------------------------------------------------------------------------------------


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


# -- box coding ---------------------------------------------------------------------------------------------


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


# -- reading order -------------------------------------------------------------------------------------------


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
