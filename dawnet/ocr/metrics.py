"""OCR metrics: CER, WER, word and line accuracy, 1-NED (ICDAR 2019); detection mAP through pycocotools.

Text normalization is explicit and the same for every metric: :class:`Normalization` (default: NFC
and runs of whitespace collapsed to one space; case and punctuation count). Edit distances are
Levenshtein distances from rapidfuzz (characters for CER/NED, whitespace-separated words for WER).

- ``cer`` = total character edits / total reference characters (corpus level, as in IAM papers).
- ``wer`` = total word edits / total reference words.
- ``line_accuracy`` = fraction of lines read exactly; ``word_accuracy`` = fraction of reference words
  matched in the optimal (order-preserving) word alignment.
- ``one_minus_ned`` = 1 - mean over lines of ``edits / max(len(ref), len(hyp))`` (ICDAR 2019 ReCTS/LSVT/ArT).
- ``detection_map`` = COCO mAP@[.5:.95] and mAP@.5 for boxes, computed by ``pycocotools.COCOeval``.

Every function takes ``(refs, hyps)``. ``cer_counts``/``wer_counts``/``line_accuracy_counts`` give the
``(total, count)`` sums behind the rates, so batches and DDP ranks add up exactly; ``batch_cer``,
``batch_wer`` and ``batch_line_accuracy`` are the same sums in the :class:`dawnet.Agent` metric protocol
``(predictions, targets) -> (total, count)`` that the recognizer agents validate with.
"""

from __future__ import annotations

import contextlib
import io
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from rapidfuzz.distance import Levenshtein

__all__ = ["Normalization", "cer", "wer", "line_accuracy", "word_accuracy", "one_minus_ned", "text_metrics",
           "cer_counts", "wer_counts", "line_accuracy_counts", "batch_cer", "batch_wer", "batch_line_accuracy",
           "detection_map"]


@dataclass(frozen=True)
class Normalization:
    """How texts are normalized before scoring (state it next to any number you report).

    Args:
        casefold: compare case-insensitively (``str.casefold``).
        punctuation: ``"keep"`` or ``"remove"`` (Unicode punctuation category P*).
        whitespace: ``"keep"`` (every space counts), ``"collapse"`` (runs -> one space, ends stripped) or
            ``"remove"``.
    """

    casefold: bool = False
    punctuation: str = "keep"
    whitespace: str = "collapse"

    def __post_init__(self):
        if self.punctuation not in ("keep", "remove"):
            raise ValueError(f"punctuation must be 'keep' or 'remove', got {self.punctuation!r}")
        if self.whitespace not in ("keep", "collapse", "remove"):
            raise ValueError(f"whitespace must be 'keep', 'collapse' or 'remove', got {self.whitespace!r}")

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, got {type(text).__name__}")
        text = unicodedata.normalize("NFC", text)
        if self.casefold:
            text = text.casefold()
        if self.punctuation == "remove":
            text = "".join(c for c in text if not unicodedata.category(c).startswith("P") and
                           c not in string.punctuation)
        if self.whitespace == "collapse":
            text = " ".join(text.split())
        elif self.whitespace == "remove":
            text = "".join(text.split())
        return text

    def describe(self) -> str:
        return (f"NFC, case {'folded' if self.casefold else 'kept'}, punctuation {self.punctuation}, "
                f"whitespace {self.whitespace}")

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT = Normalization()


def _pairs(refs: Sequence[str], hyps: Sequence[str], norm: Normalization | None):
    if isinstance(refs, str) or isinstance(hyps, str):
        raise TypeError("pass lists of texts (refs, hyps), not single strings; wrap one pair as [ref], [hyp]")
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses: they must pair up line by line")
    norm = norm or DEFAULT
    return [norm(r) for r in refs], [norm(h) for h in hyps]


def cer_counts(refs: Sequence[str], hyps: Sequence[str], norm: Normalization | None = None) -> tuple[int, int]:
    """``(character edits, reference characters)`` summed over the lines."""
    refs, hyps = _pairs(refs, hyps, norm)
    return sum(Levenshtein.distance(r, h) for r, h in zip(refs, hyps)), sum(len(r) for r in refs)


