"""Fonts: the Debian handwriting fonts are found, and coverage is checked glyph by glyph (no boxes, no blanks)."""

import copy

import pytest
from fontTools.ttLib import TTFont

from dawnet.ocr.data.fonts import find_fonts, font_info, fonts_covering
from dawnet.ocr.data.specs import FONT_SPLITS
from dawnet.ocr.data.synth import LineSynthesizer
from dawnet.ocr.data.text import TEXT_ALPHABET

KRISTI = "/usr/share/fonts/truetype/kristi/Kristi.ttf"


@pytest.fixture(scope="module")
def broken_font(tmp_path_factory):
    """Kristi with 'Z' mapped to a copy of the .notdef box and 'Q' mapped to an empty glyph."""
    t = TTFont(KRISTI)
    glyf = t["glyf"]
    assert glyf[".notdef"].numberOfContours > 0  # the box has outlines: the render check must catch it
    order = t.getGlyphOrder() + ["boxcopy"]
    glyf.glyphs["boxcopy"] = copy.deepcopy(glyf[".notdef"])
    t.setGlyphOrder(order)
    glyf.glyphOrder = order
    t["hmtx"].metrics["boxcopy"] = t["hmtx"].metrics[".notdef"]
    t["maxp"].numGlyphs = len(order)
    t["post"].formatType = 3.0
    for st in t["cmap"].tables:
        if st.isUnicode():
            st.cmap[ord("Z")] = "boxcopy"
            st.cmap[ord("Q")] = ".null"
    path = tmp_path_factory.mktemp("fonts") / "broken.ttf"
    t.save(str(path))
    return str(path)


def test_debian_fonts_found_with_every_split_family():
    fonts = find_fonts(probe=TEXT_ALPHABET)
    families = {f.family for f in fonts}
    for split, fams in FONT_SPLITS.items():
        assert set(fams) <= families, split
    assert [f.path for f in fonts] == sorted(f.path for f in fonts)
    for f in fonts:
        assert f.covers(TEXT_ALPHABET), (f.path, f.missing(TEXT_ALPHABET))
        assert len(f.sha256) == 64 and f.version


def test_box_and_blank_glyphs_do_not_count_as_covered(broken_font):
    cmap = TTFont(broken_font).getBestCmap()
    assert cmap[ord("Z")] != ".notdef" and ord("Q") in cmap  # both look mapped to a naive cmap check
    info = font_info(broken_font, "AQZaz ")
    assert "A" in info.chars and "z" in info.chars and " " in info.chars
    assert "Z" not in info.chars  # renders exactly like .notdef
    assert "Q" not in info.chars  # renders nothing


def test_unmapped_characters_are_missing():
    info = font_info("/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf", "a\u00e9\u00df")
    cmap = TTFont("/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf").getBestCmap()
    for c in "\u00e9\u00df":
        assert (c in info.chars) == (ord(c) in cmap)
    assert "a" in info.chars


def test_fonts_covering_leaves_out_fonts_and_names_the_glyphs(broken_font):
    fonts = [font_info(KRISTI, "AQZ"), font_info(broken_font, "AQZ")]
    with pytest.warns(UserWarning, match="lacks 'QZ'"):
        kept, dropped = fonts_covering(fonts, "AQZ")
    assert [f.path for f in kept] == [KRISTI]
    assert dropped == {broken_font: {"Q", "Z"}}


def test_synthesizer_refuses_a_font_without_the_glyph(broken_font):
    synth = LineSynthesizer([font_info(broken_font, "AQZaz ")])
    with pytest.raises(ValueError, match="no font draws every character"):
        synth.render("aZa", seed=0)
    with pytest.raises(ValueError, match="has no glyph"):
        synth.render("Qa", seed=0, font=synth.fonts[0])
    assert synth.render("Aza", seed=0).image.width > 10


def test_font_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .ttf/.otf"):
        find_fonts(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        find_fonts(tmp_path / "nope")
    with pytest.raises(LookupError, match="Nonexistent Hand"):
        find_fonts(families=["Nonexistent Hand"])
