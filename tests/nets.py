"""Tiny test networks shared by the test files (import with ``from nets import TinyCRNN, TinyConvNet``).

``tests/conftest.py`` puts this folder on ``sys.path``, so subprocesses started by tests can import it too.
Every size is an argument, so a test keeps the exact shapes its expectations were computed for.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["TinyCRNN", "TinyConvNet", "TinyMLP"]


class TinyCRNN(nn.Module):
    """A CRNN-like line recognizer: conv blocks -> BiLSTM -> Linear, ``(N, C, H, W)`` to ``(N, T, classes)``.

    The conv stack is ``cnn`` with layers named ``conv1, [bn1,] relu1, pool1, conv2, ...``; ``pool1`` halves
    height and width, the later pools halve only the height, so ``T = W // 2``. The remaining height is
    flattened into the LSTM's features (``channels[-1] * height // 2 ** len(channels)``).

    Args:
        classes: output classes per frame (with the CTC blank).
        height: input height (a multiple of ``2 ** len(channels)``).
        channels: output channels of each conv block.
        hidden: LSTM units per direction.
        in_channels: input channels (1: grayscale).
        batchnorm: a BatchNorm2d after each conv.
        log_probs: return ``log_softmax`` scores (for ``F.ctc_loss``) instead of logits.
    """

    def __init__(self, classes: int = 11, height: int = 16, channels: Sequence[int] = (8, 16), hidden: int = 8,
                 in_channels: int = 1, batchnorm: bool = False, log_probs: bool = False):
        super().__init__()
        if height % 2 ** len(channels):
            raise ValueError(f"height {height} must be a multiple of {2 ** len(channels)} for {len(channels)} pools")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        previous = in_channels
        for i, c in enumerate(channels, start=1):
            layers[f"conv{i}"] = nn.Conv2d(previous, c, 3, padding=1)
            if batchnorm:
                layers[f"bn{i}"] = nn.BatchNorm2d(c)
            layers[f"relu{i}"] = nn.ReLU()
            layers[f"pool{i}"] = nn.MaxPool2d((2, 2) if i == 1 else (2, 1))
            previous = c
        self.cnn = nn.Sequential(layers)
        self.rnn = nn.LSTM(previous * (height // 2 ** len(channels)), hidden, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, classes)
        self.log_probs = log_probs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.cnn(x).flatten(1, 2).transpose(1, 2)  # (N, T, C * H')
        out = self.head(self.rnn(f)[0])
        return out.log_softmax(-1) if self.log_probs else out


class TinyConvNet(nn.Module):
    """Two 3x3 conv + ReLU layers (``conv1``, ``conv2``) and a linear classifier ``fc``.

    Args:
        in_channels: input channels (3: RGB).
        classes: output classes.
        width: channels of both convs.
        stride: stride of both convs.
        size: input side; with it, ``fc`` reads the flattened feature map, without it (None) the global mean.
    """

    def __init__(self, in_channels: int = 3, classes: int = 4, width: int = 8, stride: int = 1,
                 size: int | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1)
        side = None if size is None else math.ceil(math.ceil(size / stride) / stride)  # padding=1 convs round up
        self.fc = nn.Linear(width if side is None else width * side * side, classes)
        self.flatten = size is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.flatten(1) if self.flatten else x.mean((2, 3)))


class TinyMLP(nn.Sequential):
    """``Flatten -> (Linear -> ReLU) x len(hidden) -> Linear``: a model whose step costs about a millisecond."""

    def __init__(self, inputs: int = 32, hidden: Sequence[int] = (64, 64), classes: int = 4):
        layers: list[nn.Module] = [nn.Flatten()]
        previous = inputs
        for h in hidden:
            layers += [nn.Linear(previous, h), nn.ReLU()]
            previous = h
        layers.append(nn.Linear(previous, classes))
        super().__init__(*layers)
