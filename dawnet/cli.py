"""The ``dawnet`` command: one entry point, one module per subcommand under ``dawnet.commands``.

Each subcommand module defines ``register(subparsers)``, which adds its parser and sets
``func`` to the function that runs it. With no subcommand, the help is printed.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import dawnet
import dawnet.commands
from dawnet.checkpoint import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dawnet",
        usage="dawnet <command> [<args>]",
        description="dawnet: train, measure and understand vision models (handwriting OCR first).",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"dawnet {dawnet.__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="<command>")
    for info in sorted(pkgutil.iter_modules(dawnet.commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"dawnet.commands.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (dawnet.commands.CommandError, CheckpointError, FileNotFoundError, ValueError, LookupError,
            TypeError) as e:
        # Errors dawnet raises name the problem and the fix: show them without a traceback.
        print(f"dawnet: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
