"""A tiny registered CNN and a learnable synthetic data set, importable by tests and by their subprocesses."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dawnet


@dawnet.register_model("toy_cnn")
class ToyCNN(nn.Module):
    """Conv-BN-ReLU-pool, conv, global pool, dropout, linear: small, but with BatchNorm and dropout RNG."""

    def __init__(self, classes: int = 4, width: int = 8, dropout: float = 0.1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


@dawnet.register_model("toy_mlp")
def toy_mlp(hidden: int = 16) -> nn.Module:
    """No BatchNorm or dropout: its DDP result must equal one process on the same global batches."""
    return nn.Sequential(nn.Flatten(), nn.Linear(144, hidden), nn.Tanh(), nn.Linear(hidden, 4))


def quadrant_data(n: int = 96, seed: int = 0, size: int = 12) -> TensorDataset:
    """Images with one bright quadrant plus noise; the label is the quadrant (0-3)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    x = 0.3 * torch.rand(n, 1, size, size, generator=g)
    h = size // 2
    for i, label in enumerate(labels.tolist()):
        r, c = divmod(label, 2)
        x[i, 0, r * h:(r + 1) * h, c * h:(c + 1) * h] += 0.7
    return TensorDataset(x, labels)


def loader(n: int = 96, batch_size: int = 8, shuffle: bool = True, seed: int = 0) -> DataLoader:
    return DataLoader(quadrant_data(n, seed), batch_size=batch_size, shuffle=shuffle)


def make_agent(lr: float = 0.05, seed: int = 0, **kwargs) -> dawnet.Agent:
    torch.manual_seed(seed)
    model = ToyCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.7)
    return dawnet.Agent(model, optimizer, loss=nn.CrossEntropyLoss(), schedule=schedule, metrics=["accuracy"],
                        device="cpu", seed=seed, **kwargs)