def wer_counts(refs: Sequence[str], hyps: Sequence[str], norm: Normalization | None = None) -> tuple[int, int]:
    """``(word edits, reference words)`` summed over the lines (words = whitespace-separated)."""
    refs, hyps = _pairs(refs, hyps, norm)
    rw, hw = [r.split() for r in refs], [h.split() for h in hyps]
    return sum(Levenshtein.distance(r, h) for r, h in zip(rw, hw)), sum(len(r) for r in rw)


def line_accuracy_counts(refs: Sequence[str], hyps: Sequence[str], norm: Normalization | None = None
                         ) -> tuple[int, int]:
    """``(lines read exactly, lines)``."""
    refs, hyps = _pairs(refs, hyps, norm)
    return sum(r == h for r, h in zip(refs, hyps)), len(refs)


def cer(refs: Sequence[str], hyps: Sequence[str], norm: Normalization | None = None) -> float:
    """Character error rate: sum of edit distances / sum of reference lengths."""
    edits, total = cer_counts(refs, hyps, norm)
    if total == 0:
        raise ValueError("references hold no characters after normalization: CER is undefined")
    return edits / total


def wer(refs: Sequence[str], hyps: Sequence[str], norm: Normalization | None = None) -> float:
    """Word error rate: word-level edit distances / reference words (words = whitespace-separated)."""
    edits, total = wer_counts(refs, hyps, norm)
    if total == 0:
        raise ValueError("references hold no words after normalization: WER is undefined")
    return edits / total


def line_accuracy(refs: Sequence[str], hyps: Sequence[str], norm: Normalization | None = None) -> float:
    """Fraction of lines whose normalized hypothesis equals the normalized reference."""
    exact, total = line_accuracy_counts(refs, hyps, norm)
    if not total:
        raise ValueError("no lines to score")
    return exact / total


def _target_texts(targets) -> list[str]:
    """The reference texts of an Agent batch's targets: a list of texts or anything with ``.texts``."""
    return list(getattr(targets, "texts", targets))


def batch_cer(predictions: Sequence[str], targets) -> tuple[int, int]:
    """Agent metric ``(predictions, targets)``: :func:`cer_counts` of one batch (targets: texts or
    :class:`~dawnet.ocr.agents.LineTargets`)."""
    return cer_counts(_target_texts(targets), list(predictions))


def batch_wer(predictions: Sequence[str], targets) -> tuple[int, int]:
    """Agent metric ``(predictions, targets)``: :func:`wer_counts` of one batch."""
    return wer_counts(_target_texts(targets), list(predictions))


def batch_line_accuracy(predictions: Sequence[str], targets) -> tuple[int, int]:
    """Agent metric ``(predictions, targets)``: :func:`line_accuracy_counts` of one batch."""
    return line_accuracy_counts(_target_texts(targets), list(predictions))


def word_accuracy(refs: Sequence[str], hyps: Sequence[str], norm: Normalization | None = None) -> float:
    """Fraction of reference words matched in the optimal word alignment (order-preserving)."""
    refs, hyps = _pairs(refs, hyps, norm)
    total = matched = 0
    for r, h in zip(refs, hyps):
        rw, hw = r.split(), h.split()
        total += len(rw)
        ops = Levenshtein.opcodes(rw, hw)
        matched += sum(b2 - b1 for tag, b1, b2, _, _ in ops if tag == "equal")
    if total == 0:
        raise ValueError("references hold no words after normalization: word accuracy is undefined")
    return matched / total


def one_minus_ned(refs: Sequence[str], hyps: Sequence[str], norm: Normalization | None = None) -> float:
    """ICDAR 2019 1-N.E.D.: ``1 - mean(ED(r, h) / max(len(r), len(h)))`` (a pair of empty texts scores 1)."""
    refs, hyps = _pairs(refs, hyps, norm)
    if not refs:
        raise ValueError("no lines to score")
    total = 0.0
    for r, h in zip(refs, hyps):
        m = max(len(r), len(h))
        total += Levenshtein.distance(r, h) / m if m else 0.0
    return 1.0 - total / len(refs)


