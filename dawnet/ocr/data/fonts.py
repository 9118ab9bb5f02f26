"""Handwriting fonts: find the installed ones, check glyph by glyph which characters each covers.

A character counts as covered only if the font maps it to a real glyph (fontTools cmap, not
``.notdef``) *and* FreeType renders it with ink that differs from the font's ``.notdef`` box (the
space must have a positive advance instead). So a missing glyph never renders as a box or a blank.
"""

from __future__ import annotations

import logging
import os
import unicodedata
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dawnet.checksum import sha256_file

__all__ = ["FontInfo", "DEBIAN_HANDWRITING_FONTS", "find_fonts", "font_info", "covered_chars",
           "fonts_covering", "FONT_DIRS", "FONT_SUFFIXES", "glyph_measures", "exclusion_reason", "joins_letters",
           "EXCLUSION_RULES"]

# Debian packages -> font files they install (relative to /usr/share/fonts). Families, not files, are
# the unit of a font-disjoint split: Comic Neue Bold and Comic Neue Light are one handwriting.
DEBIAN_HANDWRITING_FONTS: dict[str, list[str]] = {
    "fonts-dkg-handwriting": ["truetype/fifthhorseman/dkg.ttf", "truetype/fifthhorseman/dkgBd.ttf",
                              "truetype/fifthhorseman/dkgIt.ttf", "truetype/fifthhorseman/dkgBI.ttf"],
    "fonts-breip": ["truetype/breip/Breip.ttf"],
    "fonts-femkeklaver": ["truetype/femkeklaver/femkeklaver.ttf"],
    "fonts-sjfonts": ["truetype/sjfonts/Delphine.ttf", "truetype/sjfonts/SteveHand.ttf"],
    "fonts-kristi": ["truetype/kristi/Kristi.ttf"],
    "fonts-dancingscript": ["opentype/dancingscript/DancingScript-Regular.otf",
                            "opentype/dancingscript/DancingScript-Bold.otf"],
    "fonts-kaushanscript": ["opentype/kaushanscript/KaushanScript-Regular.otf"],
    "fonts-rufscript": ["truetype/rufscript/Rufscript010.ttf"],
    "fonts-ecolier-court": ["truetype/ecolier-court/Ecolier-court.ttf"],
    "fonts-comic-neue": ["opentype/comic-neue/ComicNeue-Regular.otf", "opentype/comic-neue/ComicNeue-Bold.otf",
                         "opentype/comic-neue/ComicNeue-Light.otf", "opentype/comic-neue/ComicNeue-Italic.otf"],
    "fonts-humor-sans": ["truetype/humor-sans/Humor-Sans.ttf"],
}
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
FONT_SUFFIXES = (".ttf", ".otf", ".woff")  # what FreeType (via Pillow) and fontTools read (WOFF2 needs brotli)
_PROBE_PX = 48  # render size for the ink check: big enough that thin strokes leave pixels


@dataclass(frozen=True)
class FontInfo:
    """One font file: its path, family (the split unit), style, version and the characters it covers."""

    path: str
    family: str
    style: str
    version: str
    sha256: str
    chars: frozenset = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.family} {self.style}".strip()

    def covers(self, text: str) -> bool:
        return self.chars.issuperset(text)

    def missing(self, text: str) -> set[str]:
        return {c for c in text if c not in self.chars}


def _render(font: ImageFont.FreeTypeFont, char: str) -> np.ndarray:
    left, top, right, bottom = font.getbbox(char)
    w, h = max(1, right - left), max(1, bottom - top)
    im = Image.new("L", (w + 4, h + 4), 0)
    ImageDraw.Draw(im).text((2 - left, 2 - top), char, font=font, fill=255)
    return np.asarray(im)


@cache
def font_info(path: str, probe: str | None = None) -> FontInfo:
    """Family, style, version, checksum and covered characters of a font file.

    ``probe``: the characters to check (default: printable Latin-1). A character is covered when the
    cmap maps it to a glyph other than ``.notdef`` and it renders with ink unlike ``.notdef``.
    """
    from fontTools.ttLib import TTFont

    path = str(path)
    logging.getLogger("fontTools").setLevel(logging.ERROR)  # harmless table quirks in Debian fonts
    if not os.path.isfile(path):
        raise FileNotFoundError(f"font file not found: {path}")
    try:
        tt = TTFont(path, lazy=True, fontNumber=0)
        cmap = tt.getBestCmap() or {}
        name = tt["name"]
        family = str(name.getBestFamilyName() or Path(path).stem)
        style = str(name.getBestSubFamilyName() or "")
        version = str(name.getDebugName(5) or "")
        tt.close()
    except Exception as e:  # fontTools raises many kinds for a broken file
        raise ValueError(f"cannot read font {path}: {e}. Fix: remove it from the font folder") from e
    if probe is None:
        probe = "".join(chr(i) for i in range(0x20, 0x100) if unicodedata.category(chr(i))[0] != "C")
    pil = ImageFont.truetype(path, _PROBE_PX)
    notdef = _render(pil, "\U0010fffd")  # a private-use code point no handwriting font maps: renders .notdef
    chars = set()
    for c in probe:
        glyph = cmap.get(ord(c))
        if glyph is None or glyph == ".notdef":
            continue
        if c.isspace():
            if pil.getlength(c) > 0:
                chars.add(c)
            continue
        ink = _render(pil, c)
        if ink.max() < 128:  # blank glyph
            continue
        if ink.shape == notdef.shape and np.array_equal(ink, notdef):  # the box in disguise
            continue
        chars.add(c)
    return FontInfo(path=path, family=family, style=style, version=version, sha256=sha256_file(path),
                    chars=frozenset(chars))


