"""Agent.fit against a hand-written PyTorch loop: same model, data and steps, interleaved; prints the ratio.

Target: Agent.fit / hand loop <= 1.03. Run: ``.venv/bin/python benchmarks/agent_overhead.py [--rounds 7]``.
Both loops read the loss each step (``loss.item()``), as any loop that logs does; the Agent also keeps its
history, checks the loss is finite, rebuilds the epoch's DataLoader and runs its callbacks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dawnet


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def data(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))


def hand_loop(dataset, steps: int, batch_size: int) -> float:
    torch.manual_seed(0)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    start = time.perf_counter()
    done = 0
    model.train()
    while done < steps:
        for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=True):
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start


def agent_loop(dataset, steps: int, batch_size: int, progress: bool) -> float:
    torch.manual_seed(0)
    model = make_model()
    agent = dawnet.Agent(model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                         loss=nn.CrossEntropyLoss(), device="cpu")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    start = time.perf_counter()
    agent.fit(loader, steps=steps, progress=progress)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="Optimizer steps per timed run (default 60).")
    parser.add_argument("--batch-size", type=int, default=32, help="Batch size (default 32).")
    parser.add_argument("--rounds", type=int, default=7, help="Interleaved rounds; medians are compared (default 7).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = data(args.batch_size * 25)
    hand_loop(dataset, 5, args.batch_size)  # warm-up: allocator, kernels, thread pool
    agent_loop(dataset, 5, args.batch_size, False)
    times = {"hand": [], "agent": [], "agent_progress": []}
    for _ in range(args.rounds):
        times["hand"].append(hand_loop(dataset, args.steps, args.batch_size))
        times["agent"].append(agent_loop(dataset, args.steps, args.batch_size, progress=False))
        times["agent_progress"].append(agent_loop(dataset, args.steps, args.batch_size, progress=True))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "steps": args.steps, "batch_size": args.batch_size, "rounds": args.rounds,
        "hand_s": med["hand"], "agent_s": med["agent"], "agent_progress_s": med["agent_progress"],
        "ratio": med["agent"] / med["hand"], "ratio_with_progress_bar": med["agent_progress"] / med["hand"],
        "target": 1.03, "torch_threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"\nAgent overhead ({args.steps} steps, batch {args.batch_size}, median of {args.rounds} interleaved "
              "rounds)")
        print(f"  hand-written loop          {med['hand']:.3f} s")
        print(f"  Agent.fit                  {med['agent']:.3f} s   ratio {result['ratio']:.3f}")
        print(f"  Agent.fit + progress bar   {med['agent_progress']:.3f} s   ratio "
              f"{result['ratio_with_progress_bar']:.3f}")
        print(f"  target: ratio <= {result['target']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
