"""Line-image formats: folders of ``*.png`` + ``*.gt.txt``, TSV manifests, IAM ``lines.txt``; writers."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from dawnet.atomic import atomic_write_text
from dawnet.ocr.charset import normalize
from dawnet.ocr.data.formats.records import FormatError, LineRecord, LineSet, Problems, open_header, save_image

__all__ = ["read_folder", "read_tsv", "read_iam_lines", "write_folder", "write_tsv", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _check_text(text: str, where: str, problems: Problems) -> str | None:
    text = normalize(text)
    if not text.strip():
        problems(where, "empty transcription")
        return None
    if "\n" in text or "\r" in text or "\t" in text:
        problems(where, "transcription spans several lines or holds a tab (a line record is one line)")
        return None
    return text


def read_folder(folder: str | os.PathLike, on_error: str = "raise", check_images: bool = True) -> LineSet:
    """Line images with a ``<stem>.gt.txt`` beside each (OCR-D / kraken / Tesseract training layout).

    Searched recursively, sorted by path. An image without a transcription, a transcription without
    an image, an empty or multi-line transcription, or an unreadable image is an error naming the file
    (or, with ``on_error="skip"``, is skipped and counted in ``.skipped``).
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"line folder not found: {root}")
    problems = Problems(on_error)
    images = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            images[str(p.with_suffix(""))] = p
    gts = {str(p)[: -len(".gt.txt")]: p for p in sorted(root.rglob("*.gt.txt"))}
    records = []
    for stem, img in images.items():
        gt = gts.get(stem)
        if gt is None:
            problems(str(img), f"no transcription: expected {Path(stem).name}.gt.txt beside it")
            continue
        try:
            raw = gt.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            problems(str(gt), f"not UTF-8 text: {e}")
            continue
        text = _check_text(raw.rstrip("\r\n"), f"{gt}:1", problems)
        if text is None:
            continue
        if check_images and (why := open_header(str(img))):
            problems(str(img), why)
            continue
        records.append(LineRecord(text=text, path=str(img), source=f"{gt}:1"))
    for stem, gt in gts.items():
        if stem not in images:
            problems(str(gt), f"transcription without an image: expected {Path(stem).name}.png beside it")
    if not records and not problems.skipped:
        raise FileNotFoundError(f"no line images with .gt.txt transcriptions under {root}")
    return LineSet(records, problems.skipped, source=str(root))


