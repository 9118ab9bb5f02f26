"""``dawnet bench``: run the benchmark protocol (train and measure the reference models), or compare runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dawnet.commands import CommandError, set_threads
from dawnet.commands._types import nonnegative_int, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="Train and measure the reference OCR models on the benchmark protocol; compare runs.",
        description="Build (or reuse) the benchmark data, train the recognizers crnn and attn (and every "
        "--model) with an equal budget, the character LM and the yolo line detector, then measure each on "
        "every test set (seen fonts, unseen fonts, digit strings, pages), greedy and with beam search (with "
        "the LM on text lines): CER, WER, word accuracy, 1-NED, mAP, page CER, next to params, GFLOPs, "
        "latency and training time. Prints one table and writes OUT/report.md, OUT/results.json, OUT/models/*.pt and "
        "OUT/figures/*.png. 'dawnet bench compare A/results.json B/results.json' sets two runs side "
        "by side.",
    )
    p.add_argument(
        "--profile",
        default="cpu",
        choices=("smoke", "cpu", "full"),
        help="smoke: under 2 minutes, checks that everything runs; cpu (default): about 20 minutes on "
        "2 CPU cores; full: the full data and long training, for GPUs.",
    )
    p.add_argument("--out", default=None, help="Output folder (default: runs/bench-PROFILE).")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME_OR_module:factory",
        help="Also train and measure this recognizer (a registered name or package.module:factory "
        "taking num_classes= and height=); repeat for several (default: none).",
    )
    p.add_argument(
        "--data-dir",
        default="runs/bench-data",
        help="Where the benchmark data is built and reused (default: runs/bench-data).",
    )
    p.add_argument("--seed", type=nonnegative_int, default=0, help="Seed of weights and data order (default: 0).")
    p.add_argument(
        "--workers", type=positive_int, default=None, help="Processes that build the data (default: the CPU count)."
    )
    p.add_argument(
        "--threads", type=positive_int, default=None, help="CPU threads for PyTorch (default: PyTorch's choice)."
    )
    p.add_argument("--quiet", action="store_true", help="No progress bars or step messages.")
    p.add_argument("--json", action="store_true", help="Print results.json instead of the table.")
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="bench_command", metavar="[compare A B]", title="compare two runs")
    c = sub.add_parser(
        "compare",
        help="Set two results.json side by side.",
        description="Print every metric of two benchmark runs side by side with their difference "
        "(B - A), and the protocol differences (profile, data checksums, seed, "
        "machine) that make the comparison unfair.",
    )
    c.add_argument("a", metavar="A", help="results.json of the first run (or its folder).")
    c.add_argument("b", metavar="B", help="results.json of the second run (or its folder).")
    c.set_defaults(func=run_compare)


def _load(path: str) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise CommandError(
            f"{p} does not exist: pass the results.json that 'dawnet bench' wrote (or its folder)"
        )
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CommandError(
            f"{p} is not valid JSON ({e}); is it a results.json from 'dawnet bench'?"
        ) from None


def run_compare(args: argparse.Namespace) -> int:
    from dawnet.ocr.bench import compare

    try:
        print(
            compare(
                _load(args.a),
                _load(args.b),
                names=(
                    Path(args.a).name if Path(args.a).is_dir() else "A",
                    Path(args.b).name if Path(args.b).is_dir() else "B",
                ),
            )
        )
    except ValueError as e:
        raise CommandError(str(e)) from None
    return 0


def run(args: argparse.Namespace) -> int:
    from dawnet.ocr.bench import format_table, run_bench

    set_threads(args.threads)
    out = Path(args.out or f"runs/bench-{args.profile}")
    try:
        results = run_bench(
            args.profile,
            out,
            models=args.model,
            data_dir=args.data_dir,
            seed=args.seed,
            progress=not (args.quiet or args.json),
            workers=args.workers,
        )
    except FileNotFoundError as e:
        raise CommandError(f"{e}") from None
    if args.json:
        print((out / "results.json").read_text(encoding="utf-8"))
    else:
        print(f"\ndawnet bench, profile {args.profile}: {results['budget']}\n")
        print(format_table(results))
        print(f"\nreport: {out / 'report.md'}   results: {out / 'results.json'}   figures: {out / 'figures'}")
    return 0
