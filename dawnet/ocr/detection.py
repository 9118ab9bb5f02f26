"""Text-line detection around the YOLO model: target assignment, the loss, decoding with NMS, and the
detection :class:`~dawnet.Agent` (mAP in validation through pycocotools).

The model (:mod:`dawnet.ocr.models.yolo`) predicts, at every stride-8 grid point, an objectness logit and
the log distances to the four edges of the line it lies in. A point is a positive for a line when it lies
inside the line's box, or within half a stride of its centre row/column for lines thinner than a stride,
so every line gets at least one row of positives however thin it is (thin lines are never missed for
want of a grid point); where lines overlap, the smaller box wins. Loss: binary cross-entropy on the
objectness of every point plus GIoU on the positives' boxes, both normalized by the number of positives.

Box geometry (letterbox, IoU, NMS, box coding, reading order) is in :mod:`dawnet.ocr.boxes`, the training
data (augmentation, dataset, loader) in :mod:`dawnet.ocr.detection_data`; their names are importable from
here too.

    agent = DetectionAgent(create_model("yolo"), torch.optim.AdamW(model.parameters(), 2e-3), size=640)
    agent.fit(loader(train_pages, augment=DetectionAugment()), epochs=30, val=loader(val_pages))
    agent.infer("page.png")   # -> {"boxes": (K, 4) page pixels, top to bottom, "scores": (K,)}
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from dawnet import parallel
from dawnet.agent import Agent
from dawnet.ocr.boxes import (
    Letterbox,
    batched_nms,
    box_iou,
    decode_ltrb,
    encode_ltrb,
    gray_page,
    grid_points,
    letterbox,
    letterbox_boxes,
    nms,
    order_lines,
    unletterbox_boxes,
)
from dawnet.ocr.detection_data import DetectionAugment, DetectionDataset, collate_detection, detection_loader

__all__ = [
    "Letterbox",
    "gray_page",
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
    "load_detector",
    "order_lines",
]

MAX_LOG_DISTANCE = 8.0  # exp(8) * stride 8 = 23,800 px: no line is longer; keeps exp finite early in training


# -- the loss -------------------------------------------------------------------------------------------------


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

    kind = "detection"

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

    def predict(self, outputs, inputs=()) -> list[dict]:
        return decode_detections(outputs, self.stride, self.eval_threshold, self.iou_threshold, self.max_det,
                                 vote_threshold=self.vote_threshold)

    # evaluate(): the Agent's loop with the loss summed as usual; mAP is not a sum over batches, so every
    # page's ground truth and detections are kept and scored once at the end (gathered from every DDP rank)

    def evaluation_state(self):
        state = super().evaluation_state()
        state.gts, state.preds = [], []
        return state

    def update_evaluation(self, state, outputs, targets, inputs) -> None:
        super().update_evaluation(state, outputs, targets, inputs)
        state.gts += [t.cpu() for t in targets]
        state.preds += self.predict(outputs, inputs)

    def finish_evaluation(self, state) -> dict:
        """Loss and COCO mAP (``map``, ``map50``, ``map75``, ``mar100``) over every evaluated page."""
        from dawnet.ocr.metrics import detection_map

        result = super().finish_evaluation(state)
        gathered = parallel.all_gather_objects((state.gts, state.preds))
        gts = [g for rank_gts, _ in gathered for g in rank_gts]
        preds = [p for _, rank_preds in gathered for p in rank_preds]
        result.update(detection_map([g.numpy() for g in gts], preds))
        return result

    def prepare(self, raw) -> tuple:
        canvas, self._letterbox = letterbox(raw, self.size)
        return (canvas[None],)

    def postprocess(self, outputs, inputs=()) -> dict:
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
