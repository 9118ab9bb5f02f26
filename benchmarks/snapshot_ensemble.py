"""Snapshot ensemble of a super-convergence run vs its last snapshot vs constant-lr runs of the same length.

For each small real task (``_small_tasks.py``: digits CNN, MNIST-5k MLP; SGD momentum 0.9) and seed:

1. ``lr_find`` -> ``(base_lr, max_lr)``;
2. a ``SuperConvergence`` run: 3 cycles (one third of the steps each, minus an eighth of the run for the
   final annihilation to base_lr / 1000), momentum cycled 0.95-0.85, ``SnapshotAtMinimum`` saving at the
   two cycle minima and at the end -> accuracy of the snapshot ensemble (``batch_infer``, mean and vote)
   and of the last snapshot (the run's final model);
3. constant-lr runs with the same number of steps at max_lr x 10^(-k/2), k = -1..3; the best of the five
   on the validation set is reported (an optimistic baseline: it is chosen on the data it is scored on).

Validation accuracy, mean and standard deviation over the seeds.

    .venv/bin/python benchmarks/snapshot_ensemble.py          # ~10 min on one core
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _small_tasks import TASKS, accuracy, make_agent  # noqa: E402

from dawnet.ensemble import batch_infer  # noqa: E402
from dawnet.training import SnapshotAtMinimum, SuperConvergence, lr_find  # noqa: E402

EPOCHS = {"digits": 12, "mnist": 8}


def run(name: str, seed: int, workdir: Path) -> dict:
    task = TASKS[name]()
    loader = task.loader(seed)
    steps = EPOCHS[name] * len(loader)
    finder = make_agent(task, lr=1e-3, seed=seed)
    sweep_data = DataLoader(task.train, batch_size=task.batch_size, shuffle=True, drop_last=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base, top = lr_find(finder, sweep_data, progress=False).suggest()
    annihilate = steps // 8
    step_size = (steps - annihilate) // 6
    annihilate = steps - 6 * step_size

    snaps = SnapshotAtMinimum(workdir / f"{name}-{seed}")
    agent = make_agent(task, lr=base, seed=seed, callbacks=[snaps], schedule=lambda o: SuperConvergence(
        o, base, top, step_size=step_size, cycles=3, annihilate_steps=annihilate))
    assert agent.schedule.total_steps == steps
    agent.fit(loader, steps=steps, progress=False)
    x, y = task.val
    out = {
        "base_lr": base, "max_lr": top, "steps": steps, "snapshots": len(snaps.paths),
        "ensemble_mean": (batch_infer(snaps.paths, x, model=task.make_model, device="cpu") == y).float().mean().item(),
        "ensemble_vote": (batch_infer(snaps.paths, x, reduce="vote", model=task.make_model,
                                       device="cpu") == y).float().mean().item(),
        "last_snapshot": accuracy(agent.model, x, y),
    }
    constant = []
    for k in range(-1, 4):
        lr = top * 10 ** (-k / 2)
        fixed = make_agent(task, lr=lr, seed=seed)
        try:
            fixed.fit(task.loader(seed), steps=steps, progress=False)
            constant.append((accuracy(fixed.model, x, y), lr))
        except FloatingPointError:
            constant.append((0.0, lr))
    out["constant_best"], out["constant_lr"] = max(constant)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(EPOCHS), choices=list(EPOCHS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tasks:
            rows[name] = []
            for seed in args.seeds:
                r = run(name, seed, Path(tmp))
                rows[name].append(r)
                print(f"{name} seed {seed}: " + ", ".join(f"{k}={v:.4g}" for k, v in r.items()),
                      file=sys.stderr, flush=True)
    print(f"\nSnapshot ensemble vs last snapshot vs constant lr: validation accuracy, mean +- sd over seeds "
          f"{args.seeds}")
    print(f"{'task':8s} {'steps':>5s} {'snaps':>5s} {'ensemble(mean)':>15s} {'ensemble(vote)':>15s} "
          f"{'last snapshot':>14s} {'constant lr*':>14s}")

    def fmt(values):
        return f"{100 * statistics.mean(values):.2f}+-{100 * statistics.pstdev(values):.2f}"

    for name, rs in rows.items():
        print(f"{name:8s} {rs[0]['steps']:5d} {rs[0]['snapshots']:5d} "
              f"{fmt([r['ensemble_mean'] for r in rs]):>15s} {fmt([r['ensemble_vote'] for r in rs]):>15s} "
              f"{fmt([r['last_snapshot'] for r in rs]):>14s} {fmt([r['constant_best'] for r in rs]):>14s}")
    print("* best of 5 constant lrs (max_lr x 10^(-k/2), k = -1..3), chosen on the validation set itself; "
          "its lr / max_lr per seed: " + "; ".join(
              f"{name} " + ", ".join(f"{r['constant_lr'] / r['max_lr']:.2g}" for r in rs) for name, rs in rows.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
