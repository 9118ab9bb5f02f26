"""Optimizing an input until the model gives a target: a class, an activation pattern, a string.

The string test trains a tiny CRNN (conv -> (2,1) pools -> BiLSTM -> Linear, CTC, blank 0) on
digit strings drawn with PIL's default font, then makes it read a string of our choice.
"""

import random

import pytest
import torch
import torch.nn.functional as F
from digit_reader import H, W, decode, draw, encode, train_tiny_crnn  # tests/diagnose/digit_reader.py
from nets import TinyConvNet
from torch import nn

from dawnet.diagnose.optvis import inversion as inv


def tiny_conv(channels: int = 3) -> nn.Module:
    """Two strided convs and a linear layer over the flattened 4x4 map of a 16x16 image: trains in a second."""
    return TinyConvNet(in_channels=channels, classes=4, width=8, stride=2, size=16)


def quadrant_images(labels, g):
    """16x16 RGB: dim noise with a bright square in quadrant ``label`` (0 TL, 1 TR, 2 BL, 3 BR)."""
    x = 0.3 * torch.rand(len(labels), 3, 16, 16, generator=g)
    for i, k in enumerate(labels):
        y0, x0 = 8 * (k // 2) + 1, 8 * (k % 2) + 1
        x[i, :, y0 : y0 + 6, x0 : x0 + 6] = 0.7 + 0.3 * torch.rand(3, 1, 1, generator=g)
    return x


@pytest.fixture(scope="module")
def classifier():
    """A tiny_conv trained to tell which quadrant holds the bright square."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = tiny_conv()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(150):
        y = torch.randint(4, (64,), generator=g)
        loss = F.cross_entropy(model(quadrant_images(y.tolist(), g)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    y = torch.arange(4).repeat(25)
    with torch.no_grad():
        acc = (model(quadrant_images(y.tolist(), g)).argmax(1) == y).float().mean()
    assert acc > 0.95, f"the tiny classifier did not learn ({acc:.0%}): the test setup is broken"
    return model.eval()


def test_class_target_from_noise_is_met_and_reported(classifier):
    with torch.no_grad():
        noise_says = int(classifier(0.5 + 0.01 * torch.randn(1, 3, 16, 16)).argmax(1))
    label = (noise_says + 1) % 4
    res = inv.optimize_input(
        classifier,
        inv.class_target(label, margin=1.0),
        size=16,
        steps=300,
        check_every=5,
        seed=0,
        progress=False,
    )
    assert res.satisfied and res.prediction == [label]
    assert int(res.output.argmax(1)) == label
    with torch.no_grad():
        assert int(classifier(res.image).argmax(1)) == label  # the image itself, no transforms
    assert res.steps < 300  # stopped once met
    assert res.distance["rms"] > 0 and res.distance["max_abs"] <= 1 and res.distance["psnr_db"] > 0
    assert res.image.shape == res.start.shape == (1, 3, 16, 16)
    assert res.figure is not None and res.images[0].size == (16, 16)


def test_class_target_from_a_real_image_moves_the_square_and_stays_close(classifier):
    start = quadrant_images([0], torch.Generator().manual_seed(1))
    res = inv.optimize_input(
        classifier,
        inv.class_target(3, margin=1.0),
        init=start,
        steps=400,
        check_every=5,
        seed=0,
        progress=False,
    )
    assert res.satisfied and res.prediction == [3]
    torch.testing.assert_close(res.start, start, atol=1e-6, rtol=0)  # starts from the image itself
    assert 0 < res.distance["rms"] < 0.3  # moved, but stayed a variant of the start image
    # it brightened the bottom-right quadrant, where class 3 lives
    change = (res.image - res.start).mean((0, 1))
    assert change[8:, 8:].mean() > change[:8, :8].mean()


def _smooth_image(h=16, w=16, c=3, seed=0):
    """A blocky random image (structure at 4-pixel scale)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, c, h // 4, w // 4, generator=g)
    return x.repeat_interleave(4, -1).repeat_interleave(4, -2)


def test_feature_inversion_recovers_the_activations():
    torch.manual_seed(2)
    model = tiny_conv(channels=1)
    image = _smooth_image(16, 16, 1, seed=3)
    res = inv.invert_features(
        model, image, "conv1", tol=0.02, steps=400, check_every=10, seed=0, progress=False, penalty=None
    )  # a TV prior would trade exactness for smoothness
    assert res.satisfied, res.prediction
    assert res.image.shape == (1, 1, 16, 16)
    # matching conv1 (8 filters of a 1-channel image) pins the image down: it looks like the original
    assert (res.image - image).abs().mean() < (res.start - image).abs().mean()


def test_noise_start_needs_a_size():
    with pytest.raises(ValueError, match="size"):
        inv.optimize_input(tiny_conv(), inv.class_target(0), progress=False)


# -- a tiny trained recognizer (tests/diagnose/digit_reader.py) ---------------------------------------
@pytest.fixture(scope="module")
def trained_crnn():
    return train_tiny_crnn()


@pytest.mark.slow
def test_ctc_target_makes_a_trained_crnn_read_the_target(trained_crnn):
    rng = random.Random(5)
    line = draw("15", rng)[None]
    with torch.no_grad():
        assert decode(inv.ctc_greedy(trained_crnn(line))[0]) == "15"
    for init, kw in ((line, {}), (None, {"size": (H, W)})):
        res = inv.optimize_input(
            trained_crnn,
            inv.text_target(encode("372"), decode=decode),
            init=init,
            steps=600,
            check_every=5,
            seed=0,
            progress=False,
            **kw,
        )
        assert res.satisfied and res.prediction == ["372"], res.prediction
        with torch.no_grad():  # the returned image itself reads "372"
            assert decode(inv.ctc_greedy(trained_crnn(res.image))[0]) == "372"
        assert res.image.shape == (1, 1, H, W)