@cache
def _family(path: str) -> str:
    """The family name alone (cheap: the name table only), to filter fonts before checking coverage."""
    from fontTools.ttLib import TTFont

    logging.getLogger("fontTools").setLevel(logging.ERROR)
    try:
        with TTFont(path, lazy=True, fontNumber=0) as tt:
            return str(tt["name"].getBestFamilyName() or Path(path).stem)
    except Exception as e:
        raise ValueError(f"cannot read font {path}: {e}. Fix: remove it from the font folder") from e


def covered_chars(path: str, chars: str) -> set[str]:
    """The subset of ``chars`` that the font at ``path`` really draws (see :func:`font_info`)."""
    return set(font_info(str(path), probe="".join(sorted(set(chars)))).chars)


def find_fonts(fonts_dir: str | os.PathLike | None = None, families: list[str] | None = None,
               probe: str | None = None) -> list[FontInfo]:
    """Handwriting fonts: the Debian packages' files (default) or every .ttf/.otf/.woff under ``fonts_dir``.

    ``families``: keep only these family names (case-insensitive). Raises with the install command
    when nothing is found. Sorted by path, so the order is reproducible. ``probe``: the characters
    whose glyphs are checked (default: printable Latin-1; see :func:`font_info`).
    """
    if fonts_dir is not None:
        root = Path(fonts_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"font folder not found: {root}")
        paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in FONT_SUFFIXES)
        if not paths:
            raise FileNotFoundError(f"no .ttf/.otf/.woff fonts under {root}")
    else:
        paths = sorted(os.path.join(d, rel) for d in FONT_DIRS for files in DEBIAN_HANDWRITING_FONTS.values()
                       for rel in files if os.path.isfile(os.path.join(d, rel)))
        if not paths:
            raise FileNotFoundError(
                "no handwriting fonts found under /usr/share/fonts. Fix: sudo apt-get install "
                + " ".join(DEBIAN_HANDWRITING_FONTS) + ", or pass --fonts DIR with .ttf/.otf files")
    probe = None if probe is None else "".join(sorted(set(probe)))
    if families is not None:
        wanted = {f.lower(): f for f in families}
        installed = {p: _family(p) for p in paths}
        missing = [f for k, f in wanted.items() if k not in {v.lower() for v in installed.values()}]
        if missing:
            raise LookupError(f"font families not found: {missing}; installed: {sorted(set(installed.values()))}")
        paths = [p for p in paths if installed[p].lower() in wanted]
    infos = [font_info(p, probe) for p in paths]
    return infos


def fonts_covering(fonts: list[FontInfo], alphabet: str, min_coverage: float = 1.0,
                   warn: bool = True) -> tuple[list[FontInfo], dict[str, set[str]]]:
    """Fonts that draw every character of ``alphabet`` and the characters each left-out font lacks.

    With ``min_coverage < 1`` a font missing a few characters stays (the text generator then avoids
    those characters for that font). Left-out fonts are reported with a warning naming the glyphs.
    """
    alphabet = "".join(sorted(set(alphabet)))
    kept, dropped = [], {}
    for f in fonts:
        missing = f.missing(alphabet)
        if len(missing) <= (1.0 - min_coverage) * len(alphabet) + 1e-9:
            kept.append(f)
        else:
            dropped[f.path] = missing
    if dropped and warn:
        lines = [f"  {p}: lacks {''.join(sorted(m))!r}" for p, m in dropped.items()]
        warnings.warn("fonts left out for missing glyphs:\n" + "\n".join(lines), stacklevel=2)
    return kept, dropped


# -- exclusion rules for the pinned pool (fontpool.update_lock applies them; the lock records the reason) --

_MEASURE_PX = 64
_CASE_LETTERS = "abdeghnqrt"  # letters whose lowercase and capital shapes differ in every ordinary hand
_ASCENDERS, _XLETTERS, _DESCENDERS = "bdhkl", "acemnorsuvwxz", "gjpqy"
# The thresholds of the rules below, stated once (the lock file and the manifest quote them).
EXCLUSION_RULES = {
    "coverage": "a character of the text alphabet has no real glyph (cmap + rendered ink unlike .notdef)",
    "caps": "lowercase drawn as capitals or small caps: ascenders of 'bdhkl' less than 1.12x the height of "
            "'acemnorsuvwxz', or the median IoU of lowercase vs capital masks of 'abdeghnqrt' (both scaled "
            "to 24x24) at least 0.72",
    "pictorial": "pictorial or unreadable at line height: lowercase glyphs at 64 px average more than 3 ink "
                 "components (outline, inline or hairline letters that fall apart, ornaments, drawings), or ink "
                 "covers more than 70% of their boxes (solid blobs), or the x-height is under 20% of the "
                 "ascender-to-descender height (letters shrink to a few pixels on a 32 px line)",
}


