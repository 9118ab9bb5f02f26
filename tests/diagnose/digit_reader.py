"""A tiny CRNN trained once per session to read 1-3 digit strings drawn with Pillow's default font.

Shared by the inversion tests and the ``dawnet visualize --read`` tests (``from digit_reader import ...``:
pytest puts tests/diagnose on sys.path). The network is ``nets.TinyCRNN``: conv/pool (time halved once) ->
(2, 1) pool -> BiLSTM -> Linear, (N, T, 11) CTC log-probabilities with the blank at 0.
"""

from __future__ import annotations

import functools
import random

import torch
import torch.nn.functional as F
from nets import TinyCRNN
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from dawnet.ocr.decode import ctc_greedy

__all__ = ["H", "W", "FONT", "draw", "encode", "decode", "digit_crnn", "train_tiny_crnn"]

H, W = 12, 24
FONT = ImageFont.load_default()  # a real font shipped with Pillow


def draw(text: str, rng: random.Random) -> torch.Tensor:
    """``text`` as a (1, H, W) line: white ink (1) on black (0), as the CRNN reads it, jittered by ``rng``."""
    im = Image.new("L", (W, H), 0)
    ImageDraw.Draw(im).text((rng.randint(0, 3), rng.randint(-1, 1)), text, fill=255, font=FONT)
    return torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(1, H, W).float() / 255


def encode(s: str) -> list[int]:
    return [int(c) + 1 for c in s]


def decode(ids: list[int]) -> str:
    return "".join(str(i - 1) for i in ids)


def digit_crnn() -> nn.Module:
    """The untrained network: TinyCRNN sized for 12 px lines of digits."""
    return TinyCRNN(classes=11, height=H, channels=(16, 32), hidden=32, log_probs=True)


@functools.lru_cache(maxsize=1)
def train_tiny_crnn() -> nn.Module:
    """The CRNN trained with CTC until it reads 95% of random 1-3 digit strings (about 400 steps)."""
    rng = random.Random(0)
    torch.manual_seed(0)
    model = digit_crnn()
    opt = torch.optim.Adam(model.parameters(), 5e-3)

    def batch(n):
        texts = ["".join(rng.choice("0123456789") for _ in range(rng.randint(1, 3))) for _ in range(n)]
        return torch.stack([draw(s, rng) for s in texts]), texts

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
                read = [decode(r) for r in ctc_greedy(model(x))]
            acc = sum(a == b for a, b in zip(read, texts)) / len(texts)
            if acc >= 0.95:
                break
    assert acc >= 0.95, f"the tiny CRNN did not learn to read ({acc:.0%}): the test setup is broken"
    return model.eval()
