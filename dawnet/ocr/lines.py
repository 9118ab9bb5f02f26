"""Line data for training and evaluating recognizers, resolved from one name: a data spec (``hw-lines-v1``,
``digits-v1``, ``NAME:smoke``; lines rendered on the fly) or any line data :func:`dawnet.ocr.data.formats.read_lines`
reads (a built folder with train/val/test splits, a folder of ``*.png`` + ``*.gt.txt``, a TSV, IAM, PAGE/ALTO
XML, LMDB). ``dawnet train``, ``dawnet eval`` and the benchmark use it.

Bad input raises ``LookupError`` (an unknown spec), ``FileNotFoundError`` or ``ValueError`` (unreadable or empty
data) with a one-line message that names the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = [
    "LineData",
    "data_spec",
    "spec_charset",
    "split_folder",
    "read_line_records",
    "load_line_data",
    "line_loader",
    "lm_texts",
]


@dataclass
class LineData:
    """Datasets resolved from a data name: ``kind`` is ``"spec"`` or ``"folder"``."""

    name: str
    kind: str
    charset: object
    train: object | None = None
    val: object | None = None
    test: object | None = None
    generator: object | None = None


def data_spec(name: str):
    """The data spec called ``name``, or None when ``name`` is an existing file or folder."""
    from dawnet.ocr.data.specs import spec

    if os.path.exists(name):
        return None
    try:
        return spec(name)
    except LookupError as e:
        raise LookupError(f"{name!r} is neither an existing file/folder nor a data spec: {e}") from None


def spec_charset(s):
    """The alphabet of a spec's texts: the text alphabet for lines, the ten digits for digit strings."""
    from dawnet.ocr.charset import Charset
    from dawnet.ocr.data.text import TEXT_ALPHABET

    if s.kind == "digits":
        return Charset("0123456789")
    if s.kind == "lines":
        return Charset("".join(sorted(set(TEXT_ALPHABET))))
    raise ValueError(f"spec {s.name} holds {s.kind}, not text lines: recognizers train on 'lines' or "
                     "'digits' specs (pages are for the detector)")


def read_line_records(path: str | os.PathLike):
    """``read_lines(path)`` with its errors as one-line ``ValueError``/``FileNotFoundError`` naming the path."""
    from dawnet.ocr.data.formats import FormatError, read_lines

    try:
        return read_lines(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"cannot read line data from {path}: {e}") from None
    except (FormatError, ValueError) as e:
        raise ValueError(f"cannot read line data from {path}: {e}") from None


def split_folder(path: str | os.PathLike, split: str) -> Path | None:
    """``path/split`` when ``path`` is a built data folder with that split, else None."""
    p = Path(path) / split
    return p if p.is_dir() else None


def _train_generator(s, gen, augment: bool):
    """The training lines' generator. With ``augment``, digit strings get new shapes of every digit
    (``DigitStringConfig.distort``) instead of line augmentation: the synthesizer already varies each
    string's slant, size, spacing and noise, and models otherwise memorize MNIST's 3,500 training samples."""
    if not (augment and s.kind == "digits"):
        return gen
    from dawnet.ocr.data.digits import TRAIN_DISTORT
    from dawnet.ocr.data.generate import SpecGenerator

    return SpecGenerator(replace(s, synth={"distort": TRAIN_DISTORT, **s.synth}))