def text_metrics(refs: Sequence[str], hyps: Sequence[str], norm: Normalization | None = None) -> dict:
    """All text metrics in one dict, with the normalization stated (``"normalization"``)."""
    norm = norm or DEFAULT
    return {"cer": cer(refs, hyps, norm), "wer": wer(refs, hyps, norm),
            "word_accuracy": word_accuracy(refs, hyps, norm), "line_accuracy": line_accuracy(refs, hyps, norm),
            "one_minus_ned": one_minus_ned(refs, hyps, norm), "lines": len(refs),
            "normalization": norm.describe()}


def detection_map(ground_truth: Sequence, predictions: Sequence, num_classes: int = 1) -> dict:
    """COCO box mAP of predicted text lines against ground truth, through ``pycocotools.COCOeval``.

    Args:
        ground_truth: per image, boxes ``(N, 4)`` as ``x0, y0, x1, y1`` pixels, or a dict with ``boxes``
            and optional ``labels`` (class ids from 0).
        predictions: per image (same order), a dict with ``boxes``, ``scores`` and optional ``labels``.
        num_classes: number of classes.

    Returns ``{"map": mAP@[.5:.95], "map50": mAP@.5, "map75": ..., "mar100": ...}`` (-1 where COCO has
    nothing to score, e.g. no ground truth at all).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(ground_truth) != len(predictions):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(predictions)} prediction entries")

    def as_list(x, key):
        if x is None:
            return []
        x = x.tolist() if hasattr(x, "tolist") else x
        return [list(map(float, b)) for b in x] if key == "boxes" else list(x)

    images, anns, dets = [], [], []
    for i, (gt, pred) in enumerate(zip(ground_truth, predictions), start=1):
        gt = gt if isinstance(gt, dict) else {"boxes": gt}
        gboxes = as_list(gt.get("boxes"), "boxes")
        glabels = as_list(gt.get("labels"), "labels") or [0] * len(gboxes)
        w = max([b[2] for b in gboxes] + [1.0])
        h = max([b[3] for b in gboxes] + [1.0])
        images.append({"id": i, "width": int(w) + 1, "height": int(h) + 1})
        for b, c in zip(gboxes, glabels):
            bw, bh = b[2] - b[0], b[3] - b[1]
            if bw <= 0 or bh <= 0:
                raise ValueError(f"ground-truth box {b} of image {i - 1} has no area (expected x0 < x1, y0 < y1)")
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1, "bbox": [b[0], b[1], bw, bh],
                         "area": bw * bh, "iscrowd": 0})
        if not isinstance(pred, dict) or "boxes" not in pred or "scores" not in pred:
            raise ValueError(f"prediction {i - 1} must be a dict with 'boxes' and 'scores'")
        pboxes, scores = as_list(pred["boxes"], "boxes"), as_list(pred["scores"], "scores")
        plabels = as_list(pred.get("labels"), "labels") or [0] * len(pboxes)
        if not len(pboxes) == len(scores) == len(plabels):
            raise ValueError(f"prediction {i - 1}: boxes, scores and labels differ in length")
        for b, s, c in zip(pboxes, scores, plabels):
            dets.append({"image_id": i, "category_id": int(c) + 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         "score": float(s)})
    coco_gt = COCO()
    coco_gt.dataset = {"images": images, "annotations": anns,
                       "categories": [{"id": k + 1, "name": f"class{k}"} for k in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco_gt.createIndex()
        if not dets:
            return {"map": 0.0 if anns else -1.0, "map50": 0.0 if anns else -1.0,
                    "map75": 0.0 if anns else -1.0, "mar100": 0.0 if anns else -1.0}
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    return {"map": float(s[0]), "map50": float(s[1]), "map75": float(s[2]), "mar100": float(s[8])}
