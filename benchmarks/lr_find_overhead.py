"""Overhead of ``lr_find`` against the same sweep written by hand (target: ratio <= 1.05).

Both run the same number of optimizer steps over the same pre-built batches with the same exponential lr
sweep; the hand loop is what one writes without a library (set lr, forward, loss, backward, step, moving
average, divergence check). ``lr_find`` adds the Agent's learning step (history record, counters), the
deep copy of the full agent state before the sweep and its restore afterwards. Rounds alternate the order;
the medians are compared.

    .venv/bin/python benchmarks/lr_find_overhead.py            # ~2 min on one core
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dawnet  # noqa: E402
from dawnet.training import lr_find  # noqa: E402


def cnn():
    """A mid-sized CNN on 28x28 digits (~0.4 M parameters): a step costs milliseconds, as real models do."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 96), nn.ReLU(), nn.Linear(96, 10),
    )


def mlp():
    """A tiny MLP: a step costs well under a millisecond, so fixed per-step costs show."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def hand_loop(model, opt, batches, num_iter, min_lr, max_lr, smooth=0.98, diverge=4.0):
    criterion = nn.CrossEntropyLoss()
    model.train()
    avg, best, steps = 0.0, float("inf"), 0
    for i in range(num_iter):
        lr = min_lr * (max_lr / min_lr) ** (i / (num_iter - 1))
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = batches[i % len(batches)]
        loss = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        avg = smooth * avg + (1 - smooth) * value
        smoothed = avg / (1 - smooth ** (i + 1))
        best = min(best, smoothed)
        steps += 1
        if smoothed > diverge * best:
            break
    return steps


def measure(make, batch_size: int, num_iter: int, rounds: int) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch_size, 1, 28, 28, generator=g), torch.randint(0, 10, (batch_size,), generator=g))
               for _ in range(20)]
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    agent = dawnet.Agent(model, opt, loss=nn.CrossEntropyLoss(), device="cpu")
    min_lr, max_lr = 1e-5, 1e-2  # a range that does not diverge, so both run all num_iter steps
    times = {"hand": [], "lr_find": []}
    hand_loop(model, opt, batches, 5, min_lr, max_lr)  # warm-up
    for r in range(rounds):
        order = ("hand", "lr_find") if r % 2 == 0 else ("lr_find", "hand")
        for which in order:
            t0 = time.perf_counter()
            if which == "hand":
                steps = hand_loop(model, opt, batches, num_iter, min_lr, max_lr)
            else:
                steps = len(lr_find(agent, batches, min_lr, max_lr, num_iter=num_iter, progress=False).lrs)
            times[which].append(time.perf_counter() - t0)
            assert steps == num_iter, f"{which} stopped after {steps} steps"
    return statistics.median(times["hand"]), statistics.median(times["lr_find"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-iter", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"lr_find vs a hand-written sweep: {args.num_iter} steps, median of {args.rounds} alternating rounds, "
          f"{args.threads} thread(s)")
    print(f"{'model':28s} {'params':>8s} {'hand s':>8s} {'lr_find s':>9s} {'ratio':>6s} {'ms/step':>8s}")
    for name, make, bs in (("cnn 28x28, batch 64", cnn, 64), ("mlp 784-128-10, batch 64", mlp, 64)):
        hand, found = measure(make, bs, args.num_iter, args.rounds)
        params = sum(p.numel() for p in make().parameters())
        print(f"{name:28s} {params:8d} {hand:8.3f} {found:9.3f} {found / hand:6.3f} {1000 * hand / args.num_iter:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
