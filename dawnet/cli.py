"""The ``dawnet`` command: one entry point, one module per subcommand under ``dawnet.commands``.

Each subcommand module defines ``register(subparsers)``, which adds its parser and sets ``func`` to the
function that runs it; the module ``dawnet/commands/lr_find.py`` is the command ``lr-find``. Commands are found
automatically, and ``dawnet NAME ...`` imports only the module of NAME, so a command starts without paying for
the others (modules import torch and the library inside ``run``, never at import time).

Exit status, for every command: 0 success; 1 a partial failure (some inputs failed, the rest were done); 2 a
usage error or bad input (a one-line ``dawnet: error: ...`` message, no traceback); 130 interrupted; 141 the
reader of standard output went away (``dawnet history CKPT | head -1``). A bug in dawnet still shows its
traceback (exit 1): only the errors the library raises for bad input are turned into messages.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import dawnet
import dawnet.commands

EXIT_CODES = """\
exit status: 0 success, 1 partial failure (some inputs failed; the rest were done), 2 usage error or bad input
(one-line message), 130 interrupted, 141 standard output closed early (e.g. piped into head)."""


def command_modules() -> dict[str, str]:
    """Command name -> module name of every subcommand module in ``dawnet.commands`` (private ones skipped)."""
    return {info.name.replace("_", "-"): info.name
            for info in sorted(pkgutil.iter_modules(dawnet.commands.__path__), key=lambda m: m.name)
            if not info.name.startswith("_")}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``dawnet`` parser with every subcommand, or only ``command`` (what ``main`` runs) when it is one."""
    parser = argparse.ArgumentParser(
        prog="dawnet",
        usage="dawnet <command> [<args>]",
        description="dawnet: train, measure and understand vision models (handwriting OCR first).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"dawnet {dawnet.__version__}")
    # prog="dawnet": subcommand usage reads "usage: dawnet eval ...", not the top-level usage string
    subparsers = parser.add_subparsers(title="commands", metavar="<command>", prog="dawnet")
    modules = command_modules()
    chosen = [modules[command]] if command in modules else modules.values()
    for name in chosen:
        importlib.import_module(f"dawnet.commands.{name}").register(subparsers)
    return parser


def _user_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input, not a bug; CheckpointError only if its module was ever imported."""
    types: tuple[type[BaseException], ...] = (dawnet.commands.CommandError, ValueError, LookupError, OSError)
    checkpoint = sys.modules.get("dawnet.checkpoint")  # not imported: no CheckpointError can have been raised
    if checkpoint is not None:
        types += (checkpoint.CheckpointError,)
    return types


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e) or type(e).__name__


def _stdout_closed() -> int:
    """Standard output's reader went away: point stdout at devnull so the exit flush stays quiet; exit 141."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured in tests)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit
    return 141


def _run(argv: list[str] | None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(args_list[0] if args_list else None)
    args = parser.parse_args(args_list)
    if not hasattr(args, "func"):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except _user_error_types() as e:
        # Errors dawnet raises for bad input name the problem and the fix: show them without a traceback.
        print(f"dawnet: error: {_message(e)}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Run ``dawnet ARGV`` and return its exit status (argparse's own exits raise SystemExit as usual)."""
    try:
        try:
            code = _run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
    except BrokenPipeError:
        return _stdout_closed()
    return code


if __name__ == "__main__":
    sys.exit(main())
