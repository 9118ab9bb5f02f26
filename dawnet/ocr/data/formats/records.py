"""The records every reader returns and the error they raise; line and page images load through
:func:`dawnet.images.load_image`, so a 16-bit scan or an RGBA line reads as it shows."""

from __future__ import annotations

import io
import os
from collections import Counter
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from dawnet.atomic import atomic_write_bytes
from dawnet.images import ImageError, image_size, load_image

__all__ = ["FormatError", "LineRecord", "LineSet", "PageRecord", "Problems", "save_image", "check_on_error"]


class FormatError(ValueError):
    """A malformed input file; the message names the file (and line or element) and the fix."""


def check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


class Problems:
    """Collects malformed entries: raises at once (``on_error="raise"``) or counts them (``"skip"``).

    The message names the entry and the fix that works from the CLI too (which has no skip option).
    """

    def __init__(self, on_error: str = "raise"):
        check_on_error(on_error)
        self.on_error = on_error
        self.skipped: list[tuple[str, str]] = []  # (where, why)

    def __call__(self, where: str, why: str) -> None:
        if self.on_error == "raise":
            raise FormatError(f"{where}: {why}; fix or remove the entry")
        self.skipped.append((where, why))


_LMDB_ENVS: dict[tuple[str, int], object] = {}  # read-only environments per (LMDB path, process id)


def lmdb_env(path: str):
    """The read-only environment of ``path`` for this process (lmdb allows one per process; a forked
    DataLoader worker must not reuse its parent's)."""
    key = (os.path.abspath(path), os.getpid())
    env = _LMDB_ENVS.get(key)
    if env is None:
        import lmdb

        try:
            env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False)
        except lmdb.Error as e:
            raise FormatError(lmdb_problem(path, e)) from None
        _LMDB_ENVS[key] = env
    return env


def lmdb_problem(path: str, error: Exception) -> str:
    """The one-line message for an ``lmdb.Error`` on the LMDB folder ``path``."""
    reason = str(error).split(": ", 1)[-1].strip() or type(error).__name__
    return (f"{os.path.join(path, 'data.mdb')} is not a readable LMDB database ({reason}); rebuild it with "
            "write_lmdb, or move data.mdb away so the folder is read as image files")


def close_lmdb_env(path: str) -> None:
    env = _LMDB_ENVS.pop((os.path.abspath(path), os.getpid()), None)
    if env is not None:
        env.close()


def _lmdb_get(path: str, key: str) -> bytes:
    import lmdb

    try:
        with lmdb_env(path).begin() as txn:
            data = txn.get(key.encode())
    except lmdb.Error as e:
        raise FormatError(lmdb_problem(path, e)) from None
    if data is None:
        raise FormatError(f"{path}: key {key} is missing from the LMDB")
    return data


@dataclass
class LineRecord:
    """One text line: its transcription and where its pixels are.

    ``path`` is the line image, or the page image when ``box``/``polygon`` say where the line is
    (PAGE XML, ALTO, IAM forms); ``lmdb_key`` points into an LMDB at ``path``. ``source`` names the
    file and line/element the record came from, for error messages.
    """

    text: str
    path: str
    box: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in the page image
    polygon: list[tuple[float, float]] | None = None
    baseline: list[tuple[float, float]] | None = None
    lmdb_key: str | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def load(self) -> Image.Image:
        """The line image in 8-bit grey (``L``, read by :func:`dawnet.images.load_image`); a page-level line is
        cropped, outside its polygon set to white."""
        im = self._read(load_image)
        box = self._region(im.size)
        if box is None:
            return im
        crop = im.crop(box)
        if self.polygon is not None:
            x0, y0 = box[:2]
            mask = Image.new("L", crop.size, 0)
            ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in self.polygon], fill=255)
            crop = Image.composite(crop, Image.new("L", crop.size, 255), mask)
        return crop

    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the image :meth:`load` returns, from the image header alone (no pixels)."""
        size = self._read(image_size)
        box = self._region(size)
        return size if box is None else (box[2] - box[0], box[3] - box[1])

    def _read(self, reader):
        where = f"{self.path}[{self.lmdb_key}]" if self.lmdb_key else self.path
        try:
            return reader(_lmdb_get(self.path, self.lmdb_key) if self.lmdb_key is not None else self.path,
                          name=where)
        except FileNotFoundError:
            raise FormatError(f"{self.source or self.path}: image not found: {self.path}") from None
        except ImageError as e:
            raise FormatError(f"{self.source or where}: unreadable image {where}: {e.reason}") from None

    def _region(self, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """The crop box of a page-level line inside a page of ``size`` (None for a line image)."""
        if self.polygon is not None:
            xs, ys = [p[0] for p in self.polygon], [p[1] for p in self.polygon]
            box = (int(min(xs)), int(min(ys)), int(max(xs)) + 1, int(max(ys)) + 1)
        elif self.box is not None:
            box = self.box
        else:
            return None
        x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], size[0]), min(box[3], size[1])
        if x1 <= x0 or y1 <= y0:
            raise FormatError(f"{self.source}: line region {box} lies outside the {size} page image")
        return x0, y0, x1, y1


@dataclass
class LineSet:
    """Records read from a source plus what was skipped (``(where, why)``), so nothing is dropped silently."""

    records: list[LineRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def __iter__(self):
        return iter(self.records)

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.records]

    def summary(self) -> str:
        reasons = Counter(why.split(":")[0] for _, why in self.skipped)
        skipped = ", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "none"
        return f"{len(self.records)} lines from {self.source}; skipped: {skipped}"


@dataclass
class PageRecord:
    """A page image and its text-line boxes (``x0, y0, x1, y1`` pixels), classes and transcriptions."""

    path: str
    width: int
    height: int
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)
    source: str = ""

    def load(self) -> Image.Image:
        """The page image in 8-bit grey (``L``, read by :func:`dawnet.images.load_image`)."""
        try:
            return load_image(self.path)
        except FileNotFoundError:
            raise FormatError(f"{self.source or self.path}: image not found: {self.path}") from None
        except ImageError as e:
            raise FormatError(f"{self.source or self.path}: unreadable image {self.path}: {e.reason}") from None


def save_image(image: Image.Image, path: str | os.PathLike) -> bytes:
    """Save as PNG (fixed compression, so bytes are reproducible), atomically; returns the bytes written."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return data


def open_header(path: str) -> str | None:
    """None if ``path`` opens as an image (header only, cheap), else the reason it does not."""
    try:
        image_size(path)
        return None
    except FileNotFoundError:
        return "image not found"
    except ImageError as e:
        return f"unreadable image: {e.reason}"
