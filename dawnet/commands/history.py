"""``dawnet history``: draw a checkpoint's training history (loss, metrics, lr), or export it as CSV/JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from dawnet.commands import CommandError
from dawnet.commands._types import positive_int

EPILOG = """\
exit status: 0 done; 2 bad input (a missing or unreadable checkpoint, no history in it, an unknown --keys
name, a plot name without .png/.pdf/.svg); 141 standard output closed early (e.g. piped into head)."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "history",
        help="Plot or export the training history stored in a checkpoint.",
        description=(
            "Draw the loss and metrics of a checkpoint's training history above its learning rate (and "
            "momentum), with snapshot marks, and/or export the history as CSV or JSON. With no output "
            "option, print a short summary."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="A checkpoint written by Agent.save (or a history JSON file).")
    p.add_argument("--out", metavar="PLOT", help="Write the figure here (png, pdf or svg, by extension).")
    p.add_argument("--keys", nargs="+", metavar="KEY",
                   help="History keys to draw, e.g. loss val_loss val_cer (default: the step loss and every "
                        "epoch-level loss and metric).")
    p.add_argument("--no-lr", action="store_true", help="Leave out the learning-rate panel (default: drawn).")
    p.add_argument("--csv", metavar="FILE", help="Export the records as CSV (one column per key).")
    p.add_argument("--level", choices=("step", "epoch"), default="step",
                   help="Which records --csv exports (default: step).")
    p.add_argument("--json", metavar="FILE", help="Export the whole history (steps and epochs) as JSON.")
    p.add_argument("--dpi", type=positive_int, default=120, help="Resolution of a raster plot (default: 120).")
    p.set_defaults(func=run)


def load_history(path: str):
    """The History stored in a checkpoint (or a History JSON file), with errors that say what is wrong."""
    from dawnet.checkpoint import load_checkpoint
    from dawnet.history import History

    p = Path(path)
    if not p.exists():
        raise CommandError(f"{path} does not exist: give the path of a checkpoint written by Agent.save")
    if p.suffix == ".json":
        try:
            return History.from_json(p)
        except ValueError as e:
            raise CommandError(f"{path} is not a history JSON file: {e}") from None
    state = load_checkpoint(p, map_location="cpu")
    saved = state.get("history") if isinstance(state, dict) else None
    if not isinstance(saved, dict):
        raise CommandError(f"{path} holds no training history: it was not written by Agent.save")
    return History(saved.get("steps", []), saved.get("epochs", []))


def run(args: argparse.Namespace) -> int:
    if args.out and Path(args.out).suffix.lower() not in (".png", ".pdf", ".svg", ".jpg", ".jpeg"):
        raise CommandError(f"--out {args.out}: give a file name ending in .png, .pdf or .svg")  # before any write
    history = load_history(args.checkpoint)
    did = False
    if args.csv:
        history.to_csv(args.csv, level=args.level)
        print(f"wrote {args.csv} ({len(history.steps if args.level == 'step' else history.epochs)} {args.level} rows)")
        did = True
    if args.json:
        history.to_json(args.json)
        print(f"wrote {args.json}")
        did = True
    if args.out:
        from dawnet.atomic import atomic_path
        from dawnet.history_plot import draw_history

        try:
            fig = draw_history(history, keys=args.keys, lr=not args.no_lr)
        except ValueError as e:
            raise CommandError(str(e)) from None
        with atomic_path(args.out) as tmp:  # keeps the suffix, so matplotlib picks the format
            fig.savefig(tmp, dpi=args.dpi)
        print(f"wrote {args.out}")
        did = True
    if not did:
        print(f"{args.checkpoint}: {len(history.steps)} steps, {len(history.epochs)} epochs")
        print(f"step keys:  {', '.join(history.keys('step'))}")
        print(f"epoch keys: {', '.join(history.keys('epoch'))}")
        if history.epochs:
            last = history.epochs[-1]
            print("last epoch: " + ", ".join(f"{k}={v:.4g}" for k, v in last.items()))
        print("(use --out plot.png to draw it, --csv/--json to export it)")
    return 0
