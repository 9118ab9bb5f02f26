"""Agent.fit against a hand-written PyTorch loop: same model, data and steps, interleaved; prints the ratios.

Target: Agent.fit / hand loop <= 1.03 for both cases, side by side in one run:

- ``cnn``: a small CNN on 3x32x32 images, batch 32 (about 35 ms a step on one thread);
- ``mlp``: a 3-layer MLP on 256 features, batch 64 (about a millisecond a step on one thread), where the Agent's
  own per-step bookkeeping would show.

Run: ``nice -n 0 .venv/bin/python benchmarks/agent_overhead.py --threads 1 [--rounds 7] [--case mlp] 2>/dev/null``
(the progress bars go to stderr). Both loops read the loss each step (``loss.item()``), as any loop that logs
does; the Agent also keeps its history, checks the loss is finite, rebuilds the epoch's DataLoader and runs its
callbacks. Each loop is timed by the wall clock and by this process's CPU time; on a loaded machine the CPU-time
ratio is the one to read (time spent waiting for a core is not the Agent's). The load average is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dawnet


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


@dataclass(frozen=True)
class Case:
    make_model: Callable[[], nn.Module]
    shape: tuple[int, ...]
    batch_size: int
    steps: int


CASES = {
    "cnn": Case(make_cnn, (3, 32, 32), 32, 60),
    "mlp": Case(make_mlp, (256,), 64, 1500),
}


def data(case: Case) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    n = case.batch_size * 25
    return TensorDataset(torch.randn(n, *case.shape, generator=g), torch.randint(0, 10, (n,), generator=g))


def hand_loop(case: Case, dataset, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = case.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    start = _clocks()
    done = 0
    model.train()
    while done < steps:
        for x, y in DataLoader(dataset, batch_size=case.batch_size, shuffle=True):
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            done += 1
            if done == steps:
                break
    return _since(start)


def agent_loop(case: Case, dataset, steps: int, progress: bool) -> tuple[float, float]:
    torch.manual_seed(0)
    model = case.make_model()
    agent = dawnet.Agent(model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                         loss=nn.CrossEntropyLoss(), device="cpu")
    loader = DataLoader(dataset, batch_size=case.batch_size, shuffle=True)
    start = _clocks()
    agent.fit(loader, steps=steps, progress=progress)
    return _since(start)


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) since ``start``."""
    wall, cpu = _clocks()
    return wall - start[0], cpu - start[1]


def measure(name: str, rounds: int, steps: int | None) -> dict:
    case = CASES[name]
    steps = steps or case.steps
    dataset = data(case)
    hand_loop(case, dataset, 5)  # warm-up: allocator, kernels, thread pool
    agent_loop(case, dataset, 5, False)
    times: dict[str, list[tuple[float, float]]] = {"hand": [], "agent": [], "agent_progress": []}
    for _ in range(rounds):
        times["hand"].append(hand_loop(case, dataset, steps))
        times["agent"].append(agent_loop(case, dataset, steps, progress=False))
        times["agent_progress"].append(agent_loop(case, dataset, steps, progress=True))
    wall = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
    cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
    return {
        "case": name, "steps": steps, "batch_size": case.batch_size, "rounds": rounds,
        "hand_s": wall["hand"], "agent_s": wall["agent"], "agent_progress_s": wall["agent_progress"],
        "ms_per_step": 1000 * wall["hand"] / steps,
        "ratio": wall["agent"] / wall["hand"], "ratio_with_progress_bar": wall["agent_progress"] / wall["hand"],
        # CPU seconds of this process: on a loaded machine, time spent waiting for a core does not count
        "cpu_ratio": cpu["agent"] / cpu["hand"], "cpu_ratio_with_progress_bar": cpu["agent_progress"] / cpu["hand"],
        # per-round wall ratios: a load spike hits one round of both loops, so their spread shows how settled it is
        "round_ratios": [a[0] / h[0] for a, h in zip(times["agent"], times["hand"])],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=[*CASES, "all"], default="all", help="Which model (default: all).")
    parser.add_argument("--steps", type=int, default=None,
                        help="Optimizer steps per timed run (default: cnn 60, mlp 1500).")
    parser.add_argument("--rounds", type=int, default=7, help="Interleaved rounds; medians are compared (default 7).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results = [measure(name, args.rounds, args.steps) for name in (CASES if args.case == "all" else [args.case])]
    out = {"results": results, "target": 1.03, "torch_threads": torch.get_num_threads(),
           "load_average_before": load_before, "load_average_after": os.getloadavg(), "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"\nAgent overhead (median of {args.rounds} interleaved rounds, {out['torch_threads']} torch thread(s); "
          f"load average {load_before[0]:.1f} before, {out['load_average_after'][0]:.1f} after, "
          f"{out['cpus']} CPUs)")
    print(f"  {'case':<5} {'steps':>6} {'batch':>5} {'ms/step':>8} {'hand s':>8} {'agent s':>8} {'ratio':>6} "
          f"{'+bar':>6} {'cpu':>6} {'cpu+bar':>7}  wall ratio per round")
    for r in results:
        rounds = " ".join(f"{x:.3f}" for x in r["round_ratios"])
        print(f"  {r['case']:<5} {r['steps']:>6} {r['batch_size']:>5} {r['ms_per_step']:>8.2f} {r['hand_s']:>8.3f} "
              f"{r['agent_s']:>8.3f} {r['ratio']:>6.3f} {r['ratio_with_progress_bar']:>6.3f} {r['cpu_ratio']:>6.3f} "
              f"{r['cpu_ratio_with_progress_bar']:>7.3f}  {rounds}")
    print("  ratio: wall-clock medians; cpu: medians of this process's CPU seconds (robust to a loaded machine)")
    print(f"  target: ratio <= {out['target']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
