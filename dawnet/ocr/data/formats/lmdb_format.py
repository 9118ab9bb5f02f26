"""LMDB in the scene-text benchmark layout (clovaai/deep-text-recognition-benchmark, ``create_lmdb_dataset``).

Keys: ``num-samples`` (decimal count), ``image-%09d`` (encoded image bytes) and ``label-%09d`` (UTF-8
text), indices starting at 1. ``lmdb`` is an optional dependency (``pip install lmdb``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from dawnet.images import ImageError, image_size
from dawnet.ocr.charset import normalize
from dawnet.ocr.data.formats.records import (
    FormatError,
    LineRecord,
    LineSet,
    Problems,
    close_lmdb_env,
    lmdb_env,
    lmdb_problem,
)

__all__ = ["read_lmdb", "write_lmdb"]


def _lmdb():
    try:
        import lmdb
    except ModuleNotFoundError:
        raise ModuleNotFoundError("reading/writing LMDB needs the lmdb package. Fix: pip install lmdb") from None
    return lmdb


def read_lmdb(path: str | os.PathLike, on_error: str = "raise", check_images: bool = True) -> LineSet:
    """Records of an LMDB folder; images stay in the database and are read on ``record.load()``.

    A ``data.mdb`` that is not an LMDB database (or is damaged) raises :class:`FormatError` naming it.
    """
    lmdb = _lmdb()
    path = str(path)
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "data.mdb")):
        raise FileNotFoundError(f"no LMDB at {path} (expected a folder with data.mdb)")
    problems = Problems(on_error)
    env = lmdb_env(path)
    try:
        records = _records(env, path, problems, check_images)
    except lmdb.Error as e:
        close_lmdb_env(path)
        raise FormatError(lmdb_problem(path, e)) from None
    return LineSet(records, problems.skipped, source=path)


def _records(env, path: str, problems: Problems, check_images: bool) -> list[LineRecord]:
    records = []
    with env.begin() as txn:  # the environment stays open for record.load()
        raw = txn.get(b"num-samples")
        try:
            n = int(raw.decode()) if raw is not None else None
        except ValueError:
            n = None
        if n is None:
            raise FormatError(f"{path}: 'num-samples' is missing or not a number; not a scene-text LMDB")
        for i in range(1, n + 1):
            where = f"{path}[label-{i:09d}]"
            label = txn.get(f"label-{i:09d}".encode())
            if label is None:
                problems(where, "label missing")
                continue
            try:
                text = normalize(label.decode("utf-8"))
            except UnicodeDecodeError:
                problems(where, "label is not UTF-8")
                continue
            if not text.strip():
                problems(where, "empty transcription")
                continue
            data = txn.get(f"image-{i:09d}".encode())
            if data is None:
                problems(where, "image missing")
                continue
            if check_images:
                try:
                    image_size(data, name=f"{path}[image-{i:09d}]")  # the header alone
                except ImageError as e:
                    problems(where, f"unreadable image: {e.reason}")
                    continue
            records.append(LineRecord(text=text, path=path, lmdb_key=f"image-{i:09d}", source=where))
    return records


def write_lmdb(samples: Iterable[tuple[Image.Image, str]], path: str | os.PathLike,
               map_size: int = 1 << 30) -> int:
    """Write ``(image, text)`` samples as a scene-text LMDB (PNG-encoded); returns the count."""
    lmdb = _lmdb()
    Path(path).mkdir(parents=True, exist_ok=True)
    close_lmdb_env(str(path))  # a reader's cached environment would not see the new data
    env = lmdb.open(str(path), map_size=map_size)
    n = 0
    try:
        with env.begin(write=True) as txn:  # one transaction: the database is complete or unchanged
            for image, text in samples:
                if not text.strip() or "\n" in text:
                    raise FormatError(f"sample {n + 1}: transcription must be one non-empty line: {text!r}")
                n += 1
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                txn.put(f"image-{n:09d}".encode(), buf.getvalue())
                txn.put(f"label-{n:09d}".encode(), normalize(text).encode("utf-8"))
            txn.put(b"num-samples", str(n).encode())
    finally:
        env.close()
    return n
