"""The data set the inspector picks images from: line data for recognizers, image files for other models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from dawnet.images import load_image
from dawnet.inspector.errors import InspectorError

__all__ = ["Sample", "open_samples", "image_files", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


@dataclass
class Sample:
    """One data set item: a name to show, its label (text or class) and how to load its pixels."""

    name: str
    label: str
    loader: Any  # () -> PIL image

    def load(self) -> Image.Image:
        return self.loader()


def image_files(root: Path, limit: int) -> list[Path]:
    """The first ``limit`` image files under ``root`` (sorted, any depth), by suffix."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            out.append(p)
            if len(out) >= limit:
                break
    return out


def open_samples(
    data: str | Path, recognizer: bool, limit: int = 5000, split: str | None = None
) -> list[Sample]:
    """The samples of a data folder: line data (any format ``dawnet.ocr.data.formats.read_lines`` reads, or
    a built data set's ``split``) for recognizers, image files (label: their folder) for other models."""
    root = Path(data)
    if not root.is_dir():
        raise InspectorError(f"the data folder {root} does not exist or is not a folder")
    if recognizer:
        from dawnet.ocr.data.formats import read_lines

        source = root
        if not (root / "labels.tsv").is_file() and not any(root.glob("*.gt.txt")):
            splits = [split] if split else ["val", "test", "train"]
            for s in splits:
                if (root / s / "labels.tsv").is_file():
                    source = root / s
                    break
        try:
            lines = read_lines(source, on_error="skip")
        except (ValueError, OSError) as e:
            raise InspectorError(f"cannot read line data from {source}: {e}") from None
        records = lines.records[:limit]
        if records:
            return [
                Sample(Path(r.path).name + (f"[{r.lmdb_key}]" if r.lmdb_key else ""), r.text, r.load)
                for r in records
            ]
    files = image_files(root, limit)
    if not files:
        raise InspectorError(
            f"no images found in {root}: give a folder of line data (png + gt.txt, labels.tsv, "
            "PAGE XML, ALTO, LMDB) or of image files"
        )
    return [
        Sample(
            str(p.relative_to(root)), p.parent.name if p.parent != root else "", (lambda p=p: load_image(p, mode=None))
        )
        for p in files
    ]