def read_tsv(path: str | os.PathLike, on_error: str = "raise", check_images: bool = True,
             root: str | os.PathLike | None = None) -> LineSet:
    """A TSV manifest, one ``image_path<TAB>text`` per line; relative paths are relative to ``root``
    (default: the TSV's folder). An optional first row ``path<TAB>text`` is a header. Extra
    columns are kept in ``record.meta['columns']``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TSV manifest not found: {path}")
    base = Path(root) if root is not None else path.parent
    problems = Problems(on_error)
    records = []
    with open(path, encoding="utf-8", newline="") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if n == 1 and [c.strip().lower() for c in cols[:2]] == ["path", "text"]:
                continue
            where = f"{path}:{n}"
            if len(cols) < 2:
                problems(where, "expected 'image_path<TAB>text'; found no tab")
                continue
            text = _check_text(cols[1], where, problems)
            if text is None:
                continue
            img = cols[0] if os.path.isabs(cols[0]) else str(base / cols[0])
            if check_images and (why := open_header(img)):
                problems(where, f"{why}: {img}")
                continue
            records.append(LineRecord(text=text, path=img, source=where, meta={"columns": cols[2:]} if
                                      len(cols) > 2 else {}))
    return LineSet(records, problems.skipped, source=str(path))


def read_iam_lines(lines_txt: str | os.PathLike, images_dir: str | os.PathLike | None = None,
                   on_error: str = "raise", skip_err: bool = False, check_images: bool = True) -> LineSet:
    """IAM Handwriting Database lines: ``ascii/lines.txt`` + the ``lines/`` image tree.

    A row reads ``a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell``: id, segmentation
    status, gray level, components, bounding box, words joined by ``|`` (read as spaces). The image is
    ``<images_dir>/a01/a01-000u/a01-000u-00.png``; ``images_dir`` defaults to a ``lines`` folder beside
    or above ``lines.txt``. ``skip_err`` leaves out lines whose segmentation IAM marks ``err``.
    """
    lines_txt = Path(lines_txt)
    if not lines_txt.is_file():
        raise FileNotFoundError(f"IAM lines.txt not found: {lines_txt}")
    if images_dir is None:
        for cand in (lines_txt.parent / "lines", lines_txt.parent.parent / "lines"):
            if cand.is_dir():
                images_dir = cand
                break
        else:
            raise FileNotFoundError(f"no 'lines' image folder beside or above {lines_txt}; pass images_dir")
    images_dir = Path(images_dir)
    problems = Problems(on_error)
    records = []
    with open(lines_txt, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            where = f"{lines_txt}:{n}"
            fields = line.split(" ")
            if len(fields) < 9:
                problems(where, f"expected 9 fields (id status gray components x y w h text), got {len(fields)}")
                continue
            line_id, status = fields[0], fields[1]
            if status not in ("ok", "err"):
                problems(where, f"segmentation status must be 'ok' or 'err', got {status!r}")
                continue
            if skip_err and status == "err":
                continue
            parts = line_id.split("-")
            if len(parts) < 3:
                problems(where, f"malformed line id {line_id!r} (expected like a01-000u-00)")
                continue
            text = _check_text(" ".join(fields[8:]).replace("|", " "), where, problems)
            if text is None:
                continue
            img = images_dir / parts[0] / f"{parts[0]}-{parts[1]}" / f"{line_id}.png"
            if check_images and (why := open_header(str(img))):
                problems(where, f"{why}: {img}")
                continue
            records.append(LineRecord(text=text, path=str(img), source=where,
                                      meta={"id": line_id, "status": status}))
    return LineSet(records, problems.skipped, source=str(lines_txt))


def _name(i: int, name: str | None) -> str:
    return name if name else f"{i:06d}"


def write_folder(samples: Iterable[tuple[Image.Image, str]], out_dir: str | os.PathLike,
                 names: Iterable[str] | None = None) -> list[str]:
    """Write ``<name>.png`` + ``<name>.gt.txt`` per ``(image, text)``; returns the image paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = iter(names) if names is not None else None
    paths = []
    for i, (image, text) in enumerate(samples):
        name = _name(i, next(names) if names is not None else None)
        if not text.strip() or "\n" in text:
            raise FormatError(f"sample {name}: transcription must be one non-empty line, got {text!r}")
        save_image(image, out / f"{name}.png")
        atomic_write_text(out / f"{name}.gt.txt", normalize(text) + "\n")
        paths.append(str(out / f"{name}.png"))
    return paths


def write_tsv(samples: Iterable[tuple[Image.Image, str]], out_dir: str | os.PathLike,
              tsv_name: str = "labels.tsv", image_dir: str = "images") -> Path:
    """Write images under ``out_dir/image_dir`` and a ``path<TAB>text`` manifest (relative paths)."""
    out = Path(out_dir)
    rows = []
    for i, (image, text) in enumerate(samples):
        if not text.strip() or any(c in text for c in "\t\n\r"):
            raise FormatError(f"sample {i}: transcription must be one non-empty line without tabs: {text!r}")
        rel = f"{image_dir}/{i:06d}.png"
        save_image(image, out / rel)
        rows.append(f"{rel}\t{normalize(text)}\n")
    atomic_write_text(out / tsv_name, "".join(rows))
    return out / tsv_name


def write_tsv_rows(rows: Iterable[tuple[str, str]], path: str | os.PathLike) -> None:
    """Write ``(relative_path, text)`` rows as a TSV manifest, atomically."""
    lines = []
    for rel, text in rows:
        if any(c in text for c in "\t\n\r") or not text.strip():
            raise FormatError(f"{rel}: transcription must be one non-empty line without tabs: {text!r}")
        lines.append(f"{rel}\t{text}\n")
    atomic_write_text(path, "".join(lines))