def load_line_data(data: str, height: int, charset=None, splits=("train", "val"), train_lines=None,
                   val_lines: int | None = None, augment: bool = False, seed: int = 0) -> LineData:
    """Datasets for ``splits`` from a spec name or a data folder (see ``dawnet train --help``).

    A spec gives its own charset (unless ``charset`` is passed); a folder's charset is built from its train
    (and val) transcriptions. The training split is encoded with the charset, so unknown characters in it
    fail when it is built.
    """
    from dawnet.ocr.charset import Charset
    from dawnet.ocr.data.datasets import LineAugment, LineDataset, SyntheticLineDataset

    aug = LineAugment() if augment else None
    s = data_spec(data)
    if s is not None:
        from dawnet.ocr.data.generate import SpecGenerator

        charset = charset or spec_charset(s)
        try:
            gen = SpecGenerator(s)
        except (FileNotFoundError, ModuleNotFoundError, LookupError) as e:
            raise LookupError(f"cannot generate {s.name}: {e}") from None
        out = LineData(s.name, "spec", charset, generator=gen)
        for split in splits:
            if split == "train":
                n = train_lines or s.sizes["train"]
                out.train = SyntheticLineDataset(_train_generator(s, gen, augment), "train", length=n,
                                                 height=height, charset=charset,
                                                 augment=None if s.kind == "digits" else aug,
                                                 unknown="map" if charset.unknown else "error")
            else:  # held-out splits are fixed: the same images as `dawnet data build`
                n = min(val_lines or s.sizes[split], s.sizes[split])
                setattr(out, split, SyntheticLineDataset(gen, split, length=n, height=height, fixed=True))
        return out
    root = Path(data)
    sets = {}
    for split in splits:
        sub = split_folder(root, split)
        if sub is not None:
            sets[split] = read_line_records(sub)
    if not sets:  # a plain folder/file of lines: it is the training data (or the data to evaluate)
        sets[splits[0]] = read_line_records(root)
    texts = [r.text for ls in sets.values() for r in ls.records]
    if not texts:
        raise ValueError(f"no text lines found in {data}: give a folder of *.png + *.gt.txt, a TSV or another "
                         "format 'dawnet data' reads")
    if charset is None:
        charset = Charset.from_texts([r.text for r in sets.get("train", next(iter(sets.values()))).records] +
                                     ([r.text for r in sets["val"].records] if "val" in sets else []))
    out = LineData(root.name or str(root), "folder", charset)
    for split, ls in sets.items():
        records = ls.records[:val_lines] if (split != "train" and val_lines) else ls.records
        ds = LineDataset(records, height=height, charset=charset if split == "train" else None,
                         augment=aug if split == "train" else None, seed=seed)
        setattr(out, split, ds)
    return out


def line_loader(dataset, batch_size: int, shuffle: bool, workers: int = 0, seed: int = 0):
    """A DataLoader of padded line batches; width-bucketed when the widths are known without rendering."""
    from torch.utils.data import DataLoader

    from dawnet.ocr.data.datasets import LineDataset, WidthBucketSampler, collate_lines

    kw = {"collate_fn": collate_lines, "num_workers": workers}
    if workers:
        kw["persistent_workers"] = False
    if isinstance(dataset, LineDataset):
        sampler = WidthBucketSampler(dataset.widths(), batch_size, shuffle=shuffle, seed=seed)
        return DataLoader(dataset, batch_sampler=sampler, **kw)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, **kw)


def lm_texts(data: str, seed: int = 0) -> tuple[list[str], list[str], object]:
    """LM training lines and held-out lines for ``data`` (never test lines), and the charset to cover.

    Spec/built-folder LM text is documents; they are cut into lines the way the line data is, so the LM
    learns where lines start and end.
    """
    import numpy as np

    from dawnet.ocr.data.text import cut_lines

    s = data_spec(data)
    if s is not None:
        cs = spec_charset(s)
        if s.kind != "lines":
            raise ValueError(f"{s.name} has no LM text (digit strings are random): train the LM on a lines spec")
        from dawnet.ocr.data.text import build_corpus

        corpus = build_corpus(s.seed, s.text_source)
        train_docs, held_docs = corpus.lm_text, corpus.documents["val"]
    else:
        root = Path(data)
        lm_dir = root / "lm"
        cs = None
        if (lm_dir / "train.txt").is_file():
            train_docs = (lm_dir / "train.txt").read_text(encoding="utf-8").splitlines()
            val = lm_dir / "val.txt"
            held_docs = val.read_text(encoding="utf-8").splitlines() if val.is_file() else []
        elif root.is_file() and root.suffix == ".txt":
            train_docs, held_docs = root.read_text(encoding="utf-8").splitlines(), []
        else:  # transcriptions of the training lines (a folder's test split is never read)
            train = split_folder(root, "train") or root
            train_docs = [r.text for r in read_line_records(train).records]
            val = split_folder(root, "val")
            held_docs = [r.text for r in read_line_records(val).records] if val else []
            return train_docs, held_docs, cs
    rng = np.random.default_rng(seed)
    train = cut_lines([d for d in train_docs if d.strip()], rng)
    held = cut_lines([d for d in held_docs if d.strip()], rng)
    return train, held, cs
