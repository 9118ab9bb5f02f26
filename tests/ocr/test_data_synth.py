"""Line synthesizer: seeded and byte-identical, real ink on paper, jitter per glyph and per line."""

import io

import numpy as np
import pytest

from dawnet.ocr.data.fonts import find_fonts
from dawnet.ocr.data.synth import LineSynthesizer, SynthConfig


@pytest.fixture(scope="module")
def synth():
    return LineSynthesizer(find_fonts(families=["Kristi", "Comic Neue"]))


def png(im):
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_same_seed_same_bytes_other_seed_other_image(synth):
    a = synth.render("Hello, world 42!", seed=7)
    b = LineSynthesizer(synth.fonts).render("Hello, world 42!", seed=7)  # fresh glyph caches
    assert a.font == b.font and png(a.image) == png(b.image)
    c = synth.render("Hello, world 42!", seed=8)
    assert png(c.image) != png(a.image)


def test_order_of_rendering_does_not_change_an_image(synth):
    first = LineSynthesizer(synth.fonts)
    x1 = first.render("quick brown fox", seed=3).image
    second = LineSynthesizer(synth.fonts)
    for i in range(5):
        second.render("jumps over the lazy dog 0123456789", seed=100 + i)
    assert png(second.render("quick brown fox", seed=3).image) == png(x1)


def test_dark_ink_on_light_paper_cropped_to_the_text(synth):
    im = synth.render("The paper is light", seed=1).image
    a = np.asarray(im)
    assert im.mode == "L"
    assert np.median(a) > 170  # mostly paper
    assert np.median(a) - a.min() > 70  # with ink that stands out
    assert 20 <= im.height <= 120
    short = synth.render("I", seed=1).image
    long = synth.render("I think therefore I am, said he", seed=1).image
    assert long.width > 4 * short.width


def test_same_text_differs_between_fonts_and_glyph_copies_differ(synth):
    kristi, comic = synth.fonts[-1], synth.fonts[0]
    assert kristi.family != comic.family
    a = synth.render("minimum", seed=2, font=kristi).image
    b = synth.render("minimum", seed=2, font=comic).image
    assert a.size != b.size or png(a) != png(b)
    # glyph-level jitter: the pool holds several different renderings of one character
    g = synth._g(kristi)
    variants = {g.get("m", 0, k)[0].tobytes() for k in range(synth.variants)}
    assert len(variants) > 1


def test_config_ranges_take_effect(synth):
    big = LineSynthesizer(synth.fonts, SynthConfig(x_height_px=(30.0, 30.0)))
    small = LineSynthesizer(synth.fonts, SynthConfig(x_height_px=(8.0, 8.0)))
    assert big.render("size", seed=0).image.height > 1.8 * small.render("size", seed=0).image.height


def test_bad_text_is_refused(synth):
    with pytest.raises(ValueError, match="empty line"):
        synth.render("   ", seed=0)
    with pytest.raises(ValueError, match="no font draws"):
        synth.render("caf\u00e9 \u4e2d", seed=0)


def test_glyph_x_height_rasterizes_every_font_at_one_x_height():
    """v2 draws each font at the size that gives its 'x' a common height; the default (v1) keeps a 28 px em."""
    from dawnet.ocr.data.fontpool import pool_fonts
    from dawnet.ocr.data.synth import _EM, _Glyphs
    from dawnet.ocr.data.text import TEXT_ALPHABET

    small = pool_fonts(["Mrs Saint Delafield"], probe=TEXT_ALPHABET)[0]
    big = pool_fonts(["Calligraffitti"], probe=TEXT_ALPHABET)[0]
    v1 = {f.family: _Glyphs(f, SynthConfig(), 1) for f in (small, big)}
    v2 = {f.family: _Glyphs(f, SynthConfig(glyph_x_height=14.0), 1) for f in (small, big)}
    assert {g.em for g in v1.values()} == {_EM}
    assert v1["Mrs Saint Delafield"].x_height <= 7 and v1["Calligraffitti"].x_height >= 24  # 4x apart at one em
    for g in v2.values():
        assert abs(g.x_height - 14) <= 1.5, (g.info.family, g.x_height, g.em)
    line = LineSynthesizer([small], SynthConfig(glyph_x_height=14.0)).render("minimum", seed=0)
    assert line.image.height >= 20 and np.asarray(line.image).min() < 120
