"""Detection labels: YOLO txt and COCO JSON, with each line's transcription kept beside its box.

YOLO layout (Ultralytics): ``images/<name>.png``, ``labels/<name>.txt`` with ``class cx cy w h`` rows
normalized to [0, 1], ``classes.txt``; transcriptions in ``texts/<name>.txt``, one per label row.
COCO: one JSON with ``images``, ``annotations`` (``bbox`` = ``[x, y, w, h]`` pixels, plus a ``text``
field) and ``categories`` (ids from 1; YOLO class ``k`` is COCO category ``k + 1``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from dawnet.atomic import atomic_write_text
from dawnet.images import ImageError, image_size
from dawnet.ocr.data.formats.lines import IMAGE_SUFFIXES
from dawnet.ocr.data.formats.records import FormatError, PageRecord, Problems, open_header

__all__ = ["write_yolo_labels", "read_yolo", "write_coco", "read_coco", "CLASSES", "coco_dict"]

CLASSES = ("text_line",)


def write_yolo_labels(page: PageRecord, labels_dir: str | os.PathLike, texts_dir: str | os.PathLike | None = None,
                      name: str | None = None) -> Path:
    """Write one page's boxes as a YOLO label file (and its transcriptions); returns the label path."""
    name = name or Path(page.path).stem
    rows = []
    for (x0, y0, x1, y1), cls in zip(page.boxes, page.classes or [0] * len(page.boxes)):
        cx, cy = (x0 + x1) / 2 / page.width, (y0 + y1) / 2 / page.height
        w, h = (x1 - x0) / page.width, (y1 - y0) / page.height
        rows.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    label = Path(labels_dir) / f"{name}.txt"
    atomic_write_text(label, "".join(rows))
    if texts_dir is not None:
        atomic_write_text(Path(texts_dir) / f"{name}.txt", "".join(t + "\n" for t in page.texts))
    return label


