"""Whole reference models against hand-derived totals: a small CRNN and a small YOLO-style net."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dawnet.cost import count


class CRNN(nn.Module):
    """conv/pool stack with (2,1) pooling -> BiLSTM -> Linear, on 1 x 32 x W line images."""

    def __init__(self, classes: int = 40, hidden: int = 64):
        super().__init__()
        c = [1, 16, 32, 64, 64]
        pools = [(2, 2), (2, 2), (2, 1), (2, 1)]
        layers = []
        for cin, cout, pool in zip(c[:-1], c[1:], pools):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(pool)]
        self.features = nn.Sequential(*layers)
        self.rnn = nn.LSTM(64 * 2, hidden, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        f = self.features(x)  # (N, 64, 2, W/4)
        f = f.flatten(1, 2).transpose(1, 2)  # (N, T, 128)
        return self.head(self.rnn(f)[0])


def crnn_macs(n, w, classes=40, hidden=64):
    c = [1, 16, 32, 64, 64]
    sizes = [(32, w), (16, w // 2), (8, w // 4), (4, w // 4)]  # conv input = output size (padding 1)
    conv = sum(n * co * ci * 9 * h * ww for ci, co, (h, ww) in zip(c[:-1], c[1:], sizes))
    T = w // 4
    lstm = 2 * n * T * 4 * hidden * (128 + hidden)  # two directions
    head = n * T * 2 * hidden * classes
    return conv + lstm + head


class ConvBNAct(nn.Sequential):
    def __init__(self, cin, cout, k=3, s=1):
        super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class TinyYOLO(nn.Module):
    """Stride-2 backbone, an upsample + concat neck and 1x1 detection heads at strides 8 and 16."""

    def __init__(self, classes: int = 1, anchors: int = 3):
        super().__init__()
        self.b1 = nn.Sequential(ConvBNAct(3, 16, 3, 2), ConvBNAct(16, 32, 3, 2), ConvBNAct(32, 64, 3, 2))  # /8
        self.b2 = ConvBNAct(64, 128, 3, 2)  # /16
        self.lateral = ConvBNAct(128, 64, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = ConvBNAct(128, 64, 3)
        out = anchors * (5 + classes)
        self.head8 = nn.Conv2d(64, out, 1)
        self.head16 = nn.Conv2d(128, out, 1)

    def forward(self, x):
        p8 = self.b1(x)
        p16 = self.b2(p8)
        f8 = self.fuse(torch.cat([p8, self.up(self.lateral(p16))], 1))
        return self.head8(f8), self.head16(p16)


def yolo_macs(n, h, w, classes=1, anchors=3):
    out = anchors * (5 + classes)
    h2, h4, h8, h16 = h // 2, h // 4, h // 8, h // 16
    w2, w4, w8, w16 = w // 2, w // 4, w // 8, w // 16
    return n * (
        16 * 3 * 9 * h2 * w2 + 32 * 16 * 9 * h4 * w4 + 64 * 32 * 9 * h8 * w8  # backbone /8
        + 128 * 64 * 9 * h16 * w16  # /16
        + 64 * 128 * h16 * w16  # lateral 1x1
        + 64 * 128 * 9 * h8 * w8  # fuse
        + out * 64 * h8 * w8 + out * 128 * h16 * w16  # heads
    )


@pytest.mark.parametrize("train", [True, False])
def test_crnn(train):
    model = CRNN().train(train)
    x = torch.randn(2, 1, 32, 128)
    with torch.set_grad_enabled(train):
        r = count(model, x)
    assert r.macs == crnn_macs(2, 128)
    assert r.module("rnn").macs == 2 * 2 * 32 * 4 * 64 * (128 + 64)
    assert r.unknown_ops == {}


def test_yolo():
    model = TinyYOLO()
    r = count(model, torch.randn(2, 3, 64, 96))
    assert r.macs == yolo_macs(2, 64, 96)
    assert r.module("head8").macs == 2 * 18 * 64 * 8 * 12
    assert r.unknown_ops == {}
