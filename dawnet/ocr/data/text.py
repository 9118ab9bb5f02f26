"""English text for synthetic lines: read from an offline source, cut into handwritten-line lengths.

Sources: Debian's ``fortunes`` files (``/usr/share/games/fortunes``, prose only) or, when those are
not installed, the English help text CPython ships in ``pydoc_data``. Documents (one fortune, one
help topic) are deduplicated and split by a hash of their text into ``train`` (which is also the
language-model text), ``val`` and ``test``, so held-out lines come from documents the LM never sees;
held-out lines that happen to equal a training line are removed as well.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from dawnet.ocr.charset import normalize

__all__ = ["TEXT_ALPHABET", "FORTUNE_FILES", "load_documents", "split_documents", "cut_lines", "Corpus",
           "build_corpus"]

# The characters synthetic lines may hold: what every installed handwriting font draws (checked glyph
# by glyph in fonts.py) and what English handwriting mostly uses.
TEXT_ALPHABET = string.ascii_letters + string.digits + " .,;:!?'\"-()&/"
FORTUNES_DIR = "/usr/share/games/fortunes"
# Prose collections of the `fortunes`/`fortunes-min` packages (art, code, OS-specific and offensive-prone
# files are left out).
FORTUNE_FILES = ("education", "food", "fortunes", "goedel", "humorists", "kids", "law", "literature", "love",
                 "magic", "medicine", "men-women", "miscellaneous", "news", "paradoxum", "people", "pets",
                 "platitudes", "politics", "pratchett", "riddles", "science", "sports", "wisdom", "work")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "`": "'",
                         "\u2013": "-", "\u2014": "-"})
_ATTRIBUTION = re.compile(r"^\s*--\s")


def _clean(doc: str) -> str:
    lines = []
    for line in doc.splitlines():
        if _ATTRIBUTION.match(line):  # "    -- Author": a signature, not handwriting
            break
        lines.append(line.strip())
    text = " ".join(lines).translate(_QUOTES)
    text = text.replace("--", "-")
    return re.sub(r"\s+", " ", normalize(text)).strip()


def _prose(text: str, alphabet: str) -> bool:
    if len(text) < 8 or any(c not in alphabet for c in text):
        return False
    letters = sum(c.isalpha() or c == " " for c in text)
    return letters >= 0.85 * len(text)  # code, tables and ASCII art fall below this


def load_documents(source: str = "fortunes", alphabet: str = TEXT_ALPHABET, root: str | None = None,
                   report: dict | None = None) -> list[str]:
    """Cleaned prose documents of ``source`` (``"fortunes"`` or ``"pydoc"``), deduplicated, in file order.

    Documents holding characters outside ``alphabet`` (which the fonts may not draw) are left out, not
    altered; pass a dict as ``report`` to get how many and which characters caused it.
    """
    docs: list[str] = []
    if source == "fortunes":
        root = root or FORTUNES_DIR
        paths = [Path(root, f) for f in FORTUNE_FILES if Path(root, f).is_file()]
        if not paths:
            raise FileNotFoundError(
                f"no fortune files under {root}. Fix: sudo apt-get install fortunes-min fortunes, "
                "or use the text source 'pydoc' (CPython's pydoc_data)")
        for p in paths:
            raw = p.read_text(encoding="utf-8", errors="replace")
            docs.extend(raw.split("\n%\n"))
    elif source == "pydoc":
        from pydoc_data.topics import topics

        for key in sorted(topics):
            docs.extend(p for p in re.split(r"\n\s*\n", topics[key]) if not p.startswith("   "))
    else:
        raise ValueError(f"unknown text source {source!r}; choose 'fortunes' or 'pydoc'")
    seen, out = set(), []
    outside: Counter = Counter()
    left_out = {"duplicate": 0, "outside_alphabet": 0, "not_prose": 0}
    allowed = set(alphabet)
    for d in docs:
        text = _clean(d)
        bad = [c for c in text if c not in allowed]
        if bad:
            outside.update(bad)
            left_out["outside_alphabet"] += 1
        elif not _prose(text, alphabet):
            left_out["not_prose"] += 1
        elif text.lower() in seen:
            left_out["duplicate"] += 1
        else:
            seen.add(text.lower())
            out.append(text)
    if report is not None:
        report.update(documents=len(out), left_out=left_out,
                      chars_outside_alphabet=dict(outside.most_common(20)))
    if not out:
        raise ValueError(f"text source {source!r} gave no usable prose for the alphabet {alphabet!r}")
    return out


def _bucket(text: str) -> float:
    # A hash of the text, not its position: the split of a document does not move when others are added.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def split_documents(docs: list[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict:
    """Documents split by text hash into ``{"train", "val", "test"}`` with the given fractions."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    a, b = fractions[0], fractions[0] + fractions[1]
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for d in docs:
        u = _bucket(d)
        out["train" if u < a else "val" if u < b else "test"].append(d)
    return out


def cut_lines(docs: list[str], rng: np.random.Generator, min_words: int = 1, max_words: int = 10,
              max_chars: int = 48) -> list[str]:
    """Cut documents into lines of ``min_words..max_words`` words (at most ``max_chars``), as a hand would.

    Line lengths are drawn around 6 words (IAM lines hold 8-9 words; ours are shorter so lines fit
    recognizers trained at 32x256-ish). Words longer than ``max_chars`` are dropped.
    """
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    lines = []
    for d in docs:
        words = [w for w in d.split(" ") if 0 < len(w) <= max_chars]
        i = 0
        while i < len(words):
            n = int(np.clip(rng.normal(6, 2.5), min_words, max_words))
            line = words[i:i + n]
            while len(line) > 1 and len(" ".join(line)) > max_chars:
                line.pop()
            i += len(line)
            lines.append(" ".join(line))
    return lines


@dataclass
class Corpus:
    """Documents and lines per split; ``lm_text`` is the language model's training text (train documents)."""

    source: str
    documents: dict[str, list[str]]
    lines: dict[str, list[str]] = field(repr=False)
    report: dict = field(default_factory=dict, repr=False)  # documents kept / left out, and why

    @property
    def lm_text(self) -> list[str]:
        return self.documents["train"]


@lru_cache(maxsize=4)  # the corpus is read-only once built; tests and workers reuse it
def build_corpus(seed: int = 0, source: str = "fortunes", alphabet: str = TEXT_ALPHABET,
                 fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), max_words: int = 10,
                 max_chars: int = 48) -> Corpus:
    """Load, split and cut ``source`` into lines; deterministic in ``seed``. Cached: do not modify the result."""
    report: dict = {}
    docs = split_documents(load_documents(source, alphabet, report=report), fractions)
    lines = {}
    for i, split in enumerate(("train", "val", "test")):
        lines[split] = cut_lines(docs[split], np.random.default_rng([seed, i]), max_words=max_words,
                                 max_chars=max_chars)
    train = set(lines["train"])
    for split in ("val", "test"):  # a held-out line must not be a training/LM line, even by chance
        lines[split] = [t for t in lines[split] if t not in train]
    report["lines"] = {k: len(v) for k, v in lines.items()}
    return Corpus(source=source, documents=docs, lines=lines, report=report)


def default_source() -> str:
    """``"fortunes"`` when Debian's fortunes are installed, else ``"pydoc"``."""
    return "fortunes" if os.path.isdir(FORTUNES_DIR) else "pydoc"
