"""Patch surgery, edits, and the activation/output deltas they cause."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nets import TinyCRNN
from PIL import Image
from torch import nn

from dawnet.diagnose.edit import (
    add_noise,
    as_image,
    blur,
    brightness,
    compare,
    contrast,
    cut,
    elastic,
    erase,
    paste,
    rotate,
    scale,
    stroke,
    transplant,
)
from dawnet.diagnose.trace import receptive_field
from dawnet.ocr.decode import ctc_reader

ALPHABET = "abcdef"


def crnn() -> nn.Module:
    """conv1, pool (2, 2), conv2, pool (2, 1), BiLSTM, head: (N, T = W / 2, 7) logits for 16 px lines."""
    return TinyCRNN(classes=len(ALPHABET) + 1, height=16, channels=(6, 8), hidden=8)


def line(seed: int = 0, h: int = 16, w: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, h, w, generator=g)


def test_transplant_moves_exact_pixels_and_leaves_inputs_alone():
    a, b = line(0), line(1)
    a0, b0 = a.clone(), b.clone()
    out = transplant(a, (2, 5, 10, 15), b, at=(6, 20))
    assert torch.equal(out[:, 6:14, 20:30], a[:, 2:10, 5:15])
    mask = torch.ones_like(out, dtype=torch.bool)
    mask[:, 6:14, 20:30] = False
    assert torch.equal(out[mask], b[mask])
    assert torch.equal(a, a0) and torch.equal(b, b0)


def test_paste_clips_at_borders_and_blends_with_mask():
    b = torch.zeros(1, 10, 10)
    patch = torch.ones(1, 4, 4)
    out = paste(b, patch, at=(-2, 8))  # only a 2x2 corner lands
    assert out.sum() == 4 and torch.all(out[:, :2, 8:] == 1)
    m = torch.zeros(4, 4)
    m[1, 1] = 1.0
    out = paste(b, patch, at=(0, 0), mask=m, alpha=0.5)
    assert out.sum() == 0.5 and out[0, 1, 1] == 0.5
    with pytest.raises(ValueError, match="misses"):
        paste(b, patch, at=(20, 20))
    with pytest.raises(ValueError, match="inside the 10x10"):
        cut(b, (0, 0, 11, 3))


def test_stroke_marks_the_line_only():
    img = torch.ones(1, 20, 30)
    out = stroke(img, [(10, 2), (10, 27)], width=3, value=0.0)
    assert out[0, 10, 5:25].max() < 0.05  # ink along the line
    assert torch.all(out[0, :6] == 1) and torch.all(out[0, 15:] == 1)  # paper elsewhere
    rgb = stroke(torch.ones(3, 8, 8), [(4, 4)], width=2, value=(1.0, 0.0, 0.0))
    assert rgb[0, 4, 4] == 1.0 and rgb[1, 4, 4] < 0.5


def test_erase_fills_with_paper_colour():
    img = torch.ones(1, 10, 10)
    img[0, 4:6, 4:6] = 0.0
    out = erase(img, (3, 3, 7, 7))
    assert torch.all(out == 1.0)
    assert torch.all(erase(img, (0, 0, 2, 2), value=0.25)[0, :2, :2] == 0.25)


def test_noise_blur_contrast_brightness():
    img = torch.full((1, 30, 30), 0.5)
    n1, n2 = add_noise(img, 0.1, seed=3), add_noise(img, 0.1, seed=3)
    assert torch.equal(n1, n2) and 0.08 < float((n1 - img).std()) < 0.12
    assert not torch.equal(n1, add_noise(img, 0.1, seed=4))
    sp = add_noise(img, kind="salt_pepper", amount=0.2, seed=0)
    frac = float(((sp == 0) | (sp == 1)).float().mean())
    assert 0.15 < frac < 0.25
    imp = torch.zeros(1, 21, 21)
    imp[0, 10, 10] = 1.0
    bl = blur(imp, sigma=2.0)
    assert abs(float(bl.sum()) - 1.0) < 1e-5 and bl[0, 10, 10] < 0.1
    torch.testing.assert_close(bl[0], bl[0].T)  # isotropic
    x = line(2)
    torch.testing.assert_close(contrast(x, 1.0), x)
    flat = contrast(x, 0.0)
    assert torch.allclose(flat, x.mean().expand_as(x))
    torch.testing.assert_close(brightness(x, 0.1), x + 0.1)


def test_rotate_90_equals_rot90_and_elastic_is_seeded():
    x = torch.rand(1, 9, 9)
    r = rotate(x, 90)
    torch.testing.assert_close(r, torch.rot90(x, 1, dims=(1, 2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate(x, 0), x)
    e1, e2 = elastic(line(0), alpha=3, sigma=3, seed=1), elastic(line(0), alpha=3, sigma=3, seed=1)
    assert torch.equal(e1, e2) and not torch.allclose(e1, line(0))
    torch.testing.assert_close(elastic(line(0), alpha=0.0, seed=1), line(0), atol=1e-5, rtol=0)


def test_pil_and_numpy_inputs():
    arr = (np.arange(12, dtype=np.uint8) * 20).reshape(3, 4)
    t = as_image(Image.fromarray(arr))
    assert t.shape == (1, 3, 4) and abs(float(t[0, 0, 1]) - 20 / 255) < 1e-6
    assert as_image(np.zeros((5, 6, 3), dtype=np.uint8)).shape == (3, 5, 6)


def test_compare_reports_local_changes_and_decoded_text():
    torch.manual_seed(0)
    model = crnn().eval()
    a, b = line(0), line(1)
    edited = transplant(a, (0, 0, 16, 8), b, at=(0, 16))  # columns 16..23 change
    rep = compare(model, b, edited, ["cnn.conv2", "rnn"], decode=ctc_reader(ALPHABET))
    d = rep.layers["cnn.conv2"].delta[0]  # (C, 8, 20)
    rf = receptive_field(model, "cnn.conv2", (1, 16, 40))
    for x in range(d.shape[-1]):
        _, x0, _, x1 = rf.box(0, x)
        touches = x0 < 24 and x1 > 16
        assert bool(d[..., x].abs().amax() > 0) == touches, x
    assert rep.layers["rnn"].delta.abs().sum() > 0
    assert rep.output_change > 0
    with torch.no_grad():
        want_before, want_after = (ctc_reader(ALPHABET)(model(x[None]))[0] for x in (b, edited))
    assert (rep.text_before, rep.text_after) == (want_before.text, want_after.text)
    assert rep.decoded_after[0].confidences == pytest.approx(want_after.confidences)
    assert len(rep.decoded_after[0].confidences) == len(rep.text_after)
    assert all(0 < p <= 1 for p in rep.decoded_after[0].confidences)
    probs = [round(p, 3) for p in want_before.confidences]
    assert f"text: {want_before.text!r}" + (f" p={probs}" if probs else "") in rep.summary()
    top = rep.top_channels("cnn.conv2", 3)
    stats = rep.layers["cnn.conv2"].per_channel()["mean_abs_change"]
    assert top[0][1] == pytest.approx(float(stats.max()))
    assert "cnn.conv2" in rep.summary()
    same = compare(model, b, b.clone(), ["cnn.conv2"])
    assert same.output_change == 0 and same.layers["cnn.conv2"].delta.abs().sum() == 0
    with pytest.raises(ValueError, match="same shape"):
        compare(model, b, line(0, w=32), ["cnn.conv2"])


def test_compare_decodes_a_dawnet_recognizer_with_ctc_reader():
    """README: compare(..., decode=ctc_reader(agent.charset)) on dawnet's own recognizer, which returns
    (log_probs, lengths)."""
    from dawnet.ocr.charset import Charset
    from dawnet.ocr.decode import ctc_greedy_readings
    from dawnet.ocr.models.recognizer import crnn_small

    cs = Charset("abc ")
    torch.manual_seed(0)
    model = crnn_small(num_classes=cs.num_ctc_classes).eval()
    x = torch.rand(1, 1, 32, 64, generator=torch.Generator().manual_seed(0))
    rep = compare(model, x, erase(x, (0, 0, 32, 16)), ["backbone.layers.4"], decode=ctc_reader(cs))
    with torch.no_grad():
        want = ctc_greedy_readings(*model(x), charset=cs, blank=cs.blank)[0]
    assert rep.decoded_before[0] == want and rep.text_before == want.text


def test_scale_zooms_about_the_centre_and_fills_with_paper():
    x = torch.ones(1, 9, 9)
    x[0, 3:6, 3:6] = 0.0  # a 3x3 ink square in the middle
    torch.testing.assert_close(scale(x, 1.0), x)
    big = scale(x, 3.0)
    assert torch.all(big[0, 1:8, 1:8] < 0.5) and big.mean() < x.mean()  # the square now fills the middle 7x7
    small = scale(x, 1 / 3)
    assert small[0, 4, 4] == 0.0 and small[0, 0, 0] == 1.0  # ink stays central; the outside reads as paper
    assert scale(torch.zeros(1, 9, 9), 0.5)[0, 0, 0] == 0.0  # paper of an all-ink image is ink: the median
    assert scale(x, 0.5, fill=0.25)[0, 0, 0] == 0.25
    with pytest.raises(ValueError, match="positive"):
        scale(x, 0.0)
