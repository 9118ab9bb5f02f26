"""Page OCR: detect the text lines of a page, crop them, read them, and give the text top to bottom.

    result = read_page("page.png", detector="runs/yolo.pt", recognizer="runs/crnn.pt")
    print(result.text)                  # one line of text per detected line, in reading order
    result.lines[0].box, .score, .text  # page pixels, detector score, recognized text

``evaluate_pages`` scores the pipeline on pages with ground truth (the synthetic pages keep each line's
transcription): page CER (the page's lines joined in reading order against the true lines in reading order,
so a missed, split or doubled line costs its characters) next to the recognizer's line CER on the
ground-truth boxes of the same lines, which isolates what detection costs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

__all__ = [
    "PageLine",
    "PageResult",
    "read_page",
    "crop_lines",
    "recognize_crops",
    "evaluate_pages",
    "CROP_PAD",
]

CROP_PAD = (0.15, 0.12)  # crop margin around a tight line box, as a fraction of its height (x, y): the
# recognizers were trained on lines with a few pixels of paper around the ink


@dataclass
class PageLine:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 page pixels
    score: float
    text: str
    confidences: tuple[float, ...] = ()  # the recognizer's probability of each character (Reading.confidences)


@dataclass
class PageResult:
    lines: list[PageLine] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)  # detect, recognize
    skipped: list[str] = field(default_factory=list)  # boxes that could not be read as a line, and why

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "lines": [
                {"box": [round(v, 1) for v in ln.box], "score": round(ln.score, 4), "text": ln.text}
                for ln in self.lines
            ],
            "seconds": self.seconds,
            "skipped": self.skipped,
        }


def _agent(obj, kind: str):
    if isinstance(obj, (str, os.PathLike)):
        if kind == "detector":
            from dawnet.ocr.detection import load_detector

            return load_detector(obj)
        from dawnet.ocr.reading import load_recognizer

        return load_recognizer(obj)
    return obj


def crop_lines(page: Image.Image, boxes, pad: tuple[float, float] = CROP_PAD) -> list[Image.Image]:
    """Crops of ``boxes`` (page pixels) from ``page``, widened by ``pad`` x their height, clipped."""
    crops = []
    for x0, y0, x1, y1 in torch.as_tensor(boxes).reshape(-1, 4).tolist():
        h = y1 - y0
        box = (
            max(0, int(x0 - pad[0] * h)),
            max(0, int(y0 - pad[1] * h)),
            min(page.width, int(round(x1 + pad[0] * h))),
            min(page.height, int(round(y1 + pad[1] * h))),
        )
        crops.append(page.crop(box))
    return crops


def recognize_crops(
    recognizer, crops: Sequence[Image.Image], batch_size: int = 16
) -> tuple[list[str | None], list]:
    """Texts of line crops, read in width-sorted padded batches; None (and why) where a crop is no line."""
    return _read_crops(recognizer, crops, batch_size)[:2]


def _read_crops(recognizer, crops: Sequence[Image.Image], batch_size: int):
    """Texts (None where a crop is no line), ``(index, why)`` for those, and ``{index: Reading}`` of the others."""
    from dawnet.ocr.agents import LineImageError, prepare_line

    lines, index, errors = [], [], []
    for i, crop in enumerate(crops):
        try:
            lines.append(prepare_line(crop, recognizer.height, recognizer.model.min_width)[0])
            index.append(i)
        except LineImageError as e:
            errors.append((i, str(e)))
    texts: list[str | None] = [None] * len(crops)
    readings = recognizer.read_lines(lines, batch_size) if lines else []
    for i, reading in zip(index, readings):
        texts[i] = reading.text
    return texts, errors, dict(zip(index, readings))


def read_page(
    page, detector, recognizer, batch_size: int = 16, pad: tuple[float, float] = CROP_PAD
) -> PageResult:
    """Detect, crop and read the lines of one page.

    Args:
        page: a path, PIL image or numpy array of the page (dark ink on light paper; colour is made grey).
        detector: a :class:`~dawnet.ocr.detection.DetectionAgent` or the path of its checkpoint.
        recognizer: a CTC or attention agent (``dawnet.ocr.agents``) or its checkpoint's path; its decoder
            settings (beam, LM) are used as they are.
        batch_size: lines read per batch.
        pad: crop margin around each box, as a fraction of the line height (x, y).

    Returns a :class:`PageResult`: lines in reading order (top to bottom, left to right within a row).
    """
    from dawnet.ocr.boxes import gray_page

    detector, recognizer = _agent(detector, "detector"), _agent(recognizer, "recognizer")
    im = gray_page(page)
    t0 = time.perf_counter()
    det = detector.infer(im)
    t1 = time.perf_counter()
    crops = crop_lines(im, det["boxes"], pad)
    texts, errors, readings = _read_crops(recognizer, crops, batch_size)
    t2 = time.perf_counter()
    result = PageResult(seconds={"detect": t1 - t0, "recognize": t2 - t1})
    for i, (box, score) in enumerate(zip(det["boxes"].tolist(), det["scores"].tolist())):
        if i in readings:
            result.lines.append(PageLine(tuple(box), float(score), readings[i].text, readings[i].confidences))
    result.skipped = [f"box {[round(v) for v in det['boxes'][i].tolist()]}: {why}" for i, why in errors]
    return result


def evaluate_pages(
    detector, recognizer, pages, limit: int | None = None, batch_size: int = 16, progress: bool = True
) -> dict:
    """Page CER of detect + read on pages with transcriptions, beside the line CER on the true boxes.

    ``pages``: :class:`~dawnet.ocr.data.PageRecord` list, a COCO JSON or a YOLO folder (with texts). Returns
    ``page_cer``, ``page_wer`` (pages joined line by line in reading order), ``line_cer_gt_boxes`` and
    ``line_wer_gt_boxes`` (the recognizer on the ground-truth crops of the same lines), line counts, and
    seconds per page.
    """
    from tqdm.auto import tqdm

    from dawnet.ocr.boxes import order_lines
    from dawnet.ocr.metrics import cer, text_metrics, wer

    if isinstance(pages, (str, os.PathLike)):
        from pathlib import Path

        from dawnet.ocr.data.formats import read_coco, read_yolo

        pages = read_coco(pages) if Path(pages).suffix == ".json" else read_yolo(pages)
    pages = list(pages)[:limit] if limit else list(pages)
    if not pages:
        raise ValueError("no pages to evaluate")
    if any(len(p.texts) != len(p.boxes) or not any(t.strip() for t in p.texts) for p in pages):
        raise ValueError(
            "evaluate_pages needs a transcription for every box (the synthetic pages have them, in "
            "COCO 'text' fields or YOLO texts/*.txt)"
        )
    detector, recognizer = _agent(detector, "detector"), _agent(recognizer, "recognizer")
    page_refs, page_hyps, line_refs, line_hyps = [], [], [], []
    detected = truth = 0
    seconds = 0.0
    for p in tqdm(pages, desc="pages", unit="page", disable=not progress, leave=False):
        im = p.load()
        gt = torch.tensor(p.boxes, dtype=torch.float32).reshape(-1, 4)
        order = order_lines(gt).tolist()
        refs = [p.texts[i] for i in order]
        start = time.perf_counter()
        result = read_page(im, detector, recognizer, batch_size)
        seconds += time.perf_counter() - start
        page_refs.append("\n".join(refs))
        page_hyps.append(result.text)
        detected += len(result.lines)
        truth += len(refs)
        texts, _ = recognize_crops(recognizer, crop_lines(im, gt[order]), batch_size)
        line_refs += refs
        line_hyps += [t or "" for t in texts]
    lines = text_metrics(line_refs, line_hyps)
    return {
        "page_cer": cer(page_refs, page_hyps),
        "page_wer": wer(page_refs, page_hyps),
        "line_cer_gt_boxes": lines["cer"],
        "line_wer_gt_boxes": lines["wer"],
        "pages": len(pages),
        "lines": truth,
        "detected_lines": detected,
        "seconds_per_page": seconds / len(pages),
    }