def _ink_mask(font: ImageFont.FreeTypeFont, text: str) -> np.ndarray:
    """Binary ink of ``text`` cropped to its box (empty array when nothing is drawn)."""
    a = _render(font, text) > 127
    rows, cols = np.nonzero(a.any(axis=1))[0], np.nonzero(a.any(axis=0))[0]
    if rows.size == 0:
        return np.zeros((0, 0), bool)
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _components(mask: np.ndarray) -> int:
    """Number of 8-connected ink components (small specks under 0.2% of the box ignored)."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    n, min_px = 0, max(2, int(0.002 * h * w))
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, size = [(y0, x0)], 0
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            size += 1
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                        seen[yy, xx] = True
                        stack.append((yy, xx))
        n += size >= min_px
    return n


def _square(mask: np.ndarray, size: int = 24) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR)) > 127


@cache
def glyph_measures(path: str) -> dict:
    """The numbers the exclusion rules read (see :data:`EXCLUSION_RULES`), measured at 64 px."""
    font = ImageFont.truetype(str(path), _MEASURE_PX)

    def top_bottom(chars: str) -> tuple[float, float]:
        boxes = [font.getbbox(c, anchor="ls") for c in chars]
        return float(np.median([b[1] for b in boxes])), float(np.median([b[3] for b in boxes]))

    asc_top, _ = top_bottom(_ASCENDERS)
    x_top, x_bottom = top_bottom(_XLETTERS)
    _, desc_bottom = top_bottom(_DESCENDERS)
    x_height = max(1.0, x_bottom - x_top)
    full = max(1.0, desc_bottom - min(asc_top, x_top))
    ious = []
    for c in _CASE_LETTERS:
        lo, up = _ink_mask(font, c), _ink_mask(font, c.upper())
        if lo.size == 0 or up.size == 0:
            continue
        a, b = _square(lo), _square(up)
        ious.append(float((a & b).sum() / max(1, (a | b).sum())))
    comps, cover = [], []
    for c in "abcdefghijklmnopqrstuvwxyz":
        m = _ink_mask(font, c)
        if m.size == 0:
            continue
        comps.append(_components(m))
        cover.append(float(m.mean()))
    return {"ascender_ratio": round((x_bottom - asc_top) / x_height, 3),
            "case_iou": round(float(np.median(ious)) if ious else 1.0, 3),
            "components": round(float(np.mean(comps)) if comps else 0.0, 3),
            "coverage": round(float(np.mean(cover)) if cover else 0.0, 3),
            "x_height_ratio": round(x_height / full, 3)}


def exclusion_reason(path: str, alphabet: str | None = None) -> tuple[str, str] | None:
    """``(rule, reason)`` when the font at ``path`` must stay out of the pool (:data:`EXCLUSION_RULES`),
    else None. ``alphabet``: the characters it must draw (default: the synthetic text alphabet)."""
    if alphabet is None:
        from dawnet.ocr.data.text import TEXT_ALPHABET

        alphabet = TEXT_ALPHABET + "0123456789"
    missing = font_info(str(path), probe="".join(sorted(set(alphabet)))).missing(alphabet)
    if missing:
        return "coverage", f"does not draw {''.join(sorted(missing))!r}"
    m = glyph_measures(str(path))
    if m["ascender_ratio"] < 1.12:
        return "caps", f"lowercase drawn as capitals or small caps (ascender ratio {m['ascender_ratio']} < 1.12)"
    if m["case_iou"] >= 0.72:
        return "caps", f"lowercase drawn as capitals (lowercase/capital mask IoU {m['case_iou']} >= 0.72)"
    if m["components"] > 3.0:
        return "pictorial", (f"outline, hairline or ornamented letters that fall apart at line height "
                             f"({m['components']} ink components per glyph > 3)")
    if m["coverage"] > 0.70:
        return "pictorial", f"solid letters that close up at line height (ink covers {m['coverage']:.0%} > 70%)"
    if m["x_height_ratio"] < 0.20:
        return "pictorial", (f"unreadable at line height (x-height {m['x_height_ratio']:.0%} of the "
                             "ascender-to-descender height < 20%)")
    return None


@cache
def joins_letters(path: str) -> bool:
    """Whether the font joins its letters (a cursive or script hand): ``"nmunmu"`` set as one word
    renders as at most 3 ink components."""
    font = ImageFont.truetype(str(path), _MEASURE_PX)
    return _components(_ink_mask(font, "nmunmu")) <= 3