def read_yolo(root: str | os.PathLike, on_error: str = "raise", check_images: bool = True) -> list[PageRecord]:
    """Pages of a YOLO folder (``images/``, ``labels/``, optional ``texts/``); an image without a label
    file has no boxes (the YOLO convention). Bad rows are errors naming the file and line. Each image's
    header is read for its size (EXIF rotation applied, as the labels are), so an unreadable image is a
    problem whatever ``check_images`` says."""
    root = Path(root)
    images_dir, labels_dir, texts_dir = root / "images", root / "labels", root / "texts"
    if not images_dir.is_dir():
        raise FileNotFoundError(f"no images/ folder under {root} (YOLO layout: images/, labels/)")
    problems = Problems(on_error)
    pages = []
    for img in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            width, height = image_size(img)
        except ImageError as e:
            problems(str(img), f"unreadable image: {e.reason}")
            continue
        page = PageRecord(path=str(img), width=width, height=height, source=str(img))
        label = labels_dir / f"{img.stem}.txt"
        ok = True
        if label.is_file():
            for n, line in enumerate(label.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                parts = line.split()
                try:
                    if len(parts) != 5:
                        raise ValueError(f"expected 'class cx cy w h', got {len(parts)} fields")
                    cls, (cx, cy, w, h) = int(parts[0]), map(float, parts[1:])
                    if not all(0 <= v <= 1 for v in (cx, cy, w, h)) or w <= 0 or h <= 0 or cls < 0:
                        raise ValueError("coordinates must be normalized to [0, 1] with w, h > 0")
                except ValueError as e:
                    problems(f"{label}:{n}", str(e))
                    ok = False
                    break
                page.boxes.append(((cx - w / 2) * width, (cy - h / 2) * height,
                                   (cx + w / 2) * width, (cy + h / 2) * height))
                page.classes.append(cls)
        if not ok:
            continue
        text_file = texts_dir / f"{img.stem}.txt"
        if text_file.is_file():
            texts = text_file.read_text(encoding="utf-8").splitlines()
            if len(texts) != len(page.boxes):
                problems(str(text_file), f"{len(texts)} transcriptions for {len(page.boxes)} boxes in {label}")
                continue
            page.texts = texts
        pages.append(page)
    return pages


def coco_dict(pages: Iterable[PageRecord], root: str | os.PathLike, classes: tuple[str, ...] = CLASSES) -> dict:
    """The COCO JSON object for ``pages`` (image paths made relative to ``root``)."""
    images, annotations = [], []
    for image_id, page in enumerate(pages, start=1):
        images.append({"id": image_id, "file_name": os.path.relpath(page.path, root),
                       "width": page.width, "height": page.height})
        texts = page.texts or [""] * len(page.boxes)
        for (x0, y0, x1, y1), cls, text in zip(page.boxes, page.classes or [0] * len(page.boxes), texts):
            w, h = x1 - x0, y1 - y0
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1,
                                "bbox": [round(x0, 2), round(y0, 2), round(w, 2), round(h, 2)],
                                "area": round(w * h, 2), "iscrowd": 0, "text": text})
    return {"info": {"description": "dawnet text-line detection", "version": "1"},
            "images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n, "supercategory": "text"} for i, n in enumerate(classes)]}


def write_coco(pages: Iterable[PageRecord], json_path: str | os.PathLike,
               classes: tuple[str, ...] = CLASSES) -> Path:
    """Write ``pages`` as one COCO JSON (atomic); image paths are stored relative to the JSON's folder."""
    json_path = Path(json_path)
    atomic_write_text(json_path, json.dumps(coco_dict(pages, json_path.parent, classes), indent=1))
    return json_path


def read_coco(json_path: str | os.PathLike, on_error: str = "raise", check_images: bool = True) -> list[PageRecord]:
    """Pages of a COCO JSON (boxes ``x0, y0, x1, y1``, classes from 0, ``text`` when present)."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"COCO JSON not found: {json_path}")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise FormatError(f"{json_path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from None
    for key in ("images", "annotations"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise FormatError(f"{json_path}: missing the '{key}' list; not a COCO detection file")
    problems = Problems(on_error)
    pages: dict[int, PageRecord] = {}
    for k, im in enumerate(data["images"]):
        where = f"{json_path}: images[{k}]"
        try:
            path = im["file_name"]
            path = path if os.path.isabs(path) else str(json_path.parent / path)
            page = PageRecord(path=path, width=int(im["width"]), height=int(im["height"]), source=where)
            image_id = im["id"]
        except (KeyError, TypeError, ValueError) as e:
            problems(where, f"needs id, file_name, width, height ({e!r})")
            continue
        if check_images and (why := open_header(path)):
            problems(where, f"{why}: {path}")
            continue
        pages[image_id] = page
    bad_pages = set()
    for k, ann in enumerate(data["annotations"]):
        where = f"{json_path}: annotations[{k}]"
        try:
            page = pages.get(ann["image_id"])
            x, y, w, h = (float(v) for v in ann["bbox"])
            cls = int(ann.get("category_id", 1)) - 1
        except (KeyError, TypeError, ValueError) as e:
            problems(where, f"needs image_id and bbox [x, y, w, h] ({e!r})")
            continue
        if page is None:
            continue  # its image was skipped (or the id is unknown): counted above / below
        if w <= 0 or h <= 0:
            problems(where, f"bbox {ann['bbox']} has no area")
            bad_pages.add(ann["image_id"])
            continue
        page.boxes.append((x, y, x + w, y + h))
        page.classes.append(cls)
        page.texts.append(str(ann.get("text", "")))
    unknown = {a.get("image_id") for a in data["annotations"] if isinstance(a, dict)} - {
        im.get("id") for im in data["images"] if isinstance(im, dict)}
    if unknown:
        problems(str(json_path), f"annotations refer to unknown image ids {sorted(unknown)[:5]}")
    return [p for i, p in pages.items() if i not in bad_pages]
