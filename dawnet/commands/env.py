"""``dawnet env``: a block of versions and hardware facts to paste into a bug report."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "env",
        help="Print versions and hardware facts for a bug report.",
        description="Print dawnet, Python, PyTorch and hardware versions, ready to paste into an issue.",
    )
    p.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dawnet.environment import environment

    info = environment()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print("Copy-and-paste the text below in your issue.\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    return 0
