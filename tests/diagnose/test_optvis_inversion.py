"""Optimizing an input until the model gives a target: a class, an activation pattern, a string.

The string test trains a tiny CRNN (conv -> (2,1) pools -> BiLSTM -> Linear, CTC, blank 0) on
digit strings drawn with PIL's default font, then makes it read a string of our choice.
"""

import functools
import random

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from dawnet.diagnose.optvis import inversion as inv


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: one thread avoids OpenMP contention on a shared machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TinyConv(nn.Module):
    """Two strided convs and a linear layer: small enough to train in a second."""

    def __init__(self, channels=3, classes=4):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, classes)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.flatten(1))


def quadrant_images(labels, g):
    """16x16 RGB: dim noise with a bright square in quadrant ``label`` (0 TL, 1 TR, 2 BL, 3 BR)."""
    x = 0.3 * torch.rand(len(labels), 3, 16, 16, generator=g)
    for i, k in enumerate(labels):
        y0, x0 = 8 * (k // 2) + 1, 8 * (k % 2) + 1
        x[i, :, y0 : y0 + 6, x0 : x0 + 6] = 0.7 + 0.3 * torch.rand(3, 1, 1, generator=g)
    return x


@pytest.fixture(scope="module")
def classifier():
    """A TinyConv trained to tell which quadrant holds the bright square."""
    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the per-test one-thread fixture
    g = torch.Generator().manual_seed(0)
    model = TinyConv()
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
    torch.set_num_threads(n)
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
    model = TinyConv(channels=1)
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
        inv.optimize_input(TinyConv(), inv.class_target(0), progress=False)


# -- a tiny trained recognizer ---------------------------------------------------------------------
H, W = 12, 24
FONT = ImageFont.load_default()  # a real font shipped with Pillow


def draw(text: str, rng: random.Random) -> torch.Tensor:
    im = Image.new("L", (W, H), 0)
    ImageDraw.Draw(im).text((rng.randint(0, 3), rng.randint(-1, 1)), text, fill=255, font=FONT)
    return torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(1, H, W).float() / 255


class CRNN(nn.Module):
    """conv/pool (time halved once) -> (2,1) pool -> BiLSTM -> Linear: (N, T, 11) log-probs, blank 0."""

    def __init__(self, classes=11):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d((2, 2)),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d((2, 1)),
        )
        self.rnn = nn.LSTM(32 * (H // 4), 32, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        f = self.cnn(x).flatten(1, 2).transpose(1, 2)  # (N, T, C*H')
        return F.log_softmax(self.fc(self.rnn(f)[0]), -1)


def encode(s):
    return [int(c) + 1 for c in s]


def decode(ids):
    return "".join(str(i - 1) for i in ids)


@functools.lru_cache(maxsize=1)
def train_tiny_crnn() -> nn.Module:
    """A CRNN trained with CTC until it reads 95% of random 1-3 digit strings (about 400 steps)."""
    rng = random.Random(0)
    torch.manual_seed(0)
    model = CRNN()
    opt = torch.optim.Adam(model.parameters(), 5e-3)

    def batch(n):
        texts = ["".join(rng.choice("0123456789") for _ in range(rng.randint(1, 3))) for _ in range(n)]
        return torch.stack([draw(s, rng) for s in texts]), texts

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the per-test one-thread fixture
    try:
        acc = 0.0
        for step in range(1500):
            x, texts = batch(32)
            out = model(x)
            loss = F.ctc_loss(
                out.transpose(0, 1),
                torch.tensor([i for s in texts for i in encode(s)]),
                torch.full((32,), out.shape[1]),
                torch.tensor([len(s) for s in texts]),
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 50 == 49:
                with torch.no_grad():
                    x, texts = batch(100)
                    out = model(x)
                    read = [decode(r) for r in inv.ctc_greedy(out)]
                acc = sum(a == b for a, b in zip(read, texts)) / len(texts)
                if acc >= 0.95:
                    break
    finally:
        torch.set_num_threads(n)
    assert acc >= 0.95, f"the tiny CRNN did not learn to read ({acc:.0%}): the test setup is broken"
    return model.eval()


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
